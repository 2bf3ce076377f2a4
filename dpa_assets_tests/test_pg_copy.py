"""PostgreSQL's binary COPY path stores exactly what SQLAlchemy's own INSERT stores, value for value."""

from __future__ import annotations

import math
import os
import tracemalloc
import uuid
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpa_assets.warehouse import pg_copy
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import as_records
from dpa_assets.warehouse.pg_copy import ROWS_PER_SLICE, copy_frame
from dpa_assets.warehouse.protection import _RECORD_QUOTED_BYTES, FACTS_DIGEST_FUNCTION, PG_FUNCTIONS, FactsDigest
from dpa_assets.warehouse.tables import facts, metadata, rejects

# Storable text: PostgreSQL text holds no NUL, UTF-8 no lone surrogate (validation rejects both).
_CHARACTERS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_INSTANTS = st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999)  # us, years 1-9999
# psycopg2 binds -0.0 as the SQL expression ``-0.0``, which is 0: the INSERT oracle cannot carry
# that sign, so it is left out here and checked on its own below (COPY keeps it, as CSV COPY did).
_FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64).filter(lambda x: x != 0 or math.copysign(1, x) > 0)


# Every storage a text column may come in: Arrow's (sent from its own bytes) and Python objects.
_TEXT_DTYPES = [
    "object",
    "string",
    pd.StringDtype("pyarrow"),
    pd.StringDtype("pyarrow", na_value=np.nan),
    pd.ArrowDtype(pa.string()),
    pd.ArrowDtype(pa.large_string()),
]


def _text(size: int) -> st.SearchStrategy[str]:
    return st.text(_CHARACTERS, max_size=size)


def _stamps(values: list[int | None], zone: str) -> pd.Series:
    micro = pd.Series([np.datetime64("NaT") if v is None else np.datetime64(v, "us") for v in values], dtype=object)
    return pd.Series(micro.to_numpy(dtype="datetime64[us]")).dt.tz_localize("UTC").dt.tz_convert(zone)


@st.composite
def storable_facts(draw: st.DrawFn, max_rows: int = 8) -> pd.DataFrame:
    """Fact rows the warehouse can hold, with the awkward values a day may carry."""
    rows = draw(st.integers(min_value=1, max_value=max_rows))
    ids = draw(st.lists(_text(64).filter(bool), min_size=rows, max_size=rows, unique=True))
    texts = {
        column: pd.Series([draw(_text(size)) for _ in range(rows)], dtype=draw(st.sampled_from(_TEXT_DTYPES)))
        for column, size in _TEXT_COLUMNS.items()
    }
    return pd.DataFrame(
        {
            "partition_date": [date(2026, 11, 20)] * rows,
            "shipment_id": pd.Series(ids, dtype=draw(st.sampled_from(_TEXT_DTYPES))),
            **texts,
            "net_tonnage": [draw(st.one_of(_FINITE, st.sampled_from([5e-324, -1e308, 0.1 + 0.2]))) for _ in ids],
            "wagon_count": [draw(st.integers(-(2**31), 2**31 - 1)) for _ in ids],
            "departure_time": _stamps([draw(_INSTANTS) for _ in ids], "UTC"),
            "arrival_time": _stamps(
                [draw(st.one_of(st.none(), _INSTANTS)) for _ in ids], draw(st.sampled_from(["UTC", "Africa/Douala"]))
            ),
            "revenue_xaf": [draw(st.integers(-(2**63), 2**63 - 1)) for _ in ids],
        }
    )


_TEXT_COLUMNS = {
    "waybill_number": 64,
    "wagon_number": 12,
    "origin_station": 8,
    "destination_station": 8,
    "commodity": 32,
    "customer": 200,
}


def _as_text(connection: sa.Connection, table: sa.Table, order: str) -> list[tuple]:
    columns = ", ".join(f"{c.name}::text" for c in table.columns)
    return connection.exec_driver_sql(f"SELECT {columns} FROM {table.name} ORDER BY {order}").all()


