"""Schedules: load the day that just ended at 02:30, check it arrived at 06:05 (Africa/Douala).

Both run by default on every deployment (Dagster starts schedules STOPPED otherwise, and a fresh
deployment would never load a night). Stopping one is a deliberate act that the instance remembers.
"""

from __future__ import annotations

import dagster as dg

from dpa_assets.jobs import daily_freight_job, freshness_check_job
from dpa_assets.settings import TIMEZONE

daily_freight_schedule = dg.build_schedule_from_partitioned_job(
    daily_freight_job,
    name="daily_freight_schedule",
    hour_of_day=2,
    minute_of_hour=30,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Loads yesterday's freight movements (Africa/Douala) every night at 02:30.",
)

freshness_check_schedule = dg.ScheduleDefinition(
    name="freshness_check_schedule",
    job=freshness_check_job,
    cron_schedule="5 6 * * *",
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Checks at 06:05 that yesterday's freight was loaded by 06:00.",
)
