"""Daily partitions on the operator's local business day (Africa/Douala, UTC+1).

The first day is a deployment setting (``DPA_PARTITION_START``) read once when the code location loads.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from dpa_assets.settings import DEFAULT_PARTITION_START, ENV_PARTITION_START, TIMEZONE

LOCAL_TZ = ZoneInfo(TIMEZONE)


def partition_start_date() -> str:
    """The first partition key, from ``DPA_PARTITION_START`` (YYYY-MM-DD) or the default."""
    value = os.environ.get(ENV_PARTITION_START, DEFAULT_PARTITION_START)
    try:
        date.fromisoformat(value)
    except ValueError as error:
        raise ValueError(f"{ENV_PARTITION_START}={value!r} is not a date in YYYY-MM-DD form") from error
    return value


daily_partitions = dg.DailyPartitionsDefinition(start_date=partition_start_date(), timezone=TIMEZONE)


def partition_bounds(partition_key: str) -> tuple[datetime, datetime]:
    """The local day a partition covers, as timezone-aware [start, end).

    Args:
        partition_key: a day in ``YYYY-MM-DD`` form.

    Returns:
        Midnight Africa/Douala of that day and of the next day.
    """
    day = date.fromisoformat(partition_key)
    start = datetime(day.year, day.month, day.day, tzinfo=LOCAL_TZ)
    return start, start + timedelta(days=1)


def require_known_partition(partition_key: str) -> date:
    """Refuse a key outside the partition set (Dagster does not check keys sent as run tags).

    Args:
        partition_key: the key a run asked for.

    Returns:
        The key as a date.
    """
    if not daily_partitions.has_partition_key(partition_key):
        raise dg.Failure(
            f"Partition {partition_key!r} is not a day of the freight partition set "
            f"(first day {daily_partitions.start.date()}, last closed day "
            f"{daily_partitions.get_last_partition_key()}).",
            allow_retries=False,  # waiting cannot close a future day: the step RetryPolicy must not hold the run
        )
    return date.fromisoformat(partition_key)
