"""The cold-restart runbook on real processes: a daemon-launched run is killed -9 mid-load, then recovered.

Nothing here kills anything but the run worker whose PID the run's own heartbeat recorded, and, at
the end, the daemon this test started (by its own process group).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from dpa_assets.alerts.journal import read_alerts
from dpa_assets.instance import install_instance_yaml
from dpa_assets.partitions import daily_partitions
from dpa_assets.recovery.heartbeat import read_heartbeat
from dpa_assets.sources.generator import generate_day, write_landing_file
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.reports import latest_audit, latest_loaded_audit, partition_counts

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROWS = 200_000


def _wait_for(what: str, predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _status(instance: dg.DagsterInstance, run_id: str) -> str:
    return instance.get_run_by_id(run_id).status.value


def _newest_other(instance: dg.DagsterInstance, known: str) -> str | None:
    newest = instance.get_runs(limit=1)
    return newest[0].run_id if newest and newest[0].run_id != known else None


def _kill_mid_load(instance: dg.DagsterInstance, run_id: str) -> int:
    """SIGKILL the run's worker, found by the PID its heartbeat recorded, once validation is under way."""
    _wait_for("validation to start", lambda: "validated_freight" in _steps_started(instance, run_id), 240)
    beat = read_heartbeat(instance.get_run_by_id(run_id).tags)
    assert beat is not None
    os.kill(beat.pid, signal.SIGKILL)
    return beat.pid


def _steps_started(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return {record.event_log_entry.step_key for record in records}


@pytest.mark.slow
def test_a_killed_run_is_failed_alerted_and_its_day_reloaded(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    install_instance_yaml(home)  # the shipped dagster.yaml: one run per day, run monitoring
    day = daily_partitions.get_last_partition_key()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DPA_LANDING_DIR": str(tmp_path / "landing"),
        "DPA_ARCHIVE_DIR": str(tmp_path / "archive"),
        "DPA_ALERT_JOURNAL": str(tmp_path / "journal.jsonl"),
        "DPA_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        "PYTHONPATH": str(ROOT),
    }
    for key in ("DAGSTER_HOME", "DPA_LANDING_DIR", "DPA_ARCHIVE_DIR", "DPA_ALERT_JOURNAL", "DPA_WAREHOUSE_URL"):
        monkeypatch.setenv(key, env[key])
    write_landing_file(tmp_path / "landing", generate_day(date.fromisoformat(day), rows=ROWS, seed=3))

    def dagster(*args: str) -> None:
        subprocess.run([str(BIN / "dagster"), *args], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)

    # Catch-up would load the same day on its own; this test shows the reconciler and `dpa recover`.
    dagster("sensor", "stop", "freight_catch_up_sensor", "-w", "workspace.yaml")
    journal = tmp_path / "journal.jsonl"
    daemon_log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        stdout=daemon_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so the test can stop exactly what it started
    )
    try:
        dagster(
            "job",
            "launch",
            "-w",
            "workspace.yaml",
            "-j",
            "daily_freight_job",
            "--tags",
            json.dumps({"dagster/partition": day}),
        )
        with dg.DagsterInstance.get() as instance:
            launched = _wait_for("the run", lambda: [r.run_id for r in instance.get_runs(limit=1)], 60)[0]
            worker = _kill_mid_load(instance, launched)
            assert worker not in (os.getpid(), daemon.pid)
            # Measured: the code server sees its run worker die by a signal and fails the run itself;
            # the day's slot is free and the failure sensor journals it.
            _wait_for("the launched run to fail", lambda: _status(instance, launched) == "FAILURE", 120, 1)
            _wait_for("its alert", lambda: launched in {a.run_id for a in read_alerts(journal)}, 120, 2)

            # An in-process run (`dpa materialize`) has no code server watching it: killed, it stays
            # STARTED until the reconciler fails it.
            materialize = subprocess.Popen(
                [str(BIN / "dpa"), "materialize", "--date", day],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            in_process = _wait_for("the in-process run", lambda: _newest_other(instance, launched), 120)
            assert _kill_mid_load(instance, in_process) == materialize.pid  # the dpa process is the worker
            materialize.wait(timeout=30)
            time.sleep(3)
            assert _status(instance, in_process) == "STARTED"  # nobody else notices
            _wait_for("the reconciler", lambda: _status(instance, in_process) == "FAILURE", 180, 2)
            zombie_alerts = [a for a in read_alerts(journal) if "ZOMBIE" in a.summary]
            assert [(a.run_id, a.partition) for a in zombie_alerts] == [(in_process, day)]
            assert f"PID {materialize.pid}" in zombie_alerts[0].summary
            assert daemon.poll() is None  # nothing else was killed
            run_id = in_process

        recover = subprocess.run(
            [str(BIN / "dpa"), "recover", "--days", "1"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert recover.returncode == 0, recover.stdout + recover.stderr
        assert f"[1/1] {day}  loading" in recover.stdout and f"[1/1] {day}  loaded" in recover.stdout
        assert daemon.poll() is None
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        daemon_log.close()

    engine = create_warehouse_engine(env["DPA_WAREHOUSE_URL"])
    audit_row = latest_audit(engine, date.fromisoformat(day))
    loaded = latest_loaded_audit(engine, date.fromisoformat(day))
    counts = partition_counts(engine, date.fromisoformat(day))
    engine.dispose()
    assert audit_row["status"] == "loaded" and loaded["run_id"] != run_id
    assert loaded["rows_received"] == ROWS
    assert counts["facts"] + counts["rejects"] == ROWS and counts["facts"] == loaded["rows_loaded"]
