"""Every failure reaches the journal, then a phone: the alert sensor against a real instance and a
real (fake) SMS gateway on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import dagster as dg
import pytest

from dpa_assets.alerts.journal import Alert, append_alert, read_alerts, read_journal
from dpa_assets.alerts.messages import is_gsm7
from dpa_assets.alerts.sms import SmsGatewayResource
from dpa_assets.jobs import freshness_check_job
from dpa_assets.resources import AlertJournalResource
from dpa_assets.sensors import freight_failure_alert_sensor
from dpa_assets_tests.conftest import make_resources
from dpa_assets_tests.support.sms_gateway import FakeSmsGateway
from dpa_assets_tests.support.warehouse import rows
from dpa_assets_tests.test_assets import ALL_ASSETS, materialize


@pytest.fixture
def journal(tmp_path: Path) -> AlertJournalResource:
    return AlertJournalResource(journal_file=str(tmp_path / "alerts" / "journal.jsonl"), ui_base_url="http://dpa:3000")


@pytest.fixture
def gateway():
    fake = FakeSmsGateway().start()
    yield fake
    fake.stop()


def sms_resource(fake: FakeSmsGateway, **overrides) -> SmsGatewayResource:
    settings = {
        "base_url": fake.url,
        "username": fake.username,
        "api_key": fake.api_key,
        "recipients": "+237670000001, +237690000002",
        "backoff_base_seconds": 0.05,
        "tick_budget_seconds": 2.0,
    }
    return SmsGatewayResource(**{**settings, **overrides})


def tick(instance, journal, sms: SmsGatewayResource | None = None, cursor: str | None = None) -> str | None:
    """One sensor evaluation, as the daemon would run it; returns the new cursor."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"alert_journal": journal, "sms_gateway": sms or SmsGatewayResource()},
    )
    return freight_failure_alert_sensor.evaluate_tick(context).cursor


@pytest.fixture
def sqlite_resources(landing_dir, sqlite_url, tmp_path):
    return make_resources(landing_dir, sqlite_url, tmp_path)


def test_a_run_that_failed_before_the_sensor_ever_ticked_is_alerted(sqlite_resources, partition_key, instance, journal):
    result = materialize(sqlite_resources, partition_key, instance)  # no landing file was written
    assert not result.success

    tick(instance, journal)  # the daemon's first tick, after the failure

    [alert] = read_alerts(journal.path())
    assert (alert.kind, alert.run_id, alert.partition) == ("failed_run", result.run_id, partition_key)
    assert "FAILED" in alert.summary and f"no landing file for {partition_key}" in alert.summary
    assert alert.details[0].startswith(f"raw_freight: Freight for {partition_key} cannot be read: ")
    assert alert.link == f"http://dpa:3000/runs/{result.run_id}"
    assert alert.occurred_at is not None
    assert partition_key in alert.message and "dpa materialize --date" in alert.message


def test_a_run_that_failed_after_the_previous_tick_is_alerted_once(sqlite_resources, partition_key, instance, journal):
    cursor = tick(instance, journal)
    result = materialize(sqlite_resources, partition_key, instance)

    cursor = tick(instance, journal, cursor=cursor)
    tick(instance, journal, cursor=cursor)
    tick(instance, journal)  # cursor lost (sensor reset): resumes from the journal, no duplicate

    assert [alert.run_id for alert in read_alerts(journal.path())] == [result.run_id]


def test_a_blocked_day_alerts_with_rate_threshold_and_top_reason(
    landing_dir, sqlite_url, tmp_path, partition_key, generated_day, instance, journal
):
    strict = make_resources(landing_dir, sqlite_url, tmp_path, max_rejection_rate=0.01)  # ~4% bad rows
    result = materialize(strict, partition_key, instance)
    assert not result.success

    tick(instance, journal)

    [alert] = read_alerts(journal.path())  # one alert: the blocked day, not also "run failed"
    [audit] = rows(sqlite_url, "SELECT detail FROM load_audit WHERE status = 'blocked'")
    top_reason = audit["detail"].split("top reasons: ")[1].split(", ")[0]
    assert alert.kind == "blocked_day" and alert.partition == partition_key and alert.run_id == result.run_id
    full = " ".join(alert.details)
    assert audit["detail"].split("; top reasons")[0] in full  # "rejected N of M rows (x%), above the 1% rule"
    assert "above the 1% rule" in full and top_reason in full
    assert f"{generated_day.bad_count / len(generated_day.records):.1%}" in alert.message
    assert "max 1%" in alert.message and top_reason.split(" (")[0] in alert.message


