"""Create the warehouse tables and lock them against erasure; idempotent, safe to run concurrently.

Only a transaction holding a *permit* for one partition may delete that partition's facts and
rejects (the partition commit and the break-glass command take one). Updates are always refused,
the audit trail is append-only, and on PostgreSQL TRUNCATE and DROP TABLE are refused too.
SQLite has no DDL triggers: a dropped table cannot be prevented there, but it is detected and
never silently recreated (see ``ProtectedTableMissing``).
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dpa_assets.settings import FACT_TABLE, PROTECTED_TABLES, REJECT_TABLE
from dpa_assets.warehouse.engine import WRITE_OPTION, is_sqlite
from dpa_assets.warehouse.tables import metadata

PERMIT_TABLE = "dpa_write_permit"  # SQLite only: rows live inside one transaction, never committed
SCHEMA_MARKER_TABLE = "dpa_schema_marker"
PG_PERMIT_SETTING = "dpa.partition_replace"
PG_DROP_SETTING = "dpa.allow_drop"
PARTITIONED_TABLES = (FACT_TABLE, REJECT_TABLE)  # tables whose partitions a permit may replace
_SETUP_LOCK_KEY = 0x445041  # "DPA": serializes concurrent schema setup on PostgreSQL


class ProtectedTableMissing(RuntimeError):
    """A protected table was dropped after setup; recreating it empty would hide the loss."""


def _refusal(table: str, action: str) -> str:
    return (
        f"{table} is protected against {action}: only the DPA partition commit "
        "or the documented break-glass command may change it"
    )


def _sqlite_statements() -> list[str]:
    statements = [f"CREATE TABLE IF NOT EXISTS {PERMIT_TABLE} (table_name TEXT NOT NULL, partition_date DATE NOT NULL)"]
    for table in PROTECTED_TABLES:
        permit = (
            f"WHEN NOT EXISTS (SELECT 1 FROM {PERMIT_TABLE} p WHERE p.table_name = '{table}' "
            "AND p.partition_date = OLD.partition_date) "
            if table in PARTITIONED_TABLES
            else ""
        )
        statements.append(
            f"CREATE TRIGGER IF NOT EXISTS {table}_refuse_delete BEFORE DELETE ON {table} {permit}"
            f"BEGIN SELECT RAISE(ABORT, '{_refusal(table, 'DELETE')}'); END"
        )
        statements.append(
            f"CREATE TRIGGER IF NOT EXISTS {table}_refuse_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{_refusal(table, 'UPDATE')}'); END"
        )
    return statements


def _postgres_statements() -> list[str]:
    partitioned = ", ".join(f"'{name}'" for name in PARTITIONED_TABLES)
    protected = ", ".join(f"'{name}'" for name in PROTECTED_TABLES)
    statements = [
        f"""CREATE OR REPLACE FUNCTION dpa_refuse_row_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND TG_TABLE_NAME IN ({partitioned})
     AND current_setting('{PG_PERMIT_SETTING}', true) = OLD.partition_date::text THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION '% is protected against %: only the DPA partition commit or the documented '
    'break-glass command may change it', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$""",
        """CREATE OR REPLACE FUNCTION dpa_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is protected against TRUNCATE', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$""",
    ]
    for table in PROTECTED_TABLES:
        statements.append(
            f"CREATE OR REPLACE TRIGGER {table}_refuse_row_change BEFORE DELETE OR UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION dpa_refuse_row_change()"
        )
        statements.append(
            f"CREATE OR REPLACE TRIGGER {table}_refuse_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION dpa_refuse_truncate()"
        )
    statements.append(
        f"""CREATE OR REPLACE FUNCTION dpa_refuse_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE dropped record;
BEGIN
  FOR dropped IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
    IF dropped.object_type = 'table' AND dropped.object_name IN ({protected})
       AND dropped.schema_name = current_schema()
       AND current_setting('{PG_DROP_SETTING}', true) IS DISTINCT FROM 'yes' THEN
      RAISE EXCEPTION 'table % is protected against DROP', dropped.object_identity
        USING ERRCODE = 'insufficient_privilege';
    END IF;
  END LOOP;
END $$"""
    )
    return statements