def _copy(connection: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        copy_frame(cursor, table, frame)
    finally:
        cursor.close()


def _both_ways(engine: sa.Engine, table: sa.Table, frame: pd.DataFrame, order: str) -> tuple[list, list]:
    """(rows stored by COPY, rows stored by SQLAlchemy's INSERT), each in a transaction rolled back."""
    stored = []
    for write in (
        lambda c: _copy(c, table, frame),
        lambda c: c.execute(table.insert(), as_records(frame, "postgresql")),
    ):
        with engine.connect() as connection:
            transaction = connection.begin()
            write(connection)
            stored.append(_as_text(connection, table, order))
            transaction.rollback()
    return stored[0], stored[1]


@pytest.fixture(scope="module")
def plain_engine(pg_cluster, tmp_path_factory):
    """A database with the bare tables (no protection triggers): each example rolls back."""
    name = f"dpa_copy_{uuid.uuid4().hex[:10]}"
    admin_url = os.environ.get("DPA_TEST_PG_URL") or pg_cluster.admin_url
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    engine = create_warehouse_engine(sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False))
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=storable_facts())
def test_copy_stores_what_insert_stores(plain_engine, frame):
    copied, inserted = _both_ways(plain_engine, facts, frame.assign(load_run_id="run"), "shipment_id")
    assert copied == inserted
    assert len(copied) == len(frame)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=storable_facts())
def test_the_digest_of_the_rows_sent_is_the_one_the_database_computes_from_them(plain_engine, frame):
    # The commit audits FactsDigest instead of re-hashing the day; the reconcile check recomputes by SQL.
    digest = FactsDigest()
    with plain_engine.connect() as connection:
        transaction = connection.begin()
        _copy_watched(connection, frame.assign(load_run_id=" run (1)"), digest)
        found = connection.execute(
            sa.text(f"SELECT * FROM {FACTS_DIGEST_FUNCTION}(:day)"), {"day": date(2026, 11, 20)}
        ).one()
        transaction.rollback()
    assert (digest.rows, digest.hexdigest()) == (found.row_count, found.digest)


def test_the_digest_of_rows_sent_counts_every_slice(plain_engine):
    rows = 2 * ROWS_PER_SLICE + 3
    frame = pd.DataFrame(
        {
            "partition_date": date(2026, 11, 20),
            "shipment_id": [f"S{n}" for n in range(rows)],
            **{column: ["", "a b", 'q"\\', "é(,)"][n % 4] for n, column in enumerate(_TEXT_COLUMNS)},
            "net_tonnage": np.linspace(-1, 1, rows),
            "wagon_count": range(rows),
            "departure_time": pd.Timestamp("2026-11-20", tz="UTC"),
            "arrival_time": pd.NaT,
            "revenue_xaf": 7,
            "load_run_id": "r",
        }
    )
    digest = FactsDigest()
    with plain_engine.connect() as connection:
        transaction = connection.begin()
        _copy_watched(connection, frame, digest)
        found = connection.execute(sa.text(f"SELECT * FROM {FACTS_DIGEST_FUNCTION}('2026-11-20')")).one()
        transaction.rollback()
    assert (digest.rows, digest.hexdigest()) == (rows, found.digest)


