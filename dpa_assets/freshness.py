"""When is a day late? Yesterday's freight must be in the warehouse by 06:00 Africa/Douala."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from dpa_assets.partitions import LOCAL_TZ

DEADLINE = time(6, 0)  # management reports read the warehouse from 06:00 local time


@dataclass(frozen=True)
class FreshnessVerdict:
    expected_day: date
    deadline: datetime
    loaded_at: datetime | None

    @property
    def on_time(self) -> bool:
        return self.loaded_at is not None and self.loaded_at <= self.deadline

    @property
    def minutes_late(self) -> float:
        """How late the load was (or, when still missing, how long past the deadline it is)."""
        return max(0.0, ((self.loaded_at or datetime.now(LOCAL_TZ)) - self.deadline).total_seconds() / 60)


def expected_day(now: datetime) -> tuple[date, datetime]:
    """The latest day whose deadline has passed at ``now``, and that deadline.

    Args:
        now: a timezone-aware instant.

    Returns:
        The day that must be loaded, and the local 06:00 by which it had to be.
    """
    local = now.astimezone(LOCAL_TZ)
    deadline = datetime.combine(local.date(), DEADLINE, tzinfo=LOCAL_TZ)
    if local < deadline:
        deadline -= timedelta(days=1)
    return deadline.date() - timedelta(days=1), deadline


def judge_freshness(now: datetime, loaded_at_by_day: dict[date, datetime]) -> FreshnessVerdict:
    """Compare the first successful load of the expected day with its deadline.

    Args:
        now: when the check runs (timezone-aware).
        loaded_at_by_day: for each loaded day, when it was first committed (timezone-aware).

    Returns:
        The verdict for the expected day.
    """
    day, deadline = expected_day(now)
    return FreshnessVerdict(expected_day=day, deadline=deadline, loaded_at=loaded_at_by_day.get(day))
