"""The code location loads, names what we expect, and every deployment builds."""

from __future__ import annotations

import dagster as dg
import pytest

from dpa_assets.definitions import defs
from dpa_assets.deployments import build_resources, current_deployment
from dpa_assets.settings import DEPLOYMENTS


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)


def test_code_location_contents_are_pinned():
    assert {key.to_user_string() for key in defs.resolve_all_asset_keys()} == {
        "raw_freight",
        "validated_freight",
        "warehouse_facts",
    }
    assert {job.name for job in defs.resolve_all_job_defs()} >= {"daily_freight_job", "freshness_check_job"}
    assert [schedule.name for schedule in defs.schedules] == [
        "daily_freight_schedule",
        "freshness_check_schedule",
    ]
    assert [sensor.name for sensor in defs.sensors] == [
        "freight_failure_alert_sensor",
        "zombie_run_reconciler_sensor",
        "freight_catch_up_sensor",
    ]
    check_keys = defs.resolve_asset_graph().asset_check_keys
    assert {(key.asset_key.to_user_string(), key.name) for key in check_keys} == {
        ("validated_freight", "rejection_rate"),
        ("warehouse_facts", "facts_reconcile_with_audit"),
        ("warehouse_facts", "shipment_ids_unique_across_facts"),
    }


def test_no_materialization_evaluates_the_freshness_rule():
    """ "Materialize all…" in the UI runs the implicit asset job with every check of the selected
    assets; the clock rule must not be one of them, nor of the nightly job (`dpa materialize`)."""
    implicit = defs.resolve_implicit_global_asset_job_def()
    for job in (implicit, defs.resolve_job_def("daily_freight_job")):
        names = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
        assert names and "yesterday_loaded_by_six" not in names, (job.name, names)
    freshness = defs.resolve_job_def("freshness_check_job")
    assert not freshness.asset_layer.asset_graph.executable_asset_keys  # it materializes nothing


def test_all_three_assets_share_the_daily_partitions():
    graph = defs.resolve_asset_graph()
    partitions = {graph.get(key).partitions_def for key in graph.get_all_asset_keys()}
    assert len(partitions) == 1
    assert isinstance(partitions.pop(), dg.DailyPartitionsDefinition)


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_every_deployment_builds(deployment):
    resources = build_resources(deployment)
    assert set(resources) == {
        "freight_source",
        "payload_archive",
        "warehouse",
        "validation_policy",
        "alert_journal",
        "sms_gateway",
        "recovery_policy",
        "warehouse_io_manager",
        "io_manager",
    }


def test_unknown_deployment_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setenv("DPA_DEPLOYMENT", "staging")
    with pytest.raises(ValueError, match="local, production"):
        current_deployment()


def test_dagster_definitions_validate_command_accepts_the_workspace(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=root,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_instance_runs_one_run_per_partition(tmp_path):
    import yaml

    from dpa_assets.instance import install_instance_yaml, instance_yaml

    home = tmp_path / "home"
    path = install_instance_yaml(home)
    path.write_text(path.read_text() + "\n# operator edit\n")
    install_instance_yaml(home)
    assert path.read_text().endswith("# operator edit\n")  # an existing file is never overwritten

    with dg.instance_for_test(overrides=yaml.safe_load(instance_yaml()), temp_dir=str(tmp_path)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def test_assets_carry_what_the_ui_shows():
    from dpa_assets.warehouse.tables import facts

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners == ["team:freight-data"], key
        assert "pandas" in node.kinds and node.code_version, key
    facts_node = graph.get(dg.AssetKey("warehouse_facts"))
    assert "sqlite" in facts_node.kinds  # the local deployment's warehouse
    schema = facts_node.metadata["dagster/column_schema"].schema
    assert [column.name for column in schema.columns] == [column.name for column in facts.columns]
    assert schema.columns[1].constraints.unique and not schema.columns[1].constraints.nullable
    assert facts_node.metadata["dagster/table_name"].value == "warehouse_facts"


@pytest.mark.parametrize(("url", "kind"), [("postgresql+psycopg2://dpa@db/dwh", "postgres"), (None, "sqlite")])
def test_the_warehouse_kind_follows_the_deployments_url(monkeypatch, url, kind):
    from dpa_assets.deployments import warehouse_kind

    if url:
        monkeypatch.setenv("DPA_WAREHOUSE_URL", url)
    else:
        monkeypatch.delenv("DPA_WAREHOUSE_URL", raising=False)
    assert warehouse_kind() == kind


def test_materializations_carry_row_counts_and_the_archived_path(resources, partition_key, generated_day, instance):
    from dpa_assets_tests.test_assets import materialize

    result = materialize(resources, partition_key, instance)
    raw = result.asset_materializations_for_node("raw_freight")[0].metadata
    assert raw["dagster/row_count"].value == len(generated_day.records)
    assert isinstance(raw["archived_as"], dg.PathMetadataValue)
    facts = result.asset_materializations_for_node("warehouse_facts")[0].metadata
    assert facts["dagster/row_count"].value == len(generated_day.records) - generated_day.bad_count
    valid = result.asset_materializations_for_node("validated_freight")[0].metadata
    assert valid["dagster/row_count"].value == len(generated_day.records) - generated_day.bad_count
