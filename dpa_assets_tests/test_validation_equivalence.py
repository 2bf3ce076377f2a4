"""The faster validator gives what the validator before issue 10's rules work gave, on adversarial days.

The reference is a frozen copy of that validator (``support/previous``). Days are generated, then cells are
replaced by odd values (blank and padded cells, other scripts' digits, lone surrogates, huge numbers, odd
timestamps), ids are resent, rows repeated so the distinct-value paths run, and some days sorted by id.
Both validators see the same frame, as Python objects and as Arrow text (what a CSV or Parquet day is).
"""

from __future__ import annotations

import contextlib
import re
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa_arrow
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpa_assets import schemas, transforms
from dpa_assets.freight_model import RAW_COLUMNS
from dpa_assets.schemas import ARROW_TEXT
from dpa_assets.sources.generator import generate_day
from dpa_assets.sources.payload import SOURCE_LINE
from dpa_assets.text_vectors import arrow_joined, join_texts
from dpa_assets_tests.support.previous import schemas as previous_schemas
from dpa_assets_tests.support.previous import transforms as previous
from dpa_assets_tests.test_column_bounds import KIND, STRATEGIES
from dpa_assets_tests.test_transforms_results import POOL

DAY = "2026-11-20"
SURROGATE = re.compile("[\ud800-\udfff]")
# Characters next to every rule: padding of several kinds, digits of other scripts, points, signs, NUL.
ODD = " \t\n\x1c\x85\xa0\u2003\u3000\ufeff0123456789.+-:TZe٣é\x00"
values_of = {kind: st.sampled_from(pool) | STRATEGIES[kind] for kind, pool in POOL.items()}
padded = st.tuples(st.sampled_from(["", " ", "\t", "\u3000"]), st.sampled_from(["", " ", "\xa0"]))


@st.composite
def adversarial_days(draw: st.DrawFn) -> pd.DataFrame:
    """A generated day with odd cells, resent ids, repeated rows and maybe sorted by id, as Python objects."""
    seed = draw(st.integers(min_value=0, max_value=10_000))
    rows = draw(st.integers(1, 12))
    records = generate_day(date.fromisoformat(DAY), rows=rows, seed=seed, bad_fraction=0.3).records
    for _ in range(draw(st.integers(0, 10))):
        row, column = draw(st.integers(0, rows - 1)), draw(st.sampled_from(RAW_COLUMNS))
        value = draw(values_of[KIND[column]] | st.text(st.sampled_from(ODD), max_size=8))
        before, after = draw(padded)
        records[row][column] = before + value + after
    for _ in range(draw(st.integers(0, 3))):  # resends of another row's id, maybe padded
        row, other = draw(st.integers(0, rows - 1)), draw(st.integers(0, rows - 1))
        records[row]["shipment_id"] = "".join(draw(padded)[:1]) + records[other]["shipment_id"]
    records = records * draw(st.integers(1, 4))  # repeated values: the distinct-value paths
    frame = pd.DataFrame(records, columns=list(RAW_COLUMNS), dtype=object)
    if draw(st.booleans()):  # a day in id order: the in-order repeat search
        frame = frame.sort_values("shipment_id", kind="stable").reset_index(drop=True)
    frame.insert(0, SOURCE_LINE, range(2, len(frame) + 2))
    return frame


def as_arrow(raw: pd.DataFrame) -> pd.DataFrame:
    """The day as Arrow text, a lone surrogate (which UTF-8 cannot carry) replaced as a payload would not hold it."""
    raw = raw.copy()
    for column in RAW_COLUMNS:
        raw[column] = raw[column].map(lambda value: SURROGATE.sub("?", value) if isinstance(value, str) else value)
    return raw.astype(dict.fromkeys(RAW_COLUMNS, ARROW_TEXT))


@contextlib.contextmanager
def numbers_by_distinct(distinct: bool):
    """Numbers read by distinct value (or not) whatever the day's size, so a small day takes either path."""
    received = transforms._Received
    before = received.distinct_if_repeating
    received.distinct_if_repeating = received.distinct if distinct else lambda self: self
    try:
        yield
    finally:
        received.distinct_if_repeating = before


