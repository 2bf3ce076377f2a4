"""The partition commit: one transaction, audited attempts, balanced books, lock-conflict retries."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
from datetime import date

import pytest

from dpa_assets.transforms import facts_checksum
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import (
    BLOCKED,
    VALIDATED,
    LoadRefused,
    RetrySettings,
    WarehouseBusy,
    commit_partition,
    read_facts,
    record_validation,
)
from dpa_assets.warehouse.protection import ensure_schema
from dpa_assets_tests.support.loads import commit_validated, prepared_load, record_passed_validation
from dpa_assets_tests.support.warehouse import rows, scalar, snapshot

DAY = "2026-11-20"


@pytest.fixture
def engine(warehouse_url):
    engine = create_warehouse_engine(warehouse_url, lock_timeout_seconds=0.5)
    ensure_schema(engine)
    yield engine
    engine.dispose()


def assert_books_balance(url: str, day: str) -> None:
    audit = rows(
        url,
        "SELECT * FROM load_audit WHERE status = 'loaded' AND partition_date = :d ORDER BY id DESC",
        d=day,
    )[0]
    fact_rows = scalar(url, "SELECT count(*) FROM warehouse_facts WHERE partition_date = :d", d=day)
    quarantined = scalar(
        url,
        "SELECT count(*) FROM freight_rejects WHERE partition_date = :d AND validation_run_id = :v",
        d=day,
        v=audit["validation_run_id"],
    )
    assert audit["rows_received"] == fact_rows + quarantined
    assert audit["rows_loaded"] == fact_rows


def test_commit_writes_facts_rejects_and_audit_together(engine, warehouse_url):
    load = prepared_load(DAY, "run-1", rows=200, seed=1)
    audit = commit_validated(engine, load)
    assert audit["rows_loaded"] == len(load.facts)
    assert facts_checksum(read_facts(engine, [date.fromisoformat(DAY)])) == load.content_checksum
    assert_books_balance(warehouse_url, DAY)


def test_a_load_that_loses_rows_is_refused_before_touching_the_warehouse(engine, warehouse_url):
    commit_validated(engine, prepared_load(DAY, "run-1", seed=1))
    load = prepared_load(DAY, "run-2", seed=2)
    short = record_passed_validation(engine, dataclasses.replace(load, facts=load.facts.iloc[1:]))  # a row went missing
    before = snapshot(warehouse_url)

    with pytest.raises(LoadRefused, match="refusing to commit"):
        commit_partition(engine, short)

    after = snapshot(warehouse_url)
    assert (after["warehouse_facts"], after["freight_rejects"]) == (
        before["warehouse_facts"],
        before["freight_rejects"],
    )
    refused = rows(warehouse_url, "SELECT status, detail, rows_loaded FROM load_audit ORDER BY id DESC")[0]
    assert refused["status"] == "refused" and "refusing to commit" in refused["detail"]
    assert refused["rows_loaded"] == 0


def test_exception_before_commit_rolls_back_and_is_audited(engine, warehouse_url):
    commit_validated(engine, prepared_load(DAY, "run-1", seed=1))
    second = record_passed_validation(engine, prepared_load(DAY, "run-2", seed=2))
    before = snapshot(warehouse_url)

    def explode(_connection):
        raise RuntimeError("disk full while loading")

    with pytest.raises(RuntimeError, match="disk full"):
        commit_partition(engine, second, before_commit=explode)

    after = snapshot(warehouse_url)
    assert after["warehouse_facts"] == before["warehouse_facts"]
    assert after["freight_rejects"] == before["freight_rejects"]
    failed = rows(warehouse_url, "SELECT * FROM load_audit WHERE status = 'failed'")
    assert len(failed) == 1 and failed[0]["run_id"] == "run-2"
    assert "disk full while loading" in failed[0]["detail"]
    assert_books_balance(warehouse_url, DAY)


def test_blocked_validation_keeps_loaded_facts_and_their_rejects(engine, warehouse_url):
    loaded = prepared_load(DAY, "run-1", seed=1)
    record_validation(engine, loaded.partition_date, "run-1", loaded.rejects, loaded.rows_received, VALIDATED)
    commit_validated(engine, loaded)
    facts_before = snapshot(warehouse_url)["warehouse_facts"]
    bad = prepared_load(DAY, "run-2", seed=2, bad_fraction=0.5)

    record_validation(engine, bad.partition_date, "run-2", bad.rejects, bad.rows_received, BLOCKED)

    assert snapshot(warehouse_url)["warehouse_facts"] == facts_before
    assert scalar(warehouse_url, "SELECT count(*) FROM freight_rejects WHERE validation_run_id = 'run-2'") == len(
        bad.rejects
    )
    assert rows(warehouse_url, "SELECT status FROM load_audit ORDER BY id DESC")[0]["status"] == BLOCKED
    assert_books_balance(warehouse_url, DAY)


def test_revalidating_replaces_pending_rejects_without_duplicates(engine, warehouse_url):
    first = prepared_load(DAY, "run-1", seed=1, bad_fraction=0.5)
    second = prepared_load(DAY, "run-2", seed=2, bad_fraction=0.5)
    record_validation(engine, first.partition_date, "run-1", first.rejects, first.rows_received, BLOCKED)
    record_validation(engine, first.partition_date, "run-1", first.rejects, first.rows_received, BLOCKED)
    assert scalar(warehouse_url, "SELECT count(*) FROM freight_rejects") == len(first.rejects)
    record_validation(engine, second.partition_date, "run-2", second.rejects, second.rows_received, BLOCKED)
    assert scalar(warehouse_url, "SELECT count(*) FROM freight_rejects") == len(second.rejects)


def test_retry_settings_bound_the_attempts(engine, warehouse_url):
    settings = RetrySettings(max_attempts=3, base_delay_seconds=0.01)
    assert commit_validated(engine, prepared_load(DAY, "run-1"), retry=settings)["attempts"] == 1


@contextlib.contextmanager
def another_writer_holding_the_lock(sqlite_url: str, seconds: float):
    """A second, plain sqlite3 connection that holds the write lock for a while, in a thread."""
    holding = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        holding.set()
        threading.Event().wait(seconds)
        connection.execute("ROLLBACK")
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait()
    try:
        yield
    finally:
        holder.join()


def test_sqlite_database_is_locked_is_retried_then_commits(sqlite_url, caplog):
    engine = create_warehouse_engine(sqlite_url, lock_timeout_seconds=0.3)
    ensure_schema(engine)

    load = record_passed_validation(engine, prepared_load(DAY, "run-1"))
    with another_writer_holding_the_lock(sqlite_url, seconds=1.0):
        settings = RetrySettings(max_attempts=8, base_delay_seconds=0.1)
        audit = commit_partition(engine, load, retry=settings)

    assert audit["attempts"] >= 2
    assert any("lock conflict on attempt 1" in record.message for record in caplog.records)
    assert scalar(sqlite_url, "SELECT count(*) FROM load_audit WHERE status = 'loaded'") == 1


def test_lock_conflict_outlasting_retries_fails_cleanly(sqlite_url):
    engine = create_warehouse_engine(sqlite_url, lock_timeout_seconds=0.2)
    ensure_schema(engine)

    load = record_passed_validation(engine, prepared_load(DAY, "run-1"))
    with another_writer_holding_the_lock(sqlite_url, seconds=2.0):
        settings = RetrySettings(max_attempts=2, base_delay_seconds=0.05)
        with pytest.raises(WarehouseBusy, match="still locked after 2 attempts; nothing was written"):
            commit_partition(engine, load, retry=settings)

    assert scalar(sqlite_url, "SELECT count(*) FROM warehouse_facts") == 0
