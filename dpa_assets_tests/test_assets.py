"""The three assets through Dagster with a real instance, on SQLite and on PostgreSQL."""

from __future__ import annotations

import gc
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from dpa_assets import assets, checks
from dpa_assets.sources.generator import GeneratedDay, generate_day, write_landing_file
from dpa_assets.transforms import ValidationOutcome
from dpa_assets.warehouse.ledger import PartitionLoad
from dpa_assets_tests.conftest import make_resources
from dpa_assets_tests.support.warehouse import rows, scalar, snapshot

ALL_ASSETS = [
    assets.raw_freight,
    assets.validated_freight,
    assets.warehouse_facts,
    checks.rejection_rate,
    checks.facts_reconcile_with_audit,
    checks.shipment_ids_unique_across_facts,
]


def materialize(resources: dict, partition_key: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ALL_ASSETS, resources=resources, partition_key=partition_key, instance=instance, raise_on_error=False
    )


def test_materialize_loads_valid_rows_and_audits(
    resources, warehouse_url, partition_key, generated_day: GeneratedDay, instance
):
    result = materialize(resources, partition_key, instance)

    assert result.success
    received = len(generated_day.records)
    loaded = scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts WHERE partition_date = :d", d=partition_key)
    quarantined = scalar(
        warehouse_url, "SELECT count(*) FROM freight_rejects WHERE partition_date = :d", d=partition_key
    )
    assert quarantined == generated_day.bad_count > 0
    assert loaded == received - generated_day.bad_count
    audit = rows(warehouse_url, "SELECT * FROM load_audit WHERE status = 'loaded'")
    assert len(audit) == 1
    assert (audit[0]["rows_received"], audit[0]["rows_loaded"], audit[0]["rows_rejected"]) == (
        received,
        loaded,
        generated_day.bad_count,
    )
    assert audit[0]["run_id"] == result.run_id
    materialization = result.asset_materializations_for_node("warehouse_facts")[0]
    assert materialization.metadata["row_count"].value == loaded
    assert materialization.metadata["content_checksum"].value == audit[0]["content_checksum"]


def _day_values_in_memory() -> list[object]:
    gc.collect()
    return [
        value
        for value in gc.get_objects()
        if isinstance(value, (ValidationOutcome, PartitionLoad))
        or (isinstance(value, pd.DataFrame) and "shipment_id" in value.columns)
    ]


def test_a_finished_run_holds_none_of_the_days_values(resources, partition_key, generated_day, instance):
    """``dpa materialize`` runs days with execute_in_process, which keeps every output for
    ``output_for_node``: each stored day (raw, validated, facts) would stay in memory for the whole run."""
    assert _day_values_in_memory() == []

    result = materialize(resources, partition_key, instance)

    assert result.success
    assert _day_values_in_memory() == []


def test_rematerializing_a_partition_leaves_no_duplicates(
    resources, warehouse_url, partition_key, generated_day, instance
):
    assert materialize(resources, partition_key, instance).success
    first = snapshot(warehouse_url)["warehouse_facts"]
    assert materialize(resources, partition_key, instance).success

    facts = snapshot(warehouse_url)["warehouse_facts"]
    assert len(facts) == len(first)
    distinct = scalar(warehouse_url, "SELECT count(DISTINCT shipment_id) FROM warehouse_facts")
    assert distinct == len(facts)
    assert scalar(warehouse_url, "SELECT count(*) FROM freight_rejects") == generated_day.bad_count
    assert scalar(warehouse_url, "SELECT count(*) FROM load_audit WHERE status = 'loaded'") == 2


def test_other_partitions_are_untouched(resources, warehouse_url, landing_dir, instance):
    write_landing_file(landing_dir, generate_day(date(2026, 11, 18), seed=1))
    write_landing_file(landing_dir, generate_day(date(2026, 11, 19), seed=1))
    assert materialize(resources, "2026-11-18", instance).success
    before = scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts WHERE partition_date = '2026-11-18'")

    assert materialize(resources, "2026-11-19", instance).success
    assert materialize(resources, "2026-11-19", instance).success

    after = scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts WHERE partition_date = '2026-11-18'")
    assert after == before > 0


