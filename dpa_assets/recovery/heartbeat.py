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
BEAT_TAG = "dpa/heartbeat_at"
BEAT_INTERVAL_SECONDS = 15.0
T = TypeVar("T")


@dataclass(frozen=True)
class Heartbeat:
    """A run's last recorded sign of life."""

    host: str
    pid: int
    beat_at: datetime


def worker_pid() -> int:
    """The process doing the run's work: this one.

    ``daily_freight_job`` runs in one process (in-process executor), as do ``dpa materialize``
    runs, so this is the run worker. Not the multiprocessing parent: a run worker's parent is the
    code server, which serves every other run and sensor. Under the multiprocess executor (UI
    asset selections) it is the step's process; a step orphaned by a killed run worker stops
    beating when it ends, and the heartbeat's age then decides.
    """
    return os.getpid()


def heartbeat_tags(now: datetime, host: str | None = None, pid: int | None = None) -> dict[str, str]:
    """The tags of one beat."""
    return {
        HOST_TAG: host or socket.gethostname(),
        PID_TAG: str(pid or worker_pid()),
        BEAT_TAG: now.astimezone(UTC).isoformat(timespec="seconds"),
    }


def read_heartbeat(tags: dict[str, str]) -> Heartbeat | None:
    """The heartbeat recorded in a run's tags, or None when the run never beat (or the tags are unreadable)."""
    try:
        return Heartbeat(host=tags[HOST_TAG], pid=int(tags[PID_TAG]), beat_at=datetime.fromisoformat(tags[BEAT_TAG]))
    except (KeyError, ValueError):
        return None


def _beat(instance: dg.DagsterInstance, run_id: str) -> None:
    try:
        instance.add_run_tags(run_id, heartbeat_tags(datetime.now(UTC)))
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
    _beat(instance, run_id)  # before any work: the PID is known from the first second
    stop = threading.Event()

    def beat_until_stopped() -> None:
        while not stop.wait(interval_seconds):
            _beat(instance, run_id)

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
