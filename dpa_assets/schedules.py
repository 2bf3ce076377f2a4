"""The nightly schedule: at 02:30 Africa/Douala, load the day that just ended."""

from __future__ import annotations

import dagster as dg

from dpa_assets.jobs import daily_freight_job

daily_freight_schedule = dg.build_schedule_from_partitioned_job(
    daily_freight_job,
    name="daily_freight_schedule",
    hour_of_day=2,
    minute_of_hour=30,
    description="Loads yesterday's freight movements (Africa/Douala) every night at 02:30.",
)