def test_a_failed_freshness_check_alerts(sqlite_resources, instance, journal):
    # Nothing was ever loaded: at any time of day the expected day is missing.
    result = freshness_check_job.execute_in_process(
        instance=instance, resources={"warehouse": sqlite_resources["warehouse"]}
    )
    assert result.success  # the check fails, its run does not: run-failure sensors never saw this

    tick(instance, journal)

    [alert] = read_alerts(journal.path())
    assert alert.kind == "freshness" and alert.severity == "error" and alert.run_id == result.run_id
    assert "yesterday_loaded_by_six" in alert.summary and "not in the warehouse" in alert.summary
    assert alert.partition in alert.message and "NOT LOADED by 06:00" in alert.message


def test_alert_is_delivered_by_sms_once(sqlite_resources, partition_key, instance, journal, gateway):
    materialize(sqlite_resources, partition_key, instance)

    cursor = tick(instance, journal, sms_resource(gateway))
    tick(instance, journal, sms_resource(gateway), cursor=cursor)

    [request] = gateway.requests
    assert request.path == "/version1/messaging"
    assert request.headers["apiKey"] == gateway.api_key and request.headers["Accept"] == "application/json"
    assert request.form["username"] == gateway.username
    assert request.form["to"] == "+237670000001,+237690000002"
    assert partition_key in request.form["message"]
    state = read_journal(journal.path())
    [alert] = state.alerts
    assert state.delivered[alert.key]["recipients"][0]["statusCode"] == 101


def test_gateway_down_then_up_delivers_on_a_later_tick_once(
    sqlite_resources, partition_key, instance, journal, gateway, caplog
):
    materialize(sqlite_resources, partition_key, instance)
    gateway.down = True
    caplog.set_level(logging.DEBUG)

    started = time.monotonic()
    cursor = tick(instance, journal, sms_resource(gateway))  # must not raise
    cursor = tick(instance, journal, sms_resource(gateway), cursor=cursor)
    assert time.monotonic() - started < 10
    down_attempts = len(gateway.requests)
    state = read_journal(journal.path())
    [alert] = state.alerts
    assert alert.key not in state.delivered and "HTTP 503" in state.last_failure[alert.key]["reason"]
    assert down_attempts == 6  # 3 tries per tick, backoff between them
    failures = [line for line in journal.path().read_text().splitlines() if "delivery_failed" in line]
    assert len(failures) == 1  # the same reason twice is journaled once

    gateway.down = False
    cursor = tick(instance, journal, sms_resource(gateway), cursor=cursor)
    tick(instance, journal, sms_resource(gateway), cursor=cursor)

    assert len(gateway.requests) == down_attempts + 1
    assert alert.key in read_journal(journal.path()).delivered
    secret = gateway.api_key
    assert secret not in journal.path().read_text() and secret not in caplog.text
    assert all(secret not in message for message in gateway.messages())


def test_an_unreachable_gateway_never_crashes_the_tick(sqlite_resources, partition_key, instance, journal):
    materialize(sqlite_resources, partition_key, instance)
    closed = SmsGatewayResource(
        base_url="http://127.0.0.1:9", username="u", api_key="k", recipients="+237670000001", backoff_base_seconds=0.05
    )

    tick(instance, journal, closed)

    state = read_journal(journal.path())
    [alert] = state.alerts
    assert alert.key not in state.delivered and "ConnectionError" in state.last_failure[alert.key]["reason"]


def test_every_sms_fits_one_gsm7_message(tmp_path, gateway, landing_dir, sqlite_url, partition_key, instance, journal):
    resources = make_resources(landing_dir, sqlite_url, tmp_path, max_rejection_rate=0.01)
    landing_dir.mkdir(parents=True, exist_ok=True)
    # A broken landing file whose fault text is long and carries characters GSM-7 lacks.
    (landing_dir / f"freight_{partition_key}.csv").write_text("Gare d'Édéa → Douala [été]; ~" * 20 + "\n")
    materialize(resources, partition_key, instance)
    summary = "DPA run DIED: " + "ø→€{}" * 80
    zombie = Alert(
        "2026-11-26T03:00:00+00:00", "error", "daily_freight_job", "z1", "2026-11-25", summary, [], "zombie_run"
    )
    append_alert(journal.path(), zombie)

    tick(instance, journal, sms_resource(gateway))

    messages = gateway.messages()
    assert len(messages) == 2
    assert all(len(message) <= 160 and is_gsm7(message) for message in messages)


def test_duplicate_alerts_are_suppressed_across_writers(tmp_path):
    journal = tmp_path / "journal.jsonl"
    zombie = Alert("2026-11-26T03:00:00+00:00", "error", "daily_freight_job", "r1", "2026-11-25", "DPA died", [],
                   kind="zombie_run")  # fmt: skip
    failed = Alert("2026-11-26T03:01:00+00:00", "error", "daily_freight_job", "r1", "2026-11-25", "DPA failed", [])

    assert append_alert(journal, zombie) is True
    assert append_alert(journal, zombie) is False
    assert append_alert(journal, failed) is False  # the same run, seen by the sensor after recovery marked it

    assert read_alerts(journal) == [zombie]


