"""The recovery sensors: fail zombie runs, and request the recent days the warehouse still lacks.

Both run by default (a fresh instance starts them with the daemon); turn one off with
``dagster sensor stop <name>`` or its toggle in the UI.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from dpa_assets.jobs import daily_freight_job
from dpa_assets.recovery.catchup import (
    NOT_DELIVERED,
    OK,
    RELOAD,
    DayState,
    days_to_request,
    due_days,
    read_day_states,
    runs_by_day,
)
from dpa_assets.recovery.policy import RecoveryPolicyResource
from dpa_assets.recovery.zombies import detect_zombies, fail_zombies
from dpa_assets.resources import AlertJournalResource, FreightSource, WarehouseResource


@dg.sensor(
    name="zombie_run_reconciler_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Fails runs whose worker is gone or that never end (by run id, killing nothing) and alerts.",
)
def zombie_run_reconciler_sensor(
    context: dg.SensorEvaluationContext, recovery_policy: RecoveryPolicyResource, alert_journal: AlertJournalResource
) -> dg.SkipReason:
    """Free the day a dead run holds, so the queue moves and the day can be re-loaded."""
    failed = fail_zombies(context.instance, detect_zombies(context.instance, recovery_policy), alert_journal.path())
    for zombie in failed:
        context.log.warning(f"run {zombie.run_id} ({zombie.partition or 'no day'}) marked failed: {zombie.reason}")
    return dg.SkipReason(f"{len(failed)} zombie run(s) marked failed" if failed else "no zombie runs")


@dg.sensor(
    name="freight_catch_up_sensor",
    job=daily_freight_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=300,
    description="Requests the recent days the warehouse ledger lacks (missing, failed, refused), a few per tick.",
)
def freight_catch_up_sensor(
    context: dg.SensorEvaluationContext,
    recovery_policy: RecoveryPolicyResource,
    warehouse: WarehouseResource,
    freight_source: FreightSource,
) -> dg.SensorResult:
    """Load the days a night missed without waiting for a person."""
    now = datetime.now(UTC)
    days = due_days(recovery_policy.catch_up_days, now, recovery_policy.catch_up_after_hours)
    # A day whose file is not there yet would fail each retry: a red run, its checks read
    # "Execution failed" in the UI, one more SMS. It waits; the night's failure already alerted.
    states = [
        DayState(state.day, NOT_DELIVERED, state.detail)
        if state.state in RELOAD and freight_source.delivered(state.day.isoformat()) is False
        else state
        for state in read_day_states(warehouse.existing_engine(), days)  # never sets a warehouse up
    ]
    in_flight, last_attempt = runs_by_day(context.instance, days)
    chosen = days_to_request(
        states,
        in_flight,
        last_attempt,
        now,
        timedelta(minutes=recovery_policy.catch_up_retry_minutes),
        recovery_policy.catch_up_max_runs_per_tick,
    )
    state_of = {state.day: state.state for state in states}
    requests = [
        dg.RunRequest(
            run_key=f"catch-up-{day}-{now:%Y%m%dT%H%M}",
            partition_key=day.isoformat(),
            tags={"dpa/catch_up": state_of[day]},
        )
        for day in chosen
    ]
    if requests:
        return dg.SensorResult(run_requests=requests)
    held = [f"{state.day} {state.state}" for state in states if state.state != OK]
    return dg.SensorResult(skip_reason=f"nothing to request ({', '.join(held) or 'all loaded'})")
