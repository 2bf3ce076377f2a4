"""Critical tables refuse erasure from plain clients; the partition commit and break-glass still work."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from dpa_assets.cli import main
from dpa_assets.settings import PROTECTED_TABLES
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.protection import ProtectedTableMissing, ensure_schema
from dpa_assets_tests.support.loads import commit_validated, prepared_load
from dpa_assets_tests.support.warehouse import rows, scalar, snapshot

DAY = "2026-11-20"
ROW_STATEMENTS = {
    "DELETE": "DELETE FROM {table}",
    "UPDATE": "UPDATE {table} SET partition_date = partition_date",
}


def _loaded_engine(url: str):
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    commit_validated(engine, prepared_load(DAY, "run-1", seed=1))
    return engine


@pytest.fixture
def loaded(warehouse_url):
    """A warehouse (SQLite, then PostgreSQL) with one loaded partition."""
    engine = _loaded_engine(warehouse_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_loaded(sqlite_url):
    engine = _loaded_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_loaded(pg_url):
    engine = _loaded_engine(pg_url)
    yield engine
    engine.dispose()


def _psql(url: str, *args: str) -> subprocess.CompletedProcess:
    """Run the real psql client against the test database, stopping at the first error."""
    parsed = sa.make_url(url)
    connection = ["-h", parsed.host, "-p", str(parsed.port), "-U", parsed.username, "-d", parsed.database]
    return subprocess.run(["psql", *connection, "-v", "ON_ERROR_STOP=1", *args], capture_output=True, text=True)


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


@pytest.mark.parametrize("table", PROTECTED_TABLES)
@pytest.mark.parametrize("statement", sorted(ROW_STATEMENTS))
def test_plain_sqlalchemy_client_cannot_delete_or_update(loaded, warehouse_url, table, statement):
    before = snapshot(warehouse_url)
    plain = sa.create_engine(warehouse_url)  # a bare engine: none of DPA's settings or permits
    with pytest.raises(sa.exc.DBAPIError, match="protected against"):
        with plain.begin() as connection:
            connection.exec_driver_sql(ROW_STATEMENTS[statement].format(table=table))
    plain.dispose()
    assert snapshot(warehouse_url) == before


@pytest.mark.parametrize("table", PROTECTED_TABLES)
def test_sqlite3_command_line_cannot_delete(sqlite_loaded, sqlite_url, table):
    before = snapshot(sqlite_url)
    result = subprocess.run(
        ["sqlite3", _sqlite_path(sqlite_url), f"DELETE FROM {table}; UPDATE {table} SET rowid = rowid;"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "protected against DELETE" in result.stderr
    assert snapshot(sqlite_url) == before


@pytest.mark.parametrize("table", PROTECTED_TABLES)
@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM {table}",
        "UPDATE {table} SET partition_date = partition_date",
        "TRUNCATE {table}",
        "TRUNCATE {table} CASCADE",
        "DROP TABLE {table}",
        "DROP TABLE {table} CASCADE",
    ],
)
def test_psql_cannot_erase_protected_tables(pg_loaded, pg_url, table, statement):
    before = snapshot(pg_url)
    result = _psql(pg_url, "-c", statement.format(table=table))
    assert result.returncode != 0
    assert "protected against" in result.stderr
    assert snapshot(pg_url) == before


def test_commit_still_replaces_the_partition_after_refusals(loaded, warehouse_url):
    plain = sa.create_engine(warehouse_url)
    with pytest.raises(sa.exc.DBAPIError):
        with plain.begin() as connection:
            connection.exec_driver_sql("DELETE FROM warehouse_facts")
    plain.dispose()
    new_version = prepared_load(DAY, "run-2", seed=2)
    commit_validated(loaded, new_version)
    assert scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts") == len(new_version.facts)


def test_sqlite_connections_of_the_pipeline_cannot_drop(sqlite_loaded, sqlite_url):
    with pytest.raises(sa.exc.DatabaseError, match="not authorized"):
        with sqlite_loaded.begin() as connection:
            connection.exec_driver_sql("DROP TABLE warehouse_facts")
    assert scalar(sqlite_url, "SELECT count(*) FROM warehouse_facts") > 0


def test_a_table_dropped_behind_our_back_is_not_silently_recreated(sqlite_loaded, sqlite_url):
    # SQLite has no DDL triggers: an outside client can drop a table. We must notice, not hide it.
    with sqlite3.connect(_sqlite_path(sqlite_url)) as outside:
        outside.execute("DROP TABLE freight_rejects")
    with pytest.raises(ProtectedTableMissing, match="freight_rejects"):
        ensure_schema(create_warehouse_engine(sqlite_url))


def test_schema_setup_is_idempotent(loaded, warehouse_url):
    before = snapshot(warehouse_url)
    ensure_schema(create_warehouse_engine(warehouse_url))
    ensure_schema(create_warehouse_engine(warehouse_url))
    assert snapshot(warehouse_url) == before


def test_least_privilege_role_loads_but_cannot_erase(pg_loaded, pg_url):
    url = sa.make_url(pg_url)
    sql_file = Path(__file__).resolve().parents[1] / "dpa_assets" / "warehouse" / "sql" / "least_privilege.sql"
    result = _psql(pg_url, "-v", "pipeline_password=s3cret-for-test", "-f", str(sql_file))
    assert result.returncode == 0, result.stderr
    pipeline_url = url.set(username="dpa_pipeline", password="s3cret-for-test")
    pipeline = create_warehouse_engine(pipeline_url.render_as_string(hide_password=False))
    ensure_schema(pipeline)  # everything exists: no DDL, so no ownership needed
    commit_validated(pipeline, prepared_load(DAY, "run-2", seed=2))
    for statement in (
        "DROP TABLE warehouse_facts",
        "TRUNCATE load_audit",
        "ALTER TABLE warehouse_facts DISABLE TRIGGER ALL",
    ):
        with pytest.raises(sa.exc.ProgrammingError, match="must be owner|permission denied"):
            with pipeline.begin() as connection:
                connection.exec_driver_sql(statement)
    pipeline.dispose()
    assert scalar(pg_url, "SELECT count(DISTINCT load_run_id) FROM warehouse_facts") == 1


def test_break_glass_needs_confirmation_and_is_audited(loaded, warehouse_url, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DPA_WAREHOUSE_URL", warehouse_url)
    args = ["break-glass", "--date", DAY, "--actor", "A. Mbarga", "--reason", "reload after customer dispute"]

    assert main([*args, "--confirm", "2026-11-21"]) == 2
    assert scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts") > 0

    assert main([*args, "--confirm", DAY]) == 0
    assert scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts") == 0
    assert scalar(warehouse_url, "SELECT count(*) FROM freight_rejects") == 0
    audit = rows(warehouse_url, "SELECT status, actor, detail FROM load_audit ORDER BY id DESC")[0]
    assert audit["status"] == "break_glass" and audit["actor"] == "A. Mbarga"
    assert "customer dispute" in audit["detail"]