def test_journal_survives_a_torn_last_line(tmp_path):
    journal = tmp_path / "journal.jsonl"
    first = Alert("2026-11-26T03:00:00+00:00", "error", "daily_freight_job", "r1", "2026-11-25", "DPA failed", [])
    second = Alert("2026-11-27T03:00:00+00:00", "error", "daily_freight_job", "r2", "2026-11-26", "DPA failed", [])
    append_alert(journal, first)
    append_alert(journal, second)
    with journal.open("a") as handle:
        handle.write('{"raised_at": "2026-11-26T03:0')  # the process died mid-write
    assert read_alerts(journal) == [first, second]


def test_alert_written_with_the_original_fields_still_loads(tmp_path):
    journal = tmp_path / "journal.jsonl"
    old = {"raised_at": "2026-11-26T03:00:00+00:00", "severity": "error", "job": "daily_freight_job",
           "run_id": "r1", "partition": "2026-11-25", "summary": "DPA failed", "details": []}  # fmt: skip
    journal.write_text(json.dumps(old) + "\n")
    [alert] = read_alerts(journal)
    assert alert.kind == "failed_run" and alert.key == "run:r1:2026-11-25"


def test_alerts_command_shows_each_alert_and_its_delivery(tmp_path, monkeypatch, capsys, gateway):
    from dpa_assets.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    for name in ("DPA_ALERT_JOURNAL", "DPA_SMS_USERNAME", "DPA_SMS_API_KEY", "DPA_SMS_RECIPIENTS", "DPA_SMS_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    journal = tmp_path / "home" / "alerts" / "journal.jsonl"
    summary = "DPA daily_freight_job for 2026-11-25 FAILED: raw_freight: no landing file"
    append_alert(
        journal, Alert("2026-11-26T03:00:00+00:00", "error", "daily_freight_job", "r1", "2026-11-25", summary, [])
    )

    assert main(["alerts"]) == 0
    out = capsys.readouterr().out
    assert summary in out and "not sent: SMS not configured" in out and "1 alert(s) shown" in out

    monkeypatch.setenv("DPA_SMS_BASE_URL", gateway.url)
    monkeypatch.setenv("DPA_SMS_USERNAME", gateway.username)
    monkeypatch.setenv("DPA_SMS_API_KEY", gateway.api_key)
    monkeypatch.setenv("DPA_SMS_RECIPIENTS", "+237670000001")
    from dpa_assets.alerts.delivery import deliver_pending
    from dpa_assets.deployments import sms_gateway

    with dg.build_resources({"sms": sms_gateway()}) as resources:
        deliver_pending(journal, resources.sms, logging.getLogger("test"))
    assert main(["alerts"]) == 0
    out = capsys.readouterr().out
    assert "sent " in out and "to 1 number(s)" in out and gateway.api_key not in out


def test_a_ui_materialization_is_named_by_its_assets_and_says_the_real_error(
    sqlite_resources, partition_key, instance, journal
):
    from dpa_assets import assets

    result = dg.materialize(  # what the UI launches for "warehouse_facts" alone: Dagster's __ASSET_JOB
        ALL_ASSETS,
        resources=sqlite_resources,
        partition_key=partition_key,
        instance=instance,
        selection=[assets.warehouse_facts],
        raise_on_error=False,
    )
    assert not result.success and result.dagster_run.job_name.startswith("__")

    tick(instance, journal)

    [alert] = read_alerts(journal.path())
    assert "__" not in alert.summary + alert.message
    assert "materialization of warehouse_facts" in alert.summary
    assert f"validated_freight for {partition_key} is not stored" in alert.details[0]


def test_a_first_tick_on_an_old_instance_alerts_only_the_recent_failures(
    sqlite_resources, partition_key, instance, tmp_path
):
    """First deploy of the sensor on an instance with a history: no burst of SMS for last year's failures."""
    old = materialize(sqlite_resources, partition_key, instance)  # fails: no landing file
    time.sleep(3.5)  # older than the 1 s look-back plus the sensor's 1 s overlap
    recent = materialize(sqlite_resources, partition_key, instance)
    assert not old.success and not recent.success
    journal = AlertJournalResource(
        journal_file=str(tmp_path / "fresh" / "journal.jsonl"), first_tick_lookback_hours=1 / 3600
    )

    tick(instance, journal)

    assert [alert.run_id for alert in read_alerts(journal.path())] == [recent.run_id]
