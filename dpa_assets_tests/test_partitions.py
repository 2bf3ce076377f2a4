"""Partitions are local days in Africa/Douala, starting at the configured date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import dagster as dg
import pytest

from dpa_assets.partitions import (
    daily_partitions,
    partition_bounds,
    partition_start_date,
    require_known_partition,
)


def test_partitions_start_on_the_default_first_day():
    assert daily_partitions.get_first_partition_key() == "2026-01-01"
    assert daily_partitions.timezone == "Africa/Douala"


def test_partition_window_is_the_local_day_in_utc_plus_one():
    start, end = partition_bounds("2026-11-25")
    assert start.astimezone(UTC) == datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    assert end - start == timedelta(days=1)


def test_last_partition_is_the_last_closed_local_day():
    now_local = datetime.now(timezone(timedelta(hours=1)))
    expected = (now_local - timedelta(days=1)).date().isoformat()
    assert daily_partitions.get_last_partition_key() == expected


def test_start_date_is_configurable_and_checked(monkeypatch):
    monkeypatch.setenv("DPA_PARTITION_START", "2025-06-01")
    assert partition_start_date() == "2025-06-01"
    monkeypatch.setenv("DPA_PARTITION_START", "June 1st")
    with pytest.raises(ValueError, match="DPA_PARTITION_START"):
        partition_start_date()


@pytest.mark.parametrize("key", ["2099-01-01", "2025-12-31", "not-a-day", "2026-13-01"])
def test_keys_outside_the_partition_set_are_refused(key):
    with pytest.raises(dg.Failure, match="not a day of the freight partition set"):
        require_known_partition(key)


def test_a_day_outside_the_set_is_refused_without_step_retries(tmp_path):
    """`dagster job execute -j daily_freight_job --tags '{"dagster/partition": "2027-01-01"}'`: refused once.

    Retrying cannot make a future day closed; the nightly RetryPolicy would hold the run for minutes.
    """
    from dpa_assets.definitions import defs

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = defs.resolve_job_def("daily_freight_job").execute_in_process(
            instance=instance, tags={"dagster/partition": "2099-01-01"}, raise_on_error=False
        )

    assert not result.success
    retries = [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries == []
    failures = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    assert failures and "not a day of the freight partition set" in str(failures[0].event_specific_data.error)
