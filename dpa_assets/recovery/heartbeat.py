"""The run heartbeat: where a run's worker lives (host, PID) and when it last showed signs of life.

Stored as run tags with ``instance.add_run_tags`` rather than in a file under ``$DAGSTER_HOME``:
the tags live in Dagster's run storage, which the reconciling sensor reads wherever it runs (with
PostgreSQL run storage, on another host than the worker), and the UI shows them on the run page.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import dagster as dg

HOST_TAG = "dpa/worker_host"
PID_TAG = "dpa/worker_pid"
STEP_PID_TAG = "dpa/step_pid"
BEAT_TAG = "dpa/heartbeat_at"
BEAT_INTERVAL_SECONDS = 15.0
T = TypeVar("T")


@dataclass(frozen=True)
class Heartbeat:
    """A run's last recorded sign of life."""

    host: str
    pid: int  # the run worker
    beat_at: datetime
    step_pid: int | None = None  # the step's own process when it is not the run worker

    def pids(self) -> set[int]:
        """Every process of the run that may still be working."""
        return {self.pid} if self.step_pid is None else {self.pid, self.step_pid}


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    """The run worker: the process that executes the run from its first step to its last.

    ``daily_freight_job`` and ``dpa materialize`` run every step in the run worker: this process.
    Under Dagster's multiprocess executor (UI asset selections) each step is a process the run
    worker spawns, which ends with its step, so the step's PID would read as a dead worker between
    two steps. The run worker is the process that started the run: its RUN_START event says so.
    """
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.pid if event is not None and event.pid else os.getpid()


def heartbeat_tags(
    now: datetime, host: str | None = None, pid: int | None = None, step_pid: int | None = None
) -> dict[str, str]:
    """The tags of one beat: the run worker and, when it is another process, the step's own."""
    worker = pid or os.getpid()
    return {
        HOST_TAG: host or socket.gethostname(),
        PID_TAG: str(worker),
        STEP_PID_TAG: str(step_pid or worker),
        BEAT_TAG: now.astimezone(UTC).isoformat(timespec="seconds"),
    }


def read_heartbeat(tags: dict[str, str]) -> Heartbeat | None:
    """The heartbeat recorded in a run's tags, or None when the run never beat (or the tags are unreadable)."""
    try:
        worker = int(tags[PID_TAG])
        step = int(tags.get(STEP_PID_TAG, worker))
        beat_at = datetime.fromisoformat(tags[BEAT_TAG])
    except (KeyError, ValueError):
        return None
    return Heartbeat(host=tags[HOST_TAG], pid=worker, beat_at=beat_at, step_pid=None if step == worker else step)


def _beat(instance: dg.DagsterInstance, run_id: str, worker: int) -> None:
    try:
        instance.add_run_tags(run_id, heartbeat_tags(datetime.now(UTC), pid=worker, step_pid=os.getpid()))
    except Exception as error:  # noqa: BLE001
        # A busy run storage must not fail the load; a missed beat only ages the heartbeat.
        dg.get_dagster_logger().warning(f"run heartbeat not recorded: {type(error).__name__}: {error}")


@contextlib.contextmanager
def run_heartbeat(context: dg.AssetExecutionContext, interval_seconds: float = BEAT_INTERVAL_SECONDS) -> Iterator[None]:
    """Record the worker at once, then beat every ``interval_seconds`` while the block runs.

    Args:
        context: the step's context (its instance and run receive the tags).
        interval_seconds: time between beats.
    """
    try:
        instance, run_id = context.instance, context.run.run_id
    except dg.DagsterError:
        yield  # a directly invoked asset (a unit test) has no run to beat for
        return
    worker = worker_pid(instance, run_id)
    _beat(instance, run_id, worker)  # before any work: the PID is known from the first second
    stop = threading.Event()

    def beat_until_stopped() -> None:
        while not stop.wait(interval_seconds):
            _beat(instance, run_id, worker)

    thread = threading.Thread(target=beat_until_stopped, name=f"dpa-heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval_seconds)


def beating(asset_fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate an asset function (under ``@dg.asset``) so its step beats while it computes.

    ``functools.wraps`` keeps the signature and annotations Dagster reads for inputs and resources.
    """

    @functools.wraps(asset_fn)
    def with_heartbeat(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> T:
        with run_heartbeat(context):
            return asset_fn(context, *args, **kwargs)

    return with_heartbeat
