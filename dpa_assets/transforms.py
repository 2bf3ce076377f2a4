"""Pure pandas steps from received text rows to warehouse facts; no Dagster here.

``validate_freight`` types the text values, runs the pandera schema lazily (every failure of every
row in one pass) and splits the rows: each received row ends up valid or rejected, never both, never lost.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from json.encoder import encode_basestring

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.compute as pc

from dpa_assets.column_bounds import (
    FACT_BOUNDS,
    FITS_COLUMN,
    UNSTORABLE_CHARACTER,
    ColumnBound,
    column_bound,
    integer_fits,
    number_fits,
    present_texts_fit,
    storable_text,
    timestamps_fit,
)
from dpa_assets.freight_model import RAW_COLUMNS
from dpa_assets.partitions import partition_bounds
from dpa_assets.process_memory import release_free_heap
from dpa_assets.schemas import ARROW_TEXT, UTC_TIMESTAMP, freight_schema
from dpa_assets.sources.payload import SOURCE_LINE
from dpa_assets.text_vectors import NINE, ZERO, JoinedTexts, arrow_joined, ascii_digits, join_texts, shared_texts
from dpa_assets.warehouse.tables import rejects as reject_table

NUMBER_COLUMNS = ("net_tonnage", "revenue_xaf")
WHOLE_NUMBER_COLUMNS = ("wagon_count",)
TIMESTAMP_COLUMNS = ("departure_time", "arrival_time")
FACT_COLUMNS = ("partition_date", *RAW_COLUMNS)  # typed, one row per valid movement
REJECT_COLUMNS = ("source_line", "shipment_id", "raw_record", "reasons", "reason_summary")
_HAS_OFFSET = r"(?:Z|[+-]\d\d:?\d\d)$"
_DECIMAL_NUMERAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class ValidationOutcome:
    """One partition's received rows, split. ``rows_received == len(valid) + len(rejects)``."""

    partition_key: str
    valid: pd.DataFrame
    rejects: pd.DataFrame
    rows_received: int
    validation_run_id: str = ""  # the Dagster run that validated; its rejects balance the load

    @property
    def rows_rejected(self) -> int:
        return len(self.rejects)

    @property
    def rejection_rate(self) -> float:
        """Rejected / received; an empty day rejects nothing, so its rate is 0."""
        return self.rows_rejected / self.rows_received if self.rows_received else 0.0


@dataclass(frozen=True)
class _Received:
    """One received column: which rows hold a value, and the values stripped, each judged once.

    Row ``present[i]`` holds ``values[where[i]]`` (or ``values[i]`` when ``where`` is None). Every typing
    rule judges a value alone, so judging each distinct text once and spreading the verdicts by ``where``
    gives what judging every row would, at a fraction of the work when a day repeats its values.
    """

    rows: int
    present: np.ndarray
    joined: JoinedTexts  # the code points of each value
    arrow: pa_arrow.Array | None = None  # the values as Arrow text, when they came that way
    python: np.ndarray | None = None  # the values as Python text, when they came that way
    where: np.ndarray | None = None
    # The received column as Arrow held it, when every row holds its value as received (nothing stripped,
    # nothing missing): the typed text can then be that very array, no copy of its characters.
    as_received: pa_arrow.Array | None = None

    def texts(self) -> np.ndarray:
        """The values as Python text (from Arrow: one ``str`` per distinct value)."""
        return self.python if self.python is not None else shared_texts(self.arrow)

    def texts_of(self, values: np.ndarray) -> list[str]:
        """The values at ``values`` (positions in the values, not rows) as Python text."""
        if self.python is not None:
            return self.python[values].tolist()
        return self.arrow.take(values).to_pylist()

    def spread(self, per_value: np.ndarray) -> np.ndarray:
        """One entry per present row from one per value."""
        return per_value if self.where is None else per_value[self.where]

    def at_rows(self, per_value: np.ndarray, missing: object) -> np.ndarray:
        """One entry per row from one per value; ``missing`` where a row holds no value."""
        spread = self.spread(per_value)
        full = np.full(self.rows, missing, dtype=spread.dtype)
        full[self.present] = spread
        return full

    @property
    def text(self) -> np.ndarray:
        """Every row's value as Python text, None where missing."""
        return self.at_rows(np.asarray(self.texts(), dtype=object), None)

    def distinct(self) -> _Received:
        """The same column with each distinct value once (the hashing is Arrow's or pandas', no Python step)."""
        if self.where is not None:
            return self
        if self.arrow is not None:
            encoded = self.arrow.dictionary_encode()  # the values are present: no null index
            index = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            joined = arrow_joined(encoded.dictionary)
            return _Received(self.rows, self.present, joined, arrow=encoded.dictionary, where=index)
        index, distinct = pd.factorize(self.python)
        distinct = np.asarray(distinct, dtype=object)
        return _Received(self.rows, self.present, join_texts(distinct), python=distinct, where=index)

    def distinct_if_repeating(self) -> _Received:
        """``distinct()`` when the first values already repeat (a day's tonnages, counts), else the same."""
        if self.where is not None or len(self.present) <= _REPEAT_SAMPLE:
            return self
        if self.arrow is not None:
            sample = pc.count_distinct(self.arrow.slice(0, _REPEAT_SAMPLE)).as_py()
        else:
            sample = len(set(self.python[:_REPEAT_SAMPLE].tolist()))
        return self.distinct() if sample <= _REPEAT_SAMPLE // 2 else self


_REPEAT_SAMPLE = 2_048


def _blank_to_na(values: pd.Series) -> _Received:
    """Strip surrounding spaces; an empty field (or a value that is not text) is a missing value (None)."""
    arrow = _arrow_of(values)
    if arrow is None:
        return _received_python(values.to_numpy(dtype=object))
    if isinstance(arrow, pa_arrow.ChunkedArray):  # Arrow's CSV reader gives a big file in blocks
        arrow = arrow.chunk(0) if arrow.num_chunks == 1 else arrow.combine_chunks()
    joined = arrow_joined(arrow)
    if joined is not None and not joined.stripped_or_empty().any():
        # A CSV day's ASCII text with nothing to strip: its values as they are, no Python string per value.
        return _Received(len(arrow), np.arange(len(arrow)), joined, arrow=arrow, as_received=arrow)
    # Otherwise each distinct text is stripped once by Python's own str.strip (Unicode has many spaces).
    encoded = arrow.dictionary_encode()
    index = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return _from_distinct(index, encoded.dictionary.to_numpy(zero_copy_only=False), arrow)


