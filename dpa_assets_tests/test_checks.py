"""Checks: the 30% boundary, reconciliation against tampering, duplicates, freshness; results per partition."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from dpa_assets import checks
from dpa_assets.freshness import expected_day, judge_freshness
from dpa_assets.partitions import LOCAL_TZ
from dpa_assets.resources import ValidationPolicyResource, WarehouseResource
from dpa_assets.sources.generator import generate_day, write_landing_file
from dpa_assets.transforms import ValidationOutcome
from dpa_assets_tests.conftest import make_resources
from dpa_assets_tests.support.loads import commit_validated, prepared_load
from dpa_assets_tests.support.warehouse import snapshot
from dpa_assets_tests.test_assets import materialize

DAY = "2026-11-20"


def outcome_with(received: int, rejected: int) -> ValidationOutcome:
    rejects = pd.DataFrame(
        {
            "source_line": range(rejected),
            "reasons": ['[{"column": "customer", "rule": "required"}]'] * rejected,
        }
    )
    return ValidationOutcome(DAY, pd.DataFrame(index=range(received - rejected)), rejects, received)


@pytest.mark.parametrize(
    ("received", "rejected", "passes"),
    [
        (100, 30, True),
        (100, 31, False),
        (10, 3, True),
        (10, 4, False),
        (1000, 300, True),
        (1000, 301, False),
        (11, 3, True),
        (11, 4, False),
        (1, 0, True),
        (1, 1, False),
    ],
)
def test_exactly_thirty_percent_passes_and_one_more_row_fails(received, rejected, passes):
    result = checks.rejection_rate(outcome_with(received, rejected), ValidationPolicyResource())
    assert result.passed is passes
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["rows_received"].value == received
    assert result.metadata["rows_rejected"].value == rejected
    assert result.metadata["rejection_rate"].value == pytest.approx(rejected / received)


def test_threshold_is_read_from_config():
    policy = ValidationPolicyResource(max_rejection_rate=0.05)
    assert checks.rejection_rate(outcome_with(100, 5), policy).passed
    assert not checks.rejection_rate(outcome_with(100, 6), policy).passed
    with pytest.raises(Exception, match="less than or equal to 1"):
        ValidationPolicyResource(max_rejection_rate=1.5)


def test_empty_day_passes_explicitly():
    result = checks.rejection_rate(outcome_with(0, 0), ValidationPolicyResource())
    assert result.passed
    assert "empty day" in result.metadata["note"].value
    assert result.metadata["rejection_rate"].value == 0.0


def test_verdict_reads_as_percentages_with_the_threshold_and_top_reason():
    blocked = checks.rejection_rate(outcome_with(10, 4), ValidationPolicyResource()).metadata["verdict"].value
    assert blocked.startswith("40.0% of 10 rows rejected, above the 30% maximum: BLOCKED")
    assert "customer: required (4)" in blocked
    passed = checks.rejection_rate(outcome_with(100, 30), ValidationPolicyResource()).metadata["verdict"].value
    assert passed == "30.0% of 100 rows rejected, within the 30% maximum: the day loads"


def test_metadata_has_top_reasons_table():
    result = checks.rejection_rate(outcome_with(10, 2), ValidationPolicyResource())
    records = [record.data for record in result.metadata["top_reasons"].records]
    assert {"column": "customer", "rule": "required", "rows": 2} in records
    assert "top_rejection_reasons" not in result.metadata  # one table, not a second copy as markdown


def _check_evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[str, object]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [record.event_log_entry.dagster_event.event_specific_data for record in records]
    return {evaluation.check_name: evaluation for evaluation in evaluations}


def test_failed_rate_check_is_recorded_for_its_partition(resources, warehouse_url, landing_dir, instance):
    write_landing_file(landing_dir, generate_day(date.fromisoformat(DAY), rows=100, seed=3, bad_fraction=0.02))
    assert materialize(resources, DAY, instance).success
    before = snapshot(warehouse_url)
    write_landing_file(landing_dir, generate_day(date.fromisoformat(DAY), rows=100, seed=3, bad_fraction=0.31))

    result = materialize(resources, DAY, instance)

    assert not result.success
    evaluation = _check_evaluations(instance, result.run_id)["rejection_rate"]
    assert evaluation.partition == DAY and evaluation.passed is False
    after = snapshot(warehouse_url)
    assert after["warehouse_facts"] == before["warehouse_facts"]
    assert (
        len(after["freight_rejects"]) == len(before["freight_rejects"]) + 31
    )  # new rejects stored beside the loaded ones


def test_warehouse_checks_pass_after_a_load_and_are_per_partition(resources, instance, generated_day):
    result = materialize(resources, DAY, instance)
    evaluations = _check_evaluations(instance, result.run_id)
    for name in ("rejection_rate", "facts_reconcile_with_audit", "shipment_ids_unique_across_facts"):
        assert evaluations[name].passed, (name, evaluations[name].metadata)
        assert evaluations[name].partition == DAY


def test_reconciliation_catches_tampering_behind_the_triggers(sqlite_url):
    warehouse = WarehouseResource(url=sqlite_url)
    audit = commit_validated(warehouse.get_engine(), prepared_load(DAY, "run-1", seed=1))
    recorded = {"content_checksum": audit["content_checksum"], "row_count": audit["rows_loaded"]}
    assert checks.reconcile_partition(warehouse.get_engine(), date.fromisoformat(DAY), recorded).passed
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as outside:  # someone removes a guard
        outside.execute("DROP TRIGGER warehouse_facts_refuse_update")
        outside.execute("UPDATE warehouse_facts SET revenue_xaf = revenue_xaf + 1 WHERE rowid = 1")

    result = checks.reconcile_partition(warehouse.get_engine(), date.fromisoformat(DAY), recorded)

    assert not result.passed
    assert result.metadata["problems"].value == "stored facts' checksum differs from the audit row"


def test_reconciliation_catches_disagreement_with_dagsters_record(sqlite_url):
    warehouse = WarehouseResource(url=sqlite_url)
    audit = commit_validated(warehouse.get_engine(), prepared_load(DAY, "run-1", seed=1))
    result = checks.reconcile_partition(
        warehouse.get_engine(),
        date.fromisoformat(DAY),
        {"content_checksum": "0" * 64, "row_count": audit["rows_loaded"]},
    )
    assert not result.passed
    assert "Dagster's record and the audit row disagree" in result.metadata["problems"].value


def test_duplicate_shipment_ids_are_reported(pg_url):
    warehouse = WarehouseResource(url=pg_url)
    commit_validated(warehouse.get_engine(), prepared_load(DAY, "run-1", seed=1))
    before = checks.shipment_ids_unique_across_facts(warehouse)
    assert before.passed and before.metadata["verified_by"].value == "the table's unique index on shipment_id"
    engine = sa.create_engine(pg_url)
    with engine.begin() as connection:  # an administrator removes the unique constraint by mistake
        connection.exec_driver_sql("ALTER TABLE warehouse_facts DROP CONSTRAINT warehouse_facts_shipment_id_key")
        connection.exec_driver_sql(
            "INSERT INTO warehouse_facts SELECT (partition_date + 1), shipment_id, waybill_number, wagon_number, "
            "origin_station, destination_station, commodity, net_tonnage, wagon_count, departure_time, arrival_time, "
            "customer, revenue_xaf, load_run_id FROM warehouse_facts LIMIT 2"
        )
    engine.dispose()
    result = checks.shipment_ids_unique_across_facts(warehouse)
    assert not result.passed
    assert result.metadata["duplicated_ids"].value == 2
    assert result.metadata["verified_by"].value == "whole-table scan"


@pytest.mark.parametrize(
    ("now_local", "expected", "deadline"),
    [
        ("2026-11-26T06:00", "2026-11-25", "2026-11-26T06:00"),
        ("2026-11-26T05:59", "2026-11-24", "2026-11-25T06:00"),
        ("2026-11-26T23:59", "2026-11-25", "2026-11-26T06:00"),
        ("2027-01-01T07:00", "2026-12-31", "2027-01-01T06:00"),
    ],
)
def test_the_expected_day_turns_over_at_six_local_time(now_local, expected, deadline):
    day, due = expected_day(datetime.fromisoformat(now_local).replace(tzinfo=LOCAL_TZ))
    assert day.isoformat() == expected
    assert due == datetime.fromisoformat(deadline).replace(tzinfo=LOCAL_TZ)


def test_freshness_verdicts():
    now = datetime(2026, 11, 26, 6, 5, tzinfo=LOCAL_TZ)
    deadline = datetime(2026, 11, 26, 6, 0, tzinfo=LOCAL_TZ)
    assert judge_freshness(now, {date(2026, 11, 25): deadline - timedelta(hours=3)}).on_time
    late = judge_freshness(now, {date(2026, 11, 25): deadline + timedelta(minutes=4)})
    assert not late.on_time and late.minutes_late == pytest.approx(4)
    assert not judge_freshness(now, {date(2026, 11, 24): deadline}).on_time


def test_freshness_check_fails_as_error_when_the_day_is_missing(sqlite_url):
    result = checks.freshness_evaluation(datetime.now(LOCAL_TZ), WarehouseResource(url=sqlite_url))
    assert not result.passed
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["expected_day"].value == expected_day(datetime.now(LOCAL_TZ))[0].isoformat()
    assert result.metadata["loaded_at"].value == "not loaded"


def test_freshness_check_warns_for_a_day_loaded_after_its_deadline(sqlite_url):
    warehouse = WarehouseResource(url=sqlite_url)
    day, _deadline = expected_day(datetime.now(LOCAL_TZ))
    commit_validated(warehouse.get_engine(), prepared_load(day.isoformat(), "run-1", seed=1))
    result = checks.freshness_evaluation(datetime.now(LOCAL_TZ), warehouse)
    # Loaded just now, which is always after the expected day's deadline: late, not missing.
    assert not result.passed
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["loaded_at"].value != "not loaded"
    assert result.metadata["minutes_late"].value > 0


def test_rates_read_as_percentages_and_top_reasons_as_an_inline_table():
    metadata = checks.rejection_rate(outcome_with(10, 4), ValidationPolicyResource()).metadata
    assert metadata["rejection_rate_percent"].value == pytest.approx(40.0)
    assert metadata["max_rejection_rate_percent"].value == pytest.approx(30.0)
    # A table renders inline in the UI's metadata panel; markdown hides behind "[Show Markdown]".
    table = metadata["top_reasons"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [column.name for column in table.schema.columns] == ["column", "rule", "rows"]
    assert [record.data for record in table.records] == [{"column": "customer", "rule": "required", "rows": 4}]
    assert "dagster/row_count" not in metadata  # the asset's, not the check's


@pytest.mark.xfail(
    strict=True,
    reason="issue 11 §2, not solvable in Dagster 1.13.27 with a failed run: every check of a step in the plan "
    "gets a PLANNED record (run_domain._log_asset_planned_events), resolved as EXECUTION_FAILED once the run "
    "ends in FAILURE (SKIPPED otherwise); the UI labels EXECUTION_FAILED 'Failed', and Materialize all plans "
    "every check of the chosen assets, so no run split helps the UI path.",
)
def test_a_check_that_never_ran_is_not_recorded_as_failed(landing_dir, sqlite_url, tmp_path, instance):
    # No landing file: raw_freight fails, nothing downstream runs, no check is evaluated.
    result = materialize(make_resources(landing_dir, sqlite_url, tmp_path), DAY, instance)
    assert not result.success and not _check_evaluations(instance, result.run_id)

    for name, asset in (("rejection_rate", "validated_freight"), ("facts_reconcile_with_audit", "warehouse_facts")):
        key = dg.AssetCheckKey(dg.AssetKey(asset), name)
        records = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
        # A record left PLANNED in a failed run is what the UI shows as "Execution failed" / "Failed".
        never_ran = [r for r in records if r.run_id == result.run_id and r.status.value == "PLANNED"]
        failed_run = instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not (never_ran and failed_run), name
