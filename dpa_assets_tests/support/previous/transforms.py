"""Frozen copy of the validator before issue 10's rules work (commit c869a1b).

It is the reference the equivalence tests compare the faster validator with.

Do not change it: it is what "the same outputs" means. Only its imports point at the frozen siblings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
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
from dpa_assets.sources.payload import SOURCE_LINE
from dpa_assets.warehouse.tables import rejects as reject_table
from dpa_assets_tests.support.previous.schemas import ARROW_TEXT, UTC_TIMESTAMP, freight_schema
from dpa_assets_tests.support.previous.text_vectors import (
    NINE,
    ZERO,
    JoinedTexts,
    arrow_joined,
    ascii_digits,
    join_texts,
    shared_texts,
)

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
    """One received column: where values are, their code points, and the values stripped (None where missing)."""

    rows: int
    present: np.ndarray
    joined: JoinedTexts  # of the present values
    # The received column as Arrow held it, when the present values are its values as they are.
    arrow: pa_arrow.Array | None = None
    stripped: np.ndarray | None = None  # None when ``arrow`` holds every value, with nothing to strip

    @property
    def text(self) -> np.ndarray:
        """Every value as Python text, None where missing (from Arrow: one ``str`` per distinct value, when asked)."""
        return self.stripped if self.stripped is not None else shared_texts(self.arrow)

    def texts_at(self, positions: np.ndarray) -> list[str]:
        """The values at ``positions`` (where values are) as Python text."""
        if self.stripped is not None:
            return self.stripped[positions].tolist()
        return self.arrow.take(positions).to_pylist()


def _blank_to_na(values: pd.Series) -> _Received:
    """Strip surrounding spaces; an empty field (or a value that is not text) is a missing value (None)."""
    arrow = _arrow_of(values)
    joined = arrow_joined(arrow) if arrow is not None else None
    if joined is not None:
        odd = np.flatnonzero(joined.stripped_or_empty())
        if not len(odd):  # a CSV day's ASCII text with nothing to strip: no Python string per value
            return _Received(len(arrow), np.arange(len(arrow)), joined, arrow)
    received = shared_texts(arrow) if arrow is not None else values.to_numpy(dtype=object)
    if joined is None:
        try:
            joined = join_texts(received)
        except TypeError:  # not all text: each value on its own
            text = np.empty(len(received), dtype=object)
            text[:] = [value.strip() or None if isinstance(value, str) else None for value in received]
            present = np.flatnonzero(np.not_equal(text, None))
            return _Received(len(text), present, join_texts(text[present]), stripped=text)
        # Only the values that begin or end oddly (or are empty) are looked at one by one.
        odd = np.flatnonzero(joined.stripped_or_empty())
    if not len(odd):
        return _Received(len(received), np.arange(len(received)), joined, arrow, received)
    text = received.copy()
    text[odd] = [value.strip() or None for value in received[odd]]
    present = np.flatnonzero(np.not_equal(text, None))
    if all(before == after or before == "" for before, after in zip(received[odd], text[odd], strict=True)):
        return _Received(len(text), present, joined.without_empty(present), arrow, text)  # only empty fields went
    return _Received(len(text), present, join_texts(text[present]), stripped=text)


def _arrow_of(values: pd.Series) -> pa_arrow.Array | None:
    """The column's Arrow array when Arrow holds its text (a CSV payload's), else None."""
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        return pa_arrow.array(values.array)
    return None


def stripped_texts(values: pd.Series) -> list:
    """``values.str.strip().tolist()``, stripped by Python's ``str.strip`` whether or not Arrow holds the text."""
    arrow = _arrow_of(values)
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
    fits = np.ones(received.rows, dtype=bool)
    fits[received.present] = present_texts_fit(received.joined, bound)
    return _arrow_texts(received, fits), np.flatnonzero(~fits), FITS_COLUMN