def _received_python(received: np.ndarray) -> _Received:
    """``_blank_to_na`` of Python values (a lone surrogate, which Arrow cannot hold, may be among them)."""
    try:
        joined = join_texts(received)
    except TypeError:  # not all text: each value on its own
        text = np.empty(len(received), dtype=object)
        text[:] = [value.strip() or None if isinstance(value, str) else None for value in received]
        return _from_rows(text)
    # Only the values that begin or end oddly (or are empty) are looked at one by one.
    odd = np.flatnonzero(joined.stripped_or_empty())
    if not len(odd):
        return _Received(len(received), np.arange(len(received)), joined, python=received)
    text = received.copy()
    text[odd] = [value.strip() or None for value in received[odd]]
    return _from_rows(text)


def _from_rows(text: np.ndarray) -> _Received:
    """The column whose rows hold ``text`` (stripped Python text, None where missing)."""
    present = np.flatnonzero(np.not_equal(text, None))
    values = text[present]
    return _Received(len(text), present, join_texts(values), python=values)


def _from_distinct(index: np.ndarray, distinct: np.ndarray, arrow: pa_arrow.Array) -> _Received:
    """The column ``arrow`` whose row i holds ``distinct[index[i]]`` (-1: null), each distinct value stripped once."""
    stripped = np.empty(len(distinct), dtype=object)
    stripped[:] = [value.strip() or None for value in distinct.tolist()]
    kept = np.not_equal(stripped, None)
    present = np.flatnonzero(index >= 0)
    present = present[kept[index[present]]]
    renumbered = np.cumsum(kept) - 1
    values = stripped[kept]
    as_received = arrow if len(present) == len(index) and (stripped == distinct).all() else None
    where = renumbered[index[present]]
    return _Received(len(index), present, join_texts(values), python=values, where=where, as_received=as_received)


def _arrow_of(values: pd.Series) -> pa_arrow.Array | None:
    """The column's Arrow array when Arrow holds its text (a CSV payload's), else None."""
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        return pa_arrow.array(values.array)
    return None


def stripped_texts(values: pd.Series) -> list:
    """``values.str.strip().tolist()``, stripped by Python's ``str.strip`` whether or not Arrow holds the text."""
    arrow = _arrow_of(values)
    if arrow is not None:
        joined = arrow_joined(arrow)
        if joined is not None and not joined.stripped_or_empty().any():  # ASCII, nothing to strip: as they are
            return arrow.to_numpy(zero_copy_only=False).tolist()
    texts = shared_texts(arrow) if arrow is not None else values.to_numpy(dtype=object)
    return pd.Series(texts, dtype=object).str.strip().tolist()


