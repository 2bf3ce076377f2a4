"""Engines configured for safe writes: SQLite waits for locks and begins write transactions IMMEDIATE.

SQLite's default deferred BEGIN takes the write lock only at the first write, which is where
"database is locked" errors surprise nightly jobs; an IMMEDIATE begin fails fast or waits up front.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

WRITE_OPTION = "dpa_write"  # execution option: this connection will write
SQLITE_BUSY_TIMEOUT_MS = 5000


def create_warehouse_engine(url: str) -> Engine:
    """An engine for the warehouse URL (``sqlite:///path`` or ``postgresql+psycopg2://...``)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    engine = sa.create_engine(parsed)

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # SQLAlchemy's begin event emits BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the nightly writer
        cursor.close()

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
