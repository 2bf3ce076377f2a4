"""Sensors: every failure becomes an alert in the journal first, then an SMS.

A plain sensor with its own cursor (the last update time of the finished runs it has read)
rather than a ``run_failure_sensor``: that one starts from "now" on its first tick and so never
sees failures from before the daemon ran; it also misses failed checks in successful runs.
Without a cursor (first tick, or reset) this one starts from the journal's last handled run, and
with an empty journal too (first deploy) from ``first_tick_lookback_hours`` ago: an old instance's
failures are not sent as a burst of SMS.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import dagster as dg

from dpa_assets.alerts.delivery import deliver_pending
from dpa_assets.alerts.journal import append_alert, read_alerts
from dpa_assets.alerts.sms import SmsGatewayResource
from dpa_assets.alerts.watch import alerts_for_run, finished_runs_since
from dpa_assets.resources import AlertJournalResource

RUNS_PER_TICK = 100


def parse_cursor(cursor: str | None) -> float | None:
    """The update time of the last run read, or None (no cursor, or one from an older sensor)."""
    try:
        return float(json.loads(cursor or "")["runs_updated_after"])
    except (ValueError, KeyError, TypeError):
        return None


def last_handled_run(alerts_journal: AlertJournalResource) -> float | None:
    """When the latest failure already in the journal happened: where a cursor-less tick resumes."""
    times = [
        datetime.fromisoformat(a.occurred_at).timestamp() for a in read_alerts(alerts_journal.path()) if a.occurred_at
    ]
    return max(times, default=None)


@dg.sensor(
    name="freight_failure_alert_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Journals every failed run, blocked day and failed freshness check, then sends it by SMS.",
)
def freight_failure_alert_sensor(
    context: dg.SensorEvaluationContext, alert_journal: AlertJournalResource, sms_gateway: SmsGatewayResource
) -> dg.SkipReason:
    """Journal first (nothing depends on someone watching the UI at 3 a.m.), then deliver."""
    journal = alert_journal.path()
    after = parse_cursor(context.cursor)
    if after is None:
        after = last_handled_run(alert_journal)
    if after is None:
        after = time.time() - alert_journal.first_tick_lookback_hours * 3600
        context.log.info(
            f"first tick with an empty journal: failures finished in the last "
            f"{alert_journal.first_tick_lookback_hours:g} h are alerted, older ones are not (see the UI's Runs)"
        )
    new = 0
    for record in finished_runs_since(context.instance, after, RUNS_PER_TICK):
        for alert in alerts_for_run(context.instance, record, alert_journal.run_link):
            if append_alert(journal, alert):
                new += 1
                context.log.info(f"alert journaled: {alert.summary}")
        after = max(after or 0.0, record.update_timestamp.timestamp())
    if after is not None:
        # Saved only when the tick ends: a crash re-reads these runs, and the journal's keys dedupe.
        context.update_cursor(json.dumps({"runs_updated_after": after}))
    report = deliver_pending(journal, sms_gateway, context.log)
    return dg.SkipReason(f"{new} new alert(s); {report}")
