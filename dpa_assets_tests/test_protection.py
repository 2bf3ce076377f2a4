"""Critical tables refuse erasure from plain clients; the partition commit and break-glass still work."""

from __future__ import annotations

import sqlite3
import subprocess
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from dpa_assets.cli import main
from dpa_assets.settings import PROTECTED_TABLES
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import BLOCKED, VALIDATED, _lock_partition, commit_partition, record_validation
from dpa_assets.warehouse.protection import (
    ProtectedTableMissing,
    ProtectionIncomplete,
    ensure_schema,
    protection_status,
)
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


def _least_privilege(pg_url: str) -> str:
    """Run least_privilege.sql as the owner; the URL of the pipeline role it sets up."""
    sql_file = Path(__file__).resolve().parents[1] / "dpa_assets" / "warehouse" / "sql" / "least_privilege.sql"
    result = _psql(pg_url, "-v", "pipeline_password=s3cret-for-test", "-f", str(sql_file))
    assert result.returncode == 0, result.stderr
    pipeline_url = sa.make_url(pg_url).set(username="dpa_pipeline", password="s3cret-for-test")
    return pipeline_url.render_as_string(hide_password=False)


def test_least_privilege_role_loads_but_cannot_erase(pg_loaded, pg_url):
    pipeline = create_warehouse_engine(_least_privilege(pg_url))
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


TABLE_ATTACKS = {
    "delete": "DELETE FROM {table}",
    "update": "UPDATE {table} SET partition_date = partition_date",
    "truncate": "TRUNCATE {table}",
    "drop": "DROP TABLE {table} CASCADE",
    "forged permit": f"SELECT set_config('dpa.partition_replace', '{DAY}', true); DELETE FROM {{table}}",
    "disable triggers": "ALTER TABLE {table} DISABLE TRIGGER ALL",
}
FUNCTION_ATTACKS = {
    "replace trigger function": (
        "CREATE OR REPLACE FUNCTION dpa_refuse_row_change() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN OLD; END $$"
    ),
    "replace delete check": (
        "CREATE OR REPLACE FUNCTION dpa_check_partition_delete() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN NULL; END $$"
    ),
    "empty the replace queue": "DELETE FROM dpa_replace_pending",
    "fill the replace queue": f"INSERT INTO dpa_replace_pending VALUES ('warehouse_facts', DATE '{DAY}', '{{loaded}}')",
    "break-glass": f"SELECT * FROM dpa_break_glass(DATE '{DAY}', 'intruder', 'the pipeline tries to erase a day')",
    "replace without audit": f"SELECT dpa_replace_partition(DATE '{DAY}')",
    "replace rejects without audit": f"SELECT dpa_replace_rejects(DATE '{DAY}', NULL)",
}
PIPELINE_REFUSALS = "must be owner|permission denied|protected against|only together with its audit row"
ATTACKS = [
    *((name, statement.format(table=table)) for name, statement in TABLE_ATTACKS.items() for table in PROTECTED_TABLES),
    *FUNCTION_ATTACKS.items(),
]


@pytest.fixture
def pipeline_url(pg_loaded, pg_url) -> str:
    return _least_privilege(pg_url)


@pytest.mark.parametrize(("attack", "statement"), ATTACKS, ids=[f"{name}:{sql[:40]}" for name, sql in ATTACKS])
def test_pipeline_role_cannot_remove_or_change_committed_rows(pipeline_url, pg_url, attack, statement):
    before = snapshot(pg_url)
    result = _psql(pipeline_url, "-c", statement)
    assert result.returncode != 0, f"psql as dpa_pipeline was allowed: {attack}"
    assert any(word in result.stderr for word in PIPELINE_REFUSALS.split("|")), result.stderr
    pipeline = sa.create_engine(pipeline_url)  # psycopg2 through SQLAlchemy, none of DPA's settings
    with pytest.raises(sa.exc.DBAPIError, match=PIPELINE_REFUSALS):
        with pipeline.begin() as connection:
            connection.exec_driver_sql(statement)
    pipeline.dispose()
    assert snapshot(pg_url) == before