def _install_drop_guard(connection: Connection) -> bool:
    """Event triggers need superuser; without it the row and TRUNCATE triggers still hold."""
    exists = connection.exec_driver_sql("SELECT 1 FROM pg_event_trigger WHERE evtname = 'dpa_refuse_drop'").first()
    if exists:
        return True
    is_superuser = connection.exec_driver_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar()
    if not is_superuser:
        return False
    connection.exec_driver_sql("CREATE EVENT TRIGGER dpa_refuse_drop ON sql_drop EXECUTE FUNCTION dpa_refuse_drop()")
    return True


def _execute_ddl(connection: Connection, statement: str) -> None:
    # Straight to the DB-API cursor without parameters, so the '%' of PL/pgSQL's RAISE format
    # strings is not read as a parameter marker.
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


def _protection_installed(connection: Connection) -> bool:
    if connection.dialect.name == "sqlite":
        names = {row[0] for row in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        expected = {f"{table}_refuse_{action}" for table in PROTECTED_TABLES for action in ("delete", "update")}
    else:
        names = {row[0] for row in connection.exec_driver_sql("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
        expected = {f"{table}_refuse_{action}" for table in PROTECTED_TABLES for action in ("row_change", "truncate")}
    return expected <= names


def ensure_schema(engine: Engine) -> None:
    """Create missing tables and their protection; refuse to go on if a protected table was dropped.

    When everything is in place no DDL runs, so a least-privilege pipeline role that owns
    nothing (see ``sql/least_privilege.sql``) can call this on every start.

    Args:
        engine: the warehouse engine.
    """
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        if not is_sqlite(engine):
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SETUP_LOCK_KEY})")
        existing = set(sa.inspect(connection).get_table_names())
        survivors = sorted(existing & set(PROTECTED_TABLES))
        if SCHEMA_MARKER_TABLE not in existing and survivors:
            # Set up before, then the marker (and maybe tables) removed: recreating would hide a loss.
            raise ProtectedTableMissing(
                f"the warehouse was set up before ({', '.join(survivors)} exist) but {SCHEMA_MARKER_TABLE} "
                "is gone; restore the warehouse from backup (README: 'Restoring a dropped table') before loading again"
            )
        if SCHEMA_MARKER_TABLE in existing:
            missing = [name for name in PROTECTED_TABLES if name not in existing]
            if missing:
                raise ProtectedTableMissing(
                    f"protected warehouse tables {missing} were dropped after setup; restore them "
                    "from backup (README: 'Restoring a dropped table') before loading again"
                )
            if _protection_installed(connection):
                return
        metadata.create_all(connection)
        connection.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {SCHEMA_MARKER_TABLE} (created_at TEXT)")
        statements = _sqlite_statements() if is_sqlite(engine) else _postgres_statements()
        for statement in statements:
            _execute_ddl(connection, statement)
        if not is_sqlite(engine):
            _install_drop_guard(connection)


def grant_partition_permit(connection: Connection, partition_date: date) -> None:
    """Allow this transaction, and only it, to delete one partition of the partitioned tables."""
    if connection.dialect.name == "sqlite":
        connection.execute(
            sa.text(f"INSERT INTO {PERMIT_TABLE} (table_name, partition_date) VALUES (:t, :d)"),
            [{"t": table, "d": partition_date.isoformat()} for table in PARTITIONED_TABLES],
        )
    else:
        connection.execute(
            sa.text("SELECT set_config(:name, :value, true)"),
            {"name": PG_PERMIT_SETTING, "value": partition_date.isoformat()},
        )


def revoke_partition_permit(connection: Connection) -> None:
    """Remove the permit before commit (PostgreSQL's is transaction-local already)."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"DELETE FROM {PERMIT_TABLE}")
