"""A shipment id already loaded for another day is quarantined by the commit, never a failed day.

Validation already rejects ids the warehouse holds for other days, but two days validated before
either is committed both pass; the commit decides again under its lock, against committed data.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import date

import sqlalchemy as sa

from dpa_assets.transforms import facts_checksum
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import PartitionLoad, commit_partition
from dpa_assets.warehouse.protection import ensure_schema
from dpa_assets.warehouse.reports import shipment_ids_loaded_elsewhere
from dpa_assets_tests.support.loads import commit_validated, prepared_load, record_passed_validation
from dpa_assets_tests.support.warehouse import rows, scalar

FIRST_DAY, LATER_DAY = "2026-11-19", "2026-11-20"


def _sharing_ids_with(load: PartitionLoad, other: PartitionLoad, count: int) -> PartitionLoad:
    """``load`` with its first ``count`` shipment ids replaced by ids of ``other``'s facts."""
    facts = load.facts.copy()
    facts.loc[: count - 1, "shipment_id"] = other.facts["shipment_id"].iloc[:count].to_numpy()
    return dataclasses.replace(load, facts=facts, content_checksum=facts_checksum(facts))


def test_later_day_quarantines_ids_loaded_for_another_day(warehouse_url):
    engine = create_warehouse_engine(warehouse_url)
    ensure_schema(engine)
    first = prepared_load(FIRST_DAY, "run-a", seed=1)
    later = _sharing_ids_with(prepared_load(LATER_DAY, "run-b", seed=2), first, count=3)
    record_passed_validation(engine, later)  # validated while FIRST_DAY was not yet loaded
    commit_validated(engine, first)

    audit = commit_partition(engine, later)

    assert audit["rows_loaded"] == len(later.facts) - 3
    assert audit["rows_rejected"] == len(later.rejects) + 3
    assert audit["rows_received"] == audit["rows_loaded"] + audit["rows_rejected"]
    moved = rows(
        warehouse_url,
        "SELECT shipment_id, reasons, raw_record FROM freight_rejects WHERE partition_date = :d "
        "AND reason_summary LIKE '%not_loaded_for_another_day%'",
        d=LATER_DAY,
    )
    assert sorted(row["shipment_id"] for row in moved) == sorted(first.facts["shipment_id"].iloc[:3])
    assert json.loads(moved[0]["reasons"])[0]["rule"] == "not_loaded_for_another_day"
    assert json.loads(moved[0]["raw_record"])["shipment_id"] == moved[0]["shipment_id"]
    stored = scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts WHERE partition_date = :d", d=LATER_DAY)
    assert stored == audit["rows_loaded"]
    quarantined = scalar(
        warehouse_url,
        "SELECT count(*) FROM freight_rejects WHERE partition_date = :d AND validation_run_id = :v",
        d=LATER_DAY,
        v="run-b",
    )
    assert quarantined == audit["rows_rejected"]
    engine.dispose()


def test_two_days_committing_at_once_never_fail_on_the_unique_index(pg_url):
    engine = create_warehouse_engine(pg_url)
    ensure_schema(engine)
    first = record_passed_validation(engine, prepared_load(FIRST_DAY, "run-a", seed=1))
    later = record_passed_validation(
        engine, _sharing_ids_with(prepared_load(LATER_DAY, "run-b", seed=2), first, count=2)
    )
    first_inside, release_first = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def hold_before_commit(_connection: sa.Connection) -> None:
        first_inside.set()
        release_first.wait(timeout=30)

    def commit_first() -> None:
        outcome["first"] = commit_partition(engine, first, before_commit=hold_before_commit)

    def commit_later() -> None:
        try:
            outcome["later"] = commit_partition(engine, later)
        except Exception as error:  # noqa: BLE001 - the assertion below reports it
            outcome["later"] = error

    first_thread = threading.Thread(target=commit_first)
    first_thread.start()
    assert first_inside.wait(timeout=30)
    later_thread = threading.Thread(target=commit_later)
    later_thread.start()
    later_thread.join(timeout=1.0)  # it must wait for the first commit, not race it
    release_first.set()
    first_thread.join(timeout=60)
    later_thread.join(timeout=60)

    assert isinstance(outcome["later"], dict), outcome["later"]
    assert outcome["later"]["rows_loaded"] == len(later.facts) - 2
    assert scalar(pg_url, "SELECT count(*) - count(DISTINCT shipment_id) FROM warehouse_facts") == 0
    engine.dispose()


def test_ids_held_for_other_days_are_found_in_one_query_whatever_their_number(warehouse_url):
    engine = create_warehouse_engine(warehouse_url)
    ensure_schema(engine)
    first = prepared_load(FIRST_DAY, "run-a", seed=1)
    commit_validated(engine, first)
    held = first.facts["shipment_id"].tolist()[:5]
    # Thousands of ids (more than SQLite's bound-parameter limit), quotes and accents among them.
    wanted = [*held, *(f"NEW-{n}" for n in range(5_000)), 'it\'s "é"', "x" * 65, "a\\b,{c}"]
    queries: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: queries.append(args[2]))

    found = shipment_ids_loaded_elsewhere(engine, wanted, date.fromisoformat(LATER_DAY))

    assert found == set(held)
    assert len([sql for sql in queries if "warehouse_facts" in sql]) == 1
    assert shipment_ids_loaded_elsewhere(engine, wanted, date.fromisoformat(FIRST_DAY)) == set()
    engine.dispose()


def test_a_commit_sharing_no_id_with_other_days_sends_no_id_lookup(warehouse_url):
    # The unique index already answers "is an id held elsewhere?": the lookup of every id of the
    # day (0.5 s per 200k rows) runs only when the index refuses one.
    engine = create_warehouse_engine(warehouse_url)
    ensure_schema(engine)
    commit_validated(engine, prepared_load(FIRST_DAY, "run-a", seed=1))
    later = record_passed_validation(engine, prepared_load(LATER_DAY, "run-b", seed=2))
    queries: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: queries.append(args[2]))

    audit = commit_partition(engine, later)

    assert audit["rows_loaded"] == len(later.facts)
    lookups = [sql for sql in queries if "SELECT warehouse_facts.shipment_id" in sql]
    assert lookups == []
    engine.dispose()


def test_without_the_unique_index_the_commit_still_quarantines_ids_of_other_days(pg_url):
    # The commit lets the unique index refuse a shared id before it looks ids up; with the index
    # dropped (by hand, or never restored) nothing would refuse it: the lookup must run first.
    engine = create_warehouse_engine(pg_url)
    ensure_schema(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE warehouse_facts DROP CONSTRAINT warehouse_facts_shipment_id_key")
    first = prepared_load(FIRST_DAY, "run-a", seed=1)
    later = _sharing_ids_with(prepared_load(LATER_DAY, "run-b", seed=2), first, count=2)
    record_passed_validation(engine, later)
    commit_validated(engine, first)

    audit = commit_partition(engine, later)

    assert audit["rows_loaded"] == len(later.facts) - 2
    copies = scalar(
        pg_url, "SELECT count(*) FROM warehouse_facts WHERE shipment_id = :s", s=first.facts["shipment_id"].iloc[0]
    )
    assert copies == 1
    engine.dispose()