def _arrow_texts(received: _Received, fits: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """The texts that fit (others missing) as Arrow strings: a text that fits holds no lone surrogate.

    Text received in Arrow is kept where it is (no copy of its characters) when only missing values differ.
    """
    kept = np.zeros(received.rows, dtype=bool)
    kept[received.present] = fits[received.present]
    if received.arrow is not None:
        texts = received.arrow if kept.all() else pc.if_else(kept, received.arrow, None)
        return pd.array(texts, dtype=ARROW_TEXT)
    return pd.array(np.where(kept, received.text, None), dtype=ARROW_TEXT)


_POWERS_OF_TEN_INT = 10 ** np.arange(16, dtype=np.int64)
_POWERS_OF_TEN = _POWERS_OF_TEN_INT.astype(np.float64)  # exact doubles (below 2**53)


def _type_numbers(received: _Received, bound: ColumnBound, whole: bool) -> tuple[object, np.ndarray, np.ndarray]:
    """Typed numbers (float, or Int64 when ``whole``), and the failing rows with their rule."""
    rows, present = received.rows, received.present
    fraction = not whole and bound.integer_range is None  # a decimal point cannot change what such a column stores
    plain, mantissa, scale = _plain_numerals(received.joined, fraction)
    rules = np.full(len(present), None, dtype=object)
    if bound.integer_range is not None:
        low, high = bound.integer_range
        rules[plain & ((mantissa < low) | (mantissa > high))] = FITS_COLUMN
    numbers = mantissa if whole else mantissa / _POWERS_OF_TEN[scale]
    # Anything else (signs, exponents, long or odd spellings) is read one distinct text at a time.
    odd = np.flatnonzero(~plain)
    odd_texts = received.texts_at(present[odd])
    verdicts = {value: _read_number(value, bound, whole) for value in set(odd_texts)}
    found = [verdicts[value] for value in odd_texts]
    rules[odd] = [rule for rule, _ in found]
    numbers[odd] = [0 if number is None else number for _, number in found]
    failed = np.not_equal(rules, None)
    kept = present[~failed]
    if whole:
        data, missing = np.zeros(rows, dtype=np.int64), np.ones(rows, dtype=bool)
        data[kept], missing[kept] = numbers[~failed], False
        return pd.arrays.IntegerArray(data, missing), present[failed], rules[failed]
    typed = np.full(rows, np.nan)
    typed[kept] = numbers[~failed]
    return typed, present[failed], rules[failed]


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
    """Typed UTC timestamps (microseconds), and the failing rows with their rule."""
    text, present = received.text, received.present
    # The freight system omits the offset on some exports: those are local (UTC+1) times.
    naive = present[~_end_with_offset(text, present, received.joined)]
    local = text
    if len(naive):  # the received values are read-only: change a copy
        local = text.copy()
        local[naive] = text[naive] + "+01:00"
    parsed = pd.to_datetime(pd.Series(local), utc=True, format="ISO8601", errors="coerce")
    fits = timestamps_fit(parsed, bound).to_numpy()
    typed = parsed.where(fits).astype(UTC_TIMESTAMP)
    rules = np.full(len(text), None, dtype=object)
    rules[~fits] = FITS_COLUMN
    # One nanosecond value makes the whole batch nanosecond-based, whose range ends in 2262: a value
    # the batch could not hold is parsed again on its own, so no row's verdict depends on another row.
    attempted = np.zeros(len(text), dtype=bool)
    attempted[present] = True
    for row in np.flatnonzero(attempted & parsed.isna().to_numpy()):
        rule, stamp = _read_timestamp(local[row], bound)
        if rule is None:
            typed[row] = stamp
        else:
            rules[row] = rule
    failed = np.flatnonzero(np.not_equal(rules, None))
    return typed.array, failed, rules[failed]


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
    contexts = np.repeat(np.array([failure.context for failure in failures], dtype=object), sizes)
    report = pd.DataFrame({"schema_context": contexts}).sort_values("schema_context", ascending=False)
    rank = np.empty(len(contexts), dtype=np.int64)
    rank[report.index.to_numpy()] = np.arange(len(contexts))
    return np.split(rank, np.cumsum(sizes)[:-1]) if sizes else []


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
