"""Every stored value is the value received, or its row is quarantined: on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import json
import random
import re
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from dpa_assets import column_bounds
from dpa_assets.column_bounds import FACT_BOUNDS, LATEST_TIMESTAMP, UNSTORABLE_CHARACTER, column_bound
from dpa_assets.freight_model import RAW_COLUMNS
from dpa_assets.sources.generator import generate_day
from dpa_assets.sources.payload import SOURCE_LINE
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import PartitionLoad, read_facts
from dpa_assets.warehouse.protection import ensure_schema
from dpa_assets.warehouse.reports import shipment_ids_loaded_elsewhere
from dpa_assets.warehouse.tables import facts, rejects
from dpa_assets_tests.support.loads import commit_validated, load_from_raw

DAY = "2026-11-20"
TEXT_COLUMNS = ("shipment_id", "waybill_number", "wagon_number", "origin_station", "destination_station")
TEXT_COLUMNS += ("commodity", "customer")


@pytest.fixture
def engine(warehouse_url):
    engine = create_warehouse_engine(warehouse_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


def test_bounds_are_read_from_the_table_definitions():
    assert FACT_BOUNDS["shipment_id"].max_length == facts.c.shipment_id.type.length == 64
    assert FACT_BOUNDS["customer"].max_length == 200
    assert FACT_BOUNDS["wagon_count"].integer_range == (-(2**31), 2**31 - 1)
    assert FACT_BOUNDS["revenue_xaf"].integer_range == (-(2**63), 2**63 - 1)
    assert FACT_BOUNDS["net_tonnage"].finite
    assert FACT_BOUNDS["arrival_time"].timestamp_range[1] == LATEST_TIMESTAMP
    assert column_bound(sa.Column("note", sa.Text)).max_length is None
    assert column_bound(sa.Column("tiny", sa.SmallInteger)).integer_range == (-(2**15), 2**15 - 1)


def received_day(records: list[dict[str, str]]) -> pd.DataFrame:
    raw = pd.DataFrame(records, columns=list(RAW_COLUMNS), dtype=object)
    raw.insert(0, SOURCE_LINE, range(2, len(records) + 2))
    return raw


def load_of(raw: pd.DataFrame, run_id: str = "run-1") -> PartitionLoad:
    return load_from_raw(raw, DAY, run_id)


def stored_rejects(engine) -> list[dict]:
    with engine.connect() as connection:
        query = sa.select(rejects).where(rejects.c.partition_date == date.fromisoformat(DAY))
        return [dict(row) for row in connection.execute(query.order_by(rejects.c.source_line)).mappings()]


def test_values_too_long_or_holding_nul_are_quarantined_and_the_day_loads(engine):
    records = generate_day(date.fromisoformat(DAY), rows=6, seed=3, bad_fraction=0).records
    records[1]["shipment_id"] = "S" * 65  # COPY failed with SQLSTATE 22001 on PostgreSQL
    records[2]["waybill_number"] = "W" * 65
    records[3]["customer"] = "C" * 201
    records[4]["shipment_id"] = "SHP-\x00" + "é" * 250  # the reject's own shipment_id column is String(200)
    load = load_of(received_day(records))
    audit = commit_validated(engine, load)
    assert (audit["rows_loaded"], audit["rows_rejected"]) == (2, 4)
    stored = stored_rejects(engine)
    assert [json.loads(row["raw_record"]) for row in stored] == records[1:5]  # whole, never truncated
    assert [json.loads(row["reasons"])[0]["value"] for row in stored][-1] == records[4]["shipment_id"]


def test_a_nul_or_overlong_shipment_id_does_not_break_the_loaded_elsewhere_lookup(engine):
    ids = ["SHP-\x00", "S" * 300, "Bois \ud800", "SHP-20261120-00001"]
    assert shipment_ids_loaded_elsewhere(engine, ids, date(2026, 11, 19)) == set()


# Values chosen to sit on, just past and far past each column's bounds, plus the spellings
# float() or pandas would take for numbers although the freight system never means them.
NUMBER_EXTREMES = [
    *("1e30", "-1e30", "1e400", "-1e400", "1e-400", "5e-324", "1.7976931348623157e308", "-0", "-0.0", "+0"),
    *("1e3", "1E3", ".5", "5.", "2.5", "3.5", "nan", "NaN", "inf", "-inf", "Infinity", "-Infinity", "+inf"),
    *("1,000", "1 000", "1_000", "0x10", "١٢٣", "12 t", "1e99999999999999999999"),
    *("9223372036854775807", "9223372036854775808", "-9223372036854775808", "9223372036854774784"),
    *("2147483647", "2147483648", "-2147483649", "9007199254740993", "9007199254740992", "3.0000000000000001"),
]
TEXT_EXTREMES = [
    *("S" * 64, "S" * 65, "é" * 200, "é" * 201, "€" * 300, "a\x00b", "\x00", "Bois \ud800", "a\n\\.\nb"),
    *('"quoted, with comma"', "\r\n", "  padded  ", "DLA", "CEMENT", "218124712173", "日本語の顧客"),
]
TIMESTAMP_EXTREMES = [
    *("0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "0001-01-02T00:00:00Z", "0001-01-01T00:00:00"),
    *("9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00", "9999-12-30T23:59:59.999999Z", "9999-12-30T12:00:00"),
    *("1677-09-21T00:00:00Z", "2262-04-12T00:00:00Z", "2026-11-20T10:00:00.123456789+01:00"),
    *("2026-11-20T10:00:00.1234560+01:00", "2026-11-20T23:59:59.999999+01:00", "2026-11-20T10:00:00", "2026-13-01"),
]
STRATEGIES = {
    "number": st.sampled_from(NUMBER_EXTREMES)
    | st.floats().map(repr)
    | st.integers(min_value=-(2**70), max_value=2**70).map(str),
    "text": st.sampled_from(TEXT_EXTREMES) | st.text(st.characters(exclude_categories=()), max_size=260),
    "timestamp": st.sampled_from(TIMESTAMP_EXTREMES)
    | st.datetimes(timezones=st.timezones() | st.none()).map(lambda stamp: stamp.isoformat()),
}
HAS_OFFSET = r"(?:Z|[+-]\d\d:?\d\d)$"
KIND = {column: "text" for column in TEXT_COLUMNS}
KIND |= {"net_tonnage": "number", "wagon_count": "number", "revenue_xaf": "number"}
KIND |= {"departure_time": "timestamp", "arrival_time": "timestamp"}


@st.composite
def days_with_extremes(draw: st.DrawFn) -> list[dict[str, str]]:
    """A small valid generated day with extreme values put into a few of its cells."""
    seed = draw(st.integers(min_value=0, max_value=10_000))
    records = generate_day(date.fromisoformat(DAY), rows=draw(st.integers(2, 8)), seed=seed, bad_fraction=0).records
    for _ in range(draw(st.integers(1, 6))):
        row = draw(st.integers(0, len(records) - 1))
        column = draw(st.sampled_from(RAW_COLUMNS))
        records[row][column] = draw(STRATEGIES[KIND[column]])
    return records


def received_value(column: str, text: str) -> object:
    """The typed value a received text stands for, computed independently of the validator."""
    text = text.strip()
    if column in ("departure_time", "arrival_time"):
        return pd.Timestamp(text if re.search(HAS_OFFSET, text) else text + "+01:00").tz_convert("UTC")
    if column == "net_tonnage":
        return float(text)
    if column in ("wagon_count", "revenue_xaf"):
        return int(Decimal(text).to_integral_value(ROUND_HALF_EVEN))
    return text


def assert_stored_as_received(stored: pd.DataFrame, load: PartitionLoad, records: list[dict[str, str]]) -> None:
    # Compared by shipment id: the database's collation may order ids differently from Python.
    expected = load.facts.set_index("shipment_id", drop=False)
    assert sorted(stored["shipment_id"]) == sorted(expected["shipment_id"])
    by_id: dict[str, dict[str, str]] = {}
    for record in records:  # the first row with an id is the one kept; later copies are rejected
        by_id.setdefault(record["shipment_id"].strip(), record)
    for _, fact in stored.iterrows():
        position = fact["shipment_id"]
        for column in RAW_COLUMNS:
            value, text = fact[column], by_id[position][column]
            if column == "arrival_time" and not text.strip():
                assert pd.isna(value) and pd.isna(expected.at[position, column])
                continue
            assert value == expected.at[position, column], (column, value, expected.at[position, column])
            assert value == received_value(column, text), (column, value, text)
            if column == "net_tonnage":
                assert str(value) == str(received_value(column, text))  # -0.0 stays distinct from 0.0


def check_a_day(engine, records: list[dict[str, str]]) -> None:
    load = load_of(received_day(records), run_id=f"run-{random.getrandbits(32):08x}")
    audit = commit_validated(engine, load)  # the day never fails because of a value
    stored = read_facts(engine, [date.fromisoformat(DAY)])
    assert audit["rows_received"] == len(records) == len(stored) + len(load.rejects)
    assert_stored_as_received(stored, load, records)
    quarantined = stored_rejects(engine)
    assert len(quarantined) == len(load.rejects)
    for row in quarantined:
        assert json.loads(row["raw_record"]) == records[row["source_line"] - 2]
        assert all(reason["rule"] for reason in json.loads(row["reasons"]))


def test_extreme_values_are_stored_as_received_or_quarantined(engine, warehouse_url):
    # Each example re-commits the same day, which replaces it: every example checks a whole commit.
    examples = 25 if engine.dialect.name == "postgresql" else 50

    @settings(max_examples=examples, deadline=None, database=None)
    @given(records=days_with_extremes())
    def day_loads(records: list[dict[str, str]]) -> None:
        check_a_day(engine, records)

    day_loads()


def test_texts_are_checked_against_their_column_a_slice_at_a_time(monkeypatch):
    """A day's ids are checked in slices (their code points at once took 120 MiB): every verdict stays the same."""
    values = pd.Series([*TEXT_EXTREMES, None, "", 5, *TEXT_EXTREMES[::-1]], dtype=object)
    bound = FACT_BOUNDS["shipment_id"]
    at_once = column_bounds.texts_fit(values, bound).tolist()
    monkeypatch.setattr(column_bounds, "FIT_SLICE_TEXTS", 3)
    assert column_bounds.texts_fit(values, bound).tolist() == at_once
    assert at_once == [
        value is None or UNSTORABLE_CHARACTER.search(str(value)) is None and len(str(value)) <= bound.max_length
        for value in values
    ]
