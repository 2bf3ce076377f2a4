"""Sensors: a failed freight run becomes an alert in the journal (and, later, an SMS)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from dpa_assets.alerts.journal import Alert, append_alert
from dpa_assets.resources import AlertJournalResource

PARTITION_TAG = "dagster/partition"


def describe_step_failure(event: dg.DagsterEvent) -> str:
    """``step: first line of the error``, without the exception's module path in front."""
    error = getattr(event.event_specific_data, "error", None)
    message = error.message.strip().splitlines()[0] if error is not None and error.message else "failed"
    # "dagster._core.definitions.events.Failure: Freight for ..." -> "Freight for ..."
    prefix, separator, rest = message.partition(": ")
    if separator and "." in prefix and " " not in prefix:
        message = rest
    return f"{event.step_key}: {message}"


def alert_for_failed_run(run: dg.DagsterRun, step_failures: list[dg.DagsterEvent]) -> Alert:
    """Describe a failed run in the words the on-call needs.

    Args:
        run: the failed run.
        step_failures: its STEP_FAILURE events.

    Returns:
        The alert, with a one-line summary and a line per failed step.
    """
    partition = run.tags.get(PARTITION_TAG)
    details = [describe_step_failure(event) for event in step_failures]
    day = f" for {partition}" if partition else ""
    first = details[0] if details else "the run failed before any step"
    return Alert(
        raised_at=datetime.now(UTC).isoformat(timespec="seconds"),
        severity="error",
        job=run.job_name,
        run_id=run.run_id,
        partition=partition,
        summary=f"DPA {run.job_name}{day} FAILED: {first}"[:300],
        details=details,
    )


# Every failed run alerts: the nightly job, the freshness job, a partition materialized by hand
# from the UI (Dagster's ad-hoc asset job) and `dpa materialize` runs. The last are executed in
# process and carry no code-location origin, which only monitor_all_code_locations matches; a DPA
# instance holds nothing but this code location, so "all" is exactly what must be watched.
@dg.run_failure_sensor(
    name="freight_failure_alert_sensor",
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Archives every failed run (nightly, freshness, hand-launched) as an alert in the journal.",
)
def freight_failure_alert_sensor(context: dg.RunFailureSensorContext, alert_journal: AlertJournalResource) -> None:
    """Journal the failure, so nothing depends on someone watching the UI at 3 a.m."""
    alert = alert_for_failed_run(context.dagster_run, context.get_step_failure_events())
    append_alert(alert_journal.path(), alert)
    context.log.info(f"alert journaled: {alert.summary}")
