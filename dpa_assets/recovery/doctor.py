"""``dpa doctor``: a read-only health report, one line per finding.

Each check returns (problems, notes): a problem needs someone's attention (exit 1), a note is context.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import dagster as dg
from sqlalchemy.engine import Engine

from dpa_assets.alerts.delivery import delivery_state
from dpa_assets.alerts.journal import read_journal
from dpa_assets.recovery.catchup import HELD, OK, read_day_states
from dpa_assets.recovery.policy import RecoveryPolicyResource
from dpa_assets.recovery.zombies import PARTITION_TAG, detect_zombies
from dpa_assets.settings import BACKFILL_JOB
from dpa_assets.warehouse.protection import MISSING, protection_status
from dpa_assets.warehouse.reports import latest_loaded_audit
from dpa_assets.warehouse_record import RecordedLoad, recorded_loads

DAEMON_STALE_SECONDS = 120  # the daemon beats every 30 s or so
Findings = tuple[list[str], list[str]]


def daemon_findings(instance: dg.DagsterInstance, now: datetime) -> Findings:
    """Is each daemon this instance needs beating?"""
    beats = instance.get_daemon_heartbeats()
    problems = []
    for daemon in instance.get_required_daemon_types():
        beat = beats.get(daemon)
        if beat is None:
            problems.append(f"daemon {daemon}: never ran on this instance (start it: dagster-daemon run, or make ui)")
            continue
        age = now.timestamp() - beat.timestamp
        if age > DAEMON_STALE_SECONDS:
            problems.append(f"daemon {daemon}: last heartbeat {age:.0f} s ago (is dagster-daemon running?)")
        elif beat.errors:
            problems.append(f"daemon {daemon}: reports {len(beat.errors)} error(s) (see the UI's Deployment page)")
    return problems, []


def instigator_findings(instance: dg.DagsterInstance, defs: dg.Definitions) -> Findings:
    """Which schedules and sensors are off, from the instance's stored state or their default."""
    stored = {state.instigator_name: state.status.value for state in instance.all_instigator_state()}
    problems, notes = [], []
    for kind, items in (("schedule", defs.schedules or []), ("sensor", defs.sensors or [])):
        for item in items:
            running = stored.get(item.name, "") in ("RUNNING", "DECLARED_IN_CODE") or (
                item.name not in stored and item.default_status.value == "RUNNING"
            )
            line = f"{kind} {item.name}: {'on' if running else 'OFF'}"
            if running:
                notes.append(line)
            else:
                problems.append(f"{line} (turn on: dagster {kind} start {item.name}, or its UI toggle)")
    return problems, notes


def zombie_findings(instance: dg.DagsterInstance, policy: RecoveryPolicyResource) -> Findings:
    problems = [
        f"zombie run {zombie.run_id} ({zombie.job_name}, {zombie.partition or 'no day'}): {zombie.reason} "
        "(dpa recover fails it and re-loads the day)"
        for zombie in detect_zombies(instance, policy)
    ]
    return problems, []


def _latest_run_status(instance: dg.DagsterInstance, day: date, load: RecordedLoad | None) -> str:
    """The status of the day's latest one-day run, or of the range backfill that loaded it if later."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={PARTITION_TAG: day.isoformat()}), limit=1)
    latest = records[0] if records else None
    if load is not None and (latest is None or latest.dagster_run.run_id != load.run_id):
        loader = instance.get_run_record_by_id(load.run_id)
        if loader is not None and loader.dagster_run.job_name == BACKFILL_JOB:
            if latest is None or loader.create_timestamp > latest.create_timestamp:
                # A range run fails when any of its days fails; this day's own outcome is the ledger's.
                return f"range backfill {loader.dagster_run.status.value}"
    return latest.dagster_run.status.value if latest else "no run"


def day_findings(
    instance: dg.DagsterInstance,
    engine: Engine,
    warehouse: str,
    days: list[date],
    delivered: Callable[[str], bool | None] = lambda _day: None,
) -> Findings:
    """Each day's latest Dagster run and materialization next to the ledger, flagging disagreements.

    Args:
        instance: the Dagster instance.
        engine: the warehouse engine.
        warehouse: the warehouse's masked URL, as materializations record it.
        days: the days to show.
        delivered: the freight source's answer to "is this day there to fetch?" (None: cannot tell).
    """
    recorded: dict[date, RecordedLoad] = recorded_loads(instance, warehouse)
    problems, notes = [], []
    for state in read_day_states(engine, days):
        load = recorded.get(state.day)
        run_status = _latest_run_status(instance, state.day, load)
        current = latest_loaded_audit(engine, state.day)
        holder = current["run_id"] if current else None
        line = f"{state.day}: dagster {run_status}, materialized {'yes' if load else 'no'}; ledger {state.state}"
        issues = []
        if state.state != OK and state.state not in HELD:
            waiting = delivered(state.day.isoformat()) is False
            issues.append(
                f"not loaded ({state.detail or state.state}): "
                + ("not delivered yet, no landing file; loads once it arrives" if waiting else "dpa recover")
            )
        if state.state in HELD:
            issues.append(f"held ({state.detail[:120] or state.state}): fix the source, then dpa materialize")
        if holder and (load is None or load.run_id != holder):
            issues.append(f"the warehouse holds run {holder}'s load but Dagster recorded none from it")
        if load is not None and holder != load.run_id:
            issues.append(f"Dagster recorded run {load.run_id}'s load but the warehouse holds {holder or 'none'}")
        if run_status == "SUCCESS" and state.state != OK:
            issues.append("the latest run succeeded but the ledger has no load")
        (problems if issues else notes).append(line + ("; " + "; ".join(issues) if issues else ""))
    return problems, notes


def alert_findings(journal_path, sms_configured: bool, last: int = 3) -> Findings:
    """Alerts the on-call has not received (a problem when SMS is on), and the latest ones as context."""
    state = read_journal(journal_path)
    undelivered = state.undelivered() if sms_configured else []
    problems = [f"alert not delivered: {alert.summary} ({delivery_state(state, alert, True)})" for alert in undelivered]
    latest = state.alerts[-last:]
    notes = [f"alert journal {journal_path}: {len(state.alerts)} alert(s), {len(undelivered)} undelivered"]
    notes += [
        f"alert {alert.raised_at} {alert.summary} [{delivery_state(state, alert, sms_configured)}]" for alert in latest
    ]
    return problems, notes


def protection_findings(engine: Engine) -> Findings:
    problems, notes = [], []
    for piece in protection_status(engine):
        line = f"protection {piece.name}: {piece.state}" + (f" ({piece.detail})" if piece.detail else "")
        if piece.state == MISSING:
            problems.append(line + " (dpa setup-warehouse, as the owner)")
        else:
            notes.append(line)
    return problems, notes


def now_utc() -> datetime:
    return datetime.now(UTC)
