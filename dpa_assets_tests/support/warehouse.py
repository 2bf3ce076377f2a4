"""Read the warehouse the way an auditor would, straight from its tables."""

from __future__ import annotations

import sqlalchemy as sa

from dpa_assets.warehouse.engine import create_warehouse_engine


def snapshot(url: str) -> dict[str, list[tuple]]:
    """Every row of every protected table, sorted: two equal snapshots mean nothing changed."""
    engine = create_warehouse_engine(url)
    tables = {}
    try:
        with engine.connect() as connection:
            names = set(sa.inspect(connection).get_table_names())
            for name in ("warehouse_facts", "freight_rejects", "load_audit"):
                if name in names:
                    rows = connection.exec_driver_sql(f"SELECT * FROM {name}").all()
                    tables[name] = sorted(tuple(str(value) for value in row) for row in rows)
    finally:
        engine.dispose()
    return tables


def scalar(url: str, sql: str, **params: object) -> object:
    engine = create_warehouse_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def rows(url: str, sql: str, **params: object) -> list[dict]:
    engine = create_warehouse_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(row) for row in connection.execute(sa.text(sql), params).mappings().all()]
    finally:
        engine.dispose()
