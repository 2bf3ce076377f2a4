"""The alert journal: one JSON line per alert, appended and flushed to disk before anything else.

The continuity plan asks that failure alerts are archived so "the system survives until the
on-call arrives": the journal is that archive, readable with any text tool (`dpa alerts`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Alert:
    """What the on-call needs to act: what failed, for which day, why, and where to look."""

    raised_at: str  # ISO 8601, UTC
    severity: str  # "error" or "warning"
    job: str
    run_id: str
    partition: str | None
    summary: str  # one line, fit for an SMS
    details: list[str]  # one line per failed step

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def append_alert(journal: Path, alert: Alert) -> None:
    """Append one alert and force it to disk; the journal is never rewritten.

    Args:
        journal: the journal file (its folder is created if missing).
        alert: what to record.
    """
    journal.parent.mkdir(parents=True, exist_ok=True)
    with journal.open("a", encoding="utf-8") as handle:
        handle.write(alert.to_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_alerts(journal: Path) -> list[Alert]:
    """Every alert in the journal, oldest first; a torn last line (crash mid-write) is skipped."""
    if not journal.exists():
        return []
    alerts = []
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            alerts.append(Alert(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return alerts
