"""Deliver journaled alerts by SMS, each once; a gateway that is down leaves them for the next tick.

The journal is the source of truth: an alert is undelivered until a ``{"delivered": key}`` line
follows it. Alerts written by other code (``append_alert`` from the recovery helpers) are
delivered here too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dpa_assets.alerts.journal import (
    BLOCKED_DAY,
    FRESHNESS,
    ZOMBIE_RUN,
    Alert,
    JournalState,
    append_delivery,
    read_journal,
)
from dpa_assets.alerts.messages import sms_text
from dpa_assets.alerts.sms import SmsGatewayResource

NOT_CONFIGURED = "not sent: SMS not configured"
_WHAT = {ZOMBIE_RUN: "run DIED", BLOCKED_DAY: "BLOCKED", FRESHNESS: "freshness FAILED"}


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int
    waiting: int  # undelivered and not tried this tick (budget spent, or SMS not configured)

    def __str__(self) -> str:
        return f"{self.sent} SMS sent, {self.failed} failed, {self.waiting} waiting"


def sms_message(alert: Alert) -> str:
    """The alert's SMS: its own text, or one built from its summary (alerts raised without one)."""
    if alert.message:
        return alert.message
    reason = alert.summary.split(": ", 1)[1] if ": " in alert.summary else alert.summary
    return sms_text(alert.partition, _WHAT.get(alert.kind, "FAILED"), reason, "See dpa alerts")


def deliver_pending(journal: Path, gateway: SmsGatewayResource, log: logging.Logger) -> DeliveryReport:
    """Send every undelivered alert, oldest first, within the gateway's tick budget.

    Args:
        journal: the alert journal.
        gateway: the SMS gateway; when not configured nothing is sent and nothing is written.
        log: where each attempt is reported (never the API key).

    Returns:
        Counts of this tick's deliveries.
    """
    state = read_journal(journal)
    pending = state.undelivered()
    if not gateway.configured():
        return DeliveryReport(0, 0, len(pending))
    deadline = time.monotonic() + gateway.tick_budget_seconds
    sent = failed = 0
    for alert in pending:
        if time.monotonic() >= deadline:
            break
        outcome = gateway.send(sms_message(alert), deadline)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if outcome.delivered:
            sent += 1
            append_delivery(
                journal,
                {"delivered": alert.key, "at": now, "attempts": outcome.attempts, "recipients": outcome.recipients},
            )
            log.info(f"alert {alert.key} sent by SMS")
            continue
        failed += 1
        log.warning(f"alert {alert.key} not delivered, retried next tick: {outcome.reason}")
        if state.last_failure.get(alert.key, {}).get("reason") != outcome.reason:
            append_delivery(journal, {"delivery_failed": alert.key, "at": now, "reason": outcome.reason})
    return DeliveryReport(sent, failed, len(pending) - sent - failed)


def delivery_state(state: JournalState, alert: Alert, sms_configured: bool) -> str:
    """How far an alert got, in words for ``dpa alerts``."""
    if alert.sms_covered_by:
        return "no SMS of its own: the range run's SMS covers it"
    delivered = state.delivered.get(alert.key)
    if delivered is not None:
        return f"sent {delivered.get('at', '')} to {len(delivered.get('recipients', []))} number(s)"
    if not sms_configured:
        return NOT_CONFIGURED
    failure = state.last_failure.get(alert.key)
    if failure is not None:
        return f"undelivered (retried every tick): {failure.get('reason', '')}"
    return "undelivered: waiting for the next sensor tick"
