"""Turn what the Dagster instance recorded into alerts: failed runs, blocked days, failed freshness checks.

Everything is read from finished runs (FAILURE and SUCCESS), ordered by their last update, so the
watch works on any instance storage (SQLite's event log is sharded per run: cross-run event
queries are refused there). A blocked day fails its run, but a day validated alone, and a freshness
check that fails, both end in a *successful* run: their failed check evaluations are read from the
run's own events. In-process ``dpa materialize`` runs are runs like any other here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import dagster as dg

from dpa_assets.alerts.journal import BLOCKED_DAY, FAILED_RUN, FRESHNESS, Alert
from dpa_assets.alerts.messages import sms_text
from dpa_assets.settings import BACKFILL_DAYS_TAG, BACKFILL_JOB
from dpa_assets.warehouse.ledger import blocked_detail

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
BLOCKING_CHECK = "rejection_rate"
FRESHNESS_CHECK = "yesterday_loaded_by_six"
FINISHED = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS]
# Runs whose update falls in the same instant as the cursor are read again; the journal's keys
# make the second sighting a no-op.
OVERLAP_SECONDS = 1.0

RunLink = Callable[[str], str]


@dataclass(frozen=True)
class RunFinding:
    """One finished run read since the cursor, and the alerts it raises (often none)."""

    updated_at: float
    alerts: list[Alert]


def finished_runs_since(instance: dg.DagsterInstance, after: float | None, limit: int) -> list[dg.RunRecord]:
    """Finished runs updated after ``after`` (a UNIX time; None: from the first), oldest update first."""
    since = datetime.fromtimestamp(after - OVERLAP_SECONDS, UTC) if after is not None else None
    return list(
        instance.get_run_records(
            dg.RunsFilter(statuses=FINISHED, updated_after=since),
            order_by="update_timestamp",
            ascending=True,
            limit=limit,
        )
    )


def alerts_for_run(instance: dg.DagsterInstance, record: dg.RunRecord, run_link: RunLink) -> list[Alert]:
    """The alerts one finished run raises: blocked days, failed freshness checks, else its failure.

    Args:
        instance: where the run's events are.
        record: the run.
        run_link: run id -> its page in the UI.

    Returns:
        At most one alert per (kind, day); none for a clean successful run.
    """
    run = record.dagster_run
    occurred_at = record.update_timestamp.astimezone(UTC).isoformat(timespec="seconds")
    alerts = []
    for evaluation in _failed_check_evaluations(instance, run.run_id):
        if evaluation.check_name == BLOCKING_CHECK:
            alerts.append(_blocked_day_alert(run, evaluation, occurred_at, run_link))
        elif evaluation.check_name == FRESHNESS_CHECK:
            alerts.append(_freshness_alert(run, evaluation, occurred_at, run_link))
    if run.status != dg.DagsterRunStatus.FAILURE:
        return alerts
    if run.job_name != BACKFILL_JOB:
        # A blocked day fails its one-day run; that alert already says why, better than the run's failure.
        return (
            alerts
            if any(a.kind == BLOCKED_DAY for a in alerts)
            else [*alerts, _failed_run_alert(instance, run, occurred_at, run_link)]
        )
    # A range run's alert names every day not loaded: one SMS for the range, not one per blocked
    # day (a bad month backfilled would page the on-call thirty times); each day is still journaled.
    run_alert = _failed_run_alert(instance, run, occurred_at, run_link)
    covered = [replace(a, sms_covered_by=run_alert.key) if a.kind == BLOCKED_DAY else a for a in alerts]
    return [*covered, run_alert]


def _events(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list[dg.DagsterEvent]:
    records = instance.get_records_for_run(run_id, of_type=event_type).records
    return [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event is not None]


def _failed_check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    evaluations = [e.event_specific_data for e in _events(instance, run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    return [e for e in evaluations if isinstance(e, dg.AssetCheckEvaluation) and not e.passed]


def _values(evaluation: dg.AssetCheckEvaluation) -> dict:
    return {key: getattr(value, "value", value) for key, value in evaluation.metadata.items()}


def run_day(run: dg.DagsterRun) -> str | None:
    """The day (or ``first..last`` range) a run worked on, from its tags."""
    if run.tags.get(PARTITION_TAG):
        return run.tags[PARTITION_TAG]
    if run.tags.get(BACKFILL_DAYS_TAG):
        return run.tags[BACKFILL_DAYS_TAG]
    if run.tags.get(RANGE_START_TAG):
        return f"{run.tags[RANGE_START_TAG]}..{run.tags.get(RANGE_END_TAG, '')}"
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def top_reasons(values: dict, limit: int = 3) -> list[str]:
    """``column: rule (rows)`` for the first rows of the check's ``top_reasons`` table.

    Evaluations recorded before the table existed carry the same rows as a markdown table.
    """
    table = values.get("top_reasons")
    if isinstance(table, dg.TableMetadataValue):
        cells = [(r.data["column"], r.data["rule"], r.data["rows"]) for r in table.records]
    else:
        lines = str(values.get("top_rejection_reasons", "")).splitlines()[2:]
        cells = [tuple(cell.strip() for cell in line.strip().strip("|").split("|"))[:3] for line in lines]
    return [f"{column}: {rule} ({rows})" for column, rule, rows in (c for c in cells if len(c) == 3)][:limit]


def _blocked_day_alert(
    run: dg.DagsterRun, evaluation: dg.AssetCheckEvaluation, occurred_at: str, run_link: RunLink
) -> Alert:
    values = _values(evaluation)
    day = evaluation.partition or run_day(run)
    rejected, received = int(values.get("rows_rejected", 0)), int(values.get("rows_received", 0))
    max_rate = float(values.get("max_rejection_rate", 0.0))
    reasons = top_reasons(values)
    detail = blocked_detail(rejected, received, max_rate, ", ".join(reasons))
    rate = rejected / received if received else 0.0
    first = reasons[0].rsplit(" (", 1)[0] if reasons else "see dpa alerts"
    return Alert(
        raised_at=_now(),
        severity="error",
        job=run.job_name,
        run_id=run.run_id,
        partition=day,
        summary=f"DPA {day} BLOCKED by the {max_rate:.0%} rule: {detail}",
        details=[detail],
        kind=BLOCKED_DAY,
        occurred_at=occurred_at,
        link=run_link(run.run_id),
        message=sms_text(
            day,
            "BLOCKED",
            f"{rate:.1%} rows rejected, max {max_rate:.0%}; top: {first}",
            f"Fix source, dpa materialize --date {day}",
        ),
    )


def _freshness_alert(
    run: dg.DagsterRun, evaluation: dg.AssetCheckEvaluation, occurred_at: str, run_link: RunLink
) -> Alert:
    values = _values(evaluation)
    day = str(values.get("expected_day") or run_day(run) or "yesterday")
    loaded_at = str(values.get("loaded_at", "not loaded"))
    missing = loaded_at == "not loaded"
    reason = (
        f"not in the warehouse at {values.get('deadline', '06:00')}"
        if missing
        else f"loaded late at {loaded_at} ({values.get('minutes_late')} min after 06:00)"
    )
    return Alert(
        raised_at=_now(),
        severity="error" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "warning",
        job=run.job_name,
        run_id=run.run_id,
        partition=day,
        summary=f"DPA {day} {FRESHNESS_CHECK} FAILED: {reason}",
        details=[f"{FRESHNESS_CHECK}: {reason}"],
        kind=FRESHNESS,
        occurred_at=occurred_at,
        link=run_link(run.run_id),
        message=sms_text(
            day,
            "NOT LOADED by 06:00" if missing else "loaded LATE",
            "" if missing else f"{values.get('minutes_late')} min late",
            f"Check night run (dpa alerts), dpa materialize --date {day}" if missing else "Check night run",
        ),
    )


def describe_step_failure(event: dg.DagsterEvent) -> str:
    """``step: first line of the error``, without the exception's module path in front."""
    error = getattr(event.event_specific_data, "error", None)
    # A wrapper ("Error occurred while loading input ...:") says where, its cause says what.
    while error is not None and error.cause is not None and error.message.strip().splitlines()[0].endswith(":"):
        error = error.cause
    message = error.message.strip().splitlines()[0] if error is not None and error.message else "failed"
    # "dagster._core.definitions.events.Failure: Freight for ..." -> "Freight for ..."
    prefix, separator, rest = message.partition(": ")
    if separator and "." in prefix and " " not in prefix:
        message = rest
    return f"{event.step_key}: {message}"


