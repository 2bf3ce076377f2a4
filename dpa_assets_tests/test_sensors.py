"""A failed run reaches the alert journal with the day and the reason, in words for the on-call."""

from __future__ import annotations

import dagster as dg

from dpa_assets.alerts.journal import Alert, append_alert, read_alerts
from dpa_assets.resources import AlertJournalResource
from dpa_assets.sensors import freight_failure_alert_sensor
from dpa_assets_tests.test_assets import materialize


def _failure_context(instance: dg.DagsterInstance, run_id: str, journal: AlertJournalResource):
    run = instance.get_run_by_id(run_id)
    failure = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[0]
    return dg.build_run_status_sensor_context(
        sensor_name=freight_failure_alert_sensor.name,
        dagster_event=failure.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"alert_journal": journal},
    ).for_run_failure()


def test_failed_run_is_journaled_with_day_and_reason(resources, partition_key, instance, tmp_path):
    result = materialize(resources, partition_key, instance)  # no landing file was written
    assert not result.success
    journal = AlertJournalResource(journal_file=str(tmp_path / "alerts" / "journal.jsonl"))

    freight_failure_alert_sensor(_failure_context(instance, result.run_id, journal))

    [alert] = read_alerts(journal.path())
    assert alert.partition == partition_key and alert.run_id == result.run_id
    assert "FAILED" in alert.summary and f"no landing file for {partition_key}" in alert.summary
    assert alert.details[0].startswith(f"raw_freight: Freight for {partition_key} cannot be read: ")


def test_journal_survives_a_torn_last_line(tmp_path):
    journal = tmp_path / "journal.jsonl"
    alert = Alert("2026-11-26T03:00:00+00:00", "error", "daily_freight_job", "r1", "2026-11-25", "DPA failed", [])
    append_alert(journal, alert)
    append_alert(journal, alert)
    with journal.open("a") as handle:
        handle.write('{"raised_at": "2026-11-26T03:0')  # the process died mid-write
    assert read_alerts(journal) == [alert, alert]


def test_alerts_command_prints_the_journal(tmp_path, monkeypatch, capsys):
    from dpa_assets.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DPA_ALERT_JOURNAL", raising=False)
    journal = tmp_path / "home" / "alerts" / "journal.jsonl"
    summary = "DPA daily_freight_job for 2026-11-25 FAILED: raw_freight: no landing file"
    append_alert(
        journal, Alert("2026-11-26T03:00:00+00:00", "error", "daily_freight_job", "r1", "2026-11-25", summary, [])
    )

    assert main(["alerts"]) == 0

    out = capsys.readouterr().out
    assert summary in out and "1 alert(s) shown" in out


def test_sensor_tick_journals_a_run_that_failed_after_the_previous_tick(resources, partition_key, instance, tmp_path):
    journal = AlertJournalResource(journal_file=str(tmp_path / "journal.jsonl"))
    first = dg.build_sensor_context(instance=instance, resources={"alert_journal": journal})
    freight_failure_alert_sensor.evaluate_tick(first)  # the first tick only starts the cursor
    result = materialize(resources, partition_key, instance)  # fails: no landing file

    second = dg.build_sensor_context(instance=instance, cursor=first.cursor, resources={"alert_journal": journal})
    freight_failure_alert_sensor.evaluate_tick(second)

    assert [alert.run_id for alert in read_alerts(journal.path())] == [result.run_id]
