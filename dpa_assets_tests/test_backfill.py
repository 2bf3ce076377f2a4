"""Loading a range of days (``dpa materialize --from D --to D``): each day fails alone, and says why."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg

from dpa_assets.cli import days_between, main
from dpa_assets_tests.support.warehouse import scalar


def test_days_between_is_inclusive_and_ordered():
    assert days_between(date(2026, 2, 27), date(2026, 3, 2)) == [
        date(2026, 2, 27),
        date(2026, 2, 28),
        date(2026, 3, 1),
        date(2026, 3, 2),
    ]
    assert days_between(date(2026, 3, 2), date(2026, 3, 2)) == [date(2026, 3, 2)]


def test_range_loads_every_good_day_and_names_the_bad_one(home: Path, capsys):
    # Landing files for the 17th and the 19th only: the 18th cannot be read.
    assert main(["seed-landing", "--days", "1", "--end", "2026-11-17"]) == 0
    assert main(["seed-landing", "--days", "1", "--end", "2026-11-19"]) == 0
    capsys.readouterr()

    assert main(["materialize", "--from", "2026-11-17", "--to", "2026-11-19"]) == 1

    out = capsys.readouterr().out
    assert "2026-11-17  loaded" in out and "2026-11-19  loaded" in out
    assert "2026-11-18  failed" in out and "no landing file for 2026-11-18" in out
    url = f"sqlite:///{home / 'warehouse.sqlite'}"
    loaded = scalar(url, "SELECT count(DISTINCT partition_date) FROM warehouse_facts")
    assert loaded == 2
    # One transaction per day: one loaded audit row each, none for the bad day.
    assert scalar(url, "SELECT count(*) FROM load_audit WHERE status = 'loaded'") == 2
    # Dagster's record claims exactly the days the warehouse holds.
    records = (
        dg.DagsterInstance.get()
        .fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("warehouse_facts")), limit=10)
        .records
    )
    assert sorted(record.partition_key for record in records) == ["2026-11-17", "2026-11-19"]


def test_range_backwards_is_one_line_and_exit_2(home: Path, capsys):
    assert main(["materialize", "--from", "2026-11-19", "--to", "2026-11-17"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --from 2026-11-19 is after --to 2026-11-17"


def test_range_needs_both_ends(home: Path, capsys):
    assert main(["materialize", "--from", "2026-11-19"]) == 2
    assert "--from and --to go together" in capsys.readouterr().err
