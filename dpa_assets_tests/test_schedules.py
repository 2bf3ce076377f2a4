"""The nightly schedule targets the business day that just ended in Africa/Douala."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from dpa_assets.definitions import defs
from dpa_assets.schedules import daily_freight_schedule, freshness_check_schedule


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


def test_freshness_tick_at_five_past_six_requests_the_check_run():
    tick = datetime(2026, 11, 26, 6, 5, tzinfo=ZoneInfo("Africa/Douala"))
    schedule = defs.resolve_schedule_def(freshness_check_schedule.name)
    with dg.build_schedule_context(scheduled_execution_time=tick) as context:
        requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert len(requests) == 1 and schedule.job_name == "freshness_check_job"
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("5 6 * * *", "Africa/Douala")


@pytest.mark.parametrize("name", [daily_freight_schedule.name, freshness_check_schedule.name])
def test_schedules_run_by_default(name):
    assert defs.resolve_schedule_def(name).default_status == dg.DefaultScheduleStatus.RUNNING


def test_a_fresh_dagster_home_lists_both_schedules_as_running(tmp_path):
    """What an operator sees on a new deployment: `dagster schedule list` against the code location."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    env.pop("DPA_DEPLOYMENT", None)
    listed = subprocess.run(
        [sys.executable, "-m", "dagster", "schedule", "list", "-m", "dpa_assets.definitions"],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
        check=True,
    ).stdout
    for name in (daily_freight_schedule.name, freshness_check_schedule.name):
        [line] = [line for line in listed.splitlines() if name in line]
        assert "RUNNING" in line, listed
