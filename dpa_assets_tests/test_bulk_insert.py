"""The fast insert path stores exactly what SQLAlchemy's own INSERT stores, value for value."""

from __future__ import annotations

import tracemalloc
from datetime import date

import pandas as pd
import sqlalchemy as sa

from dpa_assets.schemas import ARROW_TEXT
from dpa_assets.warehouse import ledger
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import as_records, bulk_insert
from dpa_assets.warehouse.protection import ensure_schema
from dpa_assets.warehouse.tables import facts, rejects


def _frame(day: date, prefix: str) -> pd.DataFrame:
    stamps = pd.Series(
        pd.to_datetime(
            ["2026-11-20T05:00:00.000001Z", "0001-01-02T00:00:00Z", "2026-11-20T00:00:00Z"], utc=True, format="ISO8601"
        )
    ).dt.as_unit("us")
    return pd.DataFrame(
        {
            "partition_date": [day] * 3,
            "shipment_id": [f"{prefix}-1", f"{prefix}-2", f"{prefix}-3"],
            "waybill_number": ['W "1", a', "W\n2", "Édéa\\x"],
            "wagon_number": ["318012345679"] * 3,
            "origin_station": ["DLA", "EDE", "YDE"],
            "destination_station": ["YDE", "DLA", "EDE"],
            "commodity": ["CEMENT"] * 3,
            "net_tonnage": [1.1, 0.1 + 0.2, 1e-7],
            "wagon_count": [1, 2, 2_147_483_647],
            "departure_time": stamps,
            "arrival_time": stamps.where(stamps.index != 1, pd.NaT).dt.tz_convert("Africa/Douala"),
            "customer": ["C"] * 3,
            "revenue_xaf": [0, 9_007_199_254_740_993, -1],
            "load_run_id": ["run"] * 3,
        }
    )


def _stored(connection: sa.Connection, table: sa.Table, day: date) -> list[tuple]:
    # Raw text as the database holds it (and SQLite's storage class), minus the id that differs on purpose.
    columns = ", ".join(f"typeof({c.name}), {c.name}" for c in table.columns if c.name != "shipment_id")
    order = "shipment_id" if "shipment_id" in table.c else "source_line"
    day_text = table.c.partition_date.type.dialect_impl(connection.dialect).bind_processor(connection.dialect)(day)
    sql = f"SELECT {columns} FROM {table.name} WHERE partition_date = ? ORDER BY {order}"
    return connection.exec_driver_sql(sql, (day_text,)).all()


def test_sqlite_fast_insert_stores_what_sqlalchemy_stores(sqlite_url):
    engine = create_warehouse_engine(sqlite_url)
    ensure_schema(engine)
    fast_day, slow_day = date(2026, 11, 20), date(2026, 11, 21)
    reject_rows = pd.DataFrame(
        {
            "source_line": [2, 3],
            "shipment_id": [None, "X"],
            "raw_record": ['{"a": "\\u0000"}', "{}"],
            "reasons": ["[]", "[]"],
            "reason_summary": ["a; b", ""],
            "validation_run_id": ["v", "v"],
        }
    )
    with engine.begin() as connection:
        bulk_insert(connection, facts, _frame(fast_day, "F"))
        connection.execute(facts.insert(), as_records(_frame(slow_day, "S"), "sqlite"))
        bulk_insert(connection, rejects, reject_rows.assign(partition_date=fast_day))
        connection.execute(rejects.insert(), as_records(reject_rows.assign(partition_date=slow_day), "sqlite"))
    with engine.connect() as connection:
        fast, slow = _stored(connection, facts, fast_day), _stored(connection, facts, slow_day)
        assert len(fast) == 3
        assert [row[2:] for row in fast] == [row[2:] for row in slow]  # all but the partition date
        assert _stored(connection, rejects, fast_day)[0][2:] == _stored(connection, rejects, slow_day)[0][2:]
    engine.dispose()


def test_sqlite_insert_in_slices_of_arrow_text_stores_what_sqlalchemy_stores(sqlite_url, monkeypatch):
    """Rows bound a slice at a time, text held by Arrow (as a validated day holds it): the same stored values."""
    engine = create_warehouse_engine(sqlite_url)
    ensure_schema(engine)
    fast_day, slow_day = date(2026, 11, 20), date(2026, 11, 21)
    text = ["shipment_id", "waybill_number", "wagon_number", "origin_station", "destination_station", "commodity"]
    arrow_day = _frame(fast_day, "F").astype(dict.fromkeys(text, ARROW_TEXT))
    monkeypatch.setattr(ledger, "INSERT_SLICE_ROWS", 2)
    with engine.begin() as connection:
        bulk_insert(connection, facts, arrow_day)
        connection.execute(facts.insert(), as_records(_frame(slow_day, "S"), "sqlite"))
    with engine.connect() as connection:
        fast = _stored(connection, facts, fast_day)
        assert len(fast) == 3
        assert [row[2:] for row in fast] == [row[2:] for row in _stored(connection, facts, slow_day)]
    engine.dispose()


def test_sqlite_insert_holds_one_slice_of_bound_rows_at_a_time(sqlite_url, monkeypatch):
    """A day's rows as Python tuples cost ~700 bytes each (a 1,000,000-row day's peak): a slice at a time."""
    engine = create_warehouse_engine(sqlite_url)
    ensure_schema(engine)
    day = date(2026, 11, 20)
    rows = 20_000
    frame = pd.concat([_frame(day, "F")] * (rows // 3 + 1), ignore_index=True).iloc[:rows]
    frame["shipment_id"] = [f"SHP-{row:08d}" for row in range(rows)]
    frame["waybill_number"] = [f"WB-{row:08d}" for row in range(rows)]
    monkeypatch.setattr(ledger, "INSERT_SLICE_ROWS", 1_000)
    tracemalloc.start()
    try:
        whole = list(zip(*[frame[column].astype(object).tolist() for column in frame.columns], strict=True))
        _, whole_day = tracemalloc.get_traced_memory()
        del whole
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        with engine.begin() as connection:
            bulk_insert(connection, facts, frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM warehouse_facts").scalar() == rows
    engine.dispose()
    assert peak - base < whole_day / 4  # the whole day's tuples at once would be all of it
