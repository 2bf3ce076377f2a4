"""The alert journal: one JSON line per alert, appended and flushed to disk before anything else.

The continuity plan asks that failure alerts are archived so "the system survives until the
on-call arrives": the journal is that archive, readable with any text tool (`dpa alerts`).
It is append-only. Besides alert lines it holds delivery lines: ``{"delivered": key, ...}`` once
an alert reached the SMS gateway, ``{"delivery_failed": key, ...}`` when an attempt did not (only
when the reason changes, so an outage does not grow the file every tick).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Alert kinds. A failed run and a zombie run (a run marked failed after its process died) are one
# event for the on-call: they share a key, so whichever is journaled first is the only alert.
FAILED_RUN = "failed_run"
ZOMBIE_RUN = "zombie_run"
BLOCKED_DAY = "blocked_day"
FRESHNESS = "freshness"
_RUN_KINDS = (FAILED_RUN, ZOMBIE_RUN)


@dataclass(frozen=True)
class Alert:
    """What the on-call needs to act: what failed, for which day, why, and where to look."""

    raised_at: str  # ISO 8601, UTC: when the alert was journaled
    severity: str  # "error" or "warning"
    job: str
    run_id: str
    partition: str | None
    summary: str  # one line: what failed and why
    details: list[str]  # the full reason, one line each (failed steps, rate, threshold, top reasons)
    kind: str = FAILED_RUN
    occurred_at: str | None = None  # ISO 8601, UTC: when the failure happened (None: unknown)
    link: str | None = None  # the run in the Dagster UI
    message: str = ""  # the SMS text (<= 160 GSM-7 characters); derived from summary when empty
    sms_covered_by: str | None = None  # key of the alert whose SMS says this one too: none of its own

    @property
    def key(self) -> str:
        """Deduplication key: the same failure seen twice (two ticks, two watchers) is one alert."""
        family = "run" if self.kind in _RUN_KINDS else self.kind
        return f"{family}:{self.run_id}:{self.partition or '-'}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass
class JournalState:
    """The journal read back: alerts (first of each key) and what became of their delivery."""

    alerts: list[Alert] = field(default_factory=list)
    delivered: dict[str, dict] = field(default_factory=dict)  # key -> its delivered line
    last_failure: dict[str, dict] = field(default_factory=dict)  # key -> its latest delivery_failed line

    def keys(self) -> set[str]:
        return {alert.key for alert in self.alerts}

    def undelivered(self) -> list[Alert]:
        return [alert for alert in self.alerts if alert.key not in self.delivered and not alert.sms_covered_by]


@contextmanager
def _locked(journal: Path) -> Iterator:
    # The sensor (daemon) and other writers (dpa recover, another tick) may append at once:
    # an exclusive lock makes "is this key already there?" and the append one step.
    journal.parent.mkdir(parents=True, exist_ok=True)
    with journal.open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_line(handle, record: dict) -> None:
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def append_alert(journal: Path, alert: Alert) -> bool:
    """Append one alert and force it to disk, unless an alert with its key is already there.

    Args:
        journal: the journal file (its folder is created if missing).
        alert: what to record.

    Returns:
        True when appended, False when the journal already held this alert (same key).
    """
    with _locked(journal) as handle:
        if alert.key in read_journal(journal).keys():
            return False
        _write_line(handle, asdict(alert))
        return True


def append_delivery(journal: Path, record: dict) -> None:
    """Append a delivery line (``{"delivered": key, ...}`` or ``{"delivery_failed": key, ...}``)."""
    with _locked(journal) as handle:
        _write_line(handle, record)


def read_journal(journal: Path) -> JournalState:
    """Every line of the journal, oldest first; a torn line (crash mid-write) is skipped."""
    state = JournalState()
    if not journal.exists():
        return state
    seen: set[str] = set()
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if "delivered" in record:
            state.delivered.setdefault(record["delivered"], record)
        elif "delivery_failed" in record:
            state.last_failure[record["delivery_failed"]] = record
        else:
            try:
                alert = Alert(**record)
            except TypeError:
                continue
            if alert.key not in seen:
                seen.add(alert.key)
                state.alerts.append(alert)
    return state


def read_alerts(journal: Path) -> list[Alert]:
    """Every alert in the journal, oldest first (one per key)."""
    return read_journal(journal).alerts
