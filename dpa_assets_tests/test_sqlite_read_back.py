"""SQLite's fast re-hash gives facts_checksum's digest, leaves what it cannot render exactly, catches tampers."""

from __future__ import annotations

import dataclasses
import sqlite3
import tempfile
from datetime import date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpa_assets import checks
from dpa_assets.transforms import FACT_COLUMNS, facts_checksum
from dpa_assets.warehouse import sqlite_read_back
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import read_facts
from dpa_assets.warehouse.protection import ensure_schema
from dpa_assets.warehouse.sqlite_read_back import sqlite_day_checksum
from dpa_assets.warehouse.tables import facts
from dpa_assets_tests.support.loads import commit_validated, prepared_load

DAY = "2026-11-20"
CHECKSUM_PROBLEM = "stored facts' checksum differs from the audit row"
COUNT_PROBLEM = "stored fact rows differ from the audit row"
LAST_ROW = "shipment_id = (SELECT max(shipment_id) FROM warehouse_facts)"


def _fast(engine: sa.Engine, slice_rows: int = 50) -> tuple[int, str] | None:
    with engine.connect() as connection, connection.begin():
        return sqlite_day_checksum(connection, date.fromisoformat(DAY), slice_rows)


def _commit(url: str, load=None) -> tuple[sa.Engine, dict]:
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    audit = commit_validated(engine, load or prepared_load(DAY, "run-1", rows=400, seed=3))
    return engine, audit