@pytest.mark.parametrize("table", ["warehouse_facts", "freight_rejects"])
def test_a_forged_permit_is_useless_even_with_a_delete_grant(pg_loaded, pg_url, table):
    # Defence in depth: a role wrongly granted DELETE is not the table owner, so the trigger refuses.
    grant = (
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dpa_analyst') THEN "
        "CREATE ROLE dpa_analyst LOGIN; END IF; END $$"
    )
    assert _psql(pg_url, "-c", grant, "-c", f"GRANT SELECT, DELETE ON {table} TO dpa_analyst").returncode == 0
    analyst_url = sa.make_url(pg_url).set(username="dpa_analyst").render_as_string(hide_password=False)
    before = snapshot(pg_url)
    result = _psql(analyst_url, "-c", TABLE_ATTACKS["forged permit"].format(table=table))
    assert result.returncode != 0 and "protected against DELETE" in result.stderr
    assert snapshot(pg_url) == before


def test_nightly_load_still_works_as_the_pipeline_role(pipeline_url, pg_url):
    pipeline = create_warehouse_engine(pipeline_url)
    assert not [piece for piece in ensure_schema(pipeline) if piece.state == "missing"]
    day = date.fromisoformat(DAY)
    for run_id, seed in (("run-2", 2), ("run-3", 3)):  # the second time for a day takes the replace path
        load = prepared_load(DAY, run_id, seed=seed)
        record_validation(pipeline, day, run_id, load.rejects, load.rows_received, VALIDATED)
        commit_partition(pipeline, load)
    blocked = prepared_load(DAY, "run-4", seed=4)
    record_validation(pipeline, day, "run-4", blocked.rejects, blocked.rows_received, BLOCKED)
    record_validation(pipeline, day, "run-4", blocked.rejects, blocked.rows_received, BLOCKED)
    pipeline.dispose()
    assert scalar(pg_url, "SELECT count(DISTINCT load_run_id) FROM warehouse_facts") == 1
    assert scalar(pg_url, "SELECT min(load_run_id) FROM warehouse_facts") == "run-3"
    kept = rows(pg_url, "SELECT validation_run_id, count(*) AS n FROM freight_rejects GROUP BY 1 ORDER BY 1")
    assert [row["validation_run_id"] for row in kept] == ["run-3", "run-4"]
    assert kept[1]["n"] == len(blocked.rejects)


def test_the_replace_function_waits_for_the_ledgers_partition_lock(pg_loaded, pg_url):
    # One lock key on both sides: the ledger's Python lock and the SQL function's must collide.
    holder = create_warehouse_engine(pg_url)
    waiter = create_warehouse_engine(pg_url, lock_timeout_seconds=0.3)
    with holder.connect() as held, held.begin():
        _lock_partition(held, date.fromisoformat(DAY))
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            with waiter.begin() as connection:
                connection.exec_driver_sql(f"SELECT dpa_replace_partition(DATE '{DAY}')")
    holder.dispose()
    waiter.dispose()


def _owner_url(pg_url: str) -> str:
    """A non-superuser role that owns the test database (and so its public schema)."""
    database = sa.make_url(pg_url).database
    result = _psql(
        pg_url,
        "-c",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dpa_owner') THEN "
        "CREATE ROLE dpa_owner LOGIN NOSUPERUSER; END IF; END $$",
        "-c",
        f'ALTER DATABASE "{database}" OWNER TO dpa_owner',
    )
    assert result.returncode == 0, result.stderr
    return sa.make_url(pg_url).set(username="dpa_owner").render_as_string(hide_password=False)


def _piece(pieces, name: str):
    return next(piece for piece in pieces if piece.name == name)


