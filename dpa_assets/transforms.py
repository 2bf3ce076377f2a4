"""Pure pandas steps from received text rows to warehouse facts; no Dagster here.

``validate_freight`` types the text values, runs the pandera schema lazily (every failure of every
row in one pass) and splits the rows: each received row ends up valid or rejected, never both, never lost.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

import numpy as np
import pandas as pd
import pandera.pandas as pa

from dpa_assets.column_bounds import (
    FACT_BOUNDS,
    FITS_COLUMN,
    UNSTORABLE_CHARACTER,
    ColumnBound,
    column_bound,
    integer_fits,
    number_fits,
    storable_text,
    texts_fit,
    timestamps_fit,
)
from dpa_assets.freight_model import RAW_COLUMNS
from dpa_assets.partitions import partition_bounds
from dpa_assets.schemas import UTC_TIMESTAMP, freight_schema
from dpa_assets.sources.payload import SOURCE_LINE
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


def _blank_to_na(values: pd.Series) -> pd.Series:
    """Strip surrounding spaces; an empty field is a missing value."""
    stripped = values.astype(object).str.strip()
    return stripped.where(stripped.notna() & (stripped != ""), None).astype(object)


def type_raw_values(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Turn text columns into typed ones; a value that does not parse or fit becomes null plus a reason.

    Args:
        raw: received rows, all values text.

    Returns:
        The typed frame (same index) and the typing failures as reason dicts with a ``row`` key.
    """
    typed = pd.DataFrame(index=raw.index)
    reasons: list[dict] = []
    for column in RAW_COLUMNS:
        text, bound = _blank_to_na(raw[column]), FACT_BOUNDS[column]
        if column in NUMBER_COLUMNS or column in WHOLE_NUMBER_COLUMNS:
            typed[column], failed = _type_numbers(text, bound, whole=column in WHOLE_NUMBER_COLUMNS)
        elif column in TIMESTAMP_COLUMNS:
            typed[column], failed = _type_timestamps(text, bound)
        else:
            fits = texts_fit(text, bound)
            typed[column], failed = text.astype("string").where(fits), pd.Series(FITS_COLUMN, index=text.index)[~fits]
        reasons.extend(
            {"row": row, "column": column, "rule": rule, "value": raw.at[row, column]} for row, rule in failed.items()
        )
    return typed, reasons


def _type_numbers(text: pd.Series, bound: ColumnBound, whole: bool) -> tuple[pd.Series, pd.Series]:
    """Typed numbers (float, or Int64 when ``whole``) and the failed rule of each failing row."""
    present = text.dropna()
    # Each distinct text is read once: a day repeats most of its wagon counts and many tonnages.
    verdicts = {value: _read_number(value, bound, whole) for value in pd.unique(present)}
    rules = present.map(lambda value: verdicts[value][0]).dropna()
    values = present.map(lambda value: verdicts[value][1]).reindex(text.index)
    typed = values.astype("Int64") if whole else values.astype(float)
    return typed, rules


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


def _type_timestamps(text: pd.Series, bound: ColumnBound) -> tuple[pd.Series, pd.Series]:
    """Typed UTC timestamps (microseconds) and the failed rule of each failing row."""
    # The freight system omits the offset on some exports: those are local (UTC+1) times.
    local = text.where(text.isna() | text.astype(str).str.contains(_HAS_OFFSET), text + "+01:00")
    parsed = pd.to_datetime(local, utc=True, format="ISO8601", errors="coerce")
    fits = timestamps_fit(parsed, bound)
    typed = parsed.where(fits).astype(UTC_TIMESTAMP)
    rules = pd.Series(FITS_COLUMN, index=text.index[~fits], dtype=object)
    # One nanosecond value makes the whole batch nanosecond-based, whose range ends in 2262: a value
    # the batch could not hold is parsed again on its own, so no row's verdict depends on another row.
    for row in text.index[local.notna() & parsed.isna()]:
        rule, stamp = _read_timestamp(local[row], bound)
        if rule is None:
            typed[row] = stamp
        else:
            rules[row] = rule
    return typed, rules.sort_index()


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


def _schema_reasons(
    schema: pa.DataFrameSchema, typed: pd.DataFrame, raw: pd.DataFrame, parse_failures: set
) -> list[dict]:
    try:
        schema.validate(typed, lazy=True)
        return []
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    unplaced = cases[cases["index"].isna()]
    if not unplaced.empty:
        # A failure not tied to a row means the typing step is wrong, not the data: stop loudly.
        raise RuntimeError(f"schema failures not tied to rows: {unplaced.to_dict('records')}")
    reasons, seen = [], set()
    for case in cases.itertuples(index=False):
        row, rule = int(case.index), _rule_name(case.check)
        # Row-wide rules are reported once per column by pandera: name the column they are about.
        column = _DATAFRAME_RULE_COLUMNS.get(case.check, case.column)
        if (row, column, rule) in seen or (rule == "required" and (row, column) in parse_failures):
            continue  # the parse reason already says why the value is missing
        seen.add((row, column, rule))
        # The value quoted is the one received, so an auditor can compare it with the source file.
        reasons.append({"row": row, "column": column, "rule": rule, "value": raw.at[row, column]})
    return reasons


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


