"""The no-shipment-id-twice guarantee stays whole-table, yet its per-day cost does not grow with the days loaded.

A backfill of 365 days asks it after every day: a GROUP BY over the whole fact table made the
365th day pay for 1.8 million rows. A valid, non-partial unique index on shipment_id is the
database enforcing the guarantee on every row; only without one is the table scanned.
"""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta

import sqlalchemy as sa

from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.protection import ensure_schema
from dpa_assets.warehouse.reports import duplicated_shipment_ids, unique_index_enforced
from dpa_assets_tests.support.loads import commit_validated, prepared_load

FIRST_DAY = date(2026, 11, 2)


def _load_days(url: str, first: int, count: int) -> None:
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    for offset in range(first, first + count):
        day = (FIRST_DAY + timedelta(days=offset)).isoformat()
        commit_validated(engine, prepared_load(day, f"run-{offset}", rows=400, seed=offset))
    engine.dispose()


def _sqlite_steps_of_duplicate_check(url: str) -> tuple[int, list]:
    """SQLite virtual-machine steps (in hundreds) the check costs, and its answer."""
    steps = [0]
    engine = create_warehouse_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _count(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1) or 0, 100)

    try:
        with engine.connect():  # connect (and its PRAGMAs) before counting
            pass
        steps[0] = 0
        duplicates = duplicated_shipment_ids(engine)
        return steps[0], duplicates
    finally:
        engine.dispose()


def test_duplicate_check_costs_the_same_after_one_day_and_after_six(sqlite_url):
    _load_days(sqlite_url, 0, 1)
    after_one, duplicates = _sqlite_steps_of_duplicate_check(sqlite_url)
    assert duplicates == []
    _load_days(sqlite_url, 1, 5)
    after_six, duplicates = _sqlite_steps_of_duplicate_check(sqlite_url)
    assert duplicates == []
    assert after_six <= after_one * 1.2 + 5, (after_one, after_six)


def test_the_unique_constraint_is_recognised(warehouse_url):
    _load_days(warehouse_url, 0, 1)
    engine = create_warehouse_engine(warehouse_url)
    try:
        assert unique_index_enforced(engine)
    finally:
        engine.dispose()


def _rebuild_sqlite_facts(url: str, index_ddl: list[str]) -> None:
    """An administrator rebuilds the fact table without its UNIQUE constraint (SQLite cannot drop one)."""
    path = sa.make_url(url).database
    connection = sqlite3.connect(path)
    try:
        connection.executescript(
            "BEGIN; ALTER TABLE warehouse_facts RENAME TO facts_old; "
            "CREATE TABLE warehouse_facts AS SELECT * FROM facts_old; DROP TABLE facts_old; "
            + "".join(f"{ddl}; " for ddl in index_ddl)
            + "INSERT INTO warehouse_facts SELECT '1999-12-31', shipment_id, waybill_number, wagon_number, "
            "origin_station, destination_station, commodity, net_tonnage, wagon_count, departure_time, "
            "arrival_time, customer, revenue_xaf, load_run_id FROM warehouse_facts LIMIT 2; COMMIT;"
        )
    finally:
        connection.close()


def _pg_replace_constraint(url: str, index_ddl: list[str]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE warehouse_facts DROP CONSTRAINT warehouse_facts_shipment_id_key")
        for ddl in index_ddl:
            connection.exec_driver_sql(ddl)
        connection.exec_driver_sql(
            "INSERT INTO warehouse_facts SELECT DATE '1999-12-31', shipment_id, waybill_number, wagon_number, "
            "origin_station, destination_station, commodity, net_tonnage, wagon_count, departure_time, "
            "arrival_time, customer, revenue_xaf, load_run_id FROM warehouse_facts LIMIT 2"
        )
    engine.dispose()


def test_indexes_that_do_not_enforce_uniqueness_everywhere_are_not_trusted(warehouse_url):
    """A plain index, a unique index on two columns, a partial one: the table is scanned and the copies found."""
    _load_days(warehouse_url, 0, 2)
    indexes = [
        "CREATE INDEX ids_plain ON warehouse_facts (shipment_id)",
        "CREATE UNIQUE INDEX ids_with_day ON warehouse_facts (shipment_id, partition_date)",
        "CREATE UNIQUE INDEX ids_recent ON warehouse_facts (shipment_id) WHERE partition_date > '2000-01-01'",
    ]
    if warehouse_url.startswith("sqlite"):
        _rebuild_sqlite_facts(warehouse_url, indexes)
    else:
        _pg_replace_constraint(warehouse_url, indexes)
    engine = create_warehouse_engine(warehouse_url)
    try:
        assert not unique_index_enforced(engine)
        duplicates = duplicated_shipment_ids(engine)
    finally:
        engine.dispose()
    assert len(duplicates) == 2
    assert all(copies == 2 for _id, copies in duplicates)
