"""Zombie runs: runs this code location started whose worker is gone, or that never end.

A run killed by SIGKILL (OOM, reboot) stays STARTED forever and, with the per-day concurrency
limit, holds its day's slot. This module finds such runs from their heartbeat and fails them by
run id. It never signals any process: a run whose worker may still be alive is left alone.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from dpa_assets.alerts.journal import ZOMBIE_RUN, Alert, append_alert
from dpa_assets.recovery.heartbeat import read_heartbeat
from dpa_assets.recovery.policy import RecoveryPolicyResource
from dpa_assets.settings import BACKFILL_JOB

PARTITION_TAG = "dagster/partition"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RUNNING = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
# The jobs of this code location; UI materializations run as Dagster's hidden asset jobs.
LOCATION_JOBS = ("daily_freight_job", BACKFILL_JOB, "freshness_check_job")
ASSET_JOB_PREFIX = "__ASSET_JOB"


@dataclass(frozen=True)
class RunView:
    """What the zombie rule needs to know of one running run."""

    run_id: str
    job_name: str
    status: str  # STARTING or STARTED
    started_at: datetime  # start time, or creation time while STARTING
    tags: dict[str, str]


@dataclass(frozen=True)
class Zombie:
    """A run to fail, and why."""

    run_id: str
    job_name: str
    partition: str | None
    reason: str


def is_location_job(job_name: str) -> bool:
    """True for the jobs of this code location (other locations' runs are not ours to fail)."""
    return job_name in LOCATION_JOBS or job_name.startswith(ASSET_JOB_PREFIX)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host and is not a defunct (unreaped) zombie."""
    try:
        os.kill(pid, 0)  # signal 0 only checks existence; nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a killed child its parent has not waited for yet


def zombie_reason(
    run: RunView,
    now: datetime,
    policy: RecoveryPolicyResource,
    host: str,
    alive: Callable[[int], bool],
) -> str | None:
    """Why a running run is a zombie, or None while it may still be working.

    Args:
        run: the run, with its heartbeat tags.
        now: the current time (UTC-aware).
        policy: the thresholds.
        host: this host's name: a worker here is checked by PID, elsewhere only by heartbeat age.
        alive: PID -> whether that process lives on this host.

    Returns:
        One line for the alert and the run's failure message, or None.
    """
    age = (now - run.started_at).total_seconds()
    if age > policy.max_runtime_seconds:
        limit = policy.max_runtime_seconds
        return f"still {run.status} after {age / 60:.0f} min, past the maximum runtime of {limit} s"
    beat = read_heartbeat(run.tags)
    if beat is None:
        if age > policy.start_grace_seconds:
            return f"{run.status} for {age:.0f} s with no heartbeat: its worker never started or died at once"
        return None
    # Gone only when the run worker and its current step's process both are: between two steps of
    # the multiprocess executor the step's process has ended, and an orphaned step may still write.
    if beat.host == host and not any(alive(pid) for pid in beat.pids()):
        return f"its worker (PID {beat.pid} on {beat.host}) is gone"
    silent = (now - beat.beat_at).total_seconds()
    if silent > policy.stale_heartbeat_seconds:
        return f"no heartbeat for {silent:.0f} s from its worker (PID {beat.pid} on {beat.host})"
    return None


def find_zombies(
    runs: Iterable[RunView],
    now: datetime,
    policy: RecoveryPolicyResource,
    host: str,
    alive: Callable[[int], bool],
) -> list[Zombie]:
    """The runs of this code location that must be failed (see ``zombie_reason``)."""
    zombies = []
    for run in runs:
        if not is_location_job(run.job_name):
            continue
        reason = zombie_reason(run, now, policy, host, alive)
        if reason is not None:
            zombies.append(Zombie(run.run_id, run.job_name, run.tags.get(PARTITION_TAG), reason))
    return zombies


def running_runs(instance: dg.DagsterInstance) -> list[RunView]:
    """Every STARTING/STARTED run of the instance, as the zombie rule sees it."""
    views = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=RUNNING)):
        started = record.start_time or record.create_timestamp.timestamp()
        views.append(
            RunView(
                run_id=record.dagster_run.run_id,
                job_name=record.dagster_run.job_name,
                status=record.dagster_run.status.value,
                started_at=datetime.fromtimestamp(started, UTC),
                tags=dict(record.dagster_run.tags),
            )
        )
    return views


def detect_zombies(
    instance: dg.DagsterInstance, policy: RecoveryPolicyResource, now: datetime | None = None
) -> list[Zombie]:
    """This location's zombie runs now; reads only."""
    return find_zombies(running_runs(instance), now or datetime.now(UTC), policy, socket.gethostname(), pid_alive)


def fail_zombies(
    instance: dg.DagsterInstance, zombies: list[Zombie], journal: Path, now: datetime | None = None
) -> list[Zombie]:
    """Mark each zombie failed by run id (which frees its day's slot) and journal an alert for it.

    Args:
        instance: the Dagster instance.
        zombies: runs to fail (``detect_zombies``).
        journal: the alert journal file.
        now: the alerts' time (now when omitted).

    Returns:
        The runs actually failed (a run that ended meanwhile is skipped).
    """
    failed = []
    for zombie in zombies:
        run = instance.get_run_by_id(zombie.run_id)
        if run is None or run.status not in RUNNING:
            continue  # it finished (or was failed by someone else) since it was found
        instance.report_run_failed(run, f"DPA marked this run failed: {zombie.reason}.")
        append_alert(journal, zombie_alert(zombie, now or datetime.now(UTC)))
        failed.append(zombie)
    return failed


def zombie_alert(zombie: Zombie, now: datetime) -> Alert:
    """The journal entry of a failed zombie, with the command that re-loads its day."""
    day = f" for {zombie.partition}" if zombie.partition else ""
    action = f"dpa recover (or dpa materialize --date {zombie.partition})" if zombie.partition else "dpa recover"
    return Alert(
        raised_at=now.astimezone(UTC).isoformat(timespec="seconds"),
        severity="error",
        job=zombie.job_name,
        run_id=zombie.run_id,
        partition=zombie.partition,
        summary=f"DPA {zombie.job_name}{day} ZOMBIE marked failed: {zombie.reason}"[:300],
        details=[f"run {zombie.run_id}: {zombie.reason}", f"to re-load: {action}"],
        kind=ZOMBIE_RUN,  # shares its key with the failed-run alert of the same run: one alert, not two
    )
