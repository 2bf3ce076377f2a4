"""Each freight rule rejects exactly the crafted row that breaks it, and names itself as the reason."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dpa_assets.freight_model import RAW_COLUMNS
from dpa_assets.sources.payload import SOURCE_LINE
from dpa_assets.transforms import validate_freight

DAY = "2026-11-20"


def good_row(number: int) -> dict[str, str]:
    return {
        "shipment_id": f"SHP-20261120-{number:05d}",
        "waybill_number": f"WB26112000{number:03d}",
        "wagon_number": "218124712173",
        "origin_station": "DLA",
        "destination_station": "EDE",
        "commodity": "CEMENT",
        "net_tonnage": "120.5",
        "wagon_count": "3",
        "departure_time": "2026-11-20T08:15:00+01:00",
        "arrival_time": "2026-11-20T11:40:00+01:00",
        "customer": "Ciments du Littoral",
        "revenue_xaf": "2450000",
    }


def validate_with(bad: dict[str, str], loaded_elsewhere: frozenset[str] = frozenset()):
    """Five good rows and one crafted row (the fourth)."""
    records = [good_row(number) for number in range(1, 6)]
    records.insert(3, {**good_row(99), **bad})
    frame = pd.DataFrame(records, columns=list(RAW_COLUMNS), dtype=object)
    frame.insert(0, SOURCE_LINE, range(2, len(records) + 2))
    return validate_freight(frame, DAY, loaded_elsewhere)


def test_good_rows_pass():
    outcome = validate_with({})
    assert outcome.rows_rejected == 0 and len(outcome.valid) == 6


RULES = [
    ("required", "shipment_id", {"shipment_id": ""}),
    ("required", "customer", {"customer": "   "}),
    ("required", "departure_time", {"departure_time": ""}),
    ("is_number", "net_tonnage", {"net_tonnage": "12,5"}),
    ("is_number", "revenue_xaf", {"revenue_xaf": "two million"}),
    ("is_whole_number", "wagon_count", {"wagon_count": "2.5"}),
    ("is_timestamp", "departure_time", {"departure_time": "20/11/2026 08:15"}),
    ("is_timestamp", "arrival_time", {"arrival_time": "tomorrow"}),
    ("uic_check_digit", "wagon_number", {"wagon_number": "218124712174"}),
    ("uic_check_digit", "wagon_number", {"wagon_number": "21812471217"}),
    ("uic_check_digit", "wagon_number", {"wagon_number": "2181247121A3"}),
    ("known_station", "origin_station", {"origin_station": "PAR"}),
    ("known_station", "destination_station", {"destination_station": "edea"}),
    ("known_commodity", "commodity", {"commodity": "GOLD"}),
    ("origin_differs_from_destination", "destination_station", {"destination_station": "DLA"}),
    ("positive_tonnage", "net_tonnage", {"net_tonnage": "0"}),
    ("tonnage_within_wagon_payload", "net_tonnage", {"net_tonnage": "190", "wagon_count": "3"}),
    ("at_least_one_wagon", "wagon_count", {"wagon_count": "0"}),
    ("arrival_not_before_departure", "arrival_time", {"arrival_time": "2026-11-20T08:14:59+01:00"}),
    (
        "departure_within_partition_day",
        "departure_time",
        {"departure_time": "2026-11-21T00:00:00+01:00", "arrival_time": ""},
    ),
    ("departure_within_partition_day", "departure_time", {"departure_time": "2026-11-19T23:59:59+01:00"}),
    ("non_negative_revenue", "revenue_xaf", {"revenue_xaf": "-1"}),
    ("unique_shipment_id_in_day", "shipment_id", {"shipment_id": "SHP-20261120-00002"}),
]


@pytest.mark.parametrize(("rule", "column", "bad"), RULES, ids=[f"{r[0]}-{r[1]}-{i}" for i, r in enumerate(RULES)])
def test_rule_rejects_exactly_the_crafted_row(rule, column, bad):
    outcome = validate_with(bad)
    assert list(outcome.rejects["source_line"]) == [5], "exactly the crafted row (line 5) is rejected"
    reasons = json.loads(outcome.rejects.iloc[0]["reasons"])
    assert {"column": column, "rule": rule} in [{"column": r["column"], "rule": r["rule"]} for r in reasons]
    assert rule in outcome.rejects.iloc[0]["reason_summary"]
    assert len(outcome.valid) == 5


def test_not_loaded_for_another_day():
    outcome = validate_with({"shipment_id": "SHP-20261119-00042"}, loaded_elsewhere=frozenset({"SHP-20261119-00042"}))
    assert list(outcome.rejects["source_line"]) == [5]
    assert "shipment_id: not_loaded_for_another_day" in outcome.rejects.iloc[0]["reason_summary"]


def test_boundaries_that_must_pass():
    outcome = validate_with(
        {
            "net_tonnage": "186",  # exactly 3 wagons x 62 t of cement
            "arrival_time": "2026-11-20T08:15:00+01:00",  # arrives the instant it leaves
            "departure_time": "2026-11-20T00:00:00+01:00",
            "revenue_xaf": "0",
            "wagon_count": "3.0",
        }
    )
    assert outcome.rows_rejected == 0


def test_a_row_with_many_faults_lists_every_reason():
    outcome = validate_with({"wagon_number": "218124712174", "commodity": "GOLD", "revenue_xaf": "-5"})
    rules = {reason["rule"] for reason in json.loads(outcome.rejects.iloc[0]["reasons"])}
    assert {"uic_check_digit", "known_commodity", "non_negative_revenue"} <= rules
    assert outcome.rows_rejected == 1


def test_reason_quotes_the_value_as_received():
    outcome = validate_with({"net_tonnage": " 12,5 t "})
    reason = json.loads(outcome.rejects.iloc[0]["reasons"])[0]
    assert reason == {"column": "net_tonnage", "rule": "is_number", "value": " 12,5 t "}


# A value the warehouse column cannot hold exactly is quarantined, never wrapped, cut or left to fail the day.
# Anything that is not a plain decimal numeral (NaN/inf spellings, thousands separators) is not a number;
# a numeral the column cannot hold is ``fits_column``.
EXTREMES = [
    ("fits_column", "revenue_xaf", {"revenue_xaf": "1e30"}),  # wrapped to -9223372036854775808
    ("fits_column", "revenue_xaf", {"revenue_xaf": "9223372036854775807"}),  # float rounds it past BigInteger
    ("fits_column", "revenue_xaf", {"revenue_xaf": "9007199254740993"}),  # would be stored as ...992
    ("fits_column", "revenue_xaf", {"revenue_xaf": "1e400"}),
    ("is_number", "revenue_xaf", {"revenue_xaf": "inf"}),  # failed the day (IntCastingNaNError)
    ("is_number", "revenue_xaf", {"revenue_xaf": "Infinity"}),
    ("is_number", "revenue_xaf", {"revenue_xaf": "-Infinity"}),
    ("is_number", "revenue_xaf", {"revenue_xaf": "NaN"}),
    ("is_number", "net_tonnage", {"net_tonnage": "nan"}),
    ("is_number", "net_tonnage", {"net_tonnage": "inf"}),
    ("is_number", "revenue_xaf", {"revenue_xaf": "1,000"}),
    ("is_number", "revenue_xaf", {"revenue_xaf": "1 000"}),
    ("is_number", "revenue_xaf", {"revenue_xaf": "1_000"}),
    ("is_number", "wagon_count", {"wagon_count": "0x3"}),
    ("fits_column", "net_tonnage", {"net_tonnage": "1e400"}),
    ("fits_column", "wagon_count", {"wagon_count": "1e30"}),  # failed the day (TypeError)
    ("fits_column", "wagon_count", {"wagon_count": "2147483648"}),  # Integer is 32-bit on PostgreSQL
    ("is_whole_number", "wagon_count", {"wagon_count": "3.0000000000000001"}),
    ("fits_column", "shipment_id", {"shipment_id": "S" * 65}),  # String(64): COPY failed on PostgreSQL
    ("fits_column", "waybill_number", {"waybill_number": "W" * 65}),
    ("fits_column", "customer", {"customer": "é" * 201}),  # String(200)
    ("fits_column", "customer", {"customer": "Ciments\x00du Littoral"}),  # PostgreSQL text refuses NUL
    ("fits_column", "customer", {"customer": "Ciments \ud800"}),  # not encodable as UTF-8
    ("fits_column", "arrival_time", {"arrival_time": "9999-12-31T23:59:59-01:00"}),  # year 10000 in UTC
    ("fits_column", "arrival_time", {"arrival_time": "9999-12-31T12:00:00Z"}),  # unreadable east of UTC
    ("fits_column", "arrival_time", {"arrival_time": "2026-11-20T11:40:00.123456789+01:00"}),  # cut to µs
]


@pytest.mark.parametrize(
    ("rule", "column", "bad"), EXTREMES, ids=[f"{r[0]}-{r[1]}-{i}" for i, r in enumerate(EXTREMES)]
)
def test_extreme_value_is_quarantined_with_its_rule(rule, column, bad):
    outcome = validate_with(bad)
    assert list(outcome.rejects["source_line"]) == [5], "exactly the crafted row (line 5) is rejected"
    reasons = json.loads(outcome.rejects.iloc[0]["reasons"])
    assert [r for r in reasons if r["column"] == column] == [{"column": column, "rule": rule, "value": bad[column]}]
    assert len(outcome.valid) == 5


@pytest.mark.parametrize(
    ("column", "value", "typed"),
    [
        ("shipment_id", "S" * 64, "S" * 64),
        ("customer", "é" * 200, "é" * 200),  # characters, not bytes
        ("revenue_xaf", "1e3", 1000.0),
        ("revenue_xaf", "-0", 0.0),
        ("revenue_xaf", "4611686018427387904", 2.0**62),
        ("net_tonnage", "1.2e2", 120.0),
        ("net_tonnage", "5e-324", 5e-324),
        ("wagon_count", "3e0", 3),
        ("arrival_time", "9999-12-30T23:59:59.999999Z", pd.Timestamp("9999-12-30T23:59:59.999999Z")),
        ("arrival_time", "2026-11-20T11:40:00.1234560+01:00", pd.Timestamp("2026-11-20T10:40:00.123456Z")),
    ],
)
def test_extreme_value_that_fits_its_column_passes(column, value, typed):
    outcome = validate_with({"net_tonnage": "1", column: value})
    assert outcome.rows_rejected == 0
    assert outcome.valid.at[3, column] == typed
