"""The pandera model of one freight movement, after text values have been typed.

Every rule has a name that reads as a rejection reason in the quarantine table and the UI.
Row-level rules that need the partition (the departure day) are added by ``freight_schema``.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from datetime import datetime
from typing import Annotated

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.compute as pc
from pandera.typing import Series

from dpa_assets.reference import commodity_payloads, station_names
from dpa_assets.text_vectors import ZERO, JoinedTexts, arrow_joined, join_texts

UTC_TIMESTAMP = pd.DatetimeTZDtype(unit="us", tz="UTC")
# Typed text is held by Arrow: a value costs its UTF-8 bytes and an offset, where a Python str costs
# about 60 bytes more. Arrow holds valid UTF-8 only; a received text holding a lone surrogate (which
# a JSON payload can carry) fails its column's bound, so its row is quarantined and the typed value
# is missing. The received text itself stays as it came (dpa_assets/__init__.py).
ARROW_TEXT = pd.StringDtype("pyarrow", na_value=pd.NA)
Text = Annotated[pd.StringDtype, "pyarrow", pd.NA]  # ARROW_TEXT, as pandera's model spells it


def _null_or(series: pd.Series, passed: pd.Series) -> pd.Series:
    """A missing value is reported once, by its own not-null rule, not by every other rule."""
    return series.isna().astype(bool) | passed.fillna(False).astype(bool)


_LUHN_DOUBLED = np.array([0, 2, 4, 6, 8, 1, 3, 5, 7, 9])  # 2d, less 9 above 9, for d = 0..9


def uic_numbers_valid(values: pd.Series) -> pd.Series:
    """``is_valid_uic_number`` of every value at once, on a matrix of digits (False for non-text)."""
    textual, joined = _arrow_code_points(values)
    if joined is None:
        texts = values.to_numpy(dtype=object)
        try:
            textual, joined = np.arange(len(texts)), join_texts(texts)
        except TypeError:  # not all text: only the texts can be wagon numbers
            textual = np.flatnonzero([isinstance(value, str) for value in texts])
            joined = join_texts(texts[textual])
    # Twelve characters, each an ASCII digit (str.isdigit alone would take other scripts' digits): only the
    # texts of twelve characters are read, as a matrix of twelve code points each.
    twelve = joined.lengths == 12
    valid = np.zeros(len(values), dtype=bool)
    rows, starts = textual[twelve], joined.starts[twelve]
    # Every text twelve long, one after the other (the usual column): the code points are the matrix.
    laid_out = twelve.all() and joined.codes.size == 12 * len(rows)
    # A slice of numbers at a time: the matrix's positions take 8 bytes a character (100 MiB at 1,000,000
    # rows at once, the validation's peak).
    for first in range(0, len(rows), _LUHN_SLICE_ROWS):
        at = starts[first : first + _LUHN_SLICE_ROWS]
        if laid_out:
            codes = joined.codes[12 * first : 12 * (first + len(at))].reshape(len(at), 12)
        else:
            codes = joined.codes[at[:, None] + _TWELVE]
        valid[rows[first : first + _LUHN_SLICE_ROWS]] = _luhn_valid(codes)
    return pd.Series(valid, index=values.index)


_LUHN_SLICE_ROWS = 65_536
_TWELVE = np.arange(12)


def _luhn_valid(codes: np.ndarray) -> np.ndarray:
    """Whether each row of twelve code points is twelve ASCII digits whose last is the Luhn check of the others.

    Column by column: a reduction along rows of twelve is several times slower in NumPy.
    """
    digits = codes - codes.dtype.type(ZERO)  # unsigned: a code point below "0" wraps far above 9
    shaped = digits[:, 11] <= 9
    total = np.zeros(len(codes), dtype=np.int64)
    for position in range(11):
        digit = digits[:, position]
        shaped &= digit <= 9
        digit = np.minimum(digit, 9)  # a row not shaped is refused whatever it sums to
        # Luhn doubles every other digit from the rightmost payload digit (positions 10, 8, ..., 0).
        total += _LUHN_DOUBLED[digit] if position % 2 == 0 else digit
    return shaped & ((10 - total % 10) % 10 == digits[:, 11])


def _arrow_code_points(values: pd.Series) -> tuple[np.ndarray, JoinedTexts | None]:
    """Where the texts of Arrow-held ASCII text are, and their code points read in place; (_, None) otherwise."""
    if not (isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow"):
        return np.zeros(0, dtype=np.int64), None
    column = pa_arrow.array(values.array)
    present = column.is_valid().to_numpy(zero_copy_only=False)
    return np.flatnonzero(present), arrow_joined(column.filter(present) if column.null_count else column)


def repeats(values: pd.Series) -> np.ndarray:
    """True for each present value that an earlier row already holds (a missing value: False).

    For Arrow-held text, Arrow finds them with no Python object per value. A day usually comes in id
    order: a repeat then follows the value it repeats, and one comparison of each value with the one
    before finds it. Otherwise Arrow's hash numbers the distinct values in order of first appearance.
    """
    arrow = _arrow_text(values)
    if arrow is None or len(arrow) < 2:
        return (values.duplicated(keep="first") & values.notna()).to_numpy(dtype=bool)
    if not arrow.null_count and pc.all(pc.less_equal(arrow[:-1], arrow[1:])).as_py():
        # UTF-8 byte order is code point order, the order str uses: equal values sit side by side.
        return np.concatenate(([False], pc.equal(arrow[1:], arrow[:-1]).to_numpy(zero_copy_only=False)))
    index = arrow.dictionary_encode().indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    first = index > np.maximum.accumulate(np.concatenate(([-1], index[:-1])))
    # Numbered in order of first appearance, value k first appears where the numbers first reach k.
    if not np.array_equal(index[first], np.arange(np.count_nonzero(first))):  # never seen: ask pandas then
        return (values.duplicated(keep="first") & values.notna()).to_numpy(dtype=bool)
    return ~first & (index >= 0)


def payloads_of(commodities: pd.Series) -> pd.Series:
    """``commodities.map(commodity_payloads()).astype(float)``: each code's payload, NaN for an unknown one."""
    arrow = _arrow_text(commodities)
    if arrow is None:
        return commodities.map(commodity_payloads()).astype(float)
    payloads = commodity_payloads()
    at = pc.index_in(arrow, value_set=pa_arrow.array(list(payloads), type=arrow.type))
    known = pa_arrow.array([*payloads.values(), np.nan], type=pa_arrow.float64())
    return pd.Series(known.take(at.fill_null(len(payloads))).to_numpy(), index=commodities.index)


