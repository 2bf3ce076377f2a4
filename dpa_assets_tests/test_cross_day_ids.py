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
from hypothesis import given, settings
from hypothesis import strategies as st

from dpa_assets.transforms import facts_checksum
from dpa_assets.warehouse import ledger
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import PartitionLoad, commit_partition
from dpa_assets.warehouse.protection import ensure_schema
from dpa_assets.warehouse.reports import shipment_ids_loaded_elsewhere
from dpa_assets.warehouse.tables import facts
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
    assert len([sql for sql in queries if "json_" in sql]) == 1  # every id in one statement
    assert len([sql for sql in queries if "warehouse_facts" in sql]) <= 2  # and whether the day holds rows
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


def _lookup_statement(engine: sa.Engine, ids: list[str], day: str) -> tuple[set[str], str, dict]:
    """The lookup's answer, and the one statement that sent the ids (with its parameters)."""
    sent: list[tuple[str, dict]] = []

    def keep(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if "json_" in statement and "warehouse_facts" in statement:
            sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        found = shipment_ids_loaded_elsewhere(engine, ids, date.fromisoformat(day))
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)
    assert len(sent) == 1, sent
    return found, *sent[0]


def _pg_buffers(engine: sa.Engine, statement: str, parameters: dict) -> int:
    """Shared buffers (hit or read) PostgreSQL touches running the statement: its work, independent of the clock."""
    with engine.connect() as connection:
        plan = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters).scalar()
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"]


def test_replacing_a_loaded_day_does_not_probe_its_own_ids_pg(pg_url):
    # Loading a day again (REPLACE) asked the index for each of the day's ids and fetched each
    # stored row only to find it belongs to this very day: ~3 s of 8.7 at 1,000,000 rows.
    engine = create_warehouse_engine(pg_url)
    ensure_schema(engine)
    loaded = prepared_load(FIRST_DAY, "run-a", rows=3000, seed=1)
    commit_validated(engine, loaded)
    fresh = prepared_load(LATER_DAY, "run-b", rows=3000, seed=2)
    other_days_id = loaded.facts["shipment_id"].iloc[7]
    with engine.begin() as connection:  # VACUUM-free stats so the planner sees the rows
        connection.exec_driver_sql("ANALYZE warehouse_facts")

    new_ids = fresh.facts["shipment_id"].tolist()
    found_new, statement, parameters = _lookup_statement(engine, [*new_ids, other_days_id], LATER_DAY)
    new_day = _pg_buffers(engine, statement, parameters)
    found_again, statement, parameters = _lookup_statement(engine, loaded.facts["shipment_id"].tolist(), FIRST_DAY)
    replace = _pg_buffers(engine, statement, parameters)

    assert found_new == {other_days_id}  # an id another day holds is still found
    assert found_again == set()
    assert replace * 2 <= new_day, (replace, new_day)  # its own ids are read with the day, not probed one by one
    engine.dispose()


def test_the_sqlite_lookup_probes_the_index_in_order_without_a_temporary_list(sqlite_url):
    # An IN (SELECT ... json_each) list is first copied into a temporary b-tree (0.4 s per 200k
    # ids even on an empty table), and ids probed in hash-set order read the index pages at random.
    engine = create_warehouse_engine(sqlite_url)
    ensure_schema(engine)
    loaded = prepared_load(FIRST_DAY, "run-a", seed=1)
    commit_validated(engine, loaded)
    ids = [*loaded.facts["shipment_id"].iloc[::-1], "NEW-2", "NEW-1"]

    found, statement, parameters = _lookup_statement(engine, ids, LATER_DAY)

    assert found == set(loaded.facts["shipment_id"])
    sent = json.loads(next(value for value in parameters if isinstance(value, str) and value.startswith("[")))
    assert sent == sorted(set(ids))
    with engine.connect() as connection:
        plan = " | ".join(row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
    assert "B-TREE" not in plan and "LIST SUBQUERY" not in plan, plan
    assert plan.index("VIRTUAL TABLE") < plan.index("SEARCH"), plan  # the ids drive, each one index probe
    engine.dispose()


def test_without_the_unique_index_an_id_the_day_shares_with_another_day_is_still_found(pg_url):
    # Leaving the day's own ids out of the lookup is sound only while each id is held once.
    engine = create_warehouse_engine(pg_url)
    ensure_schema(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE warehouse_facts DROP CONSTRAINT warehouse_facts_shipment_id_key")
    first = prepared_load(FIRST_DAY, "run-a", seed=1)
    commit_validated(engine, first)
    shared = first.facts["shipment_id"].iloc[0]
    columns = ", ".join(column.name for column in facts.columns if column.name != "partition_date")
    with engine.begin() as connection:  # the same id held by LATER_DAY too, as a hand-made copy would be
        connection.execute(
            sa.text(
                f"INSERT INTO warehouse_facts (partition_date, {columns}) "
                f"SELECT :later, {columns} FROM warehouse_facts WHERE shipment_id = :s"
            ),
            {"later": date.fromisoformat(LATER_DAY), "s": shared},
        )

    found = shipment_ids_loaded_elsewhere(engine, [shared, "NEW-1"], date.fromisoformat(LATER_DAY))

    assert found == {shared}
    engine.dispose()


_AWKWARD_IDS = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=70),  # NUL, quotes, backslashes, control, non-ASCII
    st.sampled_from(["SHP-1", "SHP-2", "x" * 64, "x" * 65, "é" * 64, "a\x00b", 'a"b', "a\\b", "a\tb", ""]),
)


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(st.one_of(_AWKWARD_IDS, st.none()), max_size=40),
    oddity=st.sampled_from([None, "\ud800", 7, float("nan")]),
    in_order=st.booleans(),
)
def test_the_ids_sent_are_the_distinct_storable_ones_whatever_they_hold(ids, oddity, in_order):
    received = ids + ([oddity] if oddity is not None else [])
    expected = ledger._storable_ids(received)  # the value-by-value way: set, bounds per id
    sent = ledger.storable_ids_json(received, in_order=in_order)
    if not expected:
        assert sent is None
        return
    decoded = json.loads(sent)
    assert sorted(decoded) == sorted(expected) and len(decoded) == len(set(decoded))
    if in_order:
        assert decoded == sorted(expected)  # code point order, as SQLite's index holds them


def test_a_days_ids_are_sent_as_json_by_arrow_when_none_needs_escaping():
    ids = [f"SHP-20261120-{n:06d}" for n in range(5000, 0, -1)] * 2
    sent = ledger.storable_ids_json(ids, in_order=True)
    assert sent.startswith('["SHP-20261120-000001","SHP-20261120-000002"')  # joined as they are, sorted
    assert json.loads(sent) == sorted(set(ids))