def _outside(url: str, *statements: str) -> None:
    """Someone with the database file changes it behind the protection triggers."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as outside:
        outside.execute("DROP TRIGGER IF EXISTS warehouse_facts_refuse_update")
        outside.execute("DROP TRIGGER IF EXISTS warehouse_facts_refuse_delete")
        for statement in statements:
            outside.execute(statement)


def _reconcile(engine: sa.Engine, audit: dict):
    recorded = {"content_checksum": audit["content_checksum"], "row_count": audit["rows_loaded"]}
    return checks.reconcile_partition(engine, date.fromisoformat(DAY), recorded)


def test_a_committed_day_is_hashed_by_the_fast_path_to_its_audited_checksum(sqlite_url):
    engine, audit = _commit(sqlite_url)
    assert audit["rows_loaded"] > 300
    assert _fast(engine) == (audit["rows_loaded"], audit["content_checksum"])
    engine.dispose()


def test_a_day_read_one_row_at_a_time_is_hashed_by_the_fast_path(sqlite_url):
    engine, audit = _commit(sqlite_url, prepared_load(DAY, "run-1", rows=40, seed=5))
    assert _fast(engine, slice_rows=1) == (audit["rows_loaded"], audit["content_checksum"])
    engine.dispose()


def test_tonnages_and_times_forgotten_between_slices_hash_the_same(sqlite_url, monkeypatch):
    engine, audit = _commit(sqlite_url)
    monkeypatch.setattr(sqlite_read_back, "_REMEMBERED", 5)  # forgets every few slices: memory stays bounded
    assert _fast(engine, slice_rows=3) == (audit["rows_loaded"], audit["content_checksum"])
    _outside(sqlite_url, f"UPDATE warehouse_facts SET departure_time = substr(departure_time, 1, 19) WHERE {LAST_ROW}")
    assert _fast(engine, slice_rows=3) is None  # a time met after forgetting is still checked
    engine.dispose()


def test_awkward_values_hash_as_facts_checksum_hashes_them(sqlite_url):
    load = prepared_load(DAY, "run-1", rows=60, seed=4)
    frame = load.facts.copy()
    tonnages = [0.1 + 0.2, -0.0, 0.0, 1e-7, 123456.1234567, 5e20, 2.5, 1 / 3]
    frame.loc[: len(tonnages) - 1, "net_tonnage"] = tonnages
    frame.loc[0, "customer"] = "Société\x1fd'Édéa \x1e 東京 🚂"
    frame.loc[1:5, "arrival_time"] = None
    frame.loc[2, "revenue_xaf"] = -(2**62)
    load = dataclasses.replace(load, facts=frame, content_checksum=facts_checksum(frame))
    engine, audit = _commit(sqlite_url, load)

    stored = read_facts(engine, [date.fromisoformat(DAY)])  # the general path: a frame of what is stored

    assert _fast(engine, slice_rows=7) == (len(stored), facts_checksum(stored))
    assert len(stored) == audit["rows_loaded"]
    engine.dispose()


def test_rows_stored_out_of_id_order_are_hashed_in_id_order(sqlite_url):
    engine, audit = _commit(sqlite_url)
    _outside(
        sqlite_url,
        "CREATE TABLE shuffled AS SELECT * FROM warehouse_facts",
        "DELETE FROM warehouse_facts",
        "INSERT INTO warehouse_facts SELECT * FROM shuffled ORDER BY shipment_id DESC",
    )
    assert _fast(engine) == (audit["rows_loaded"], audit["content_checksum"])
    result = _reconcile(engine, audit)
    assert result.passed, result.metadata["problems"].value
    engine.dispose()


@pytest.mark.parametrize(
    "stored",
    [
        "replace(substr(departure_time, 1, 23), ' ', 'T')",  # the same instant, in milliseconds
        "substr(departure_time, 1, 19)",  # the same instant without microseconds
    ],
)
def test_a_time_in_another_form_leaves_the_fast_path_and_the_general_one_decides(sqlite_url, stored):
    engine, audit = _commit(sqlite_url)
    _outside(sqlite_url, f"UPDATE warehouse_facts SET departure_time = {stored} WHERE {LAST_ROW}")
    assert _fast(engine) is None
    result = _reconcile(engine, audit)
    assert result.passed, result.metadata["problems"].value  # the same instants: the same facts
    engine.dispose()


@pytest.mark.parametrize(
    ("column", "stored"),
    [
        ("wagon_count", "wagon_count + 0.0"),
        ("waybill_number", "NULL"),
        ("customer", "CAST(customer AS BLOB)"),
        ("revenue_xaf", "CAST(revenue_xaf AS TEXT)"),  # the same digits, as text
        ("commodity", "12345"),  # a number in a text column
    ],
)
def test_a_value_stored_with_another_type_leaves_the_fast_path(sqlite_url, column, stored):
    engine, _ = _commit(sqlite_url)
    names = ", ".join(facts.c.keys())
    _outside(
        sqlite_url,
        "CREATE TABLE copy AS SELECT * FROM warehouse_facts",
        "DROP TABLE warehouse_facts",
        f"CREATE TABLE warehouse_facts ({names})",  # untyped columns keep any value as it is given
        "INSERT INTO warehouse_facts SELECT * FROM copy",
        f"UPDATE warehouse_facts SET {column} = {stored} WHERE {LAST_ROW}",
    )
    assert _fast(engine) is None
    engine.dispose()


TAMPERS = {
    "changed text": (f"UPDATE warehouse_facts SET commodity = commodity || 'X' WHERE {LAST_ROW}", CHECKSUM_PROBLEM),
    "changed count": (f"UPDATE warehouse_facts SET wagon_count = wagon_count + 1 WHERE {LAST_ROW}", CHECKSUM_PROBLEM),
    "changed tonnage": (
        f"UPDATE warehouse_facts SET net_tonnage = net_tonnage + 0.001 WHERE {LAST_ROW}",
        CHECKSUM_PROBLEM,
    ),
    "changed time": (
        f"UPDATE warehouse_facts SET departure_time = substr(departure_time, 1, 25) || "
        f"CASE WHEN substr(departure_time, 26) = '1' THEN '2' ELSE '1' END WHERE {LAST_ROW}",
        CHECKSUM_PROBLEM,
    ),
    "arrival removed": (f"UPDATE warehouse_facts SET arrival_time = NULL WHERE {LAST_ROW}", CHECKSUM_PROBLEM),
    "deleted row": (f"DELETE FROM warehouse_facts WHERE {LAST_ROW}", COUNT_PROBLEM),
    "inserted row": (
        "INSERT INTO warehouse_facts SELECT partition_date, shipment_id || 'X', waybill_number, wagon_number, "
        "origin_station, destination_station, commodity, net_tonnage, wagon_count, departure_time, arrival_time, "
        f"customer, revenue_xaf, load_run_id FROM warehouse_facts WHERE {LAST_ROW}",
        COUNT_PROBLEM,
    ),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_the_fast_path_catches_a_tamper(sqlite_url, tamper):
    engine, audit = _commit(sqlite_url)
    statement, problem = TAMPERS[tamper]
    _outside(sqlite_url, statement)
    fast = _fast(engine)
    assert fast is not None and fast != (audit["rows_loaded"], audit["content_checksum"])
    result = _reconcile(engine, audit)
    assert not result.passed and problem in result.metadata["problems"].value
    engine.dispose()


def test_no_sorted_order_leaves_the_fast_path(sqlite_url, monkeypatch):
    engine, _ = _commit(sqlite_url)
    monkeypatch.setattr(sqlite_read_back, "READ_ORDERS", ("shipment_id DESC",))
    assert _fast(engine) is None
    engine.dispose()


# Any stored values: the fast path gives facts_checksum's digest, or None exactly for a value not in the commit's form.

_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=6)
_STAMP = st.datetimes(datetime(1678, 1, 1), datetime(2261, 12, 31, 23, 59, 59, 999999))
_USUAL = {  # values in the form the commit stores (or the same text a time reads as)
    "text": _TEXT,
    "integer": st.integers(-(2**63), 2**63 - 1),
    "real": st.one_of(st.floats(allow_nan=False), st.sampled_from([-0.0, 0.1 + 0.2, 1e-7, 5e20])),
    "time": st.one_of(
        _STAMP.map(lambda stamp: stamp.isoformat(" ", "microseconds")),  # as the commit stores it
        _STAMP.map(lambda stamp: stamp.isoformat("T", "microseconds")),  # the canonical text of the same instant
    ),
}
_UNUSUAL = {  # values of another type or in another form
    "text": st.sampled_from([None, b"bytes", 12345, 1.5]),
    "integer": st.sampled_from([2.0, "7", None, b"7"]),
    "real": st.sampled_from([3, "1.5", None, b"1.5"]),
    "time": st.one_of(
        _STAMP.map(lambda stamp: stamp.isoformat(" ", "milliseconds")),
        _STAMP.map(lambda stamp: stamp.isoformat(" ", "microseconds") + "+00:00"),
        st.sampled_from(["1677-06-01 00:00:00.000000", "2026-11-20  10:00:00.000000", b"2026-11-20", 20261120]),
    ),
}


def _kind(name: str) -> str:
    kind = facts.c[name].type
    if isinstance(kind, sa.DateTime):
        return "time"
    return "real" if isinstance(kind, sa.Float) else "integer" if isinstance(kind, sa.Integer) else "text"


@st.composite
def _stored_days(draw: st.DrawFn) -> tuple[list[dict], bool]:
    """A day's rows as someone may have stored them (unique ids, any order); whether all are in the commit's form."""
    ids = draw(st.lists(_TEXT.filter(bool), min_size=1, max_size=25, unique=True))
    rows = []
    for shipment_id in ids:
        row = {"partition_date": DAY, "shipment_id": shipment_id, "load_run_id": "run-1"}
        for name in FACT_COLUMNS:
            if name not in row:
                arrived = name != "arrival_time" or draw(st.booleans())
                row[name] = draw(_USUAL[_kind(name)]) if arrived else None  # not arrived: hashed as empty text
        rows.append(row)
    usual = draw(st.booleans())
    if not usual:  # one value somewhere in another form
        name = draw(st.sampled_from(FACT_COLUMNS[1:]))
        rows[draw(st.integers(0, len(rows) - 1))][name] = draw(_UNUSUAL[_kind(name)])
    return draw(st.permutations(rows)), usual


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_stored_days(), st.integers(1, 9))
def test_any_stored_day_hashes_as_facts_checksum_or_leaves_the_fast_path(day, slice_rows):
    rows, usual = day
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'warehouse.sqlite'}"
        engine = create_warehouse_engine(url)
        ensure_schema(engine)
        names = facts.c.keys()
        _outside(url, "DROP TABLE warehouse_facts", f"CREATE TABLE warehouse_facts ({', '.join(names)})")
        with sqlite3.connect(url.removeprefix("sqlite:///")) as outside:  # each value stored as it is given
            outside.executemany(
                f"INSERT INTO warehouse_facts ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [tuple(row[name] for name in names) for row in rows],
            )
        fast = _fast(engine, slice_rows)
        if usual:
            stored = read_facts(engine, [date.fromisoformat(DAY)])
            assert fast == (len(rows), facts_checksum(stored))
        else:
            assert fast is None
        engine.dispose()
