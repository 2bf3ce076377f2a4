"""Validation splits every received row into valid or rejected, with a named reason."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pandas as pd
import pyarrow as pa_arrow
import pytest

from dpa_assets.freight_model import RAW_COLUMNS
from dpa_assets.partitions import partition_bounds
from dpa_assets.schemas import ARROW_TEXT, freight_schema
from dpa_assets.sources.generator import generate_day
from dpa_assets.sources.payload import SOURCE_LINE, ReceivedPayload, parse_csv
from dpa_assets.transforms import (
    _schema_reasons,
    facts_checksum,
    to_facts,
    top_rejection_reasons,
    type_raw_values,
    validate_freight,
)

DAY = "2026-11-20"
TEXT_COLUMNS = (
    "shipment_id",
    "waybill_number",
    "wagon_number",
    "origin_station",
    "destination_station",
    "commodity",
    "customer",
)
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


def one_good_record() -> dict[str, str]:
    return dict(generate_day(date.fromisoformat(DAY), rows=1, bad_fraction=0).records[0])


@pytest.mark.parametrize(
    ("column", "value"),
    [("revenue_xaf", "1e30"), ("revenue_xaf", "inf"), ("revenue_xaf", "Infinity"), ("wagon_count", "1e30")],
)
def test_an_extreme_value_rejects_its_row_and_the_day_goes_on(column, value):
    records = [one_good_record(), {**one_good_record(), "shipment_id": "SHP-X", column: value}]
    outcome = validate_freight(frame_of(records), DAY)
    facts = to_facts(outcome.valid, DAY)
    assert list(outcome.rejects["shipment_id"]) == ["SHP-X"]
    assert list(facts["shipment_id"]) == [records[0]["shipment_id"]]
    assert facts.at[0, column] == int(records[0][column])


@pytest.mark.parametrize(("column", "value"), [("revenue_xaf", 1e30), ("revenue_xaf", float("inf"))])
def test_to_facts_refuses_a_value_its_column_cannot_hold_rather_than_wrap_it(column, value):
    valid = validate_freight(frame_of([one_good_record()]), DAY).valid
    valid[column] = value
    with pytest.raises(ValueError, match=column):
        to_facts(valid, DAY)


def test_a_reject_with_a_huge_or_nul_shipment_id_keeps_it_whole_in_its_raw_record():
    shipment_id = "SHP\x00" + "é" * 300
    outcome = validate_freight(frame_of([{**one_good_record(), "shipment_id": shipment_id}]), DAY)
    reject = outcome.rejects.iloc[0]
    assert json.loads(reject["raw_record"])["shipment_id"] == shipment_id
    assert json.loads(reject["reasons"]) == [{"column": "shipment_id", "rule": "fits_column", "value": shipment_id}]
    # The display column holds what freight_rejects.shipment_id (String(200)) and PostgreSQL text can store.
    assert len(reject["shipment_id"]) == 200 and "\x00" not in reject["shipment_id"]
    assert reject["shipment_id"].startswith("SHP\ufffdéé") and reject["shipment_id"].endswith("…")
    assert "\x00" not in reject["raw_record"] + reject["reasons"]


def test_a_lone_surrogate_is_kept_escaped_in_the_json_of_its_reject():
    outcome = validate_freight(frame_of([{**one_good_record(), "customer": "Bois \ud800"}]), DAY)
    reject = outcome.rejects.iloc[0]
    reject["raw_record"].encode("utf-8")  # storable as UTF-8
    assert json.loads(reject["raw_record"])["customer"] == "Bois \ud800"
    assert json.loads(reject["reasons"])[0]["value"] == "Bois \ud800"


def test_a_typing_mistake_stops_the_day_instead_of_rejecting_rows():
    typed, failures, missing = type_raw_values(frame_of([one_good_record()]))
    typed["wagon_count"] = typed["wagon_count"].astype(float)  # the schema declares Int64
    with pytest.raises(RuntimeError, match="not tied to rows"):
        _schema_reasons(freight_schema(*partition_bounds(DAY)), typed, failures, missing)


def test_a_rule_the_fast_path_does_not_evaluate_is_refused_not_skipped():
    typed, failures, missing = type_raw_values(frame_of([one_good_record()]))
    schema = freight_schema(*partition_bounds(DAY)).update_column("shipment_id", unique=True)
    with pytest.raises(RuntimeError, match="unique="):
        _schema_reasons(schema, typed, failures, missing)


def _csv_day(records: list[dict]) -> pd.DataFrame:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(RAW_COLUMNS)
    writer.writerows([record[column] for column in RAW_COLUMNS] for record in records)
    return parse_csv(ReceivedPayload("day.csv", text.getvalue().encode())).frame


def test_a_csv_day_is_typed_into_arrow_text_without_a_python_object_per_value():
    """The received text stays in Arrow: a typed text column that lost no value is the received column itself."""
    raw = _csv_day(generate_day(date.fromisoformat(DAY), rows=300, bad_fraction=0).records)
    typed, _, _ = type_raw_values(raw)

    for column in TEXT_COLUMNS:
        assert typed[column].dtype == ARROW_TEXT
        received = pa_arrow.array(raw[column].array)
        assert pa_arrow.array(typed[column].array).buffers()[2].address == received.buffers()[2].address
    outcome = validate_freight(raw, DAY)
    assert all(outcome.valid[column].dtype == ARROW_TEXT for column in TEXT_COLUMNS)


def test_a_day_arrow_reads_in_several_blocks_validates_like_a_small_one():
    """Arrow's CSV reader hands a file over 1 MiB back in blocks (a chunked column): the same rules apply."""
    records = generate_day(date.fromisoformat(DAY), rows=12_000, seed=3).records
    raw = _csv_day(records)
    assert pa_arrow.array(raw["shipment_id"].array).num_chunks > 1  # what a day of this size looks like

    outcome = validate_freight(raw, DAY)

    single = validate_freight(raw.astype({column: object for column in raw.columns if column != SOURCE_LINE}), DAY)
    assert outcome.rows_received == len(records) == len(outcome.valid) + outcome.rows_rejected
    assert facts_checksum(to_facts(outcome.valid, DAY)) == facts_checksum(to_facts(single.valid, DAY))
    assert outcome.rejects["reasons"].tolist() == single.rejects["reasons"].tolist()


def test_text_arrow_cannot_hold_is_quarantined_and_the_rest_typed_into_arrow():
    """A JSON payload can carry a lone surrogate (not UTF-8): its row is rejected, the others are Arrow text."""
    records = [dict(record) for record in generate_day(date.fromisoformat(DAY), rows=20, bad_fraction=0).records]
    records[3]["customer"], records[5]["commodity"] = "Bois \ud800", "  "  # unstorable; blank
    typed, failures, _ = type_raw_values(frame_of(records))

    assert typed["customer"].dtype == typed["commodity"].dtype == ARROW_TEXT
    assert typed["customer"].isna().tolist() == [row == 3 for row in range(20)]
    assert typed["commodity"].isna().tolist() == [row == 5 for row in range(20)]
    assert failures[["row", "column", "rule"]].values.tolist() == [[3, "customer", "fits_column"]]
    outcome = validate_freight(frame_of(records), DAY)
    assert sorted(outcome.rejects["source_line"]) == [5, 7]
    assert "\\ud800" in outcome.rejects["raw_record"].iloc[0]  # the quarantine keeps the value, escaped
