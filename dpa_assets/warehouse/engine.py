"""Engines configured for safe writes: bounded lock waits, and SQLite write transactions begun IMMEDIATE.

SQLite's default deferred BEGIN takes the write lock only at the first write, which is where
"database is locked" errors surprise nightly jobs; an IMMEDIATE begin waits for it up front.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dpa_assets.settings import PROTECTED_TABLES

WRITE_OPTION = "dpa_write"  # execution option: this connection will write
DEFAULT_LOCK_TIMEOUT_SECONDS = 10.0


def _refuse_protected_drop(action: int, arg1: str | None, _arg2, _db, _trigger) -> int:
    """SQLite authorizer: no connection of ours may drop a protected table (SQLite has no DDL triggers)."""
    if action == sqlite3.SQLITE_DROP_TABLE and arg1 in PROTECTED_TABLES:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def create_warehouse_engine(url: str, lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS) -> Engine:
    """An engine for the warehouse URL (``sqlite:///path`` or ``postgresql+psycopg2://...``).

    Args:
        url: SQLAlchemy URL.
        lock_timeout_seconds: how long one statement waits for a lock before failing with a
            retryable error (PostgreSQL ``lock_timeout``, SQLite ``busy_timeout``).

    Returns:
        The engine; SQLite connections also refuse to drop protected tables.
    """
    parsed = sa.make_url(url)
    timeout_ms = int(lock_timeout_seconds * 1000)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True, connect_args={"options": f"-c lock_timeout={timeout_ms}"})
    engine = sa.create_engine(parsed)

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # SQLAlchemy's begin event emits BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the nightly writer
        cursor.close()
        dbapi_connection.set_authorizer(_refuse_protected_drop)

    @sa.event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # type: ignore[no-untyped-def]
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def safe_url(url: str) -> str:
    """The URL with its password masked, for logs and UI metadata."""
    return sa.make_url(url).render_as_string(hide_password=True)
