"""The array forms of per-value text rules agree with the Python expressions they replace, value by value."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from dpa_assets.column_bounds import UNSTORABLE_CHARACTER, ColumnBound, present_texts_fit
from dpa_assets.schemas import ARROW_TEXT
from dpa_assets.text_vectors import arrow_joined, join_texts
from dpa_assets.transforms import _HAS_OFFSET, _blank_to_na, _end_with_offset, _plain_numerals

# Characters near every rule: digits of other scripts, Unicode spaces, NUL, lone surrogates, signs, points.
ODD_CHARACTERS = "0123456789.+-:Z eE\t\n\x00\x1c\x85\xa0\u2003\u3000\ud800\udfff٣١é€"
texts = st.text(st.sampled_from(ODD_CHARACTERS) | st.characters(), max_size=20)
numerals = st.from_regex(r"[0-9]{0,16}(\.[0-9]{0,16})?", fullmatch=True) | st.floats().map(repr) | texts
stamps = st.from_regex(r"2026-11-20T10:00:00(Z|[+-][0-9٣]{2}:?[0-9]{2}|[+-][0-9]{1,3})?", fullmatch=True) | texts


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, max_size=12))
def test_joined_code_points_give_back_each_text(values):
    joined = join_texts(values)
    for value, start, length in zip(values, joined.starts, joined.lengths, strict=True):
        assert [chr(code) for code in joined.codes[start : start + length]] == list(value)
    assert joined.unstorable().tolist() == [UNSTORABLE_CHARACTER.search(value) is not None for value in values]
    assert present_texts_fit(joined, ColumnBound(max_length=5)).tolist() == [
        UNSTORABLE_CHARACTER.search(value) is None and len(value) <= 5 for value in values
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(texts | st.none(), max_size=12))
def test_blank_to_na_strips_like_str_strip(values):
    received = _blank_to_na(pd.Series(values, dtype=object))
    expected = [value.strip() or None if isinstance(value, str) else None for value in values]
    assert received.text.tolist() == expected
    assert received.present.tolist() == [i for i, value in enumerate(expected) if value is not None]
    present_values = [value for value in expected if value is not None]
    assert_values_read_as(received, present_values)


def assert_values_read_as(received, present_values: list[str]) -> None:
    """The received values, spread to the rows that hold them, are ``present_values``, code points included."""
    values = received.texts_of(np.arange(len(received.joined.lengths)))
    assert [values[at] for at in received.spread(np.arange(len(values)))] == present_values
    assert [chr(code) for code in received.joined.codes] == list("".join(values))
    assert received.joined.lengths.tolist() == [len(value) for value in values]
    assert received.spread(received.joined.unstorable()).tolist() == [
        UNSTORABLE_CHARACTER.search(value) is not None for value in present_values
    ]


@settings(max_examples=500, deadline=None)
@given(st.lists(numerals.filter(bool), max_size=12), st.booleans())
def test_plain_numerals_read_as_float_does(values, fraction):
    plain, mantissa, scale = _plain_numerals(join_texts(values), fraction)
    for value, is_plain, digits, after_point in zip(values, plain, mantissa, scale, strict=True):
        shape = r"[0-9]+\.?[0-9]*|\.[0-9]+" if fraction else r"[0-9]+"
        assert is_plain == (len(value) <= 15 and re.fullmatch(shape, value) is not None), value
        if is_plain:
            assert float(digits) / float(10**after_point) == float(value)
            assert str(float(digits) / float(10**after_point)) == str(float(value))


@settings(max_examples=500, deadline=None)
@given(st.lists(stamps.filter(lambda value: value and value == value.strip()), max_size=12))  # as received: stripped
def test_offset_at_the_end_as_the_pattern_finds_it(values):
    found = _end_with_offset(np.array(values, dtype=object), np.arange(len(values)), join_texts(values))
    assert found.tolist() == [re.search(_HAS_OFFSET, value) is not None for value in values]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.from_regex(r"[0-9.+eE-]{1,17}", fullmatch=True), max_size=40),  # present texts: never empty
    st.booleans(),
    st.integers(min_value=1, max_value=7),
)
def test_plain_numerals_read_in_slices_as_at_once(values, fraction, slice_texts):
    """The numerals are read a slice of texts at a time (bounded memory); any slicing reads the same."""
    joined = join_texts(values)
    at_once = _plain_numerals(joined, fraction)
    sliced = [_plain_numerals(part, fraction) if len(part.lengths) else None for part in joined.in_slices(slice_texts)]
    for column, whole in enumerate(at_once):
        parts = [part[column] for part in sliced if part is not None]
        assert np.array_equal(np.concatenate(parts) if parts else whole[:0], whole)


# What a UTF-8 payload can carry (Arrow text): no lone surrogate.
UTF8_CHARACTERS = ODD_CHARACTERS.replace("\ud800", "").replace("\udfff", "")
utf8_texts = st.text(st.sampled_from(UTF8_CHARACTERS) | st.characters(exclude_categories=("Cs",)), max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(utf8_texts | st.none(), max_size=12), st.integers(min_value=0, max_value=3), st.booleans())
def test_arrow_text_read_in_place_gives_the_joined_code_points(values, skip, large):
    column = pa.array(values, type=pa.large_string() if large else pa.string()).slice(min(skip, len(values)))
    values = values[min(skip, len(values)) :]
    joined = arrow_joined(column)
    if any(value is None or not value.isascii() for value in values):
        assert joined is None  # the caller joins Python strings instead
        return
    expected = join_texts(values)
    assert joined.codes.tolist() == expected.codes.tolist()
    assert joined.starts.tolist() == expected.starts.tolist()
    assert joined.lengths.tolist() == expected.lengths.tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(utf8_texts | st.none(), max_size=12))
def test_blank_to_na_of_arrow_text_strips_like_str_strip(values):
    received = _blank_to_na(pd.Series(pd.array(values, dtype=ARROW_TEXT)))
    expected = [value.strip() or None if isinstance(value, str) else None for value in values]
    assert received.text.tolist() == expected
    assert received.present.tolist() == [i for i, value in enumerate(expected) if value is not None]
    assert_values_read_as(received, [value for value in expected if value is not None])
