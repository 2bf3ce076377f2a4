"""The synthetic day generator is deterministic, realistic, and honest about its bad rows."""

from __future__ import annotations

from datetime import date

from dpa_assets.freight_model import is_valid_uic_number, luhn_check_digit
from dpa_assets.reference import station_names
from dpa_assets.sources.generator import generate_day


def test_same_day_and_seed_give_the_same_rows():
    assert generate_day(date(2026, 5, 4), seed=3) == generate_day(date(2026, 5, 4), seed=3)
    assert generate_day(date(2026, 5, 4), seed=3) != generate_day(date(2026, 5, 4), seed=4)


def test_good_rows_are_realistic():
    generated = generate_day(date(2026, 5, 4), rows=300)
    good = [record for index, record in enumerate(generated.records) if index not in generated.bad_rows]
    assert all(is_valid_uic_number(record["wagon_number"]) for record in good)
    assert all(record["origin_station"] in station_names() for record in good)
    assert all(record["origin_station"] != record["destination_station"] for record in good)


def test_a_few_percent_of_rows_are_bad_and_named():
    generated = generate_day(date(2026, 5, 4), rows=500, bad_fraction=0.04)
    assert generated.bad_count == 20
    assert 0 not in generated.bad_rows  # duplicates copy row 0's id, so it stays good


def test_uic_check_digit_matches_the_published_example():
    assert luhn_check_digit("21812471217") == 3
    assert is_valid_uic_number("218124712173")
    assert not is_valid_uic_number("218124712174")
    assert not is_valid_uic_number("21812471217")
    assert not is_valid_uic_number("２１８１２４７１２１７３")  # full-width digits are not digits here