def test_setup_reports_the_drop_guard_missing_until_a_superuser_runs_it(pg_url, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    owner_url = _owner_url(pg_url)
    monkeypatch.setenv("DPA_WAREHOUSE_URL", owner_url)
    assert main(["setup-warehouse"]) == 1
    out = capsys.readouterr().out
    assert "DROP event trigger" in out and "needs a superuser" in out
    assert "protection in place" not in out
    drop_guard = _piece(protection_status(create_warehouse_engine(owner_url)), "DROP event trigger")
    assert drop_guard.state == "missing"

    monkeypatch.setenv("DPA_WAREHOUSE_URL", pg_url)
    assert main(["setup-warehouse"]) == 0
    out = capsys.readouterr().out
    assert "missing" not in out
    assert _piece(protection_status(create_warehouse_engine(owner_url)), "DROP event trigger").state == "installed"
    owner = create_warehouse_engine(owner_url)
    for run_id, seed in (("run-1", 1), ("run-2", 2)):  # the superuser's setup left the owner able to replace
        commit_validated(owner, prepared_load(DAY, run_id, seed=seed))
    owner.dispose()
    assert scalar(pg_url, "SELECT min(load_run_id) FROM warehouse_facts") == "run-2"
    assert _psql(owner_url, "-c", "DROP TABLE load_audit CASCADE").returncode != 0


def test_setup_replaces_an_outdated_definition(pg_loaded, pg_url):
    weakened = (
        "CREATE OR REPLACE FUNCTION dpa_refuse_row_change() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN OLD; END $$"
    )
    assert _psql(pg_url, "-c", weakened, "-c", "ALTER TABLE load_audit DISABLE TRIGGER ALL").returncode == 0
    assert _piece(protection_status(pg_loaded), "row triggers").state == "missing"
    pipeline = create_warehouse_engine(_least_privilege(pg_url))
    with pytest.raises(ProtectionIncomplete, match="dpa setup-warehouse"):
        ensure_schema(pipeline)  # the pipeline cannot repair it and must not load unprotected
    pipeline.dispose()
    pieces = ensure_schema(create_warehouse_engine(pg_url))
    assert [piece.name for piece in pieces if piece.state != "installed"] == []
    before = snapshot(pg_url)
    assert "protected against" in _psql(pg_url, "-c", "DELETE FROM load_audit").stderr
    assert snapshot(pg_url) == before


def test_break_glass_on_postgresql_records_the_database_user(pg_loaded, pg_url, monkeypatch, tmp_path):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DPA_WAREHOUSE_URL", pg_url)
    args = ["break-glass", "--date", DAY, "--confirm", DAY, "--actor", "A. Mbarga", "--reason", "reload after dispute"]
    assert main(args) == 0
    audit = rows(pg_url, "SELECT actor, detail FROM load_audit WHERE status = 'break_glass'")[0]
    assert audit["actor"] == "A. Mbarga"
    assert f"database user {sa.make_url(pg_url).username}" in audit["detail"]


def test_break_glass_as_the_pipeline_role_is_one_clear_refusal(pipeline_url, pg_url, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DPA_WAREHOUSE_URL", pipeline_url)
    before = snapshot(pg_url)
    args = ["break-glass", "--date", DAY, "--confirm", DAY, "--actor", "A. Mbarga", "--reason", "reload after dispute"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "permission denied" in err and "Traceback" not in err
    assert snapshot(pg_url) == before


def test_sqlite_protection_status_names_what_sqlite_cannot_do(sqlite_loaded):
    pieces = {piece.name: piece for piece in protection_status(sqlite_loaded)}
    assert pieces["row triggers"].state == "installed"
    assert pieces["permit table"].state == "installed"
    assert pieces["DROP guard"].detail == "DPA connections only"
    assert pieces["DROP from outside clients"].state == "not possible"
    assert "detected at next run" in pieces["DROP from outside clients"].detail


def test_the_owner_with_a_permit_cannot_remove_another_day(pg_loaded, pg_url):
    # The delete check reads every removed row (its transition table): one row of another day fails all.
    commit_validated(pg_loaded, prepared_load("2026-11-21", "run-2", seed=2))
    before = snapshot(pg_url)
    forged = f"SET dpa.partition_replace = '{DAY}'"
    result = _psql(pg_url, "-c", f"BEGIN; {forged}; DELETE FROM warehouse_facts; COMMIT;")
    assert result.returncode != 0 and "protected against DELETE" in result.stderr
    # The right day alone, but no audit row in the transaction: refused at commit.
    one_day = f"DELETE FROM warehouse_facts WHERE partition_date = '{DAY}'"
    result = _psql(pg_url, "-c", f"BEGIN; {forged}; {one_day}; COMMIT;")
    assert result.returncode != 0 and "only together with its audit row" in result.stderr
    assert snapshot(pg_url) == before


def test_replacing_a_day_fires_no_per_row_trigger_and_leaves_no_queue(pg_loaded, pg_url):
    # Per-row triggers cost seconds per 100k rows replaced; the guarantees hold with statement-level ones.
    per_row = rows(
        pg_url,
        "SELECT t.tgname FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgtype & 1 = 1 "
        "AND t.tgrelid IN ('warehouse_facts'::regclass, 'freight_rejects'::regclass, 'load_audit'::regclass)",
    )
    assert per_row == []
    commit_validated(pg_loaded, prepared_load(DAY, "run-2", seed=2))
    assert scalar(pg_url, "SELECT min(load_run_id) FROM warehouse_facts") == "run-2"
    assert scalar(pg_url, "SELECT count(*) FROM dpa_replace_pending") == 0
