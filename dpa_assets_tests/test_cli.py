"""The ``dpa`` command: exit codes and what the operator reads, on a temp Dagster home."""

from __future__ import annotations

from pathlib import Path

from dpa_assets.cli import main
from dpa_assets_tests.support.warehouse import scalar


def test_seed_then_materialize_loads_each_day(home: Path, capsys):
    assert main(["seed-landing", "--days", "2", "--end", "2026-11-20"]) == 0
    assert sorted(path.name for path in (home / "landing").iterdir()) == [
        "freight_2026-11-19.csv",
        "freight_2026-11-20.csv",
    ]
    capsys.readouterr()

    assert main(["materialize", "--date", "2026-11-19", "--date", "2026-11-20"]) == 0

    out = capsys.readouterr().out
    assert "2026-11-19  loaded" in out and "2026-11-20  loaded" in out
    assert f"warehouse: sqlite:///{home / 'warehouse.sqlite'}" in out
    loaded = scalar(
        f"sqlite:///{home / 'warehouse.sqlite'}", "SELECT count(DISTINCT partition_date) FROM warehouse_facts"
    )
    assert loaded == 2


def test_materialize_without_landing_file_fails_with_exit_code_1(home: Path, capsys):
    assert main(["materialize", "--date", "2026-11-10"]) == 1
    out = capsys.readouterr().out
    assert "no landing file for 2026-11-10" in out
    assert "2026-11-10  failed" in out and "not run" not in out


def test_list_partitions_and_check_defs(home: Path, capsys):
    assert main(["list-partitions", "--last", "2"]) == 0
    assert len(capsys.readouterr().out.split()) == 2
    assert main(["check-defs"]) == 0
    assert "raw_freight" in capsys.readouterr().out


def test_setup_warehouse_is_idempotent(home: Path, capsys):
    assert main(["setup-warehouse"]) == 0
    assert main(["setup-warehouse"]) == 0
    assert "protection in place" in capsys.readouterr().out


def test_no_step_retry_turns_off_the_outage_retry_for_this_run(home: Path, capsys):
    from dpa_assets.cli import run_config_for

    assert run_config_for(verbose=False, step_retry=False)["resources"] == {
        "freight_source": {"config": {"retry_step_on_outage": False}}
    }
    assert "resources" not in run_config_for(verbose=True, step_retry=True)
    assert main(["seed-landing", "--days", "1", "--end", "2026-11-20"]) == 0
    assert main(["materialize", "--date", "2026-11-20", "--no-step-retry"]) == 0
    assert "2026-11-20  loaded" in capsys.readouterr().out
