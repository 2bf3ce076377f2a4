"""SQLite's fast re-hash gives facts_checksum's digest, leaves what it cannot render exactly, catches tampers."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import date

import pytest
import sqlalchemy as sa

from dpa_assets import checks
from dpa_assets.transforms import facts_checksum
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