def test_the_digest_quotes_texts_as_the_database_does_for_every_ascii_character(plain_engine):
    # record_out quotes a text holding any of a few bytes: each character alone, first, inside and last.
    characters = [chr(code) for code in range(1, 128)] + ["é", "\u00a0", "🚂"]
    texts = [form.format(c) for c in characters for form in ("{}", "{}x", "x{}y", "yx{}")]
    rows = len(texts)
    frame = pd.DataFrame(
        {
            "partition_date": date(2026, 11, 20),
            "shipment_id": [f"S{n}" for n in range(rows)],
            **{
                column: pd.Series(np.roll(texts, n), dtype=pd.StringDtype("pyarrow"))
                for n, column in enumerate(_TEXT_COLUMNS)
            },
            "net_tonnage": 1.5,
            "wagon_count": 1,
            "departure_time": pd.Timestamp("2026-11-20", tz="UTC"),
            "arrival_time": pd.NaT,
            "revenue_xaf": 7,
            "load_run_id": pd.Series(texts, dtype=object),
        }
    )
    digest = FactsDigest()
    with plain_engine.connect() as connection:
        transaction = connection.begin()
        _copy_watched(connection, frame, digest)
        found = connection.execute(sa.text(f"SELECT * FROM {FACTS_DIGEST_FUNCTION}('2026-11-20')")).one()
        transaction.rollback()
    assert (digest.rows, digest.hexdigest()) == (rows, found.digest)


def test_every_byte_record_out_quotes_is_below_a_dash_or_a_backslash():
    # FactsDigest looks only at those bytes to find the texts to quote.
    quoted = set(np.flatnonzero(_RECORD_QUOTED_BYTES))
    assert quoted and all(byte < ord("-") or byte == ord("\\") for byte in quoted)


def _copy_watched(connection: sa.Connection, frame: pd.DataFrame, digest: FactsDigest) -> None:
    """COPY the facts through ``digest`` and create the database's digest function (rolled back with them)."""
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(PG_FUNCTIONS[FACTS_DIGEST_FUNCTION].ddl("public"))  # raw: '%' of format() is no parameter
        copy_frame(cursor, facts, frame, watch=digest.add)
    finally:
        cursor.close()


def test_rejects_with_nulls_and_json_are_stored_alike(plain_engine):
    frame = pd.DataFrame(
        {
            "partition_date": [date(2026, 11, 20)] * 3,
            "validation_run_id": ["v"] * 3,
            "source_line": [2, 3, 2_147_483_647],
            "shipment_id": [None, 'É\t\\N,"x"\n', ""],
            "raw_record": ['{"a": "\\u0000"}', "{}", "🚂"],
            "reasons": ["[]"] * 3,
            "reason_summary": ["a; b", "", "\\"],
        }
    )
    copied, inserted = _both_ways(plain_engine, rejects, frame, "source_line")
    assert copied == inserted
    assert copied[0][3] is None  # NULL, not the text "None" or an empty string


def test_arrow_texts_are_sent_from_arrows_own_bytes():
    texts = pd.Series(["SHP-1", "é", "", "SHP-22"], dtype=pd.StringDtype("pyarrow"))
    sizes, payload = pg_copy._texts(texts)
    data = pa.array(texts.array).buffers()[2]
    assert sizes.tolist() == [5, 2, 0, 6] and payload.tobytes() == "SHP-1éSHP-22".encode()
    assert data.address <= payload.ctypes.data < data.address + data.size  # a view of Arrow's buffer, no copy


def test_arrow_texts_in_chunks_slices_and_with_null_slots_are_stored_alike(plain_engine):
    # A NULL slot may span bytes in Arrow (here "hidden"); a sliced array starts inside its buffers.
    spanning = pa.Array.from_buffers(
        pa.string(),
        3,
        [pa.py_buffer(bytes([0b101])), pa.py_buffer(np.array([0, 1, 7, 9], np.int32)), pa.py_buffer(b"ahiddenbc")],
    )
    chunked = pa.chunked_array([spanning, pa.array(["x", None, "", "ÉÉ"], pa.string()).slice(1)])
    rows = len(chunked)
    frame = pd.DataFrame(
        {
            "partition_date": [date(2026, 11, 20)] * rows,
            "validation_run_id": pd.Series(pd.arrays.ArrowExtensionArray(chunked)).fillna("v"),
            "source_line": range(rows),
            "shipment_id": pd.Series(pd.arrays.ArrowExtensionArray(chunked)),
            "raw_record": pd.Series(["{}"] * 8, dtype=pd.StringDtype("pyarrow"))
            .iloc[2 : 2 + rows]
            .reset_index(drop=True),
            "reasons": pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array([["[]"] * 2, ["[ ]"] * 4]))),
            "reason_summary": "s",
        }
    )
    copied, inserted = _both_ways(plain_engine, rejects, frame, "source_line")
    assert copied == inserted
    assert [row[3] for row in copied] == ["a", None, "bc", None, "", "ÉÉ"]


