"""Validation splits every received row into valid or rejected, with a named reason."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest

from dpa_assets.sources.generator import generate_day
from dpa_assets.sources.payload import SOURCE_LINE
from dpa_assets.transforms import facts_checksum, to_facts, top_rejection_reasons, validate_freight

DAY = "2026-11-20"
EXPECTED_RULE = {
    "bad_check_digit": ("wagon_number", "uic_check_digit"),
    "unknown_station": ("destination_station", "known_station"),
    "same_origin_destination": ("destination_station", "origin_differs_from_destination"),
    "negative_tonnage": ("net_tonnage", "positive_tonnage"),
    "overloaded": ("net_tonnage", "tonnage_within_wagon_payload"),
    "zero_wagons": ("wagon_count", "at_least_one_wagon"),
    "arrival_before_departure": ("arrival_time", "arrival_not_before_departure"),
    "departure_outside_day": ("departure_time", "departure_within_partition_day"),
    "unparseable_number": ("net_tonnage", "is_number"),
    "missing_customer": ("customer", "required"),
    "duplicate_shipment_id": ("shipment_id", "unique_shipment_id_in_day"),
}


def frame_of(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(records, dtype=object)
    frame.insert(0, SOURCE_LINE, range(2, len(records) + 2))
    return frame


def test_every_row_is_either_valid_or_rejected():
    generated = generate_day(date.fromisoformat(DAY), rows=400, bad_fraction=0.1)
    outcome = validate_freight(frame_of(generated.records), DAY)
    assert outcome.rows_received == len(outcome.valid) + outcome.rows_rejected == 400
    assert outcome.rows_rejected == generated.bad_count == 40
    rejected_lines = set(outcome.rejects["source_line"])
    assert rejected_lines == {index + 2 for index in generated.bad_rows}
    assert rejected_lines.isdisjoint(set(outcome.valid[SOURCE_LINE]))


@pytest.mark.parametrize("defect", sorted(EXPECTED_RULE))
def test_each_defect_is_rejected_with_its_named_rule(defect):
    generated = generate_day(date.fromisoformat(DAY), rows=300, bad_fraction=0.2)
    lines = [index + 2 for index, name in generated.bad_rows.items() if name == defect]
    assert lines, f"seed gives no {defect} row"
    outcome = validate_freight(frame_of(generated.records), DAY)
    for line in lines:
        reject = outcome.rejects.set_index("source_line").loc[line]
        reasons = {(reason["column"], reason["rule"]) for reason in json.loads(reject["reasons"])}
        assert EXPECTED_RULE[defect] in reasons


def test_rejects_keep_the_original_values():
    generated = generate_day(date.fromisoformat(DAY), rows=200, bad_fraction=0.1)
    outcome = validate_freight(frame_of(generated.records), DAY)
    first = outcome.rejects.iloc[0]
    assert json.loads(first["raw_record"]) == generated.records[first["source_line"] - 2]


def test_empty_day_has_zero_rejection_rate():
    outcome = validate_freight(frame_of([]).reindex(columns=[SOURCE_LINE, *EXPECTED_COLUMNS]), DAY)
    assert (outcome.rows_received, outcome.rejection_rate) == (0, 0.0)


EXPECTED_COLUMNS = list(generate_day(date.fromisoformat(DAY), rows=1).records[0])


def test_naive_timestamps_are_read_as_local_time():
    record = dict(generate_day(date.fromisoformat(DAY), rows=1, bad_fraction=0).records[0])
    record["departure_time"] = "2026-11-20T00:30:00"  # 23:30 UTC the day before, still this local day
    record["arrival_time"] = ""
    outcome = validate_freight(frame_of([record]), DAY)
    assert outcome.rows_rejected == 0
    assert outcome.valid["departure_time"].iloc[0] == pd.Timestamp("2026-11-19T23:30:00Z")


def test_top_rejection_reasons_counts_rules():
    generated = generate_day(date.fromisoformat(DAY), rows=300, bad_fraction=0.2)
    outcome = validate_freight(frame_of(generated.records), DAY)
    top = top_rejection_reasons(outcome.rejects, limit=50)
    assert top["rows"].sum() >= outcome.rows_rejected
    assert list(top["rows"]) == sorted(top["rows"], reverse=True)


def test_checksum_ignores_row_order_and_detects_changes():
    generated = generate_day(date.fromisoformat(DAY), rows=50, bad_fraction=0)
    facts = to_facts(validate_freight(frame_of(generated.records), DAY).valid, DAY)
    shuffled = facts.sample(frac=1, random_state=1)
    assert facts_checksum(shuffled) == facts_checksum(facts)
    changed = facts.copy()
    changed.loc[0, "revenue_xaf"] += 1
    assert facts_checksum(changed) != facts_checksum(facts)
