"""The range backfill (``freight_backfill_job``, ``dpa backfill``): many days in ONE run, each day on its own.

Each day is committed and audited in its own transaction, a bad day (missing file, above the 30% rule)
fails alone, and Dagster's record (materializations and check results per day) reads as after one
run per day.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from dpa_assets.alerts.delivery import delivery_state
from dpa_assets.alerts.journal import read_journal
from dpa_assets.alerts.sms import SmsGatewayResource
from dpa_assets.alerts.watch import alerts_for_run
from dpa_assets.backfill import DayOutcome, failure_summary
from dpa_assets.cli import main
from dpa_assets.definitions import defs
from dpa_assets.jobs import freight_backfill_job
from dpa_assets.resources import AlertJournalResource
from dpa_assets.sensors import freight_failure_alert_sensor
from dpa_assets.sources.generator import generate_day, write_landing_file
from dpa_assets_tests.conftest import make_resources
from dpa_assets_tests.support import services
from dpa_assets_tests.support.sms_gateway import FakeSmsGateway
from dpa_assets_tests.support.warehouse import rows, scalar

REPO = Path(__file__).resolve().parents[1]

DAYS = ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06"]
MISSING, BLOCKED = "2026-03-03", "2026-03-05"
CHECKS = {
    "rejection_rate": dg.AssetKey("validated_freight"),
    "facts_reconcile_with_audit": dg.AssetKey("warehouse_facts"),
    "shipment_ids_unique_across_facts": dg.AssetKey("warehouse_facts"),
}


def _write_range(landing_dir: Path) -> dict[str, int]:
    """Landing files for DAYS except MISSING; BLOCKED with 40% bad rows. Returns rows per day."""
    received = {}
    for day in DAYS:
        if day == MISSING:
            continue
        bad = 0.40 if day == BLOCKED else 0.04
        generated = generate_day(date.fromisoformat(day), rows=120, seed=5, bad_fraction=bad)
        write_landing_file(landing_dir, generated)
        received[day] = len(generated.records)
    return received


def _run_range(instance: dg.DagsterInstance, resources: dict, first: str, last: str) -> dg.ExecuteInProcessResult:
    job = dg.Definitions(jobs=[freight_backfill_job], resources=resources).resolve_job_def("freight_backfill_job")
    return job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {"load_days_in_order": {"config": {"first_day": first, "last_day": last}}}},
    )


def _check_results(instance: dg.DagsterInstance, name: str) -> dict[str, str]:
    key = dg.AssetCheckKey(CHECKS[name], name)
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=50)
    return {record.partition: record.status.value for record in records}


def test_one_run_loads_every_good_day_and_each_bad_day_fails_alone(
    instance: dg.DagsterInstance, landing_dir: Path, warehouse_url: str, tmp_path: Path
):
    received = _write_range(landing_dir)

    result = _run_range(instance, make_resources(landing_dir, warehouse_url, tmp_path), DAYS[0], DAYS[-1])

    assert not result.success  # so the failure alert fires
    message = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "2 of 5 days not loaded" in message and MISSING in message and BLOCKED in message
    assert len(instance.get_runs()) == 1
    good = [day for day in DAYS if day not in (MISSING, BLOCKED)]
    # One transaction per good day: its audit row balances, and the facts are there.
    audits = rows(warehouse_url, "SELECT * FROM load_audit WHERE status = 'loaded' ORDER BY partition_date")
    assert [str(row["partition_date"])[:10] for row in audits] == good
    for row in audits:
        day = str(row["partition_date"])[:10]
        facts = scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts WHERE partition_date = :d", d=day)
        assert row["rows_received"] == received[day] == facts + row["rows_rejected"]
    # The blocked day: rejects quarantined for the on-call, no facts, the verdict in the ledger.
    assert scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts WHERE partition_date = :d", d=BLOCKED) == 0
    assert scalar(warehouse_url, "SELECT count(*) FROM load_audit WHERE status = 'blocked'") == 1
    # Dagster's record per day, as one run per day would leave it.
    assert sorted(instance.get_materialized_partitions(dg.AssetKey("warehouse_facts"))) == good
    assert sorted(instance.get_materialized_partitions(dg.AssetKey("validated_freight"))) == sorted([*good, BLOCKED])
    assert MISSING not in instance.get_materialized_partitions(dg.AssetKey("raw_freight"))
    rates = _check_results(instance, "rejection_rate")
    assert rates == {**{day: "SUCCEEDED" for day in good}, BLOCKED: "FAILED"}
    assert _check_results(instance, "facts_reconcile_with_audit") == {day: "SUCCEEDED" for day in good}
    assert _check_results(instance, "shipment_ids_unique_across_facts") == {day: "SUCCEEDED" for day in good}


def test_a_day_loaded_by_the_range_reloads_alone_from_its_stored_validation(
    instance: dg.DagsterInstance, landing_dir: Path, warehouse_url: str, tmp_path: Path
):
    _write_range(landing_dir)
    resources = make_resources(landing_dir, warehouse_url, tmp_path)
    _run_range(instance, resources, DAYS[0], DAYS[0])
    first_facts = scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts")

    # The UI's "materialize warehouse_facts for this day" reads validated_freight as the range stored it.
    job = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, resources=resources)
    result = (
        job.resolve_implicit_global_asset_job_def()
        .get_subset(asset_selection={dg.AssetKey("warehouse_facts")})
        .execute_in_process(partition_key=DAYS[0], instance=instance, raise_on_error=False)
    )

    assert result.success
    assert scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts") == first_facts
    assert scalar(warehouse_url, "SELECT count(*) FROM load_audit WHERE status = 'loaded'") == 2


def test_the_range_again_replaces_its_days(
    instance: dg.DagsterInstance, landing_dir: Path, warehouse_url: str, tmp_path: Path
):
    _write_range(landing_dir)
    resources = make_resources(landing_dir, warehouse_url, tmp_path)
    assert _run_range(instance, resources, DAYS[0], DAYS[0]).success
    before = scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts")

    assert _run_range(instance, resources, DAYS[0], DAYS[0]).success

    assert scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts") == before


def test_a_warehouse_that_lost_recorded_days_stops_the_range_before_writing(
    instance: dg.DagsterInstance, landing_dir: Path, sqlite_url: str, tmp_path: Path
):
    _write_range(landing_dir)
    resources = make_resources(landing_dir, sqlite_url, tmp_path)
    assert _run_range(instance, resources, DAYS[0], DAYS[0]).success
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as outside:  # anyone who can write the file
        outside.executescript(
            f"INSERT INTO dpa_write_permit VALUES ('warehouse_facts', '{DAYS[0]}');"
            f"DELETE FROM warehouse_facts WHERE partition_date = '{DAYS[0]}'; DELETE FROM dpa_write_permit;"
        )

    result = _run_range(instance, resources, DAYS[3], DAYS[4])

    assert not result.success
    assert "2026-03-02" in result.get_step_failure_events()[0].event_specific_data.error.message
    assert sorted(instance.get_materialized_partitions(dg.AssetKey("warehouse_facts"))) == [DAYS[0]]
    assert scalar(sqlite_url, "SELECT count(*) FROM load_audit WHERE partition_date > :d", d=DAYS[0]) == 0


def test_failure_summary_is_one_line_with_the_first_days():
    failed = [DayOutcome(f"2026-03-0{n}", "failed", f"reason {n}") for n in range(1, 6)]
    line = failure_summary(failed, 9)
    assert "\n" not in line
    assert line.startswith("5 of 9 days not loaded: 2026-03-01 failed: reason 1;")
    assert "2026-03-04" not in line and line.endswith("and 2 more (the run's log lists each)")


def test_dpa_backfill_prints_each_day_then_the_table(home: Path, capsys):
    assert main(["seed-landing", "--days", "1", "--end", "2026-11-17"]) == 0
    assert main(["seed-landing", "--days", "1", "--end", "2026-11-19"]) == 0
    capsys.readouterr()

    assert main(["backfill", "--from", "2026-11-17", "--to", "2026-11-19"]) == 1

    captured = capsys.readouterr()
    assert "loading 3 days in one run" in captured.out
    assert "[1/3] 2026-11-17  loaded" in captured.out
    assert "[2/3] 2026-11-18  failed: " in captured.out and "no landing file for 2026-11-18" in captured.out
    assert "Traceback" not in captured.out + captured.err
    table = captured.out.split("day ", 1)[1]
    assert "2026-11-18  failed" in table and "2026-11-19  loaded" in table
    assert len(dg.DagsterInstance.get().get_runs()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-11-19", "--to", "2026-11-17"], "error: --from 2026-11-19 is after --to 2026-11-17"),
        (["--from", "2026-11-19", "--to", "2099-01-01"], "error: 2099-01-01 is not a freight day"),
    ],
)
def test_dpa_backfill_refuses_a_bad_range_in_one_line(home: Path, capsys, args: list[str], message: str):
    assert main(["backfill", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_a_failed_range_alerts_each_blocked_day_and_the_run_with_its_rerun_command(
    instance: dg.DagsterInstance, landing_dir: Path, sqlite_url: str, tmp_path: Path
):
    _write_range(landing_dir)
    result = _run_range(instance, make_resources(landing_dir, sqlite_url, tmp_path), DAYS[0], DAYS[-1])
    record = instance.get_run_records(dg.RunsFilter(run_ids=[result.run_id]))[0]

    alerts = alerts_for_run(instance, record, lambda run_id: f"http://127.0.0.1:3000/runs/{run_id}")

    blocked = [alert for alert in alerts if alert.partition == BLOCKED]
    assert len(blocked) == 1 and "above the 30% rule" in blocked[0].summary
    run_alert = next(alert for alert in alerts if alert.partition == f"{DAYS[0]}..{DAYS[-1]}")
    # The missing day is not hidden behind the blocked day's alert.
    assert MISSING in run_alert.summary and "backfill" in run_alert.summary
    assert f"dpa backfill --from {DAYS[0]} --to {DAYS[-1]}" in run_alert.message


@pytest.mark.slow
def test_range_launched_from_the_launchpad_runs_in_the_daemon_and_records_each_day(tmp_path: Path):
    """The UI path: webserver and daemon as `make ui` starts them; the run executes in a run worker."""
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DPA_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(home), "DPA_LANDING_DIR": str(tmp_path / "landing")})
    _write_range(tmp_path / "landing")
    port = services.free_port()
    daemon_log, webserver_log = tmp_path / "daemon.log", tmp_path / "webserver.log"
    started = []
    try:
        subprocess.run([str(Path(sys.executable).with_name("dpa")), "setup-warehouse"], cwd=REPO, env=env, check=True)
        started.append(services.start_service(["dagster-daemon", "run", "-w", "workspace.yaml"], REPO, env, daemon_log))
        webserver = services.start_service(
            ["dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"], REPO, env, webserver_log
        )
        started.append(webserver)
        services.wait_for_webserver(port, webserver, webserver_log, timeout=300)
        config = {"ops": {"load_days_in_order": {"config": {"first_day": DAYS[0], "last_day": DAYS[-1]}}}}
        run_id = services.launch_run(port, services.location_of(port), "freight_backfill_job", config)
        status = services.wait_for_run(port, run_id, timeout=600)
    finally:
        for process in reversed(started):
            services.stop_service(process)

    assert status == "FAILURE", (daemon_log.read_text() + webserver_log.read_text())[-4000:]  # two bad days
    with dg.DagsterInstance.from_config(str(home)) as instance:
        good = [day for day in DAYS if day not in (MISSING, BLOCKED)]
        assert sorted(instance.get_materialized_partitions(dg.AssetKey("warehouse_facts"))) == good
        assert instance.get_run_by_id(run_id).tags["dpa/days"] == f"{DAYS[0]}..{DAYS[-1]}"
        assert _check_results(instance, "rejection_rate")[BLOCKED] == "FAILED"
    url = f"sqlite:///{home / 'warehouse.sqlite'}"
    assert scalar(url, "SELECT count(DISTINCT partition_date) FROM warehouse_facts") == len(good)


def test_doctor_reads_a_day_of_a_range_backfill_as_loaded_by_it(
    instance: dg.DagsterInstance, landing_dir: Path, sqlite_url: str, tmp_path: Path
):
    from dpa_assets.recovery.doctor import day_findings
    from dpa_assets.resources import WarehouseResource

    _write_range(landing_dir)
    _run_range(instance, make_resources(landing_dir, sqlite_url, tmp_path), DAYS[0], DAYS[2])  # the 2nd is missing
    warehouse = WarehouseResource(url=sqlite_url)

    problems, notes = day_findings(instance, warehouse.get_engine(), warehouse.display_url(), [date(2026, 3, 2)])

    assert problems == []
    assert notes == ["2026-03-02: dagster range backfill FAILURE, materialized yes; ledger loaded"]


def test_a_long_range_of_one_run_per_day_mentions_dpa_backfill():
    from dpa_assets.cli import backfill_hint, days_between

    assert backfill_hint(days_between(date(2026, 3, 1), date(2026, 3, 7))) is None
    hint = backfill_hint(days_between(date(2026, 3, 1), date(2026, 3, 31)))
    assert hint is not None and "dpa backfill --from 2026-03-01 --to 2026-03-31" in hint


def test_a_range_with_many_blocked_days_sends_one_sms_and_journals_every_day(
    instance: dg.DagsterInstance, landing_dir: Path, sqlite_url: str, tmp_path: Path
):
    # A year backfilled over a bad source month would otherwise page the on-call once per blocked day.
    for day in DAYS:
        bad = 0.40 if day in (DAYS[1], DAYS[3]) else 0.04
        write_landing_file(landing_dir, generate_day(date.fromisoformat(day), rows=60, seed=9, bad_fraction=bad))
    _run_range(instance, make_resources(landing_dir, sqlite_url, tmp_path), DAYS[0], DAYS[-1])
    journal = AlertJournalResource(journal_file=str(tmp_path / "journal.jsonl"))
    gateway = FakeSmsGateway().start()
    try:
        sms = SmsGatewayResource(
            base_url=gateway.url, username=gateway.username, api_key=gateway.api_key, recipients="+237670000001"
        )
        context = dg.build_sensor_context(instance=instance, resources={"alert_journal": journal, "sms_gateway": sms})
        freight_failure_alert_sensor.evaluate_tick(context)
    finally:
        gateway.stop()

    state = read_journal(journal.path())
    assert sorted(a.partition for a in state.alerts if a.kind == "blocked_day") == [DAYS[1], DAYS[3]]
    [text] = [request.form["message"] for request in gateway.requests]
    assert f"{DAYS[0]}..{DAYS[-1]}" in text and "2 of 5 days" in text and "dpa backfill" in text
    assert not state.undelivered()  # nothing left to page about
    blocked = next(a for a in state.alerts if a.kind == "blocked_day")
    assert "the range run's SMS" in delivery_state(state, blocked, sms_configured=True)
