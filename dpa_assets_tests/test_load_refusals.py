"""The 30% rule is the warehouse's rule: whatever launches a load of a blocked day, the commit refuses it.

A blocking check gates only its own run; materializing ``warehouse_facts`` alone (UI selection,
``materialize(selection=...)``, the ``dagster`` CLI) must still find the day refused by the ledger.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from dpa_assets import assets
from dpa_assets.sources.generator import generate_day, write_landing_file
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import LoadRefused, commit_partition
from dpa_assets.warehouse.protection import ensure_schema
from dpa_assets_tests.support.loads import commit_validated, prepared_load
from dpa_assets_tests.support.warehouse import rows, snapshot
from dpa_assets_tests.test_assets import ALL_ASSETS

REPO = Path(__file__).resolve().parents[1]


def _write_day(landing_dir: Path, key: str, bad_fraction: float, seed: int = 3) -> None:
    write_landing_file(
        landing_dir, generate_day(date.fromisoformat(key), rows=100, seed=seed, bad_fraction=bad_fraction)
    )


def _materialize(resources: dict, key: str, instance: dg.DagsterInstance, selection=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ALL_ASSETS,
        resources=resources,
        partition_key=key,
        instance=instance,
        selection=selection,
        raise_on_error=False,
    )


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(
        event.step_failure_data.error.message if event.step_failure_data.error else ""
        for event in result.all_events
        if event.is_step_failure
    )


def _block_day_after_a_good_load(resources, landing_dir, key, instance) -> None:
    _write_day(landing_dir, key, bad_fraction=0.02)
    assert _materialize(resources, key, instance).success
    _write_day(landing_dir, key, bad_fraction=0.5, seed=4)
    assert not _materialize(resources, key, instance).success  # the rejection_rate check blocks it


def test_warehouse_facts_alone_refuses_a_blocked_day(resources, warehouse_url, landing_dir, partition_key, instance):
    _block_day_after_a_good_load(resources, landing_dir, partition_key, instance)
    before = snapshot(warehouse_url)

    result = _materialize(resources, partition_key, instance, selection=[assets.warehouse_facts])

    assert not result.success
    message = _failure_text(result)
    assert f"{partition_key} was blocked by the 30% rule in run" in message
    assert "re-run validation" in message
    after = snapshot(warehouse_url)
    assert after["warehouse_facts"] == before["warehouse_facts"]
    assert after["freight_rejects"] == before["freight_rejects"]
    latest = rows(warehouse_url, "SELECT status, detail FROM load_audit ORDER BY id DESC")[0]
    assert latest["status"] == "refused" and "blocked" in latest["detail"]


def test_blocked_audit_row_says_why(resources, warehouse_url, landing_dir, partition_key, instance):
    _block_day_after_a_good_load(resources, landing_dir, partition_key, instance)
    blocked = rows(warehouse_url, "SELECT detail FROM load_audit WHERE status = 'blocked'")[0]
    assert "50.0%" in blocked["detail"] and "30%" in blocked["detail"]
    assert "top reasons" in blocked["detail"]


def test_commit_refuses_a_load_without_a_recorded_validation(warehouse_url):
    engine = create_warehouse_engine(warehouse_url)
    ensure_schema(engine)
    with pytest.raises(LoadRefused, match="no validation"):
        commit_partition(engine, prepared_load("2026-11-20", "run-1", seed=1))
    assert snapshot(warehouse_url)["warehouse_facts"] == []
    assert rows(warehouse_url, "SELECT status FROM load_audit") == [{"status": "refused"}]
    engine.dispose()


def test_commit_accepts_a_recorded_validation(warehouse_url):
    engine = create_warehouse_engine(warehouse_url)
    ensure_schema(engine)
    load = prepared_load("2026-11-20", "run-1", seed=1)
    assert commit_validated(engine, load)["rows_loaded"] == len(load.facts)
    engine.dispose()


def test_warehouse_facts_alone_without_stored_validation_names_the_day(resources, partition_key, instance):
    result = _materialize(resources, partition_key, instance, selection=[assets.warehouse_facts])

    assert not result.success
    message = _failure_text(result)
    assert f"validated_freight for {partition_key} is not stored" in message
    assert "FileNotFoundError" not in message and "dpa materialize --date" in message


def test_dagster_cli_materializing_warehouse_facts_alone_refuses_blocked_day(
    resources, sqlite_url, landing_dir, partition_key, tmp_path
):
    """The UI's asset job, launched as the ``dagster`` CLI launches it, against the real code location."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DPA_WAREHOUSE_URL": sqlite_url,
        "DPA_LANDING_DIR": str(landing_dir),
        "DPA_ARCHIVE_DIR": str(tmp_path / "archive"),
    }
    dagster = str(Path(sys.executable).with_name("dagster"))

    def dagster_materialize(select: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [dagster, "asset", "materialize", "-m", "dpa_assets.definitions", "--select", select]
            + ["--partition", partition_key],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    _write_day(landing_dir, partition_key, bad_fraction=0.5)
    assert dagster_materialize("*").returncode != 0  # blocked by the check in the same run
    before = snapshot(sqlite_url)

    alone = dagster_materialize("warehouse_facts")

    assert alone.returncode != 0
    assert "was blocked by the 30% rule" in alone.stdout + alone.stderr
    assert snapshot(sqlite_url)["warehouse_facts"] == before["warehouse_facts"] == []
