"""kill -9 a real loading process at many moments: the partition is always wholly old or wholly new."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from dpa_assets.transforms import facts_checksum
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import read_facts
from dpa_assets_tests.support.loads import prepared_load
from dpa_assets_tests.support.warehouse import rows, scalar

DAY = "2026-11-20"
ROWS = 20_000
MIN_KILLS_OF_RUNNING_LOADS = 20
BEFORE_COMMIT_KILLS = 4
MAX_ATTEMPTS = 60
pytestmark = pytest.mark.slow


def _start_worker(url: str, load_file: Path, pause_before_commit: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "dpa_assets_tests.support.load_worker", url, str(load_file)]
    if pause_before_commit:
        command.append("--pause-before-commit")
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert worker.stdout.readline().strip() == "STARTED"
    return worker


def _wait_for_killed_sessions(url: str, timeout: float = 30.0) -> None:
    """A killed client's PostgreSQL backend lives on until it notices; it may still commit (COMMIT
    already sent). Wait for it, so the facts and the audit row below are read after it, not across it."""
    if not url.startswith("postgresql"):
        return  # SQLite: the writer's locks die with its process
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + timeout
    while scalar(url, query) and time.monotonic() < deadline:
        time.sleep(0.05)


def _assert_wholly_one_version(url: str, versions: dict[str, str]) -> str:
    _wait_for_killed_sessions(url)
    engine = create_warehouse_engine(url)
    try:
        checksum = facts_checksum(read_facts(engine, [date.fromisoformat(DAY)]))
    finally:
        engine.dispose()
    assert checksum in versions, "the partition is a mix of versions"
    audit = rows(url, "SELECT * FROM load_audit WHERE status = 'loaded' ORDER BY id DESC")[0]
    fact_rows = scalar(url, "SELECT count(*) FROM warehouse_facts")
    quarantined = scalar(
        url, "SELECT count(*) FROM freight_rejects WHERE validation_run_id = :v", v=audit["validation_run_id"]
    )
    assert audit["content_checksum"] == checksum, "the audit row describes other data than is stored"
    assert audit["rows_loaded"] == fact_rows
    assert audit["rows_received"] == fact_rows + quarantined
    # Besides the loaded version's rejects, only the latest pending validation's may be kept.
    assert scalar(url, "SELECT count(DISTINCT validation_run_id) FROM freight_rejects") <= 2
    return versions[checksum]


def test_kill_minus_9_at_many_moments_never_leaves_a_mix(warehouse_url, tmp_path):
    versions, files = {}, []
    for number in (1, 2):
        load = prepared_load(DAY, f"run-v{number}", rows=ROWS, seed=number)
        versions[load.content_checksum] = f"v{number}"
        files.append(tmp_path / f"v{number}.pickle")
        files[-1].write_bytes(pickle.dumps(load))

    baseline = _start_worker(warehouse_url, files[0], pause_before_commit=False)
    started = time.monotonic()  # from the start of the commit, as the kill delays are
    assert baseline.wait(timeout=120) == 0
    load_seconds = time.monotonic() - started
    assert _assert_wholly_one_version(warehouse_url, versions) == "v1"

    rng = random.Random(20261126)
    killed_alive, seen, attempt = 0, set(), 0
    # Kill until 20 kills have hit a running load (a few random delays land after it finished),
    # plus a few kills parked exactly at the commit.
    while killed_alive < MIN_KILLS_OF_RUNNING_LOADS + BEFORE_COMMIT_KILLS and attempt < MAX_ATTEMPTS:
        at_commit = attempt % 6 == 5
        worker = _start_worker(warehouse_url, files[(attempt + 1) % 2], pause_before_commit=at_commit)
        if at_commit:
            assert worker.stdout.readline().strip() == "BEFORE_COMMIT"
        else:
            time.sleep(rng.uniform(0.0, load_seconds))
        killed_alive += worker.poll() is None
        worker.kill()  # SIGKILL: no cleanup, no rollback from the client side
        worker.wait(timeout=30)
        seen.add(_assert_wholly_one_version(warehouse_url, versions))
        attempt += 1

    assert killed_alive >= MIN_KILLS_OF_RUNNING_LOADS + BEFORE_COMMIT_KILLS, (
        f"only {killed_alive} kills hit a running load"
    )
    assert seen <= {"v1", "v2"}
    # The pipeline goes on normally afterwards.
    final = _start_worker(warehouse_url, files[1], pause_before_commit=False)
    assert final.wait(timeout=120) == 0
    assert _assert_wholly_one_version(warehouse_url, versions) == "v2"