def _write_mostly_bad_day(landing_dir: Path, partition_key: str, bad_fraction: float) -> GeneratedDay:
    generated = generate_day(date.fromisoformat(partition_key), rows=100, seed=3, bad_fraction=bad_fraction)
    write_landing_file(landing_dir, generated)
    return generated


def test_day_over_threshold_is_blocked_and_warehouse_unchanged(
    resources, warehouse_url, landing_dir, partition_key, instance
):
    _write_mostly_bad_day(landing_dir, partition_key, bad_fraction=0.02)
    assert materialize(resources, partition_key, instance).success
    facts_before = snapshot(warehouse_url)["warehouse_facts"]
    bad_day = _write_mostly_bad_day(landing_dir, partition_key, bad_fraction=0.40)

    result = materialize(resources, partition_key, instance)

    assert not result.success
    evaluation = result.get_asset_check_evaluations()[0]
    assert evaluation.check_name == "rejection_rate" and not evaluation.passed
    assert evaluation.metadata["rows_rejected"].value == bad_day.bad_count
    assert not result.asset_materializations_for_node("warehouse_facts")
    assert snapshot(warehouse_url)["warehouse_facts"] == facts_before
    latest = rows(warehouse_url, "SELECT status, rows_rejected FROM load_audit ORDER BY id DESC")[0]
    assert latest == {"status": "blocked", "rows_rejected": bad_day.bad_count}


def test_threshold_comes_from_config(warehouse_url, landing_dir, partition_key, tmp_path, instance):
    bad_day = _write_mostly_bad_day(landing_dir, partition_key, bad_fraction=0.10)
    strict = make_resources(landing_dir, warehouse_url, tmp_path, max_rejection_rate=0.05)

    result = materialize(strict, partition_key, instance)

    assert bad_day.bad_count == 10
    assert not result.success
    assert scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts") == 0


def _inject_insert_fault(url: str, shipment_id: str) -> None:
    """A real database fault in the middle of the bulk insert: a trigger that aborts one row."""
    from dpa_assets.warehouse.engine import create_warehouse_engine

    engine = create_warehouse_engine(url)
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER inject_fault BEFORE INSERT ON warehouse_facts "
                f"WHEN NEW.shipment_id = '{shipment_id}' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.shipment_id = '{shipment_id}' THEN RAISE EXCEPTION 'injected fault'; END IF; "
                "RETURN NEW; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER inject_fault BEFORE INSERT ON warehouse_facts "
                "FOR EACH ROW EXECUTE FUNCTION inject_fault()"
            )
    engine.dispose()


def test_fault_in_the_middle_of_the_load_leaves_warehouse_as_it_was(
    resources, warehouse_url, landing_dir, partition_key, generated_day, instance
):
    assert materialize(resources, partition_key, instance).success
    new_version = generate_day(date.fromisoformat(partition_key), seed=99)
    write_landing_file(landing_dir, new_version)
    middle = sorted(record["shipment_id"] for record in new_version.records)[len(new_version.records) // 2]
    _inject_insert_fault(warehouse_url, middle)
    facts_before = snapshot(warehouse_url)["warehouse_facts"]

    result = materialize(resources, partition_key, instance)

    assert not result.success
    assert snapshot(warehouse_url)["warehouse_facts"] == facts_before
    failed = rows(warehouse_url, "SELECT status, detail FROM load_audit ORDER BY id DESC")[0]
    assert failed["status"] == "failed" and "injected fault" in failed["detail"]


def test_unknown_partition_key_is_refused_before_writing(resources, warehouse_url, landing_dir, instance):
    write_landing_file(landing_dir, generate_day(date(2099, 1, 1)))
    with pytest.raises(Exception, match="2099-01-01"):
        materialize(resources, "2099-01-01", instance)
    assert snapshot(warehouse_url).get("warehouse_facts", []) == []


def test_validated_freight_direct_invocation_reports_metadata(resources, partition_key, generated_day):
    raw = assets.raw_freight(
        dg.build_asset_context(partition_key=partition_key),
        freight_source=resources["freight_source"],
        payload_archive=resources["payload_archive"],
    )
    assert isinstance(raw, pd.DataFrame) and len(raw) == len(generated_day.records)