def type_raw_values(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Turn text columns into typed ones; a value that does not parse or fit becomes null plus a reason.

    Args:
        raw: received rows, all values text, indexed by position (0, 1, ...).

    Returns:
        The typed frame (same index), the typing failures (``row``, ``column``, ``rule``) column by column,
        and where each text column's typed value is missing (what ``isna`` would say, without asking each value).
    """
    typed: dict[str, object] = {}
    failures, missing = [], {}
    for column in RAW_COLUMNS:
        received, bound = _blank_to_na(raw[column]), FACT_BOUNDS[column]
        if column in NUMBER_COLUMNS or column in WHOLE_NUMBER_COLUMNS:
            typed[column], rows, rules = _type_numbers(received, bound, whole=column in WHOLE_NUMBER_COLUMNS)
        elif column in TIMESTAMP_COLUMNS:
            typed[column], rows, rules = _type_timestamps(received, bound)
        else:
            typed[column], rows, rules = _type_texts(received, bound)
            missing[column] = np.ones(len(raw), dtype=bool)
            missing[column][received.present] = False
            missing[column][rows] = True
        failures.append(pd.DataFrame({"row": rows, "column": column, "rule": rules}))
    return pd.DataFrame(typed, index=raw.index), pd.concat(failures, ignore_index=True), missing


def _type_texts(received: _Received, bound: ColumnBound) -> tuple[object, np.ndarray, str]:
    """Texts as pandas strings, and the rows whose text the column cannot store (rule ``fits_column``)."""
    fits = present_texts_fit(received.joined, bound)  # per value
    return _arrow_texts(received, fits), received.present[~received.spread(fits)], FITS_COLUMN


def _arrow_texts(received: _Received, fits: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """The values that fit (others missing) as Arrow strings, row by row: a text that fits holds no lone surrogate.

    Text received in Arrow is kept where it is (no copy of its characters) when every row holds it as received.
    """
    if received.as_received is not None:
        rows_fit = received.spread(fits)
        texts = received.as_received if rows_fit.all() else pc.if_else(rows_fit, received.as_received, None)
        return pd.array(texts, dtype=ARROW_TEXT)
    if received.arrow is not None:
        values = pc.if_else(fits, received.arrow, None)
    else:
        values = pa_arrow.array(np.where(fits, received.python, None), type=pa_arrow.large_string())
    if received.where is None and len(received.present) == received.rows:  # a value in every row, in row order
        return pd.array(values, dtype=ARROW_TEXT)
    index = np.zeros(received.rows, dtype=np.int64)
    index[received.present] = received.spread(np.arange(len(fits)))
    missing = np.ones(received.rows, dtype=bool)
    missing[received.present] = False
    return pd.array(values.take(pa_arrow.array(index, mask=missing)), dtype=ARROW_TEXT)


_POWERS_OF_TEN_INT = 10 ** np.arange(16, dtype=np.int64)
_POWERS_OF_TEN = _POWERS_OF_TEN_INT.astype(np.float64)  # exact doubles (below 2**53)


def _type_numbers(received: _Received, bound: ColumnBound, whole: bool) -> tuple[object, np.ndarray, np.ndarray]:
    """Typed numbers (float, or Int64 when ``whole``), and the failing rows with their rule."""
    received = received.distinct_if_repeating()
    fraction = not whole and bound.integer_range is None  # a decimal point cannot change what such a column stores
    if received.arrow is not None:  # Arrow's kernels on the bytes: no array per code point
        plain, mantissa, scale = _plain_arrow_numerals(received.arrow, fraction)
    else:
        plain, mantissa, scale = _plain_numerals(received.joined, fraction)
    rules = np.full(len(plain), None, dtype=object)  # per value, as everything up to the spread below
    if bound.integer_range is not None:
        low, high = bound.integer_range
        rules[plain & ((mantissa < low) | (mantissa > high))] = FITS_COLUMN
    numbers = mantissa if whole else mantissa / _POWERS_OF_TEN[scale]
    # Anything else (signs, exponents, long or odd spellings) is read one distinct text at a time.
    odd = np.flatnonzero(~plain)
    odd_texts = received.texts_of(odd)
    verdicts = {value: _read_number(value, bound, whole) for value in set(odd_texts)}
    found = [verdicts[value] for value in odd_texts]
    rules[odd] = [rule for rule, _ in found]
    numbers[odd] = [0 if number is None else number for _, number in found]
    failed = received.spread(np.not_equal(rules, None))
    present, numbers = received.present, received.spread(numbers)
    kept = present[~failed]
    failed_rules = received.spread(rules)[failed]
    if whole:
        data, missing = np.zeros(received.rows, dtype=np.int64), np.ones(received.rows, dtype=bool)
        data[kept], missing[kept] = numbers[~failed], False
        return pd.arrays.IntegerArray(data, missing), present[failed], failed_rules
    typed = np.full(received.rows, np.nan)
    typed[kept] = numbers[~failed]
    return typed, present[failed], failed_rules


def _plain_numerals(joined: JoinedTexts, fraction: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which texts are plain numerals, with their digits read as one integer and the digits after the point.

    Plain: at most 15 characters, ASCII digits only, or (``fraction``) with one decimal point among them.
    Its digits are below 2**53, so ``mantissa / 10**scale`` is the double ``float(text)`` gives: both
    operands are exact and IEEE division rounds once, as the decimal reading does.
    """
    if not len(joined.lengths):
        empty = np.zeros(0, dtype=np.int64)
        return empty.astype(bool), empty, empty
    # A slice at a time: the work takes several int64 arrays per code point (80 MiB at 300,000 rows at once).
    parts = [_plain_numerals_of(part, fraction) for part in joined.in_slices(NUMERAL_SLICE_TEXTS)]
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


NUMERAL_SLICE_TEXTS = 65_536


def _plain_arrow_numerals(texts: pa_arrow.Array, fraction: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_plain_numerals(joined, fraction)`` of Arrow texts (none missing), by Arrow's kernels.

    Plain is 1 to 15 ASCII digits, with (``fraction``) at most one decimal point among them: with its first
    point taken out, the text is digits only (``ascii_is_decimal`` refuses an empty text and other scripts'
    digits). Arrow reads those digits as the integer they spell; the scale is how many follow the point.
    """
    digits = pc.replace_substring(texts, ".", "", max_replacements=1) if fraction else texts
    length = pc.binary_length(texts)  # bytes: characters, for the ASCII texts that can be plain
    plain = pc.and_(pc.ascii_is_decimal(digits), pc.less_equal(length, 15))
    mantissa = pc.cast(pc.if_else(plain, digits, "0"), pa_arrow.int64()).to_numpy(zero_copy_only=False, writable=True)
    plain = plain.to_numpy(zero_copy_only=False)
    if not fraction:
        return plain, mantissa, np.zeros(len(plain), dtype=np.int64)
    point = pc.find_substring(texts, ".").to_numpy(zero_copy_only=False).astype(np.int64)  # -1: no point
    scale = np.where(plain & (point >= 0), length.to_numpy(zero_copy_only=False) - 1 - point, 0)
    return plain, mantissa, scale


def _plain_numerals_of(joined: JoinedTexts, fraction: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not joined.codes.size:  # empty texts only: none is a numeral
        nothing = np.zeros(len(joined.lengths), dtype=np.int64)
        return nothing.astype(bool), nothing, nothing
    digit, point = ascii_digits(joined.codes), joined.codes == ord(".")
    digits, points = joined.per_text_sum(digit), joined.per_text_sum(point)
    plain = (joined.lengths <= 15) & (digits >= 1) & (digits + points == joined.lengths) & (points <= int(fraction))
    owner = np.repeat(np.arange(len(joined.lengths)), joined.lengths)
    counted = np.cumsum(digit)
    after = counted[joined.ends - 1][owner] - counted  # digits after each code point in its text
    weight = np.where(plain[owner] & digit, _POWERS_OF_TEN_INT[np.minimum(after, 15)], 0)
    mantissa = joined.per_text_sum((joined.codes.astype(np.int64) - ZERO) * weight)
    if not fraction:
        return plain, mantissa, np.zeros(len(plain), dtype=np.int64)
    points_so_far = np.cumsum(point)
    passed_point = points_so_far - (points_so_far - point)[joined.starts][owner]
    scale = joined.per_text_sum(digit & (passed_point > 0))
    return plain, mantissa, np.where(plain, scale, 0)


def _read_number(text: str, bound: ColumnBound, whole: bool) -> tuple[str | None, float | int | None]:
    """(failed rule or None, typed value) of one received number.

    Only a plain decimal numeral is a number: NaN and infinity spellings, thousands separators and
    hexadecimal are ``is_number``. A numeral its column cannot hold exactly is ``fits_column``.
    """
    if not _DECIMAL_NUMERAL.fullmatch(text):
        return "is_number", None
    if len(text) <= 15 and text.isdigit():  # the usual case: a whole number a double holds exactly
        number = int(text)
        return (None, number if whole else float(number)) if integer_fits(number, bound) else (FITS_COLUMN, None)
    try:
        exact = Decimal(text)
    except InvalidOperation:  # an exponent beyond what any column holds (1e99999999999999999999)
        return FITS_COLUMN, None
    if whole:
        if exact != exact.to_integral_value():
            return "is_whole_number", None
        return (None, int(exact)) if integer_fits(exact, bound) else (FITS_COLUMN, None)
    value = float(text)
    return (None, value) if number_fits(exact, value, bound) else (FITS_COLUMN, None)


def _type_timestamps(received: _Received, bound: ColumnBound) -> tuple[object, np.ndarray, np.ndarray]:
    """Typed UTC timestamps (microseconds), and the failing rows with their rule.

    Each distinct text is parsed once: a day's departures repeat the same minutes thousands of times.
    """
    received = received.distinct()
    text = received.texts()  # per value, as everything up to the spread below
    # The freight system omits the offset on some exports: those are local (UTC+1) times.
    naive = ~_end_with_offset(text, np.arange(len(text)), received.joined)
    local = text
    if naive.any():  # the received values may be read-only: change a copy
        local = text.copy()
        local[naive] = text[naive] + "+01:00"
    parsed = pd.to_datetime(pd.Series(local, dtype=object), utc=True, format="ISO8601", errors="coerce")
    fits = timestamps_fit(parsed, bound).to_numpy()
    typed = parsed.where(fits).astype(UTC_TIMESTAMP)
    rules = np.full(len(text), None, dtype=object)
    rules[~fits] = FITS_COLUMN
    # One nanosecond value makes the whole batch nanosecond-based, whose range ends in 2262: a value
    # the batch could not hold is parsed again on its own, so no row's verdict depends on another row.
    for value in np.flatnonzero(parsed.isna().to_numpy()):
        rule, stamp = _read_timestamp(local[value], bound)
        if rule is None:
            typed[value] = stamp
        else:
            rules[value] = rule
    failed = received.spread(np.not_equal(rules, None))
    # Spread as microseconds since the epoch (UTC); a row with no value is NaT.
    micros = received.at_rows(typed.dt.tz_convert(None).to_numpy(dtype="datetime64[us]"), np.datetime64("NaT", "us"))
    stamps = pd.array(micros).tz_localize("UTC")
    return stamps, received.present[failed], received.spread(rules)[failed]


def _end_with_offset(text: np.ndarray, present: np.ndarray, joined: JoinedTexts) -> np.ndarray:
    """Whether each ``text[present]`` (``joined`` holds their code points) matches ``_HAS_OFFSET``.

    That is: it ends in Z, +hh:mm, +hhmm, -hh:mm or -hhmm.
    """
    tail = {k: joined.from_end(k) for k in range(1, 7)}  # the longest offset is 6 characters
    digit = {k: (tail[k] >= ZERO) & (tail[k] <= NINE) for k in tail}

    def sign(k: int) -> np.ndarray:
        return (tail[k] == ord("+")) | (tail[k] == ord("-"))

    colon = digit[4] & digit[5] & (tail[3] == ord(":")) & sign(6)
    ends = (tail[1] == ord("Z")) | (digit[1] & digit[2] & (colon | (digit[3] & digit[4] & sign(5))))
    # \d also matches other scripts' digits: a text with such a character near its end asks the pattern.
    for position in np.flatnonzero(np.any([tail[k] > 127 for k in tail], axis=0)):
        ends[position] = re.search(_HAS_OFFSET, text[present[position]]) is not None
    return ends


def _read_timestamp(text: str, bound: ColumnBound) -> tuple[str | None, pd.Timestamp | None]:
    """(failed rule or None, UTC timestamp in microseconds) of one received timestamp."""
    try:
        stamp = pd.to_datetime(text, utc=True, format="ISO8601")
    except pd.errors.OutOfBoundsDatetime:  # well formed, but finer than pandas can hold that far out
        return FITS_COLUMN, None
    except (ValueError, OverflowError):
        return "is_timestamp", None
    if not timestamps_fit(pd.Series([stamp]), bound).iloc[0]:
        return FITS_COLUMN, None
    return None, stamp.as_unit("us")


@dataclass(frozen=True)
class _RuleFailure:
    """The rows one rule failed, and the failure cases pandera's lazy validation reports for them."""

    context: str  # "Column" or "DataFrameSchema", the schema_context pandera sorts its report by
    check: str  # the check's identifier in that report
    rows: np.ndarray
    column: str | None  # None for a frame rule: one case per reported cell of each failing row
    cells: np.ndarray | None = None  # frame rule: (column, failing row) -> reported


def _rule_failures(
    schema: pa.DataFrameSchema, typed: pd.DataFrame, missing: dict[str, np.ndarray]
) -> list[_RuleFailure]:
    """Every rule of the schema evaluated on every row, in the order pandera's lazy validation runs them.

    The rules are the schema's own checks, run by pandera's check backend; only the failure-case
    tables pandera would build (a row per failing cell of every frame rule) are left out.
    """
    _refuse_failures_not_tied_to_rows(schema, typed)
    failures = []
    for name, column in schema.columns.items():
        if not column.nullable:
            absent = missing[name] if name in missing else typed[name].isna().to_numpy()
            failures.append(_RuleFailure("Column", "not_nullable", np.flatnonzero(absent), name))
        for check in column.checks:
            failures.append(_RuleFailure("Column", _check_identifier(check), _failing_rows(check, typed, name), name))
    for check in schema.checks:
        rows = _failing_rows(check, typed, None)
        if check.ignore_na:  # pandera passes a row whose values are all missing, and does not report missing cells
            cells = typed.iloc[rows].notna().to_numpy().T
            rows, cells = rows[cells.any(axis=0)], cells[:, cells.any(axis=0)]
        else:
            cells = np.ones((len(typed.columns), len(rows)), dtype=bool)
        failures.append(_RuleFailure("DataFrameSchema", _check_identifier(check), rows, None, cells))
    return [failure for failure in failures if len(failure.rows)]


def _refuse_failures_not_tied_to_rows(schema: pa.DataFrameSchema, typed: pd.DataFrame) -> None:
    """Column presence and dtypes, checked by pandera on no rows: such a failure means the typing step is wrong."""
    if schema.unique or any(column.unique for column in schema.columns.values()):
        raise RuntimeError("a unique= declaration is not evaluated by validate_freight; express it as a check")
    try:
        schema.validate(typed.iloc[:0], lazy=True)
    except pa.errors.SchemaErrors as errors:
        # The typing step is wrong, not the data: stop loudly.
        raise RuntimeError(f"schema failures not tied to rows: {errors.failure_cases.to_dict('records')}") from None


def _check_identifier(check: pa.Check) -> str:
    return check.error if check.error is not None else check.name if check.name is not None else str(check)


def _failing_rows(check: pa.Check, typed: pd.DataFrame, column: str | None) -> np.ndarray:
    """Positions of the rows a check fails, as pandera's backend prepares and applies it (missing values skipped)."""
    backend = check.get_backend(typed)(check)
    checked = backend.preprocess(typed, column)
    verdicts = backend.apply(checked)
    if not isinstance(verdicts, pd.Series) or not verdicts.index.equals(checked.index):
        raise RuntimeError(
            f"schema failures not tied to rows: check {_check_identifier(check)} gave no verdict per row"
        )
    return checked.index.to_numpy()[~verdicts.astype(bool).to_numpy()]


def _schema_reasons(
    schema: pa.DataFrameSchema, typed: pd.DataFrame, parse_failures: pd.DataFrame, missing: dict[str, np.ndarray]
) -> pd.DataFrame:
    """One reason per (row, column, rule) the schema fails, ranked as pandera's failure report lists it.

    A rule failed by a value the typing step already refused (so it is missing) is left out: the parse
    reason says why. Returns columns ``row``, ``column``, ``rule``, ``rank``.
    """
    failures = _rule_failures(schema, typed, missing)
    ranks = iter(_report_ranks(failures))
    found = []
    for failure in failures:
        rule, named = _rule_name(failure.check), _DATAFRAME_RULE_COLUMNS.get(failure.check)
        if failure.cells is None:
            rank = next(ranks)
            found.append(
                pd.DataFrame({"row": failure.rows, "column": named or failure.column, "rule": rule, "rank": rank})
            )
            continue
        rank = np.full(failure.cells.shape, -1, dtype=np.int64)
        rank[failure.cells] = next(ranks)
        if named is not None:  # reported once per cell, about one column: the row's earliest case counts
            first = np.where(failure.cells, rank, np.iinfo(np.int64).max).min(axis=0)
            found.append(pd.DataFrame({"row": failure.rows, "column": named, "rule": rule, "rank": first}))
        else:
            where, which = np.nonzero(failure.cells)
            columns = np.asarray(typed.columns, dtype=object)[where]
            found.append(
                pd.DataFrame({"row": failure.rows[which], "column": columns, "rule": rule, "rank": rank[where, which]})
            )
    if not found:
        return pd.DataFrame({"row": [], "column": [], "rule": [], "rank": []}).astype(
            {"row": np.int64, "rank": np.int64}
        )
    reasons = pd.concat(found, ignore_index=True)
    parsed = pd.MultiIndex.from_frame(parse_failures[["row", "column"]])
    explained = (reasons["rule"] == "required") & pd.MultiIndex.from_frame(reasons[["row", "column"]]).isin(parsed)
    return reasons[~explained].sort_values("rank").drop_duplicates(["row", "column", "rule"])


def _report_ranks(failures: list[_RuleFailure]) -> list[np.ndarray]:
    """Where each failure case lands in pandera's report, whose order a row's schema reasons keep.

    pandera lists the column rules' cases, then the frame rules' (cell by cell, column by column), then
    sorts the list by schema context with pandas' default sort, which is not stable: the same sort of the
    same contexts gives the same order, so a reject's reasons read as they always did.
    """
    sizes = [len(failure.rows) if failure.cells is None else int(failure.cells.sum()) for failure in failures]
    contexts = np.repeat(np.array([failure.context.encode() for failure in failures], dtype=bytes), sizes)
    rank = np.empty(len(contexts), dtype=np.int64)
    rank[_report_order(contexts)] = np.arange(len(contexts))
    return np.split(rank, np.cumsum(sizes)[:-1]) if sizes else []


def _report_order(contexts: np.ndarray) -> np.ndarray:
    """``sort_values(ascending=False)``'s order of the contexts, as pandas' ``nargsort`` takes it (no missing value).

    NumPy sorts bytes with the same introsort as Python objects, so the ties land where they did, at a
    fraction of the cost of comparing Python strings (test_validation_equivalence holds both side by side).
    """
    backwards = np.arange(len(contexts))[::-1]
    return backwards[contexts[::-1].argsort(kind="quicksort")][::-1]


_DATAFRAME_RULE_COLUMNS = {
    "unique_shipment_id_in_day": "shipment_id",
    "origin_differs_from_destination": "destination_station",
    "tonnage_within_wagon_payload": "net_tonnage",
    "arrival_not_before_departure": "arrival_time",
    "departure_within_partition_day": "departure_time",
    "not_loaded_for_another_day": "shipment_id",
}


def _rule_name(check: str) -> str:
    return "required" if check == "not_nullable" else check


def _json_value(value: object) -> object:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value if isinstance(value, (str, int, float)) else str(value)


def _json_text(document: object) -> str:
    """JSON as readable as possible; \\uXXXX escapes where UTF-8 cannot hold a character (a lone surrogate)."""
    text = json.dumps(document, ensure_ascii=False)  # NUL and other controls are escaped either way
    return text if not UNSTORABLE_CHARACTER.search(text) else json.dumps(document)


def _json_pieces(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """``json.dumps(_json_value(value), ensure_ascii=False)`` of each value, and which hold a character UTF-8 cannot."""
    try:
        pieces = list(map(encode_basestring, values.tolist()))  # all text: the C encoder, no Python step
    except TypeError:
        pieces = [json.dumps(_json_value(value), ensure_ascii=False) for value in values]
    unstorable = np.zeros(len(pieces), dtype=bool)
    if UNSTORABLE_CHARACTER.search("".join(pieces)):
        unstorable[:] = [UNSTORABLE_CHARACTER.search(piece) is not None for piece in pieces]
    return pieces, unstorable


_REJECT_SHIPMENT_ID = column_bound(reject_table.c.shipment_id)


def _shown_shipment_id(value: object) -> str | None:
    """The received id as the quarantine's shipment_id column can hold it; raw_record keeps it whole."""
    value = _json_value(value)
    return storable_text(value, _REJECT_SHIPMENT_ID) if isinstance(value, str) else value


def _shown_shipment_ids(values: np.ndarray) -> list[str | None]:
    """``_shown_shipment_id`` of each value; ids that are text and fit as they are need no Python step."""
    try:
        joined = join_texts(values)
    except TypeError:
        return [_shown_shipment_id(value) for value in values]
    limit = _REJECT_SHIPMENT_ID.max_length
    if not joined.unstorable().any() and (limit is None or (joined.lengths <= limit).all()):
        return values.tolist()
    return [_shown_shipment_id(value) for value in values]


def validate_freight(
    raw: pd.DataFrame, partition_key: str, loaded_elsewhere: Collection[str] = frozenset()
) -> ValidationOutcome:
    """Split one partition's received rows into valid movements and quarantined rejects.

    Args:
        raw: received rows (text values plus ``source_line``).
        partition_key: the day the rows belong to (``YYYY-MM-DD``, Africa/Douala).
        loaded_elsewhere: shipment ids the warehouse already holds for other days.

    Returns:
        Valid typed rows and one reject row per bad received row, with every reason.
    """
    raw = raw.reset_index(drop=True)
    typed, parse_failures, missing = type_raw_values(raw)
    # Each stage frees Python text and arrays of ~100 MiB at 1,000,000 rows: their pages go back to
    # the system before the next stage allocates (malloc keeps them otherwise; process_memory).
    release_free_heap()
    schema = freight_schema(*partition_bounds(partition_key), loaded_elsewhere)
    reasons = _ordered_reasons(parse_failures, _schema_reasons(schema, typed, parse_failures, missing))
    release_free_heap()
    rejected = np.zeros(len(raw), dtype=bool)
    rejected[reasons["row"].to_numpy()] = True
    rejects = _rejects(raw, reasons)  # before the valid rows are copied out: their peaks do not add up
    release_free_heap()
    valid = typed[~rejected]
    valid.insert(0, SOURCE_LINE, raw[SOURCE_LINE][~rejected])
    return ValidationOutcome(partition_key, valid.reset_index(drop=True), rejects, len(raw))


def _ordered_reasons(parse_failures: pd.DataFrame, schema_reasons: pd.DataFrame) -> pd.DataFrame:
    """Every reason, row by row: first why values could not be typed (column order), then the schema's."""
    reasons = pd.concat(
        [
            parse_failures.assign(stage=0, order=np.arange(len(parse_failures))),
            schema_reasons.drop(columns="rank").assign(stage=1, order=schema_reasons["rank"].to_numpy()),
        ],
        ignore_index=True,
    )
    order = np.lexsort((reasons["order"].to_numpy(), reasons["stage"].to_numpy(), reasons["row"].to_numpy()))
    return reasons.iloc[order].reset_index(drop=True)[["row", "column", "rule"]]


def _rejects(raw: pd.DataFrame, reasons: pd.DataFrame) -> pd.DataFrame:
    """One quarantine row per rejected received row: its values as received (JSON) and every reason."""
    rows = reasons["row"].to_numpy()
    rejected_rows = np.unique(rows)
    # The rejected rows first: a column Arrow holds becomes Python objects for those rows only.
    received = {column: raw[column].iloc[rejected_rows].to_numpy(dtype=object) for column in RAW_COLUMNS}
    return pd.DataFrame(
        {
            "source_line": raw[SOURCE_LINE].iloc[rejected_rows].astype(int).tolist(),
            "shipment_id": _shown_shipment_ids(received["shipment_id"]),
            "raw_record": _raw_records(received),
            **_reason_texts(raw, reasons),
        },
        columns=list(REJECT_COLUMNS),
    )


def _raw_records(received: dict[str, np.ndarray]) -> list[str]:
    """``_json_text`` of each rejected row's values as received, built column by column."""
    pieces, unstorable = zip(*(_json_pieces(received[column]) for column in RAW_COLUMNS), strict=True)
    records = list(map(_RAW_RECORD_TEMPLATE.format, *pieces))
    for position in np.flatnonzero(np.any(unstorable, axis=0)):
        records[position] = json.dumps({column: _json_value(received[column][position]) for column in RAW_COLUMNS})
    return records


_RAW_RECORD_TEMPLATE = "{{" + ", ".join(f"{json.dumps(column)}: {{}}" for column in RAW_COLUMNS) + "}}"
_REASON_TEMPLATE = '{{"column": {}, "rule": {}, "value": {}}}'


def _reason_texts(raw: pd.DataFrame, reasons: pd.DataFrame) -> dict[str, list[str]]:
    """The ``reasons`` JSON and ``reason_summary`` of each rejected row (reasons sorted by row)."""
    rows = reasons["row"].to_numpy()
    values = np.empty(len(reasons), dtype=object)
    for column, positions in reasons.groupby("column", sort=False).indices.items():
        values[positions] = raw[column].iloc[rows[positions]].to_numpy(dtype=object)
    columns, rules = reasons["column"].tolist(), reasons["rule"].tolist()
    pieces, unstorable = _json_pieces(values)
    documents = list(
        map(_REASON_TEMPLATE.format, map(encode_basestring, columns), map(encode_basestring, rules), pieces)
    )
    summaries = [f"{column}: {rule}" for column, rule in zip(columns, rules, strict=True)]
    if not len(rows):
        return {"reasons": [], "reason_summary": []}
    starts = np.flatnonzero(np.diff(rows, prepend=-1))
    ends = np.append(starts[1:], len(rows))
    spelled_out = np.logical_or.reduceat(unstorable, starts)  # UTF-8 cannot hold a value: escape the row
    texts, summary = [], []
    for start, end, escaped in zip(starts.tolist(), ends.tolist(), spelled_out.tolist(), strict=True):
        if escaped:
            row = zip(columns[start:end], rules[start:end], values[start:end], strict=True)
            texts.append(json.dumps([{"column": c, "rule": r, "value": _json_value(v)} for c, r, v in row]))
        else:
            texts.append("[" + ", ".join(documents[start:end]) + "]")
        summary.append("; ".join(summaries[start:end]))
    return {"reasons": texts, "reason_summary": summary}


def top_rejection_reasons(rejects: pd.DataFrame, limit: int = 10) -> pd.DataFrame:
    """Count rejects per (column, rule), most frequent first.

    Args:
        rejects: the rejects frame of a ``ValidationOutcome``.
        limit: how many reasons to keep.

    Returns:
        Columns ``column``, ``rule``, ``rows``.
    """
    pairs = [(reason["column"], reason["rule"]) for reasons in rejects["reasons"] for reason in json.loads(reasons)]
    counted = pd.DataFrame(pairs, columns=["column", "rule"]).value_counts().rename("rows")
    return counted.reset_index().head(limit)


def to_facts(valid: pd.DataFrame, partition_key: str) -> pd.DataFrame:
    """Shape valid movements as warehouse fact rows for one partition."""
    # No .copy(): pandas copies on write, so the columns changed below are new and the rest are shared.
    facts = valid.loc[:, [c for c in FACT_COLUMNS if c != "partition_date"]]
    facts.insert(0, "partition_date", date.fromisoformat(partition_key))
    for column in ("revenue_xaf", "wagon_count"):
        facts[column] = _whole_numbers(facts[column].astype(float).round(), column)
    return _in_shipment_order(facts).reset_index(drop=True)


def _in_shipment_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows sorted by shipment id (stable); rows already in that order, as a day usually is, stay as they are."""
    return frame if _in_order(frame["shipment_id"]) else frame.sort_values("shipment_id", kind="stable")


def _in_order(ids: pd.Series) -> bool:
    """Whether the ids never decrease: one pass, where a sort compares n log n times."""
    arrow = _arrow_of(ids)
    if arrow is not None and not arrow.null_count:
        # Compared by Arrow, no Python string per id: UTF-8 byte order is the code point order str uses.
        return len(arrow) < 2 or pc.all(pc.less_equal(arrow[:-1], arrow[1:])).as_py()
    try:
        return ids.is_monotonic_increasing
    except TypeError:
        return False


def _whole_numbers(values: pd.Series, column: str) -> pd.Series:
    """int64 values, refusing any the fact column cannot hold (astype would wrap them silently)."""
    low, high = FACT_BOUNDS[column].integer_range
    # high + 1 is a power of two, exact as a double, where high itself would round up to it.
    outside = ~((values >= low) & (values < high + 1))
    if outside.any():
        raise ValueError(f"{column}: {values[outside].iloc[0]!r} does not fit the warehouse column; validate first")
    return values.astype("int64")


def facts_checksum(facts: pd.DataFrame) -> str:
    """SHA-256 of a partition's facts in a canonical text form, equal before and after a DB round trip.

    Each row is its values' canonical texts joined by ``\\x1f`` and ended by ``\\x1e``, in shipment id
    order. Whole columns are turned into text at once (by Arrow for the pipeline's column types) and
    hashed in slices, so a million rows cost about half a second and little memory; the digest is the
    same as value by value (``_canonical``).

    Args:
        facts: fact rows (any order, any datetime representation of the same instants).

    Returns:
        Hex digest; the same rows give the same digest.
    """
    digest = hashlib.sha256()
    _hash_ordered(digest.update, _in_shipment_order(facts))
    return digest.hexdigest()


def facts_checksum_of_slices(slices: Iterable[pd.DataFrame]) -> tuple[int, str] | None:
    """``facts_checksum`` of the rows of consecutive slices, holding one slice at a time.

    The rows must come in shipment id order, slice after slice (as the database sorts them); the
    digest is then the very one ``facts_checksum`` gives for all the rows at once.

    Args:
        slices: the facts, a slice at a time.

    Returns:
        (rows hashed, hex digest), or None as soon as a row comes out of order: the caller hashes
        the whole day instead.
    """
    digest, rows, last = hashlib.sha256(), 0, None
    for part in slices:
        if not len(part):
            continue
        ids = part["shipment_id"]
        try:
            if not ids.is_monotonic_increasing or (last is not None and ids.iloc[0] < last):
                return None
        except TypeError:  # an id that is not text: the order cannot be trusted
            return None
        last = ids.iloc[-1]
        _hash_ordered(digest.update, part)
        rows += len(part)
    return rows, digest.hexdigest()


def _hash_ordered(update: Callable[[bytes], None], ordered: pd.DataFrame) -> None:
    """Feed the canonical rows of ``ordered`` (already in shipment id order) to ``update``, a slice at a time."""
    for start in range(0, len(ordered), CHECKSUM_SLICE_ROWS):
        part = ordered.iloc[start : start + CHECKSUM_SLICE_ROWS]  # rows first: no copy of the whole day
        rows = _arrow_rows(part)
        if rows is not None:  # the pipeline's own column types: no Python string per value
            update(value_bytes(rows))
            continue
        try:
            update(_canonical_block(part, trust_text=True))
        except TypeError:  # a text column holds something else (a missing value, a number): value by value
            update(_canonical_block(part, trust_text=False))


def _canonical_block(part: pd.DataFrame, trust_text: bool) -> bytes:
    texts = [_canonical_texts(part[column], trust_text) for column in FACT_COLUMNS]
    rows = map("\x1f".join, zip(*texts, strict=True))
    return ("\x1e".join(rows) + "\x1e").encode("utf-8")


CHECKSUM_SLICE_ROWS = 100_000  # bounds the text held at once to a few tens of MiB
_LARGE_TEXT = pa_arrow.large_string()
_FIELD_END = pa_arrow.scalar("\x1f", _LARGE_TEXT)
_ROW_END = pa_arrow.scalar("\x1e", _LARGE_TEXT)
_NOTHING = pa_arrow.scalar("", _LARGE_TEXT)


def _arrow_rows(part: pd.DataFrame) -> pa_arrow.LargeStringArray | None:
    """The canonical rows of ``part`` (each ended by ``\\x1e``) built by Arrow, or None to render them in Python.

    Arrow joins the columns' texts in C: at a million rows this is several times faster than
    making a Python string per value and joining them per row, and it gives the same bytes.
    """
    texts = []
    for column in FACT_COLUMNS:
        text = _arrow_canonical(part[column])
        if text is None:  # a column type only Python renders exactly: the whole slice goes that way
            return None
        texts.append(text)
    texts[-1] = pc.binary_join_element_wise(texts[-1], _ROW_END, _NOTHING)
    return pc.binary_join_element_wise(*texts, _FIELD_END)


def value_bytes(texts: pa_arrow.LargeStringArray) -> pa_arrow.Buffer:
    """The UTF-8 bytes of ``texts`` laid end to end, in place (a sliced array's offsets start past 0)."""
    _, offsets, data = texts.buffers()
    if data is None:
        return pa_arrow.py_buffer(b"")
    bounds = np.frombuffer(offsets, dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
    first, last = (int(bounds[0]), int(bounds[-1])) if len(bounds) else (0, 0)
    return data.slice(first, last - first)


def _arrow_canonical(values: pd.Series) -> pa_arrow.LargeStringArray | None:
    """``_canonical`` of every value of a column as Arrow text, or None for a type left to Python.

    Arrow text is taken as it is (missing as ""), integers are cast by Arrow (the digits ``str`` writes),
    and floats, timestamps and dates are rendered in Python once per distinct value, then spread.
    """
    kind = values.dtype
    if _arrow_text_type(kind):
        text = pa_arrow.array(values.array)
        text = text.combine_chunks() if isinstance(text, pa_arrow.ChunkedArray) else text
        return text.cast(_LARGE_TEXT).fill_null(_NOTHING)
    if pd.api.types.is_integer_dtype(kind) and isinstance(kind, np.dtype):
        return pa_arrow.array(values.to_numpy()).cast(_LARGE_TEXT)
    once_each = _distinct_rendering(values)
    if once_each is not None:
        where, distinct = once_each
        return pa_arrow.array(distinct, type=_LARGE_TEXT).take(pa_arrow.array(where))
    if pd.api.types.is_object_dtype(kind):
        return _object_texts(values.to_numpy())
    return None


def _arrow_text_type(kind: object) -> bool:
    if isinstance(kind, pd.StringDtype):  # pyarrow or python storage: missing values are pd.NA or None
        return True
    return isinstance(kind, pd.ArrowDtype) and kind.pyarrow_dtype in (pa_arrow.string(), _LARGE_TEXT)


def _object_texts(values: np.ndarray) -> pa_arrow.LargeStringArray | None:
    """Text as a database driver returns it (``str``, None for NULL) as Arrow; None for anything else."""
    kinds = set(map(type, values.tolist()))  # exact types: a str subclass could render differently
    if not kinds <= {str, type(None)}:
        return None
    try:
        return pa_arrow.array(values, type=_LARGE_TEXT).fill_null(_NOTHING)
    except UnicodeEncodeError:  # a lone surrogate: the Python path refuses it as it always did
        return None


def _distinct_rendering(values: pd.Series) -> tuple[np.ndarray, list[str]] | None:
    """For floats, timestamps and a column of dates: each value's index into the canonical texts of the
    distinct values (rendered once each: a day repeats most times, tonnages and its one date), else None.
    """
    kind = values.dtype
    if isinstance(kind, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(kind):
        stamps = values.dt.tz_convert("UTC").dt.tz_localize(None) if isinstance(kind, pd.DatetimeTZDtype) else values
        # Whole microseconds, as isoformat(timespec="microseconds") writes them (years 1-9999: four digits).
        micro = stamps.to_numpy(dtype="datetime64[us]")
        return _once_each(micro.view(np.int64), lambda bits: _iso_micro(bits.view("datetime64[us]")))
    if pd.api.types.is_float_dtype(kind) and isinstance(kind, np.dtype):
        doubles = values.to_numpy(dtype=np.float64)
        # By bit pattern, so 0.0 and -0.0 (equal as numbers, written differently) stay apart.
        return _once_each(
            doubles.view(np.int64),
            lambda bits: ["" if x != x else repr(round(x, 6)) for x in bits.view(np.float64).tolist()],
        )
    if pd.api.types.is_object_dtype(kind) and len(values) and type(values.iloc[0]) is date:
        plain = values.to_numpy()
        if set(map(type, plain.tolist())) == {date}:  # exact type: a datetime is a date too, written otherwise
            where, days = pd.factorize(plain)
            return where, [day.isoformat() for day in days]
    return None


def _once_each(bits: np.ndarray, render: Callable[[np.ndarray], list[str]]) -> tuple[np.ndarray, list[str]]:
    # Hashed, not sorted (np.unique): 64-bit integers have no missing value, so every value gets its code.
    where, distinct = pd.factorize(bits)
    return where, render(distinct)


def _canonical_texts(values: pd.Series, trust_text: bool = False) -> list[str]:
    """``_canonical`` of every value of a column, computed per column type where that is exact.

    With ``trust_text``, a column whose first value is text is given as it is: joining the rows then
    raises ``TypeError`` if any other value is not text, and the caller asks again without trust.
    """
    once_each = _distinct_rendering(values)
    if once_each is not None:
        where, distinct = once_each
        return np.asarray(distinct, dtype=object)[where].tolist()
    kind = values.dtype
    if pd.api.types.is_integer_dtype(kind) and isinstance(kind, np.dtype):
        return list(map(str, values.tolist()))
    plain = values.tolist()
    if trust_text and plain and type(plain[0]) is str:
        return plain
    if set(map(type, plain)) <= {str}:  # exact types: a str subclass could render differently
        return plain
    return [_canonical(value) for value in plain]


def _iso_micro(stamps: np.ndarray) -> list[str]:
    texts = np.datetime_as_string(stamps, unit="us").astype(object)
    texts[np.isnat(stamps)] = ""
    return texts.tolist()


def _canonical(value: object) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, (pd.Timestamp,)) or hasattr(value, "tzinfo") and hasattr(value, "hour"):
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp
        return stamp.isoformat(timespec="microseconds")
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)
