"""Vectorized rules give exactly the results of the original value-by-value ones (checksum, UIC digit).

Audit rows written before the change hold digests of the original; the reconcile check and the
Dagster-record cross-check compare new digests with them, so the two must never differ.
"""

from __future__ import annotations

import hashlib
from datetime import date

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpa_assets.freight_model import is_valid_uic_number
from dpa_assets.schemas import ARROW_TEXT, uic_numbers_valid
from dpa_assets.sources.generator import generate_day
from dpa_assets.transforms import FACT_COLUMNS, _canonical, _in_order, facts_checksum, to_facts, validate_freight
from dpa_assets_tests.test_transforms import frame_of

DAY = "2026-11-20"


def value_by_value_checksum(facts: pd.DataFrame) -> str:
    """The original algorithm, one value at a time: the oracle the fast one must equal."""
    digest = hashlib.sha256()
    ordered = facts.sort_values("shipment_id", kind="stable")
    for record in ordered.loc[:, list(FACT_COLUMNS)].itertuples(index=False):
        digest.update("\x1f".join(_canonical(value) for value in record).encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def test_generated_day_digest_is_unchanged():
    generated = generate_day(date.fromisoformat(DAY), rows=3_000, bad_fraction=0.05)
    facts = to_facts(validate_freight(frame_of(generated.records), DAY).valid, DAY)
    assert facts_checksum(facts) == value_by_value_checksum(facts)


_texts = st.one_of(st.none(), st.text(max_size=8))  # NUL, accents and lone surrogates included
_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
_instants = st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999)  # us, years 1-9999


@st.composite
def fact_frames(draw: st.DrawFn) -> pd.DataFrame:
    rows = draw(st.integers(min_value=0, max_value=12))
    columns = {column: [draw(_texts) for _ in range(rows)] for column in FACT_COLUMNS}
    # Duplicated ids exercise the stable sort; the id column is never missing in a real day.
    columns["shipment_id"] = [draw(st.sampled_from(["A", "B", "C", "é"])) for _ in range(rows)]
    columns["partition_date"] = [date(2026, 11, draw(st.integers(1, 30))) for _ in range(rows)]
    frame = pd.DataFrame(columns, dtype=object)
    frame["net_tonnage"] = pd.Series([draw(_floats) for _ in range(rows)], dtype="float64")
    frame["wagon_count"] = pd.Series([draw(st.integers(-(2**63), 2**63 - 1)) for _ in range(rows)], dtype="int64")
    stamps = [draw(st.one_of(st.none(), _instants)) for _ in range(2 * rows)]
    micro = pd.Series([np.datetime64("NaT") if s is None else np.datetime64(s, "us") for s in stamps])
    frame["departure_time"] = micro[:rows].astype("datetime64[us]").dt.tz_localize("UTC").to_numpy()
    shifted = pd.Series(micro[rows:].to_numpy(dtype="datetime64[us]")).dt.tz_localize("UTC")
    frame["arrival_time"] = shifted.dt.tz_convert(draw(st.sampled_from(["UTC", "Africa/Douala", "America/Lima"])))
    if draw(st.booleans()):
        frame["arrival_time"] = frame["arrival_time"].dt.tz_localize(None)  # naive: read as UTC
    if draw(st.booleans()):
        frame["customer"] = frame["customer"].astype("string")
    if draw(st.booleans()):  # a column of mixed Python values, as a driver might return
        frame["revenue_xaf"] = pd.Series(
            [draw(st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=3))) for _ in range(rows)],
            dtype=object,
        )
    else:
        frame["revenue_xaf"] = pd.Series([draw(st.integers(-(10**12), 10**12)) for _ in range(rows)], dtype="int64")
    return frame


def _digest_or_error(function, facts: pd.DataFrame) -> str:
    try:
        return function(facts)
    except UnicodeEncodeError:  # a lone surrogate is not UTF-8: both must refuse it
        return "UnicodeEncodeError"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fact_frames())
def test_random_frames_digest_as_value_by_value(facts: pd.DataFrame):
    assert _digest_or_error(facts_checksum, facts) == _digest_or_error(value_by_value_checksum, facts)


def test_digest_is_the_same_across_slices(monkeypatch):
    generated = generate_day(date.fromisoformat(DAY), rows=500, bad_fraction=0)
    facts = to_facts(validate_freight(frame_of(generated.records), DAY).valid, DAY)
    whole = facts_checksum(facts)
    monkeypatch.setattr("dpa_assets.transforms.CHECKSUM_SLICE_ROWS", 7)
    assert facts_checksum(facts) == whole == value_by_value_checksum(facts)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.from_regex(r"[0-9]{12}", fullmatch=True), st.text(max_size=13)), max_size=20))
def test_vectorized_uic_rule_agrees_with_the_reference(values):
    expected = [isinstance(value, str) and is_valid_uic_number(value) for value in values]
    assert uic_numbers_valid(pd.Series(values, dtype=object)).tolist() == expected


def test_vectorized_uic_rule_reads_the_numbers_a_slice_at_a_time(monkeypatch):
    """The digit matrix is built a slice of numbers at a time (200 MiB at 1,000,000 rows at once): same verdicts."""
    generated = generate_day(date.fromisoformat(DAY), rows=300, bad_fraction=0.3)
    values = [record["wagon_number"] for record in generated.records] + ["31801234567", None, "3180123456790"]
    monkeypatch.setattr("dpa_assets.schemas._LUHN_SLICE_ROWS", 7)
    verdicts = uic_numbers_valid(pd.Series(values, dtype=object)).tolist()
    assert verdicts == [isinstance(value, str) and is_valid_uic_number(value) for value in values]
    assert 0 < sum(verdicts) < len(values)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.from_regex(r"[0-9]{12}", fullmatch=True),
            st.text(st.characters(exclude_categories=("Cs",)), max_size=13),
        ),
        max_size=20,
    )
)
def test_vectorized_uic_rule_on_arrow_text_agrees_with_the_reference(values):
    """Typed text is held by Arrow: ASCII numbers are read in place, anything else as Python strings."""
    expected = [isinstance(value, str) and is_valid_uic_number(value) for value in values]
    assert uic_numbers_valid(pd.Series(pd.array(values, dtype=ARROW_TEXT))).tolist() == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.sampled_from("aAzé€\uffff😀0 "), max_size=3), max_size=8))
def test_arrow_ids_are_found_in_order_as_python_compares_them(ids):
    """Facts' ids are Arrow text: their order is checked by Arrow, as Python's str order has it."""
    assert _in_order(pd.Series(pd.array(ids, dtype=ARROW_TEXT))) == pd.Series(ids, dtype=object).is_monotonic_increasing