def assert_same_frame(new: pd.DataFrame, old: pd.DataFrame) -> None:
    assert list(new.columns) == list(old.columns)
    assert [str(kind) for kind in new.dtypes] == [str(kind) for kind in old.dtypes]
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    for column in new.columns:  # values as Python sees them: -0.0 and 0.0, str and None kept apart
        assert list(map(cell, new[column].tolist())) == list(map(cell, old[column].tolist())), column


def cell(value: object) -> object:
    if isinstance(value, pd.Timestamp):  # repr cannot show year 0, which pandas' vector comparisons let through
        return "Timestamp", int(value.asm8.view("i8")), value.unit, str(value.tz)
    return repr(value)


def assert_same_outcome(raw: pd.DataFrame, loaded_elsewhere: frozenset[str]) -> None:
    new = transforms.validate_freight(raw, DAY, loaded_elsewhere)
    old = previous.validate_freight(raw, DAY, loaded_elsewhere)
    assert_same_frame(new.valid, old.valid)
    assert_same_frame(new.rejects, old.rejects)
    assert new.rows_received == old.rows_received


@pytest.mark.parametrize("distinct", [True, False])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=adversarial_days(), elsewhere=st.integers(0, 3))
def test_outcome_is_the_previous_validators(distinct, raw, elsewhere):
    # Ids the warehouse holds: UTF-8 text, so never a lone surrogate (pandera's isin cannot encode one).
    loaded_elsewhere = frozenset(raw["shipment_id"].iloc[:elsewhere].map(str)) - set(
        filter(SURROGATE.search, raw["shipment_id"].map(str))
    )
    with numbers_by_distinct(distinct):
        assert_same_outcome(raw, loaded_elsewhere)
        assert_same_outcome(as_arrow(raw), loaded_elsewhere)


@pytest.mark.parametrize("distinct", [True, False])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=adversarial_days())
def test_typed_values_failures_and_missing_are_the_previous_ones(distinct, raw):
    for frame in (raw, as_arrow(raw)):
        with numbers_by_distinct(distinct):
            typed, failures, missing = transforms.type_raw_values(frame)
        old_typed, old_failures, old_missing = previous.type_raw_values(frame)
        assert_same_frame(typed, old_typed)
        assert_same_frame(failures, old_failures)
        assert missing.keys() == old_missing.keys()
        for column, absent in missing.items():
            assert absent.tolist() == old_missing[column].tolist(), column


ids = st.sampled_from(["SHP-1", "SHP-2", "SHP-10", "shp-1", "é", "\x00", ""]) | st.text(max_size=3)


@settings(max_examples=300, deadline=None)
@given(st.lists(ids | st.none(), max_size=30), st.booleans())
def test_repeats_are_what_duplicated_says(values, in_order):
    if in_order:
        values = sorted(values, key=lambda value: (value is None, value or ""))
    for series in (pd.Series(values, dtype=object), as_arrow_series(values)):
        expected = series.notna() & series.duplicated(keep="first")
        assert schemas.repeats(series).tolist() == expected.tolist()


def as_arrow_series(values: list[str | None]) -> pd.Series:
    return pd.Series([SURROGATE.sub("?", v) if isinstance(v, str) else v for v in values], dtype=ARROW_TEXT)


# Twelve digits, or texts of digits and their neighbours ("/" and ":" sit either side of 0-9).
wagon_numbers = (
    st.from_regex(r"[0-9]{12}", fullmatch=True)
    | st.from_regex(r"[0-9]{5}[/:][0-9]{6}|[0-9]{11}[/:]", fullmatch=True)
    | st.text(st.sampled_from("0123456789/:٣ \x00é"), max_size=13)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(wagon_numbers | st.none(), max_size=20))
def test_uic_numbers_are_judged_as_before(values):
    for series in (pd.Series(values, dtype=object), as_arrow_series(values)):
        expected = previous_schemas.uic_numbers_valid(series)
        assert schemas.uic_numbers_valid(series).tolist() == expected.tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["TIMBER", "CEMENT", "cement", "XXX", "", "é"]) | st.none(), max_size=20))
def test_payloads_are_what_the_map_gives(values):
    for series in (pd.Series(values, dtype=object), as_arrow_series(values)):
        expected = series.map(schemas.commodity_payloads()).astype(float).to_numpy()
        assert np.array_equal(schemas.payloads_of(series).to_numpy(), expected, equal_nan=True)