_REJECT_SHIPMENT_ID = column_bound(reject_table.c.shipment_id)


def _shown_shipment_id(value: object) -> str | None:
    """The received id as the quarantine's shipment_id column can hold it; raw_record keeps it whole."""
    value = _json_value(value)
    return storable_text(value, _REJECT_SHIPMENT_ID) if isinstance(value, str) else value


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
    typed, reasons = type_raw_values(raw)
    parse_failures = {(reason["row"], reason["column"]) for reason in reasons}
    reasons += _schema_reasons(
        freight_schema(*partition_bounds(partition_key), loaded_elsewhere), typed, raw, parse_failures
    )
    by_row: dict[int, list[dict]] = {}
    for reason in reasons:
        row = int(reason.pop("row"))
        reason["value"] = _json_value(reason["value"])
        by_row.setdefault(row, []).append(reason)
    rejected_rows = sorted(by_row)
    valid = typed.drop(index=rejected_rows)
    valid.insert(0, SOURCE_LINE, raw[SOURCE_LINE].drop(index=rejected_rows))
    received = raw.loc[rejected_rows, list(RAW_COLUMNS)].to_dict("records")  # values as received
    rejects = pd.DataFrame(
        {
            "source_line": raw.loc[rejected_rows, SOURCE_LINE].astype(int).tolist(),
            "shipment_id": [_shown_shipment_id(record["shipment_id"]) for record in received],
            "raw_record": [
                _json_text({column: _json_value(value) for column, value in record.items()}) for record in received
            ],
            "reasons": [_json_text(by_row[row]) for row in rejected_rows],
            "reason_summary": ["; ".join(f"{r['column']}: {r['rule']}" for r in by_row[row]) for row in rejected_rows],
        },
        columns=list(REJECT_COLUMNS),
    )
    return ValidationOutcome(partition_key, valid.reset_index(drop=True), rejects, len(raw))


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
    facts = valid.loc[:, [c for c in FACT_COLUMNS if c != "partition_date"]].copy()
    facts.insert(0, "partition_date", date.fromisoformat(partition_key))
    for column in ("revenue_xaf", "wagon_count"):
        facts[column] = _whole_numbers(facts[column].astype(float).round(), column)
    return facts.sort_values("shipment_id", kind="stable").reset_index(drop=True)


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
    order. Whole columns are turned into text at once and hashed in slices, so a million rows cost
    about a second and little memory; the digest is the same as value by value (``_canonical``).

    Args:
        facts: fact rows (any order, any datetime representation of the same instants).

    Returns:
        Hex digest; the same rows give the same digest.
    """
    digest = hashlib.sha256()
    ordered = facts.sort_values("shipment_id", kind="stable").loc[:, list(FACT_COLUMNS)]
    for start in range(0, len(ordered), CHECKSUM_SLICE_ROWS):
        part = ordered.iloc[start : start + CHECKSUM_SLICE_ROWS]
        texts = [_canonical_texts(part[column]) for column in part.columns]
        rows = map("\x1f".join, zip(*texts, strict=True))
        digest.update(("\x1e".join(rows) + "\x1e").encode("utf-8"))
    return digest.hexdigest()


CHECKSUM_SLICE_ROWS = 100_000  # bounds the text held at once to a few tens of MiB


def _canonical_texts(values: pd.Series) -> list[str]:
    """``_canonical`` of every value of a column, computed per column type where that is exact."""
    kind = values.dtype
    if isinstance(kind, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(kind):
        stamps = values.dt.tz_convert("UTC").dt.tz_localize(None) if isinstance(kind, pd.DatetimeTZDtype) else values
        # Whole microseconds, as isoformat(timespec="microseconds") writes them (years 1-9999: four digits).
        micro = stamps.to_numpy(dtype="datetime64[us]")
        return _rendered_once_each(micro.view(np.int64), lambda bits: _iso_micro(bits.view("datetime64[us]")))
    if pd.api.types.is_float_dtype(kind) and isinstance(kind, np.dtype):
        doubles = values.to_numpy(dtype=np.float64)
        # By bit pattern, so 0.0 and -0.0 (equal as numbers, written differently) stay apart.
        return _rendered_once_each(
            doubles.view(np.int64),
            lambda bits: ["" if x != x else repr(round(x, 6)) for x in bits.view(np.float64).tolist()],
        )
    if pd.api.types.is_integer_dtype(kind) and isinstance(kind, np.dtype):
        return [str(number) for number in values.tolist()]
    plain = values.tolist()
    first = type(plain[0]) if plain else str
    if first in (str, date) and all(type(value) is first for value in plain):
        if first is str:
            return plain
        days = {day: day.isoformat() for day in set(plain)}  # a partition holds one day
        return [days[day] for day in plain]
    return [_canonical(value) for value in plain]


def _rendered_once_each(bits: np.ndarray, render: Callable[[np.ndarray], list[str]]) -> list[str]:
    """Render each distinct 64-bit value once (a day repeats most times and tonnages), then spread."""
    distinct, where = np.unique(bits, return_inverse=True)
    return np.asarray(render(distinct), dtype=object)[where].tolist()


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