def test_many_slices_arrive_whole_and_in_order(plain_engine):
    rows = 2 * ROWS_PER_SLICE + 7
    ids = [f"S{n:07d}" if n % 3 else None for n in range(rows)]
    records = ["é" * (n % 5) for n in range(rows)]
    frame = pd.DataFrame(
        {
            "partition_date": date(2026, 11, 20),
            "validation_run_id": "v",
            "source_line": range(rows),
            "shipment_id": ids,
            "raw_record": records,
            "reasons": "[]",
            "reason_summary": "x",
        }
    )
    with plain_engine.connect() as connection:
        transaction = connection.begin()
        _copy(connection, rejects, frame)
        stored = connection.exec_driver_sql(
            "SELECT source_line, shipment_id, raw_record FROM freight_rejects ORDER BY source_line"
        ).all()
        transaction.rollback()
    assert [tuple(row) for row in stored] == list(zip(range(rows), ids, records, strict=True))


def test_an_integer_too_large_for_its_column_is_refused_not_wrapped(plain_engine):
    frame = pd.DataFrame({"partition_date": [date(2026, 11, 20)], "source_line": [2**31]})
    with plain_engine.connect() as connection, connection.begin():
        with pytest.raises(ValueError, match="source_line"):
            _copy(connection, rejects, frame)


def test_negative_zero_keeps_its_sign(plain_engine):
    frame = pd.DataFrame({"partition_date": [date(2026, 11, 20)], "net_tonnage": [-0.0]})
    with plain_engine.connect() as connection:
        transaction = connection.begin()
        _copy(
            connection,
            facts,
            frame.assign(
                shipment_id="S",
                waybill_number="W",
                wagon_number="1",
                origin_station="A",
                destination_station="B",
                commodity="C",
                wagon_count=1,
                departure_time=pd.Timestamp("2026-11-20", tz="UTC"),
                customer="C",
                revenue_xaf=1,
                load_run_id="r",
            ),
        )
        stored = connection.exec_driver_sql("SELECT net_tonnage::text FROM warehouse_facts").scalar_one()
        transaction.rollback()
    assert stored == "-0"


def test_long_values_arrive_whole_without_a_position_per_byte(plain_engine):
    """A slice of rejects carries ~2 KiB of JSON a row: laid out without an index array per byte."""
    rows = 2_000
    records = [f'{{"n": {n}, "text": "{"é" * (n % 7)}{"x" * 2_000}"}}' for n in range(rows)]
    ids = [None if n % 5 == 0 else "" if n % 5 == 1 else f"S{n}" for n in range(rows)]
    frame = pd.DataFrame(
        {
            "partition_date": date(2026, 11, 20),
            "validation_run_id": "v",
            "source_line": range(rows),
            "shipment_id": pd.Series(ids, dtype=object),
            "raw_record": records,
            "reasons": "[]",
            "reason_summary": "x",
        }
    )
    payload = sum(len(record.encode()) for record in records)
    with plain_engine.connect() as connection:
        transaction = connection.begin()
        tracemalloc.start()
        try:
            _copy(connection, rejects, frame)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        stored = connection.exec_driver_sql(
            "SELECT source_line, shipment_id, raw_record FROM freight_rejects ORDER BY source_line"
        ).all()
        transaction.rollback()
    assert [tuple(row) for row in stored] == list(zip(range(rows), ids, records, strict=True))
    assert peak < 8 * payload  # the positions of every byte at once took ~24 bytes per byte
