"""The warehouse IO manager: loads a day's facts back, refuses days outside the partition set."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pandas as pd
import pytest

from dpa_assets.io_manager import WarehouseIOManager
from dpa_assets.partitions import daily_partitions
from dpa_assets.resources import WarehouseResource
from dpa_assets_tests.support.loads import commit_validated, prepared_load
from dpa_assets_tests.support.warehouse import snapshot

DAY = "2026-11-20"
FACTS_KEY = dg.AssetKey("warehouse_facts")


@pytest.fixture
def io_manager(warehouse_url) -> WarehouseIOManager:
    return WarehouseIOManager(warehouse=WarehouseResource(url=warehouse_url))


def test_load_input_returns_the_days_facts_as_committed(io_manager):
    engine = io_manager.warehouse.get_engine()
    first = prepared_load(DAY, "run-1", seed=1)
    commit_validated(engine, first)
    commit_validated(engine, prepared_load("2026-11-21", "run-2", seed=2))
    context = dg.build_input_context(asset_key=FACTS_KEY, partition_key=DAY, asset_partitions_def=daily_partitions)

    loaded = io_manager.load_input(context)

    assert len(loaded) == len(first.facts)
    assert set(loaded["partition_date"]) == {date.fromisoformat(DAY)}
    assert str(loaded["departure_time"].dt.tz) == "UTC"
    expected = first.facts.sort_values("shipment_id").reset_index(drop=True)
    pd.testing.assert_series_equal(loaded["revenue_xaf"], expected["revenue_xaf"], check_dtype=False)


def test_handle_output_refuses_a_day_outside_the_partition_set(io_manager, warehouse_url):
    load = prepared_load("2099-01-01", "run-1", seed=1)
    context = dg.build_output_context(
        asset_key=FACTS_KEY, partition_key="2099-01-01", asset_partitions_def=daily_partitions
    )
    with pytest.raises(dg.Failure, match="not a day of the freight partition set"):
        io_manager.handle_output(context, load)
    assert snapshot(warehouse_url).get("warehouse_facts", []) == []


def test_handle_output_refuses_output_of_another_day(io_manager):
    context = dg.build_output_context(asset_key=FACTS_KEY, partition_key=DAY, asset_partitions_def=daily_partitions)
    with pytest.raises(dg.Failure, match="handed over for partition"):
        io_manager.handle_output(context, prepared_load("2026-11-21", "run-1", seed=1))
