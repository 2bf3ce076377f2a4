"""``dpa alerts``: the latest alerts, each with its full reason, its run link and its delivery state."""

from __future__ import annotations

import dagster as dg

from dpa_assets.alerts.delivery import delivery_state
from dpa_assets.alerts.journal import read_journal
from dpa_assets.resources import AlertJournalResource


def sms_configured() -> bool:
    """Whether the DPA_SMS_* settings turn SMS delivery on."""
    from dpa_assets.deployments import sms_gateway

    # Resolve the DPA_SMS_* variables now, as the sensor would; an unset one means "not configured".
    with dg.build_resources({"sms": sms_gateway()}) as resources:
        return resources.sms.configured()


def print_alerts(journal: AlertJournalResource, last: int) -> int:
    """Print the ``last`` alerts of the journal, oldest first; returns the exit code."""
    path = journal.path()
    state = read_journal(path)
    configured = sms_configured()
    alerts = state.alerts[-last:] if last > 0 else []
    for alert in alerts:
        print(f"{alert.raised_at}  {alert.severity.upper():<7} {alert.summary}")
        for detail in alert.details[1:]:
            print(f"{'':28}{detail}")
        if alert.link:
            print(f"{'':28}run: {alert.link}")
        print(f"{'':28}SMS: {delivery_state(state, alert, configured)}")
    print(f"{len(alerts)} alert(s) shown from {path}")
    return 0
