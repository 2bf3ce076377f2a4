"""A real PostgreSQL deadlock is survived; concurrent loads of one day never interleave."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from dpa_assets.sources.generator import generate_day, write_landing_file
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import RetrySettings
from dpa_assets.warehouse.protection import ensure_schema
from dpa_assets_tests.support.loads import commit_validated, prepared_load
from dpa_assets_tests.support.warehouse import rows, scalar

DAY = "2026-11-20"


def _wait_until_blocked(admin: sa.Engine, application_name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with admin.connect() as connection:
            waiting = connection.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :n AND wait_event_type = 'Lock'"
                ),
                {"n": application_name},
            ).scalar()
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError(f"{application_name} never waited for a lock")


def test_real_postgres_deadlock_is_retried_and_commits_once(pg_url, caplog):
    setup = create_warehouse_engine(pg_url)
    ensure_schema(setup)
    commit_validated(setup, prepared_load(DAY, "run-1", seed=1))
    loader = sa.create_engine(pg_url, connect_args={"application_name": "dpa_loader"})
    ensure_schema(loader)
    rival = sa.create_engine(pg_url).connect()
    rival_tx = rival.begin()
    # The rival outwaits the loader, so PostgreSQL picks the loader as the deadlock victim.
    rival.exec_driver_sql("SET LOCAL deadlock_timeout = '10s'")
    rival.exec_driver_sql(f"SELECT 1 FROM freight_rejects WHERE partition_date = '{DAY}' FOR UPDATE")
    new_version = prepared_load(DAY, "run-2", seed=2)
    outcome: dict = {}

    def load() -> None:
        try:
            outcome["audit"] = commit_validated(
                loader,
                new_version,
                retry=RetrySettings(max_attempts=5, base_delay_seconds=0.05),
                log=logging.getLogger("deadlock-test"),
            )
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = error

    with caplog.at_level(logging.WARNING, logger="deadlock-test"):
        thread = threading.Thread(target=load)
        thread.start()
        _wait_until_blocked(setup, "dpa_loader")  # the loader deleted the facts and waits on the rejects
        rival.exec_driver_sql(f"SELECT 1 FROM warehouse_facts WHERE partition_date = '{DAY}' FOR UPDATE")
        rival_tx.commit()
        rival.close()
        thread.join(timeout=60)

    assert "error" not in outcome, outcome.get("error")
    assert outcome["audit"]["attempts"] >= 2
    assert any("deadlock detected" in record.message for record in caplog.records)
    assert scalar(pg_url, "SELECT count(*) FROM warehouse_facts") == len(new_version.facts)
    assert scalar(pg_url, "SELECT count(DISTINCT shipment_id) FROM warehouse_facts") == len(new_version.facts)
    assert scalar(pg_url, "SELECT count(*) FROM load_audit WHERE status = 'loaded' AND run_id = 'run-2'") == 1
    loader.dispose()
    setup.dispose()


@pytest.mark.slow
def test_concurrent_materializations_of_one_day_never_duplicate(warehouse_url, tmp_path: Path):
    landing = tmp_path / "landing"
    generated = generate_day(date.fromisoformat(DAY), seed=5)
    write_landing_file(landing, generated)
    dpa = str(Path(sys.executable).with_name("dpa"))
    workers = []
    for number in range(3):
        env = {
            **os.environ,
            "DAGSTER_HOME": str(tmp_path / f"home-{number}"),  # separate instances: only the warehouse is shared
            "DPA_WAREHOUSE_URL": warehouse_url,
            "DPA_LANDING_DIR": str(landing),
            "DPA_ARCHIVE_DIR": str(tmp_path / "archive"),
        }
        workers.append(
            subprocess.Popen(
                [dpa, "materialize", "--date", DAY],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]

    assert all(worker.returncode == 0 for worker in workers), outputs
    valid = len(generated.records) - generated.bad_count
    assert scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts") == valid
    assert scalar(warehouse_url, "SELECT count(DISTINCT shipment_id) FROM warehouse_facts") == valid
    loaded = rows(warehouse_url, "SELECT * FROM load_audit WHERE status = 'loaded' ORDER BY id DESC")
    assert len(loaded) == 3
    assert (
        scalar(
            warehouse_url,
            "SELECT count(*) FROM freight_rejects WHERE validation_run_id = :v",
            v=loaded[0]["validation_run_id"],
        )
        == generated.bad_count
    )