def _arrow_text(values: pd.Series) -> pa_arrow.Array | None:
    """The Arrow array of Arrow-held text (one chunk), else None."""
    if not (isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow"):
        return None
    column = pa_arrow.array(values.array)
    if isinstance(column, pa_arrow.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


class FreightMovement(pa.DataFrameModel):
    """One freight movement (shipment) as the warehouse accepts it."""

    shipment_id: Series[Text] = pa.Field(nullable=False, description="Freight system shipment id")
    waybill_number: Series[Text] = pa.Field(nullable=False, description="Lettre de voiture number")
    wagon_number: Series[Text] = pa.Field(nullable=False, description="UIC 12-digit wagon number")
    origin_station: Series[Text] = pa.Field(nullable=False, description="Station code")
    destination_station: Series[Text] = pa.Field(nullable=False, description="Station code")
    commodity: Series[Text] = pa.Field(nullable=False, description="Commodity code")
    net_tonnage: Series[float] = pa.Field(nullable=False, description="Net tonnes carried")
    wagon_count: Series[pd.Int64Dtype] = pa.Field(nullable=False, description="Wagons in the shipment")
    departure_time: Series[UTC_TIMESTAMP] = pa.Field(nullable=False, description="Departure (UTC)")
    arrival_time: Series[UTC_TIMESTAMP] = pa.Field(nullable=True, description="Arrival (UTC); empty in transit")
    customer: Series[Text] = pa.Field(nullable=False, description="Paying customer")
    revenue_xaf: Series[float] = pa.Field(nullable=False, description="Revenue in XAF")

    @pa.check("wagon_number", name="uic_check_digit")
    @classmethod
    def _uic_check_digit(cls, series: Series[Text]) -> Series[bool]:
        return _null_or(series, uic_numbers_valid(series))

    @pa.check("origin_station", "destination_station", name="known_station")
    @classmethod
    def _known_station(cls, series: Series[Text]) -> Series[bool]:
        return _null_or(series, series.isin(list(station_names())))

    @pa.check("commodity", name="known_commodity")
    @classmethod
    def _known_commodity(cls, series: Series[Text]) -> Series[bool]:
        return _null_or(series, series.isin(list(commodity_payloads())))

    @pa.check("net_tonnage", name="positive_tonnage")
    @classmethod
    def _positive_tonnage(cls, series: Series[float]) -> Series[bool]:
        return _null_or(series, series > 0)

    @pa.check("wagon_count", name="at_least_one_wagon")
    @classmethod
    def _at_least_one_wagon(cls, series: Series[pd.Int64Dtype]) -> Series[bool]:
        return _null_or(series, (series >= 1).fillna(False).astype(bool))

    @pa.check("revenue_xaf", name="non_negative_revenue")
    @classmethod
    def _non_negative_revenue(cls, series: Series[float]) -> Series[bool]:
        return _null_or(series, series >= 0)

    @pa.dataframe_check(name="unique_shipment_id_in_day")
    @classmethod
    def _unique_shipment_id(cls, frame: pd.DataFrame) -> Series[bool]:
        # The first occurrence is kept; later copies of the same id are the resends.
        ids = frame["shipment_id"]
        return pd.Series(~repeats(ids), index=ids.index)

    @pa.dataframe_check(name="origin_differs_from_destination")
    @classmethod
    def _origin_differs(cls, frame: pd.DataFrame) -> Series[bool]:
        origin, destination = frame["origin_station"], frame["destination_station"]
        # Compared by Arrow, no Python object per value; a missing value (null) passes.
        differs = pc.not_equal(pa_arrow.array(origin.array), pa_arrow.array(destination.array)).fill_null(True)
        return pd.Series(differs.to_numpy(zero_copy_only=False), index=frame.index)

    @pa.dataframe_check(name="tonnage_within_wagon_payload")
    @classmethod
    def _tonnage_within_payload(cls, frame: pd.DataFrame) -> Series[bool]:
        payload = payloads_of(frame["commodity"])
        limit = payload * frame["wagon_count"].astype(float)
        unknown = payload.isna() | limit.isna() | frame["net_tonnage"].isna()
        return unknown | (frame["net_tonnage"] <= limit).fillna(False).astype(bool)

    @pa.dataframe_check(name="arrival_not_before_departure")
    @classmethod
    def _arrival_after_departure(cls, frame: pd.DataFrame) -> Series[bool]:
        arrival, departure = frame["arrival_time"], frame["departure_time"]
        return arrival.isna() | departure.isna() | (arrival >= departure)

    class Config:
        strict = False  # extra columns such as source_line travel with the rows
        coerce = False  # typing is done (and reported per row) before validation


def freight_schema(
    day_start: datetime, day_end: datetime, loaded_elsewhere: Collection[str] = frozenset()
) -> pa.DataFrameSchema:
    """The freight model plus the rules that need the partition and the warehouse.

    Args:
        day_start: first instant of the partition's day (timezone-aware).
        day_end: first instant of the next day.
        loaded_elsewhere: shipment ids the warehouse already holds for other days.

    Returns:
        A schema to validate one partition's typed rows with.
    """

    def departs_within_day(frame: pd.DataFrame) -> pd.Series:
        departure = frame["departure_time"]
        return departure.isna() | ((departure >= day_start) & (departure < day_end))

    def not_loaded_for_another_day(frame: pd.DataFrame) -> pd.Series:
        return ~frame["shipment_id"].isin(list(loaded_elsewhere)).fillna(False).astype(bool)

    schema = copy.deepcopy(FreightMovement.to_schema())  # the model's schema is cached and shared
    schema.checks = [
        *schema.checks,
        pa.Check(departs_within_day, name="departure_within_partition_day"),
        pa.Check(not_loaded_for_another_day, name="not_loaded_for_another_day"),
    ]
    return schema
