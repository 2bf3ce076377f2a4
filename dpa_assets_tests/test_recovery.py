"""Zombie runs and catch-up: the pure rules, the heartbeat of a real run, and both sensors on a real instance."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from dpa_assets.alerts.journal import FAILED_RUN, ZOMBIE_RUN, append_alert, read_alerts
from dpa_assets.partitions import daily_partitions
from dpa_assets.recovery.catchup import (
    FAILED,
    MISSING,
    DayState,
    days_to_request,
    due_days,
    ledger_state,
)
from dpa_assets.recovery.heartbeat import beating, heartbeat_tags, read_heartbeat
from dpa_assets.recovery.policy import RecoveryPolicyResource
from dpa_assets.recovery.sensors import freight_catch_up_sensor, zombie_run_reconciler_sensor
from dpa_assets.recovery.zombies import RunView, Zombie, find_zombies, pid_alive, zombie_alert
from dpa_assets.resources import AlertJournalResource, LandingDirSource, WarehouseResource
from dpa_assets.sources.generator import generate_day, write_landing_file
from dpa_assets.transforms import REJECT_COLUMNS
from dpa_assets.warehouse.ledger import BLOCKED, record_failed_attempt, record_validation
from dpa_assets_tests.test_assets import materialize

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
POLICY = RecoveryPolicyResource()
HOST = "this-host"


def _run(tags: dict[str, str], started_minutes_ago: float = 5, job: str = "daily_freight_job") -> RunView:
    return RunView("r1", job, "STARTED", NOW - timedelta(minutes=started_minutes_ago), tags)


def _beat(host: str, pid: int, seconds_ago: float, step_pid: int | None = None) -> dict[str, str]:
    return heartbeat_tags(NOW - timedelta(seconds=seconds_ago), host=host, pid=pid, step_pid=step_pid)


def _zombie_reasons(run: RunView, alive: set[int]) -> list[str]:
    return [zombie.reason for zombie in find_zombies([run], NOW, POLICY, HOST, lambda pid: pid in alive)]


@pytest.mark.parametrize(
    ("tags", "alive", "started", "expected"),
    [
        (_beat(HOST, 41, 5), {41}, 5, None),  # working
        (_beat(HOST, 41, 5), set(), 5, "PID 41 on this-host) is gone"),  # killed; the beat is still fresh
        (_beat("other-host", 41, 5), set(), 5, None),  # another host: its PID means nothing here
        (_beat("other-host", 41, 900), set(), 20, "no heartbeat for 900 s"),
        (_beat(HOST, 41, 900), {41}, 20, "no heartbeat for 900 s"),  # PID reused or worker hung
        ({}, set(), 2, None),  # still starting
        ({}, set(), 10, "with no heartbeat"),
        (_beat(HOST, 41, 5), {41}, 4 * 60, "past the maximum runtime"),
        # Multiprocess executor (UI selections): the step's process ends between steps, the run worker lives on.
        (_beat(HOST, 41, 5, step_pid=42), {41}, 5, None),
        # The run worker was killed but its orphaned step still writes: wait for it (or its silence).
        (_beat(HOST, 41, 5, step_pid=42), {42}, 5, None),
        (_beat(HOST, 41, 5, step_pid=42), set(), 5, "PID 41 on this-host) is gone"),
    ],
)
def test_zombie_rule(tags, alive, started, expected):
    reasons = _zombie_reasons(_run(tags, started), alive)
    if expected is None:
        assert reasons == []
    else:
        assert len(reasons) == 1 and expected in reasons[0]


def _two_step_multiprocess_job() -> dg.JobDefinition:
    @dg.asset
    @beating
    def first(context) -> int:  # unannotated: this module postpones annotations
        return 1

    @dg.asset
    @beating
    def second(context, first: int) -> int:
        return first + 1

    two_steps = dg.define_asset_job("two_steps", executor_def=dg.multiprocess_executor)
    return dg.Definitions(assets=[first, second], jobs=[two_steps]).resolve_job_def("two_steps")


def test_a_multiprocess_step_names_its_run_worker(instance):
    # Dagster's multiprocess executor (UI selections) runs each step in a process that ends with
    # it; a beat naming only that process read as a dead worker in the gap between two steps.
    result = dg.execute_job(dg.reconstructable(_two_step_multiprocess_job), instance=instance)
    assert result.success
    beat = read_heartbeat(instance.get_run_by_id(result.run_id).tags)
    assert beat is not None and beat.pid == os.getpid()  # execute_job's run worker is this process
    assert beat.step_pid is not None and beat.step_pid != os.getpid()


def test_a_beat_names_the_step_process_beside_its_worker():
    beat = read_heartbeat(heartbeat_tags(NOW, host=HOST, pid=41, step_pid=42))
    assert beat is not None and (beat.pid, beat.step_pid, beat.pids()) == (41, 42, {41, 42})


def test_runs_of_other_code_locations_are_never_zombies():
    assert _zombie_reasons(_run(_beat(HOST, 41, 5), job="someone_elses_job"), set()) == []
    assert _zombie_reasons(_run(_beat(HOST, 41, 5), job="__ASSET_JOB"), set()) != []


def test_pid_alive_sees_a_killed_unreaped_child_as_dead():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert pid_alive(child.pid)
    os.kill(child.pid, 9)
    time.sleep(0.5)  # not waited for yet: a defunct entry that signal 0 still reaches
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)
    assert pid_alive(os.getpid())


@pytest.mark.parametrize(
    ("latest", "current", "expected"),
    [
        (None, None, MISSING),
        ({"status": "loaded"}, {"status": "loaded"}, "loaded"),
        ({"status": "failed", "detail": "x"}, None, FAILED),
        ({"status": "refused", "detail": "x"}, None, "refused"),
        ({"status": "blocked", "detail": "x"}, None, "blocked"),
        ({"status": "break_glass", "detail": "x"}, None, "break_glass"),
        ({"status": "validated"}, None, "interrupted"),  # killed between validation and commit
        ({"status": "validated"}, {"status": "loaded"}, "loaded"),  # earlier facts still stand
    ],
)
def test_ledger_state(latest, current, expected):
    assert ledger_state(latest, current)[0] == expected


def test_days_to_request_skips_in_flight_held_and_recent_days_and_caps():
    days = [date(2026, 11, d) for d in range(20, 26)]
    states = [
        DayState(days[0], "blocked"),
        DayState(days[1], "failed"),
        DayState(days[2], "missing"),  # in flight
        DayState(days[3], "loaded"),
        DayState(days[4], "refused"),  # tried 10 minutes ago
        DayState(days[5], "interrupted"),
    ]
    in_flight = {days[2]}
    last = {days[1]: NOW - timedelta(hours=3), days[4]: NOW - timedelta(minutes=10)}
    wait = timedelta(minutes=60)
    assert days_to_request(states, in_flight, last, NOW, wait, cap=5) == [days[1], days[5]]
    assert days_to_request(states, in_flight, last, NOW, wait, cap=1) == [days[1]]
    assert days_to_request(states, set(), {}, NOW, wait, cap=5) == [days[1], days[2], days[4], days[5]]


def test_due_days_wait_for_the_nightly_run():
    # 2026-11-26 01:00 in Douala: 2026-11-25 is closed but its 02:30 load has not had its chance yet.
    early = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    assert due_days(3, early, after_hours=4) == [date(2026, 11, 23), date(2026, 11, 24)]
    assert due_days(3, early + timedelta(hours=4), after_hours=4) == [
        date(2026, 11, 23),
        date(2026, 11, 24),
        date(2026, 11, 25),
    ]


def test_a_real_run_records_its_worker_and_heartbeat(resources, partition_key, generated_day, instance):
    before = datetime.now(UTC).replace(microsecond=0)
    result = materialize(resources, partition_key, instance)
    assert result.success
    beat = read_heartbeat(instance.get_run_by_id(result.run_id).tags)
    assert beat is not None
    assert (beat.host, beat.pid) == (socket.gethostname(), os.getpid())  # in-process: this process is the worker
    assert beat.beat_at >= before


def _add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, tags: dict[str, str]) -> str:
    run = instance.add_run(dg.DagsterRun(job_name="daily_freight_job", status=status, tags=tags))
    return run.run_id


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_reconciler_sensor_fails_only_the_dead_run_and_alerts(instance, tmp_path):
    now = datetime.now(UTC)
    host = socket.gethostname()
    dead = _add_run(
        instance,
        dg.DagsterRunStatus.STARTED,
        {"dagster/partition": "2026-11-20", **heartbeat_tags(now, host=host, pid=_dead_pid())},
    )
    living = _add_run(
        instance,
        dg.DagsterRunStatus.STARTED,
        {"dagster/partition": "2026-11-21", **heartbeat_tags(now, host=host, pid=os.getpid())},
    )
    journal = AlertJournalResource(journal_file=str(tmp_path / "journal.jsonl"))
    context = dg.build_sensor_context(
        instance=instance, resources={"recovery_policy": RecoveryPolicyResource(), "alert_journal": journal}
    )
    zombie_run_reconciler_sensor(context)
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(living).status == dg.DagsterRunStatus.STARTED
    alerts = read_alerts(journal.path())
    assert [(alert.run_id, alert.partition) for alert in alerts] == [(dead, "2026-11-20")]
    assert "is gone" in alerts[0].summary and "dpa recover" in alerts[0].details[-1]
    zombie_run_reconciler_sensor(context)  # a second tick finds nothing more to do
    assert len(read_alerts(journal.path())) == 1


def _delivered(tmp_path) -> LandingDirSource:
    """A landing folder holding a file for every day catch-up may look at."""
    landing = LandingDirSource(landing_dir=str(tmp_path / "landing"))
    for day in due_days(7, datetime.now(UTC), 0):
        write_landing_file(landing.resolved_dir(), generate_day(day, rows=2, seed=3))
    return landing


def test_catch_up_sensor_requests_missing_and_failed_days_only(instance, sqlite_url, tmp_path):
    warehouse = WarehouseResource(url=sqlite_url)
    engine = warehouse.get_engine()
    policy = RecoveryPolicyResource(catch_up_days=4, catch_up_max_runs_per_tick=2, catch_up_after_hours=0)
    blocked, failed, running, missing = due_days(4, datetime.now(UTC), 0)
    record_validation(engine, blocked, "v1", pd.DataFrame(columns=REJECT_COLUMNS), 10, BLOCKED, detail="41% > 30%")
    record_failed_attempt(engine, failed, "old-run", RuntimeError("disk full"))
    _add_run(instance, dg.DagsterRunStatus.STARTED, {"dagster/partition": running.isoformat()})

    def tick() -> list[str]:
        context = dg.build_sensor_context(
            instance=instance,
            resources={"recovery_policy": policy, "warehouse": warehouse, "freight_source": _delivered(tmp_path)},
        )
        return [request.partition_key for request in freight_catch_up_sensor(context).run_requests or []]

    assert tick() == [failed.isoformat(), missing.isoformat()]
    # The failed day was just tried (its run failed again, e.g. no file yet): it waits out the backoff.
    _add_run(instance, dg.DagsterRunStatus.FAILURE, {"dagster/partition": failed.isoformat()})
    assert tick() == [missing.isoformat()]


def test_doctor_without_a_dagster_home_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    from dpa_assets.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "nowhere"))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("PROBLEM no Dagster home")
    assert not (tmp_path / "nowhere").exists()  # read-only: nothing created


def test_recover_dry_run_plans_without_changing_anything(tmp_path, monkeypatch, capsys):
    from dpa_assets.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DPA_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    last = date.fromisoformat(daily_partitions.get_last_partition_key())
    for day in (last, last - timedelta(days=1)):  # delivered, so worth re-loading
        write_landing_file(tmp_path / "home" / "landing", generate_day(day, rows=3, seed=4))
    assert main(["recover", "--days", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would re-load") == 2 and "dry run: nothing changed" in out
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    assert sa.inspect(engine).get_table_names() == []  # the dry run set nothing up
    engine.dispose()


def test_a_zombie_and_its_failed_run_are_one_alert(tmp_path):
    journal = tmp_path / "journal.jsonl"
    zombie = Zombie(run_id="r-1", job_name="daily_freight_job", partition="2026-11-20", reason="worker gone")
    now = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)

    assert append_alert(journal, zombie_alert(zombie, now))
    failed_run = dataclasses.replace(zombie_alert(zombie, now), kind=FAILED_RUN, summary="run failed")

    assert not append_alert(journal, failed_run)  # the watcher sees the same run fail: no second SMS
    assert [alert.kind for alert in read_alerts(journal)] == [ZOMBIE_RUN]


def test_doctor_flags_alerts_the_on_call_never_received(tmp_path):
    from dpa_assets.alerts.journal import append_delivery
    from dpa_assets.recovery.doctor import alert_findings

    journal = tmp_path / "journal.jsonl"
    now = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    first = zombie_alert(Zombie("r-1", "daily_freight_job", "2026-11-20", "worker gone"), now)
    second = zombie_alert(Zombie("r-2", "daily_freight_job", "2026-11-21", "worker gone"), now)
    append_alert(journal, first)
    append_alert(journal, second)
    append_delivery(journal, {"delivered": first.key, "at": now.isoformat(), "recipients": ["+237670000001"]})

    problems, notes = alert_findings(journal, sms_configured=True)
    assert len(problems) == 1 and "2026-11-21" in problems[0]
    assert alert_findings(journal, sms_configured=False)[0] == []  # SMS off: journaled is all there is
    assert any("2 alert(s), 1 undelivered" in note for note in notes)


def test_catch_up_sensor_leaves_the_days_of_a_range_backfill_in_flight(instance, sqlite_url, tmp_path):
    warehouse = WarehouseResource(url=sqlite_url)
    policy = RecoveryPolicyResource(catch_up_days=3, catch_up_max_runs_per_tick=5, catch_up_after_hours=0)
    first, second, third = due_days(3, datetime.now(UTC), 0)
    running_range = {"ops": {"load_days_in_order": {"config": {"first_day": str(first), "last_day": str(second)}}}}
    instance.add_run(
        dg.DagsterRun(job_name="freight_backfill_job", status=dg.DagsterRunStatus.STARTED, run_config=running_range)
    )
    resources = {"recovery_policy": policy, "warehouse": warehouse, "freight_source": _delivered(tmp_path)}
    context = dg.build_sensor_context(instance=instance, resources=resources)

    requested = [request.partition_key for request in freight_catch_up_sensor(context).run_requests or []]

    assert requested == [third.isoformat()]


def test_catch_up_sensor_waits_for_a_landing_file_instead_of_failing_a_run_per_retry(instance, sqlite_url, tmp_path):
    # A file not delivered yet would fail every retry: a red run, planned checks left "Execution
    # failed" and one more SMS each hour. Catch-up asks the source first and waits for the file.
    warehouse = WarehouseResource(url=sqlite_url)
    landing = LandingDirSource(landing_dir=str(tmp_path / "landing"))
    policy = RecoveryPolicyResource(catch_up_days=3, catch_up_max_runs_per_tick=1, catch_up_after_hours=0)
    oldest, delivered, newest = due_days(3, datetime.now(UTC), 0)
    write_landing_file(landing.resolved_dir(), generate_day(delivered, rows=5, seed=1))
    resources = {"recovery_policy": policy, "warehouse": warehouse, "freight_source": landing}

    result = freight_catch_up_sensor(dg.build_sensor_context(instance=instance, resources=resources))

    # The one run this tick may request goes to the day that can load, not to the older undelivered one.
    assert [request.partition_key for request in result.run_requests or []] == [delivered.isoformat()]
    write_landing_file(landing.resolved_dir(), generate_day(oldest, rows=5, seed=2))
    _add_run(instance, dg.DagsterRunStatus.STARTED, {"dagster/partition": delivered.isoformat()})
    result = freight_catch_up_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert [request.partition_key for request in result.run_requests or []] == [oldest.isoformat()]
    assert newest.isoformat() not in str(result.run_requests)


def test_catch_up_sensor_says_which_days_wait_for_their_file(instance, sqlite_url, tmp_path):
    warehouse = WarehouseResource(url=sqlite_url)
    landing = LandingDirSource(landing_dir=str(tmp_path / "landing"))
    policy = RecoveryPolicyResource(catch_up_days=2, catch_up_after_hours=0)
    first, second = due_days(2, datetime.now(UTC), 0)
    resources = {"recovery_policy": policy, "warehouse": warehouse, "freight_source": landing}

    result = freight_catch_up_sensor(dg.build_sensor_context(instance=instance, resources=resources))

    assert not result.run_requests
    assert f"{first} missing (not delivered yet)" in result.skip_reason.skip_message
    assert f"{second} missing (not delivered yet)" in result.skip_reason.skip_message


def test_recover_and_doctor_say_which_day_waits_for_its_landing_file(tmp_path, monkeypatch, capsys):
    # Re-loading a day whose file is not there would only fail a run and page the on-call again.
    from dpa_assets.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DPA_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("DPA_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    newer = date.fromisoformat(daily_partitions.get_last_partition_key())
    older = newer - timedelta(days=1)
    write_landing_file(tmp_path / "landing", generate_day(older, rows=3, seed=4))

    assert main(["recover", "--days", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{older}  missing     would re-load" in out
    assert f"{newer}  missing     not delivered yet: no landing file" in out

    assert main(["setup-warehouse"]) == 0
    capsys.readouterr()
    assert main(["doctor", "--days", "2"]) == 1
    doctor = capsys.readouterr().out
    waiting = next(line for line in doctor.splitlines() if line.startswith(f"PROBLEM {newer}:"))
    assert "not delivered yet" in waiting and "dpa recover" not in waiting
    assert "dpa recover" in next(line for line in doctor.splitlines() if line.startswith(f"PROBLEM {older}:"))


def test_catch_up_and_the_freshness_check_never_create_a_missing_warehouse(instance, tmp_path):
    # A deleted warehouse file must stay deleted until a person restores it: a tick that set up
    # empty tables would leave an empty warehouse where the loads were.
    from dpa_assets.checks import freshness_evaluation

    missing = tmp_path / "gone" / "warehouse.sqlite"
    missing.parent.mkdir()
    warehouse = WarehouseResource(url=f"sqlite:///{missing}")
    policy = RecoveryPolicyResource(catch_up_days=2, catch_up_after_hours=0)
    resources = {"recovery_policy": policy, "warehouse": warehouse, "freight_source": _delivered(tmp_path)}

    result = freight_catch_up_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    evaluation = freshness_evaluation(datetime.now(UTC), warehouse)

    assert len(result.run_requests) == 2  # the runs decide: they refuse a warehouse Dagster knew
    assert not evaluation.passed
    assert not missing.exists()
