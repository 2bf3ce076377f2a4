"""The reconcile check answers from the database on PostgreSQL and still catches every tamper."""

from __future__ import annotations

import math
import sqlite3
import tracemalloc
from datetime import date

import pytest
import sqlalchemy as sa

from dpa_assets import checks
from dpa_assets.transforms import facts_checksum
from dpa_assets.warehouse import ledger, sqlite_read_back
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import read_facts
from dpa_assets.warehouse.protection import ProtectionIncomplete, ensure_schema, facts_digest_query
from dpa_assets.warehouse.reports import let_the_digest_run_in_parallel, stored_digest
from dpa_assets_tests.support.loads import commit_validated, prepared_load
from dpa_assets_tests.support.warehouse import rows, scalar
from dpa_assets_tests.test_protection import _least_privilege

DAY = "2026-11-20"
OLD_DAY = "2026-11-19"
CHECKSUM_PROBLEM = "stored facts' checksum differs from the audit row"
COUNT_PROBLEM = "stored fact rows differ from the audit row"
FIRST_ROW = "shipment_id = (SELECT min(shipment_id) FROM warehouse_facts)"


def _swap_last(column: str) -> str:
    """The same text with its last character changed (keeps the column's length limit)."""
    return f"{column} = left({column}, -1) || CASE WHEN right({column}, 1) = 'Z' THEN 'Y' ELSE 'Z' END"


# A change of one value in each column of one row, behind the triggers.
COLUMN_TAMPERS = {
    "partition_date": ("partition_date = partition_date + 1", COUNT_PROBLEM),
    **{
        name: (_swap_last(name), CHECKSUM_PROBLEM)
        for name in (
            "shipment_id",
            "waybill_number",
            "wagon_number",
            "origin_station",
            "destination_station",
            "commodity",
            "customer",
            "load_run_id",
        )
    },
    "wagon_count": ("wagon_count = wagon_count + 1", CHECKSUM_PROBLEM),
    "revenue_xaf": ("revenue_xaf = revenue_xaf + 1", CHECKSUM_PROBLEM),
    "departure_time": ("departure_time = departure_time + interval '1 microsecond'", CHECKSUM_PROBLEM),
    "arrival_time": (
        "arrival_time = coalesce(arrival_time + interval '1 microsecond', departure_time)",
        CHECKSUM_PROBLEM,
    ),
}
ROW_TAMPERS = {
    "deleted row": (f"DELETE FROM warehouse_facts WHERE {FIRST_ROW}", COUNT_PROBLEM),
    "inserted row": (
        "INSERT INTO warehouse_facts SELECT partition_date, shipment_id || 'X', waybill_number, wagon_number, "
        "origin_station, destination_station, commodity, net_tonnage, wagon_count, departure_time, arrival_time, "
        f"customer, revenue_xaf, load_run_id FROM warehouse_facts WHERE {FIRST_ROW}",
        COUNT_PROBLEM,
    ),
    "audit count": ("UPDATE load_audit SET rows_loaded = rows_loaded - 1 WHERE status = 'loaded'", COUNT_PROBLEM),
    "audit digest": (
        "UPDATE load_audit SET warehouse_digest = warehouse_digest || '0' WHERE status = 'loaded'",
        CHECKSUM_PROBLEM,
    ),
}