def _failed_run_alert(instance: dg.DagsterInstance, run: dg.DagsterRun, occurred_at: str, run_link: RunLink) -> Alert:
    details = [describe_step_failure(e) for e in _events(instance, run.run_id, dg.DagsterEventType.STEP_FAILURE)]
    if not details:
        # Failed before any step (or marked failed from outside): the run failure's message says why.
        failures = _events(instance, run.run_id, dg.DagsterEventType.RUN_FAILURE)
        details = [failures[-1].message.strip().splitlines()[0]] if failures and failures[-1].message else []
    day = run_day(run)
    first = details[0] if details else "the run failed before any step"
    action = _rerun_action(run, day)
    return Alert(
        raised_at=_now(),
        severity="error",
        job=run.job_name,
        run_id=run.run_id,
        partition=day,
        summary=f"DPA {run_label(instance, run)}{f' for {day}' if day else ''} FAILED: {first}"[:300],
        details=details,
        kind=FAILED_RUN,
        occurred_at=occurred_at,
        link=run_link(run.run_id),
        message=sms_text(day, f"{_job_label(run)} FAILED", first, action),
    )


def _rerun_action(run: dg.DagsterRun, day: str | None) -> str:
    if day and run.job_name == BACKFILL_JOB and ".." in day:
        first, last = day.split("..", 1)
        return f"Re-run: dpa backfill --from {first} --to {last}"  # loaded days are replaced, not doubled
    return f"Re-run: dpa materialize --date {day}" if day and ".." not in day else "See dpa alerts, UI run"


def run_label(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """The job's name, or for Dagster's implicit asset jobs (``__ASSET_JOB`` from the UI,
    ``__ephemeral_asset_job__`` in process) the assets it materialized."""
    if not run.job_name.startswith("__"):
        return run.job_name
    keys = set(run.asset_selection or ())
    if not keys:  # in-process runs carry no selection; their plan names the assets
        planned = _events(instance, run.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
        keys = {event.asset_key for event in planned if event.asset_key is not None}
    assets = sorted(key.to_user_string() for key in keys)
    return f"materialization of {', '.join(assets)}" if assets else "asset materialization"


def _job_label(run: dg.DagsterRun) -> str:
    short = {"daily_freight_job": "load", BACKFILL_JOB: "backfill", "freshness_check_job": "freshness check"}
    return short.get(run.job_name) or ("load" if run.job_name.startswith("__") else run.job_name)
