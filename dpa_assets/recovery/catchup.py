"""Catch-up: which recent days the warehouse ledger says still need loading, and which to request now.

The ledger (``load_audit``), not Dagster's event log, decides: a run killed after its commit
loaded its day even though Dagster never recorded the materialization.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import dagster as dg
from sqlalchemy.engine import Engine

from dpa_assets.partitions import LOCAL_TZ, daily_partitions, partition_bounds
from dpa_assets.recovery.zombies import IN_FLIGHT, PARTITION_TAG
from dpa_assets.settings import BACKFILL_JOB, BACKFILL_OP
from dpa_assets.warehouse.ledger import BLOCKED, BREAK_GLASS, FAILED, LOADED, REFUSED, VALIDATED
from dpa_assets.warehouse.reports import latest_audit, latest_loaded_audit, warehouse_set_up

# What a day's ledger says, in the words of the plan.
OK, MISSING, INTERRUPTED = "loaded", "missing", "interrupted"
RELOAD = (MISSING, FAILED, REFUSED, INTERRUPTED)  # worth another run of the whole chain
HELD = (BLOCKED, BREAK_GLASS)  # a rule or an administrator decided: listed, never retried
NOT_DELIVERED = "missing (not delivered yet)"  # its source says the day is not there: waits for it


@dataclass(frozen=True)
class DayState:
    """One day as the ledger holds it."""

    day: date
    state: str  # loaded | missing | failed | refused | interrupted | blocked | break_glass | NOT_DELIVERED
    detail: str = ""


def ledger_state(latest: dict | None, current_load: dict | None) -> tuple[str, str]:
    """Classify a day from its newest audit row and the audit row of its current facts.

    Args:
        latest: the day's newest audit row (any status), or None.
        current_load: the ``loaded`` row its facts come from, or None.

    Returns:
        (state, detail).
    """
    if latest is None:
        return MISSING, "no audit row"
    status, detail = latest["status"], latest.get("detail") or ""
    if status in (BLOCKED, BREAK_GLASS, FAILED, REFUSED):
        return status, detail
    if current_load is not None:
        return OK, ""
    if status == VALIDATED:
        return INTERRUPTED, "validated but never committed (the run stopped before its commit)"
    return (OK, "") if status == LOADED else (MISSING, f"latest audit status {status}")


def read_day_states(engine: Engine | None, days: Iterable[date]) -> list[DayState]:
    """The ledger state of each day, in the given order; reads only.

    ``engine`` None (a SQLite file that is not there) or a warehouse not set up: every day is missing.
    """
    days = list(days)
    if engine is None or not warehouse_set_up(engine):
        return [DayState(day, MISSING, "warehouse not set up") for day in days]
    states = []
    for day in days:
        state, detail = ledger_state(latest_audit(engine, day), latest_loaded_audit(engine, day))
        states.append(DayState(day, state, detail))
    return states


def due_days(count: int, now: datetime, after_hours: float) -> list[date]:
    """The last ``count`` closed days whose nightly load should be over by ``now`` (oldest first)."""
    last = now.astimezone(LOCAL_TZ).date() - timedelta(days=1)  # the last local day that has ended
    days = [last - timedelta(days=offset) for offset in range(count)]
    due = [day for day in days if now >= partition_bounds(day.isoformat())[1] + timedelta(hours=after_hours)]
    return sorted(day for day in due if daily_partitions.has_partition_key(day.isoformat()))


def days_to_request(
    states: list[DayState],
    in_flight: set[date],
    last_attempt: dict[date, datetime],
    now: datetime,
    retry_after: timedelta,
    cap: int,
) -> list[date]:
    """The days catch-up launches now, oldest first.

    Args:
        states: the ledger state of each watched day.
        in_flight: days with a run queued, starting or started.
        last_attempt: when each day's newest run was created.
        now: the current time.
        retry_after: the wait after a day's last attempt (a file not delivered yet fails each try).
        cap: the most days requested at once.

    Returns:
        Days to request, never one in flight, held by a rule, or tried within ``retry_after``.
    """
    chosen = []
    for state in sorted(states, key=lambda s: s.day):
        if state.state not in RELOAD or state.day in in_flight:
            continue
        tried = last_attempt.get(state.day)
        if tried is not None and now - tried < retry_after:
            continue
        chosen.append(state.day)
    return chosen[:cap]


def runs_by_day(instance: dg.DagsterInstance, days: list[date]) -> tuple[set[date], dict[date, datetime]]:
    """Days with a run in flight, and when each day's newest run was created."""
    in_flight: set[date] = set()
    last_attempt: dict[date, datetime] = {}
    for day in days:
        records = instance.get_run_records(filters=dg.RunsFilter(tags={PARTITION_TAG: day.isoformat()}), limit=1)
        if records:
            last_attempt[day] = records[0].create_timestamp
        busy = instance.get_run_records(
            filters=dg.RunsFilter(tags={PARTITION_TAG: day.isoformat()}, statuses=IN_FLIGHT), limit=1
        )
        if busy:
            in_flight.add(day)
    in_flight |= days_of_ranges_in_flight(instance, days)
    return in_flight, last_attempt


def days_of_ranges_in_flight(instance: dg.DagsterInstance, days: list[date]) -> set[date]:
    """The days among ``days`` that a range backfill run in flight (queued included) will load."""
    covered: set[date] = set()
    for record in instance.get_run_records(filters=dg.RunsFilter(job_name=BACKFILL_JOB, statuses=IN_FLIGHT), limit=20):
        config = record.dagster_run.run_config.get("ops", {}).get(BACKFILL_OP, {}).get("config", {})
        try:
            start, end = date.fromisoformat(config["first_day"]), date.fromisoformat(config["last_day"])
        except (KeyError, TypeError, ValueError):
            continue  # a launch with a broken range fails at once, loading nothing
        covered |= {day for day in days if start <= day <= end}
    return covered