def _behind_the_triggers(url: str, *statements: tuple[str, dict]) -> None:
    """A superuser who switches the triggers off for a session changes the warehouse."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        for statement, params in statements:
            connection.execute(sa.text(statement), params)
    engine.dispose()


def _load(url: str, day: str = DAY, run_id: str = "run-1") -> tuple[sa.Engine, dict]:
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    audit = commit_validated(engine, prepared_load(day, run_id, seed=1))
    recorded = {"content_checksum": audit["content_checksum"], "row_count": audit["rows_loaded"]}
    return engine, recorded


def _reconcile(engine: sa.Engine, recorded: dict, day: str = DAY):
    return checks.reconcile_partition(engine, date.fromisoformat(day), recorded)


def _problems(result) -> str:
    return result.metadata["problems"].value


def test_postgresql_reconciles_by_the_databases_digest(pg_url):
    engine, recorded = _load(pg_url)
    result = _reconcile(engine, recorded)
    assert result.passed, _problems(result)
    assert result.metadata["verified_by"].value == "database digest"
    stored = scalar(pg_url, "SELECT warehouse_digest FROM load_audit WHERE status = 'loaded'")
    assert stored and stored == result.metadata["warehouse_checksum"].value
    engine.dispose()


@pytest.mark.parametrize("column", sorted(COLUMN_TAMPERS))
def test_postgresql_digest_catches_a_changed_value_in_any_column(pg_url, column):
    engine, recorded = _load(pg_url)
    statement, problem = COLUMN_TAMPERS[column]
    _behind_the_triggers(pg_url, (f"UPDATE warehouse_facts SET {statement} WHERE {FIRST_ROW}", {}))
    result = _reconcile(engine, recorded)
    assert not result.passed
    assert problem in _problems(result)
    engine.dispose()


def test_postgresql_digest_catches_the_smallest_tonnage_change(pg_url):
    # The read-back checksum rounds tonnage to 6 decimals; the digest hashes the stored bits.
    engine, recorded = _load(pg_url)
    tonnage = scalar(pg_url, f"SELECT net_tonnage FROM warehouse_facts WHERE {FIRST_ROW}")
    nudged = math.nextafter(tonnage, math.inf)
    _behind_the_triggers(pg_url, (f"UPDATE warehouse_facts SET net_tonnage = :t WHERE {FIRST_ROW}", {"t": nudged}))
    assert scalar(pg_url, f"SELECT net_tonnage FROM warehouse_facts WHERE {FIRST_ROW}") == nudged != tonnage
    result = _reconcile(engine, recorded)
    assert not result.passed and CHECKSUM_PROBLEM in _problems(result)
    engine.dispose()


@pytest.mark.parametrize("tamper", sorted(ROW_TAMPERS))
def test_postgresql_digest_catches_removed_added_rows_and_audit_changes(pg_url, tamper):
    engine, recorded = _load(pg_url)
    statement, problem = ROW_TAMPERS[tamper]
    _behind_the_triggers(pg_url, (statement, {}))
    result = _reconcile(engine, recorded)
    assert not result.passed
    assert problem in _problems(result)
    engine.dispose()


def test_postgresql_reconcile_still_compares_dagsters_record(pg_url):
    engine, recorded = _load(pg_url)
    result = _reconcile(engine, {**recorded, "content_checksum": "0" * 64})
    assert not result.passed and "Dagster's record and the audit row disagree" in _problems(result)
    engine.dispose()


def test_the_digest_does_not_depend_on_session_settings(pg_url):
    engine, _ = _load(pg_url)
    day = date.fromisoformat(DAY)
    expected = stored_digest(engine, day)
    odd = create_warehouse_engine(pg_url)
    with odd.connect() as connection:
        for setting in (
            "SET TimeZone = 'Pacific/Kiritimati'",
            "SET DateStyle = 'SQL, DMY'",
            "SET extra_float_digits = -15",
            "SET bytea_output = 'escape'",
            "SET IntervalStyle = 'sql_standard'",
        ):
            connection.exec_driver_sql(setting)
        found = connection.execute(sa.text("SELECT * FROM dpa_facts_digest(:day)"), {"day": day}).one()
    assert (found.row_count, found.digest) == expected
    assert expected[0] == scalar(pg_url, "SELECT rows_loaded FROM load_audit WHERE status = 'loaded'")
    odd.dispose()
    engine.dispose()


def test_the_checks_query_gives_the_functions_digest_and_may_run_in_parallel(pg_url):
    engine, _ = _load(pg_url)
    day = date.fromisoformat(DAY)
    odd = create_warehouse_engine(pg_url)
    with odd.connect() as connection:
        connection.exec_driver_sql("SET TimeZone = 'Pacific/Kiritimati'")
        connection.exec_driver_sql("SET extra_float_digits = -15")
        function = connection.execute(sa.text("SELECT * FROM dpa_facts_digest(:day)"), {"day": day}).one()
        query = connection.execute(facts_digest_query(), {"day": day}).one()
        # With the check's settings a day is hashed by parallel workers even when the statistics
        # guess it small (the table is analyzed here: a day of 120 rows would otherwise be guessed
        # too small for the finalizing step to pay); nothing in the query (OFFSET 0, a
        # parallel-restricted function) forbids them.
        connection.exec_driver_sql("ANALYZE warehouse_facts")
        let_the_digest_run_in_parallel(connection)
        statement = facts_digest_query().bindparams(day=day).compile(dialect=odd.dialect)
        plan = "\n".join(connection.exec_driver_sql(f"EXPLAIN {statement}", statement.params).scalars().all())
    assert (query.row_count, query.digest) == (function.row_count, function.digest)
    assert function.row_count > 0
    assert "Partial Aggregate" in plan and "Parallel" in plan
    odd.dispose()
    engine.dispose()


def test_an_old_warehouse_gets_the_digest_from_its_owner_and_old_days_are_read_back(pg_url):
    engine, old_recorded = _load(pg_url, OLD_DAY, "run-old")
    pipeline_url = _least_privilege(pg_url)
    # The warehouse as it was before the digest: no column, no function.
    _behind_the_triggers(
        pg_url,
        ("ALTER TABLE load_audit DROP COLUMN warehouse_digest", {}),
        ("DROP FUNCTION dpa_facts_digest(date)", {}),
    )
    pipeline = create_warehouse_engine(pipeline_url)
    with pytest.raises(ProtectionIncomplete, match="warehouse digest.*dpa setup-warehouse"):
        ensure_schema(pipeline)  # adding a column needs the owner

    pieces = {piece.name: piece for piece in ensure_schema(engine)}  # the owner: dpa setup-warehouse

    assert pieces["warehouse digest"].state == "installed"
    assert scalar(pg_url, "SELECT warehouse_digest FROM load_audit WHERE run_id = 'run-old'") is None
    old = _reconcile(pipeline, old_recorded, OLD_DAY)
    assert old.passed and old.metadata["verified_by"].value == "read back"

    ensure_schema(pipeline)
    audit = commit_validated(pipeline, prepared_load(DAY, "run-new", seed=2))
    new = _reconcile(pipeline, {"content_checksum": audit["content_checksum"], "row_count": audit["rows_loaded"]})
    assert new.passed and new.metadata["verified_by"].value == "database digest"

    _behind_the_triggers(
        pg_url, ("UPDATE warehouse_facts SET revenue_xaf = revenue_xaf + 1 WHERE partition_date = :d", {"d": OLD_DAY})
    )
    tampered = _reconcile(pipeline, old_recorded, OLD_DAY)
    assert not tampered.passed and CHECKSUM_PROBLEM in _problems(tampered)
    pipeline.dispose()
    engine.dispose()


def test_sqlite_reads_the_day_back_and_an_old_warehouse_gets_the_column(sqlite_url):
    engine, recorded = _load(sqlite_url)
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as outside:  # as set up before the digest
        outside.execute("ALTER TABLE load_audit DROP COLUMN warehouse_digest")
    engine.dispose()
    engine = create_warehouse_engine(sqlite_url)
    assert {piece.name: piece for piece in ensure_schema(engine)}["warehouse digest"].state == "installed"
    result = _reconcile(engine, recorded)
    assert result.passed and result.metadata["verified_by"].value == "read back"
    assert rows(sqlite_url, "SELECT warehouse_digest FROM load_audit WHERE status = 'loaded'") == [
        {"warehouse_digest": None}
    ]
    engine.dispose()


def _traced_peak(function) -> tuple[object, int]:
    """What ``function()`` returns, and the most memory Python held for it at once (bytes)."""
    tracemalloc.start()
    try:
        value = function()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_sqlite_read_back_hashes_the_day_a_slice_at_a_time(sqlite_url, monkeypatch):
    """The read-back holds one slice of the day, never the whole day, and gives the same checksum."""
    engine = create_warehouse_engine(sqlite_url)
    ensure_schema(engine)
    audit = commit_validated(engine, prepared_load(DAY, "run-1", rows=12_000, seed=1))
    recorded = {"content_checksum": audit["content_checksum"], "row_count": audit["rows_loaded"]}
    stored, whole_day = _traced_peak(lambda: read_facts(engine, [date.fromisoformat(DAY)]))
    assert facts_checksum(stored) == audit["content_checksum"]
    del stored

    monkeypatch.setattr(ledger, "READ_BACK_ROWS", 1_000)
    result, read_back = _traced_peak(lambda: _reconcile(engine, recorded))

    assert result.passed, _problems(result)
    assert result.metadata["warehouse_checksum"].value == audit["content_checksum"]
    assert result.metadata["rows_in_warehouse"].value == audit["rows_loaded"]
    assert read_back < whole_day / 3
    engine.dispose()


def test_sqlite_read_back_still_catches_a_changed_value_in_a_later_slice(sqlite_url, monkeypatch):
    engine, recorded = _load(sqlite_url)
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as outside:  # someone behind the trigger
        outside.execute("DROP TRIGGER warehouse_facts_refuse_update")
        outside.execute(
            "UPDATE warehouse_facts SET customer = customer || 'X' "
            "WHERE shipment_id = (SELECT max(shipment_id) FROM warehouse_facts)"
        )
    monkeypatch.setattr(ledger, "READ_BACK_ROWS", 7)
    result = _reconcile(engine, recorded)
    assert not result.passed and CHECKSUM_PROBLEM in _problems(result)
    engine.dispose()


def test_read_back_out_of_the_databases_order_falls_back_to_the_whole_day(sqlite_url, monkeypatch):
    """Slices are hashed as they come only while they come in the checksum's order (code point order)."""
    engine, recorded = _load(sqlite_url)
    monkeypatch.setattr(ledger, "READ_BACK_ROWS", 7)
    monkeypatch.setattr(sqlite_read_back, "READ_ORDERS", ("shipment_id DESC",))  # the fast path gives up
    monkeypatch.setattr(ledger, "_read_back_order", lambda column: column.desc())
    result = _reconcile(engine, recorded)
    assert result.passed, _problems(result)
    assert result.metadata["warehouse_checksum"].value == recorded["content_checksum"]
    engine.dispose()