COLUMN_OF_KIND = {"number": ["net_tonnage", "wagon_count", "revenue_xaf"], "timestamp": ["departure_time"]}
COLUMN_OF_KIND["text"] = ["shipment_id", "customer"]
cells = {kind: values | st.text(st.sampled_from(ODD), max_size=8) | st.none() for kind, values in values_of.items()}


def typed_column(module, column: str, series: pd.Series) -> tuple[object, np.ndarray, np.ndarray]:
    received, bound = module._blank_to_na(series), module.FACT_BOUNDS[column]
    if KIND[column] == "number":
        return module._type_numbers(received, bound, whole=column == "wagon_count")
    if KIND[column] == "timestamp":
        return module._type_timestamps(received, bound)
    return module._type_texts(received, bound)


@pytest.mark.parametrize("distinct", [True, False])
@pytest.mark.parametrize("column", [column for columns in COLUMN_OF_KIND.values() for column in columns])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_each_column_is_typed_as_before(distinct, column, data):
    values = data.draw(st.lists(cells[KIND[column]], max_size=10))
    values = values * data.draw(st.integers(1, 3))  # repeats
    for series in (pd.Series(values, dtype=object), as_arrow_series(values)):
        with numbers_by_distinct(distinct):
            typed, rows, rules = typed_column(transforms, column, series)
        old_typed, old_rows, old_rules = typed_column(previous, column, series)
        assert_same_frame(pd.DataFrame({"typed": typed}), pd.DataFrame({"typed": old_typed}))
        assert rows.tolist() == old_rows.tolist()
        assert np.broadcast_to(rules, rows.shape).tolist() == np.broadcast_to(old_rules, old_rows.shape).tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["SHP-1", " SHP-1", "SHP-2\t", "", " ", "é "]) | st.text(max_size=4), max_size=20))
def test_ids_for_the_warehouse_lookup_are_stripped_as_before(values):
    for series in (pd.Series(values, dtype=object), as_arrow_series(values)):
        assert list(map(repr, transforms.stripped_texts(series))) == list(map(repr, previous.stripped_texts(series)))


numerals = st.text(st.sampled_from("0123456789.+-e ٣é"), max_size=17) | st.from_regex(
    r"[0-9]{0,16}\.?[0-9]{0,16}", fullmatch=True
)


@settings(max_examples=300, deadline=None)
@given(st.lists(numerals.filter(bool), max_size=20), st.booleans())  # present values are never empty
def test_arrow_reads_plain_numerals_as_the_code_points_do(texts, fraction):
    texts = [SURROGATE.sub("?", text) for text in texts]
    expected = transforms._plain_numerals(join_texts(texts), fraction)
    found = transforms._plain_arrow_numerals(pa_arrow.array(texts, type=pa_arrow.large_string()), fraction)
    assert [part.tolist() for part in found] == [part.tolist() for part in expected]
    short = transforms._plain_arrow_numerals(pa_arrow.array(texts, type=pa_arrow.string()), fraction)
    assert [part.tolist() for part in short] == [part.tolist() for part in expected]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.sampled_from(ODD + "ab"), max_size=4), max_size=20))
def test_ends_to_strip_are_found_as_str_strip_says(texts):
    texts = [SURROGATE.sub("?", text) for text in texts]
    expected = [not text or text.strip() != text or not text[0].isascii() or not text[-1].isascii() for text in texts]
    assert join_texts(texts).stripped_or_empty().tolist() == expected
    joined = arrow_joined(pa_arrow.array(texts, type=pa_arrow.large_string()))
    if joined is not None:
        assert joined.stripped_or_empty().tolist() == expected


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 200_000), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_report_order_is_pandas_sort_of_the_contexts(size, share, seed):
    # Large days too: below 17 cases NumPy's introsort is an insertion sort, where ties cannot move.
    contexts = np.where(np.random.default_rng(seed).random(size) < share, "Column", "DataFrameSchema")
    expected = pd.DataFrame({"schema_context": contexts.astype(object)}).sort_values("schema_context", ascending=False)
    found = transforms._report_order(contexts.astype(bytes))
    assert found.tolist() == expected.index.tolist()
