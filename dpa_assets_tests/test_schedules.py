"""The nightly schedule targets the business day that just ended in Africa/Douala."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from dpa_assets.definitions import defs
from dpa_assets.schedules import daily_freight_schedule


@pytest.mark.parametrize(
    ("tick_local", "expected_partition"),
    [
        ("2026-11-26T02:30", "2026-11-25"),
        ("2026-03-01T02:30", "2026-02-28"),
        ("2026-01-02T02:30", "2026-01-01"),
    ],
)
def test_tick_requests_the_previous_local_day(tick_local, expected_partition):
    tick = datetime.fromisoformat(tick_local).replace(tzinfo=ZoneInfo("Africa/Douala"))
    schedule = defs.resolve_schedule_def(daily_freight_schedule.name)
    with dg.build_schedule_context(scheduled_execution_time=tick) as context:
        requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert [request.partition_key for request in requests] == [expected_partition]


def test_schedule_runs_at_half_past_two_local_time():
    schedule = defs.resolve_schedule_def(daily_freight_schedule.name)
    assert schedule.cron_schedule == "30 2 * * *"
    assert schedule.execution_timezone == "Africa/Douala"
    assert schedule.job_name == "daily_freight_job"
