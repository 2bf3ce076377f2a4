"""What each warehouse fact column holds exactly, read from the table definitions in ``warehouse/tables.py``.

Validation quarantines a received value its column cannot hold (rule ``fits_column``) instead of letting
pandas wrap it, the database cut or refuse it, or the day fail: the same rows load on SQLite and
PostgreSQL, and every stored value is the value received. No Dagster here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pandas as pd
import sqlalchemy as sa

from dpa_assets.text_vectors import JoinedTexts, join_texts
from dpa_assets.warehouse.tables import facts

FITS_COLUMN = "fits_column"
# Python's datetime, which both database drivers return, spans years 1 to 9999, and a reader's session
# time zone can be up to a day away from UTC (PostgreSQL allows ±15:59): keep one day clear at each end.
EARLIEST_TIMESTAMP = pd.Timestamp("0001-01-02T00:00:00Z")
LATEST_TIMESTAMP = pd.Timestamp("9999-12-30T23:59:59.999999Z")
# PostgreSQL text cannot hold NUL, and UTF-8 (both databases' encoding) cannot encode a lone surrogate.
UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")
_INTEGER_BITS = ((sa.BigInteger, 64), (sa.SmallInteger, 16), (sa.Integer, 32))  # subclasses first


@dataclass(frozen=True)
class ColumnBound:
    """The values one column stores exactly; a field left unset does not constrain."""

    max_length: int | None = None  # characters, as String(n) and PostgreSQL varchar(n) count them
    integer_range: tuple[int, int] | None = None
    finite: bool = False  # a double: no NaN, no infinity
    timestamp_range: tuple[pd.Timestamp, pd.Timestamp] | None = None  # at microsecond precision


def column_bound(column: sa.Column) -> ColumnBound:
    """The bound a column's SQLAlchemy type sets (String(n), Integer family, Float, DateTime).

    Args:
        column: a table column.

    Returns:
        Its bound; an unbounded ``ColumnBound()`` for other types (Text, Date).
    """
    kind = column.type
    if isinstance(kind, sa.String):
        return ColumnBound(max_length=kind.length)
    if isinstance(kind, sa.Integer):
        bits = next(bits for integer_type, bits in _INTEGER_BITS if isinstance(kind, integer_type))
        return ColumnBound(integer_range=(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    if isinstance(kind, sa.Float):
        return ColumnBound(finite=True)
    if isinstance(kind, sa.DateTime):
        return ColumnBound(timestamp_range=(EARLIEST_TIMESTAMP, LATEST_TIMESTAMP))
    return ColumnBound()


FACT_BOUNDS: dict[str, ColumnBound] = {column.name: column_bound(column) for column in facts.columns}


def texts_fit(values: pd.Series, bound: ColumnBound) -> pd.Series:
    """True where a text (or a missing value) is storable as it is: no NUL, valid UTF-8, within the length."""
    strings = values.astype("string")
    present = strings.notna().to_numpy()
    texts = strings.to_numpy(dtype=object)[present]
    # A slice at a time: the code points and their masks take ~130 bytes a text (a day's ids: 120 MiB at once).
    fits = np.ones(len(strings), dtype=bool)
    fits[present] = np.concatenate(
        [np.zeros(0, dtype=bool)]
        + [
            present_texts_fit(join_texts(texts[at : at + FIT_SLICE_TEXTS]), bound)
            for at in range(0, len(texts), FIT_SLICE_TEXTS)
        ]
    )
    return pd.Series(fits, index=values.index)


FIT_SLICE_TEXTS = 100_000


def present_texts_fit(texts: JoinedTexts, bound: ColumnBound) -> np.ndarray:
    """``texts_fit`` of texts that are there, given as code points, as a boolean array."""
    fits = ~texts.unstorable()
    if bound.max_length is not None:
        fits &= texts.lengths <= bound.max_length  # characters, as len() counts them
    return fits


def number_fits(exact: Decimal, value: float, bound: ColumnBound) -> bool:
    """Whether a received number, typed as the double ``value``, is stored without changing.

    A Float column stores the double itself, which must be finite. An integer column stores the number
    rounded half to even, which must be in range and equal the rounding of the double.

    Args:
        exact: the number as received.
        value: the double it was typed as.
        bound: the column's bound.
    """
    if not math.isfinite(value):
        return False
    if bound.integer_range is None:
        return True
    rounded = exact.to_integral_value(rounding=ROUND_HALF_EVEN)
    low, high = bound.integer_range
    return low <= rounded <= high and Decimal(round(value)) == rounded


def integer_fits(exact: Decimal | int, bound: ColumnBound) -> bool:
    """Whether a whole number is within the column's integer range."""
    low, high = bound.integer_range or (-math.inf, math.inf)
    return low <= exact <= high


def timestamps_fit(stamps: pd.Series, bound: ColumnBound) -> pd.Series:
    """True where a UTC timestamp (or a missing one) is in the column's range, to the microsecond."""
    if bound.timestamp_range is None:
        return pd.Series(True, index=stamps.index)
    earliest, latest = bound.timestamp_range
    fits = (stamps >= earliest) & (stamps <= latest) & (stamps.dt.nanosecond == 0)
    return stamps.isna() | fits


def storable_text(value: str, bound: ColumnBound, mark: str = "…") -> str:
    """A display copy of a text that fits its column: unstorable characters replaced, cut with a mark.

    Args:
        value: the text as received (the full value is kept elsewhere, e.g. in a JSON record).
        bound: the display column's bound.
        mark: ends a text that had to be cut.
    """
    shown = UNSTORABLE_CHARACTER.sub("\ufffd", value)
    if bound.max_length is not None and len(shown) > bound.max_length:
        shown = shown[: bound.max_length - len(mark)] + mark
    return shown
