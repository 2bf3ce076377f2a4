"""The partition ledger: audited, all-or-nothing writes of one day's facts and rejects.

For a loaded partition the books always balance: the latest ``loaded`` audit row's
``rows_received`` equals the partition's fact rows plus its rejects from that same validation.
Every attempt leaves an audit row; a successful one is written in the data's own transaction.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from dpa_assets.column_bounds import FACT_BOUNDS, texts_fit
from dpa_assets.text_vectors import shared_texts
from dpa_assets.transforms import facts_checksum, facts_checksum_of_slices
from dpa_assets.warehouse.engine import WRITE_OPTION
from dpa_assets.warehouse.pg_copy import copy_frame
from dpa_assets.warehouse.protection import (
    FactsDigest,
    facts_digest_query,
    pg_break_glass,
    remove_partition,
    remove_rejects,
)
from dpa_assets.warehouse.sqlite_read_back import sqlite_day_checksum
from dpa_assets.warehouse.tables import audit, facts, rejects

TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})  # deadlock, serialization, lock timeout
LOADED, FAILED, VALIDATED, BLOCKED, BREAK_GLASS = "loaded", "failed", "validated", "blocked", "break_glass"
REFUSED = "refused"  # the commit would have broken a rule (blocked day, no validation, unbalanced rows)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionLoad:
    """Everything one partition commit writes."""

    partition_date: date
    run_id: str
    validation_run_id: str
    facts: pd.DataFrame  # warehouse fact columns, without load_run_id
    rejects: pd.DataFrame  # transforms.REJECT_COLUMNS
    rows_received: int
    content_checksum: str
    # Source line of each valid row by shipment id, so a row the commit quarantines keeps its line.
    source_line_by_id: pd.Series | None = None


@dataclass(frozen=True)
class RetrySettings:
    """How often and how patiently a transaction that hit a lock conflict is tried again."""

    max_attempts: int = 5
    base_delay_seconds: float = 0.2
    max_delay_seconds: float = 5.0


class WarehouseBusy(RuntimeError):
    """Lock conflicts outlasted every retry; nothing was written."""


class LoadRefused(RuntimeError):
    """The warehouse refuses this load whatever launched it; nothing was written."""


def blocked_detail(rows_rejected: int, rows_received: int, max_rejection_rate: float, top_reasons: str) -> str:
    """Why a validation was blocked, as the ``detail`` of its audit row and in the refusal message.

    Args:
        rows_rejected: rows quarantined by the validation.
        rows_received: rows the source delivered.
        max_rejection_rate: the policy's maximum share (``ValidationPolicyResource``).
        top_reasons: the most frequent rejection reasons, already formatted.

    Returns:
        One line: counts, rate, the rule and the top reasons.
    """
    rate = rows_rejected / rows_received if rows_received else 0.0
    return (
        f"rejected {rows_rejected} of {rows_received} rows ({rate:.1%}), above the {_percent(max_rejection_rate)} "
        f"rule; top reasons: {top_reasons or 'none'}"
    )


def _percent(share: float) -> str:
    return f"{share * 100:g}%"


_RULE_IN_DETAIL = re.compile(r"above the (\S+%) rule")


def _require_passed_validation(connection: Connection, load: PartitionLoad) -> None:
    """Refuse a load unless its validation is recorded as passed and no newer one was blocked.

    Checked inside the commit, under the day's lock, so the 30% rule holds however the load was
    launched (a run with the blocking check, ``warehouse_facts`` alone from the UI, the schedule).
    """
    day = load.partition_date
    validations = (
        connection.execute(
            sa.select(audit.c.id, audit.c.status, audit.c.validation_run_id, audit.c.detail)
            .where(audit.c.partition_date == day, audit.c.status.in_((VALIDATED, BLOCKED)))
            .order_by(audit.c.id.desc())
        )
        .mappings()
        .all()
    )
    own = next((row for row in validations if row["validation_run_id"] == load.validation_run_id), None)
    if own is None:
        raise LoadRefused(
            f"{day}: no validation of run {load.validation_run_id} is recorded in the warehouse; "
            f"re-run validated_freight for {day} (dpa materialize --date {day})"
        )
    blocked = own if own["status"] == BLOCKED else None
    newest = validations[0]
    if blocked is None and newest["status"] == BLOCKED and newest["id"] > own["id"]:
        blocked = newest  # newer data for the day was blocked: loading older data would hide that
    if blocked is not None:
        match = _RULE_IN_DETAIL.search(blocked["detail"] or "")
        rule = match.group(1) if match else "rejection-rate"
        raise LoadRefused(
            f"{day} was blocked by the {rule} rule in run {blocked['validation_run_id']} "
            f"({blocked['detail'] or 'no detail recorded'}): fix the source and re-run validation"
        )


def is_transient(error: BaseException) -> bool:
    """True for errors a fresh attempt of the same transaction can get past."""
    original = getattr(error, "orig", error)
    if getattr(original, "pgcode", None) in TRANSIENT_SQLSTATES:
        return True
    text = str(original).lower()
    return "database is locked" in text or "database table is locked" in text


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _write_connection(engine: Engine) -> Connection:
    return engine.connect().execution_options(**{WRITE_OPTION: True})


def _lock_partition(connection: Connection, partition_date: date) -> None:
    """Serialize writers of one partition; SQLite's BEGIN IMMEDIATE already serializes all writers."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:table), :day)"),
            {"table": facts.name, "day": partition_date.toordinal()},
        )


def _db_frame(frame: pd.DataFrame, dialect: str) -> pd.DataFrame:
    """Timestamps as UTC: aware for PostgreSQL, naive for SQLite (which has no time zone type)."""
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            out[column] = out[column].dt.tz_convert("UTC")
            if dialect == "sqlite":
                out[column] = out[column].dt.tz_localize(None)
    return out


def as_records(frame: pd.DataFrame, dialect: str) -> list[dict]:
    """Rows as plain Python values the DB-API driver binds, timestamps in UTC."""
    frame = _db_frame(frame, dialect)
    plain = frame.astype(object).where(frame.notna(), None)
    return [
        {key: (value.to_pydatetime() if isinstance(value, pd.Timestamp) else value) for key, value in row.items()}
        for row in plain.to_dict("records")
    ]


CROSS_DAY_RULE = "not_loaded_for_another_day"
_FACTS_SAVEPOINT = "dpa_facts_insert"


def shipment_ids_held_for_other_days(connection: Connection, shipment_ids: list[str], partition_date: date) -> set[str]:
    """Which of these shipment ids the fact table holds for a day other than ``partition_date``.

    One query with every id, so the database plans it as a whole: PostgreSQL takes them as one
    array, SQLite reads one JSON array (sorted, so its index probes go in the index's order).

    Replacing a loaded day sent the day's own ids too: each was found, and its stored row read only
    to see it belongs to this very day (~3 s at 1,000,000 rows on PostgreSQL). While the database
    keeps each id unique, an id the day holds is held by no other day, so PostgreSQL leaves those
    out first, reading the day's rows in one pass (asked only when the day holds rows: on a new day
    that pass would cost more than it saves).

    Args:
        connection: a warehouse connection (inside the caller's transaction, if any).
        shipment_ids: ids to look up.
        partition_date: the day they were received for.

    Returns:
        The ids already loaded for another day.
    """
    ids_json = storable_ids_json(shipment_ids, in_order=connection.dialect.name == "sqlite")
    if ids_json is None:
        return set()
    elsewhere = facts.c.partition_date != partition_date
    if connection.dialect.name == "postgresql":
        # One JSON text, unnested into the array: a list parameter is quoted a Python object per id
        # by the driver (~150 MiB at 1,000,000 ids, a commit's peak). PostgreSQL sorts the array itself.
        ids = sa.bindparam("ids", ids_json)
        received = sa.select(sa.func.json_array_elements_text(sa.cast(ids, postgresql.JSON)).table_valued("value"))
        if _day_holds_rows(connection, partition_date) and unique_id_index_enforced(connection):
            received = received.except_(sa.select(facts.c.shipment_id).where(facts.c.partition_date == partition_date))
        listed = facts.c.shipment_id == sa.any_(sa.func.array(received.scalar_subquery()))
        query = sa.select(facts.c.shipment_id).where(listed, elsewhere)
    else:
        # The ids drive, one index probe each, in the index's order: an IN (SELECT ...) list was
        # first copied into a temporary b-tree (0.4 s per 200,000 ids, even against an empty table).
        values = sa.func.json_each(sa.bindparam("ids", ids_json)).table_valued("value")
        query = (
            sa.select(facts.c.shipment_id)
            .select_from(values.join(facts, facts.c.shipment_id == values.c.value))
            .where(elsewhere)
        )
    return set(connection.execute(query).scalars())


def storable_ids_json(shipment_ids: list[str], in_order: bool) -> str | None:
    """The distinct text ids the fact column can hold, as one JSON array (None when there is none).

    Arrow finds the distinct ids, checks their bounds and joins them in C (~0.3 s for 1,000,000
    ids, where a Python set, the bound check per id and ``json.dumps`` cost ~1 s). A list Arrow
    cannot hold (a lone surrogate, a value that is not text) has its storable ids picked in Python,
    and ids JSON must escape are encoded by ``json.dumps``.

    Args:
        shipment_ids: the ids, any order, repeats allowed.
        in_order: sorted in code point order (SQLite probes its index in that order).
    """
    ids = _arrow_storable_ids(shipment_ids)
    if ids is None:  # a lone surrogate or a value that is not text: Python picks the storable ids
        ids = pa.array(_storable_ids(shipment_ids), pa.large_string())
    if not len(ids):
        return None
    if in_order:
        ids = ids.take(pc.sort_indices(ids))  # UTF-8 byte order is code point order
    if pc.any(pc.match_substring_regex(ids, _JSON_ESCAPED)).as_py():
        return json.dumps(ids.to_pylist())
    as_one_list = pa.LargeListArray.from_arrays(pa.array([0, len(ids)], pa.int64()), ids)
    separator = pa.scalar('","', pa.large_string())
    return '["' + pc.binary_join(as_one_list, separator)[0].as_py() + '"]'


_JSON_ESCAPED = r'["\\\x00-\x1f]'  # what JSON must escape in a text (RE2, as Arrow reads it)


def _arrow_storable_ids(shipment_ids: list[str]) -> pa.Array | None:
    """``_storable_ids`` by Arrow, or None when Arrow cannot hold the list as text."""
    try:
        ids = pc.unique(pa.array(shipment_ids, type=pa.large_string()).drop_null())
    except (pa.ArrowException, UnicodeError):  # not text, or a lone surrogate: never storable
        return None
    max_length = FACT_BOUNDS["shipment_id"].max_length
    fits = pc.invert(pc.match_substring(ids, "\x00"))
    if max_length is not None:
        fits = pc.and_(fits, pc.less_equal(pc.utf8_length(ids), max_length))  # characters, as len() counts
    return ids.filter(fits)


def _storable_ids(shipment_ids: list[str]) -> list[str]:
    """The distinct text ids the fact column can hold."""
    distinct = pd.Series(list({value for value in shipment_ids if isinstance(value, str)}), dtype=object)
    # An id the fact column cannot hold (too long, NUL, not UTF-8) is loaded nowhere, and sending it
    # would fail the query on PostgreSQL (NUL) or in either driver (a lone surrogate).
    return distinct[texts_fit(distinct, FACT_BOUNDS["shipment_id"])].tolist()


def _day_holds_rows(connection: Connection, partition_date: date) -> bool:
    """Whether the fact table holds any row of the day (one probe of its partition_date index)."""
    return connection.execute(sa.select(sa.exists().where(facts.c.partition_date == partition_date))).scalar_one()


# A unique index the database enforces on every row of the fact table over shipment_id alone:
# not partial, not on an expression, and (PostgreSQL) built, valid and live.
_SQLITE_UNIQUE_ID_INDEX = sa.text(
    """
    SELECT count(*) FROM pragma_index_list(:table) AS listed
    WHERE listed."unique" = 1 AND listed.partial = 0
      AND (SELECT count(*) FROM pragma_index_info(listed.name)) = 1
      AND (SELECT info.name FROM pragma_index_info(listed.name) AS info) = :column
    """
)
_PG_UNIQUE_ID_INDEX = sa.text(
    """
    SELECT count(*) FROM pg_index AS ix
    JOIN pg_attribute AS att ON att.attrelid = ix.indrelid AND att.attnum = ix.indkey[0]
    WHERE ix.indrelid = to_regclass(:table)
      AND ix.indisunique AND ix.indisvalid AND ix.indisready AND ix.indislive
      AND ix.indpred IS NULL AND ix.indexprs IS NULL AND ix.indnatts = 1
      AND att.attname = :column
    """
)


def unique_id_index_enforced(connection: Connection) -> bool:
    """Whether the database itself keeps every shipment id of the fact table unique (a catalog lookup)."""
    query = _PG_UNIQUE_ID_INDEX if connection.dialect.name == "postgresql" else _SQLITE_UNIQUE_ID_INDEX
    found = connection.execute(query, {"table": facts.name, "column": facts.c.shipment_id.name}).scalar_one()
    return found > 0


def _insert_facts(connection: Connection, load: PartitionLoad) -> tuple[PartitionLoad, FactsDigest | None]:
    """Insert the day's facts, quarantining first any row whose shipment id another day holds.

    Validation checked this against the warehouse of its time; another day may have been committed
    since. Deciding again here, with commits of all days serialized (PostgreSQL: one advisory lock;
    SQLite: BEGIN IMMEDIATE), means a shared id is quarantined, never a failed day on the unique index.
    When the database enforces that index, it answers first, under a savepoint: the lookup of every
    id of the day (0.5 s per 200k rows on PostgreSQL) runs only when it refuses one, and the insert
    is then made again. Without it (dropped by hand), the lookup runs first, as nothing else would refuse.

    Returns:
        The load as written (with the moved rows among its rejects when some id was shared), and the
        digest of the rows as sent when the database's own can be computed from them (PostgreSQL, UTF-8).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"{facts.name}.shipment_id"}
        )
    if not unique_id_index_enforced(connection):  # nothing would refuse a shared id: look them up first
        load = _quarantine_ids_held_for_other_days(connection, load)
        return load, _insert_fact_rows(connection, load)
    # Our own SAVEPOINT statements, not begin_nested(): after ROLLBACK TO the savepoint stays open,
    # and without RELEASE the audit row would be written in a subtransaction, which the replace
    # check (the audit row's xmin must be the transaction's own id) refuses.
    connection.exec_driver_sql(f"SAVEPOINT {_FACTS_SAVEPOINT}")
    try:
        digest = _insert_fact_rows(connection, load)
    except Exception as error:  # noqa: BLE001 - anything but a refused duplicate is raised as it was
        if not _is_unique_violation(error):
            raise
        connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {_FACTS_SAVEPOINT}")
        connection.exec_driver_sql(f"RELEASE SAVEPOINT {_FACTS_SAVEPOINT}")
        kept = _quarantine_ids_held_for_other_days(connection, load)
        if kept is load:  # no other day holds them: a duplicate within the day, refused as before
            raise
        return kept, _insert_fact_rows(connection, kept)
    connection.exec_driver_sql(f"RELEASE SAVEPOINT {_FACTS_SAVEPOINT}")
    return load, digest


def _insert_fact_rows(connection: Connection, load: PartitionLoad) -> FactsDigest | None:
    digest = FactsDigest() if _digest_from_sent_rows(connection) else None
    bulk_insert(connection, facts, load.facts.assign(load_run_id=load.run_id), watch=digest and digest.add)
    return digest


def _digest_from_sent_rows(connection: Connection) -> bool:
    """PostgreSQL renders and hashes text in the database's encoding; ``FactsDigest`` renders UTF-8."""
    return (
        connection.dialect.name == "postgresql"
        and connection.exec_driver_sql("SHOW server_encoding").scalar() == "UTF8"
    )


def _is_unique_violation(error: BaseException) -> bool:
    original = getattr(error, "orig", error)
    if getattr(original, "pgcode", None) == "23505":
        return True
    return isinstance(error, sa.exc.IntegrityError) and "UNIQUE constraint failed" in str(original)


def _quarantine_ids_held_for_other_days(connection: Connection, load: PartitionLoad) -> PartitionLoad:
    """Move rows whose shipment id another day holds from the facts to the rejects (``load`` itself when none)."""
    held = shipment_ids_held_for_other_days(connection, load.facts["shipment_id"].tolist(), load.partition_date)
    if not held:
        return load
    moving = load.facts["shipment_id"].isin(held)
    moved = load.facts[moving]
    new_rejects = pd.DataFrame(
        {
            "source_line": [_source_line(load, shipment_id) for shipment_id in moved["shipment_id"]],
            "shipment_id": moved["shipment_id"].tolist(),
            "raw_record": [_record_json(record) for record in moved.drop(columns="partition_date").to_dict("records")],
            "reasons": [
                json.dumps(
                    [{"column": "shipment_id", "rule": CROSS_DAY_RULE, "value": shipment_id}], ensure_ascii=False
                )
                for shipment_id in moved["shipment_id"]
            ],
            "reason_summary": f"shipment_id: {CROSS_DAY_RULE}",
        }
    )
    kept = load.facts[~moving].reset_index(drop=True)
    return dataclasses.replace(
        load,
        facts=kept,
        rejects=pd.concat([load.rejects, new_rejects], ignore_index=True),
        content_checksum=facts_checksum(kept),
    )


def _source_line(load: PartitionLoad, shipment_id: str) -> int:
    lines = load.source_line_by_id
    return int(lines.get(shipment_id, 0)) if lines is not None else 0  # 0: line not known


def _record_json(record: dict) -> str:
    """A typed fact row as the JSON text the quarantine keeps (timestamps in ISO 8601)."""
    plain = {
        key: (value.isoformat() if isinstance(value, pd.Timestamp) else None if pd.isna(value) else value)
        for key, value in record.items()
    }
    return json.dumps(plain, ensure_ascii=False, default=str)


def bulk_insert(
    connection: Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    watch: Callable[[list[str], list[tuple[np.ndarray, np.ndarray]]], None] | None = None,
) -> None:
    """Insert a frame through the database's fast path, inside the caller's transaction.

    Args:
        connection: a connection with an open transaction.
        table: the target table; the frame's columns must be a subset of its columns.
        frame: the rows.
        watch: PostgreSQL only: sees each slice's binary COPY fields (``pg_copy.copy_frame``).
    """
    if frame.empty:
        return
    if connection.dialect.name == "postgresql":
        # The DB-API connection under this SQLAlchemy connection: COPY joins the same transaction.
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            copy_frame(cursor, table, frame, watch)
        finally:
            cursor.close()
    else:
        _insert_rows(connection, table, frame)


def _insert_rows(connection: Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """One prepared INSERT run over every row, each value bound as SQLAlchemy would bind it.

    ``executemany`` on the driver skips SQLAlchemy's per-row parameter handling, which cost more
    than SQLite's own work; each column's bind processor (SQLite keeps dates and times as text)
    is applied here, once per distinct value where values repeat.
    """
    placeholders = ", ".join("?" for _ in frame.columns)
    statement = f"INSERT INTO {table.name} ({', '.join(frame.columns)}) VALUES ({placeholders})"
    # A slice of rows at a time: a row as a Python tuple of bound values costs ~700 bytes (1,000,000
    # rows at once were the load's peak, +400 MiB); the caller's transaction holds every slice.
    for start in range(0, len(frame), INSERT_SLICE_ROWS):
        part = frame.iloc[start : start + INSERT_SLICE_ROWS]
        columns = [_bound_values(connection, table.c[name], part[name]) for name in part.columns]
        connection.exec_driver_sql(statement, list(zip(*columns, strict=True)))


INSERT_SLICE_ROWS = 100_000


def _bound_values(connection: Connection, column: sa.Column, values: pd.Series) -> list:
    """A column's values as the driver receives them: NULL for missing, UTC, the type's bind processor."""
    stamps = isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values.dtype)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)  # SQLite has no time zone type
    process = column.type.dialect_impl(connection.dialect).bind_processor(connection.dialect)
    if process is None and not stamps:
        if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
            # Arrow text: one str per distinct value (None if missing), not one per row.
            return shared_texts(pa.array(values.array)).tolist()
        return values.astype(object).where(values.notna(), None).tolist()

    def bound(item: object) -> object:
        item = item.to_pydatetime() if isinstance(item, pd.Timestamp) else item
        return process(item) if process is not None else item

    # Each distinct value bound once (a day repeats its dates and most of its times), then spread.
    codes, distinct = pd.factorize(values)
    processed = np.array([bound(item) for item in distinct.astype(object)] + [None], dtype=object)
    return processed[codes].tolist()  # code -1 (missing) takes the trailing None


def stored_day_digest(connection: Connection, day: date) -> tuple[int, str | None]:
    """The day's fact rows as the database holds them: (count, digest computed by the database).

    PostgreSQL hashes the rows where they are (``protection.facts_digest_query``, in parallel); SQLite has no
    such function, so its digest is None and the reconcile check reads the day back instead.

    Args:
        connection: a warehouse connection (inside the caller's transaction, if any).
        day: the partition.

    Returns:
        (fact rows stored for the day, digest or None).
    """
    if connection.dialect.name == "postgresql":
        row = connection.execute(facts_digest_query(), {"day": day}).one()
        return row.row_count, row.digest
    count = connection.execute(
        sa.select(sa.func.count()).select_from(facts).where(facts.c.partition_date == day)
    ).scalar_one()
    return count, None


def _stored_count(connection: Connection, day: date) -> int:
    return connection.execute(
        sa.select(sa.func.count()).select_from(facts).where(facts.c.partition_date == day)
    ).scalar_one()


def _replace_partition(
    connection: Connection,
    load: PartitionLoad,
    attempts: int,
    started_at: datetime,
    before_commit: Callable[[Connection], None] | None,
) -> dict:
    day = load.partition_date
    _lock_partition(connection, day)
    _require_passed_validation(connection, load)
    remove_partition(connection, day)
    load, sent_digest = _insert_facts(connection, load)
    bulk_insert(
        connection,
        rejects,
        load.rejects.assign(partition_date=day, validation_run_id=load.validation_run_id),
    )
    if sent_digest is None:
        loaded, digest = stored_day_digest(connection, day)
    else:  # the rows' digest as sent: the reconcile check recomputes it by SQL from the stored rows
        loaded, digest = _stored_count(connection, day), sent_digest.hexdigest()
    if loaded != len(load.facts):
        raise RuntimeError(f"partition {day}: {loaded} fact rows after insert, expected {len(load.facts)}")
    row = {
        "partition_date": day,
        "run_id": load.run_id,
        "validation_run_id": load.validation_run_id,
        "status": LOADED,
        "rows_received": load.rows_received,
        "rows_valid": len(load.facts),
        "rows_rejected": len(load.rejects),
        "rows_loaded": loaded,
        "content_checksum": load.content_checksum,
        "warehouse_digest": digest,
        "attempts": attempts,
        "started_at": started_at,
        "finished_at": _utcnow(),
    }
    connection.execute(sa.insert(audit), [row])
    if before_commit is not None:
        before_commit(connection)
    return row


def commit_partition(
    engine: Engine,
    load: PartitionLoad,
    retry: RetrySettings = RetrySettings(),
    log: logging.Logger | logging.LoggerAdapter = logger,
    before_commit: Callable[[Connection], None] | None = None,
) -> dict:
    """Replace one partition's facts and rejects and write its audit row, all in one transaction.

    Lock conflicts are retried with jittered exponential backoff; any other error rolls back,
    is recorded as a ``failed`` audit row in its own transaction, and is raised.

    Args:
        engine: the warehouse engine.
        load: what to write.
        retry: how lock conflicts are retried.
        log: where each retry is reported.
        before_commit: called with the connection just before commit (used by fault tests).

    Returns:
        The audit row that was committed.
    """
    started_at = _utcnow()
    if load.rows_received != len(load.facts) + len(load.rejects):
        # Rows would be lost (or invented) between the source and the warehouse: refuse outright.
        refusal = LoadRefused(
            f"partition {load.partition_date}: {load.rows_received} rows received but "
            f"{len(load.facts)} facts + {len(load.rejects)} rejects; refusing to commit"
        )
        record_failure(engine, load, 0, started_at, refusal)
        raise refusal
    for attempt in range(1, retry.max_attempts + 1):
        try:
            with _write_connection(engine) as connection, connection.begin():
                return _replace_partition(connection, load, attempt, started_at, before_commit)
        except Exception as error:  # noqa: BLE001 - every failure is audited, then re-raised
            if is_transient(error) and attempt < retry.max_attempts:
                delay = min(retry.max_delay_seconds, retry.base_delay_seconds * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.5)
                log.warning(
                    f"partition {load.partition_date}: lock conflict on attempt {attempt}/"
                    f"{retry.max_attempts} ({_first_line(error)}); retrying in {delay:.2f}s"
                )
                time.sleep(delay)
                continue
            record_failure(engine, load, attempt, started_at, error)
            if isinstance(error, LoadRefused):
                raise
            if is_transient(error):
                raise WarehouseBusy(
                    f"partition {load.partition_date}: still locked after {attempt} attempts; nothing was written"
                ) from error
            raise
    raise AssertionError("unreachable")  # the loop returns or raises


def _first_line(error: BaseException) -> str:
    return str(getattr(error, "orig", error)).strip().splitlines()[0][:300] if str(error) else type(error).__name__


def record_failure(
    engine: Engine, load: PartitionLoad, attempts: int, started_at: datetime | None, error: BaseException
) -> None:
    """Audit a failed (or refused) attempt after its rollback; a failure to audit is logged, never masks the error."""
    record_failed_attempt(
        engine,
        load.partition_date,
        load.run_id,
        error,
        validation_run_id=load.validation_run_id,
        counts={"rows_received": load.rows_received, "rows_valid": len(load.facts), "rows_rejected": len(load.rejects)},
        content_checksum=load.content_checksum,
        attempts=attempts,
        started_at=started_at,
    )


def record_failed_attempt(
    engine: Engine,
    partition_date: date,
    run_id: str,
    error: BaseException,
    validation_run_id: str | None = None,
    counts: dict[str, int] | None = None,
    content_checksum: str | None = None,
    attempts: int = 0,
    started_at: datetime | None = None,
) -> None:
    """Audit a load attempt that failed before or during its commit (``refused`` for a broken rule).

    Args:
        engine: the warehouse engine.
        partition_date: the day of the attempt.
        run_id: the Dagster run that attempted the load.
        error: what stopped it; its first line becomes the audit ``detail``.
        validation_run_id: the validation the load came from, when known.
        counts: ``rows_received``/``rows_valid``/``rows_rejected`` when known.
        content_checksum: the checksum of the facts it would have written, when known.
        attempts: commit attempts made (0 when it failed before committing).
        started_at: when the attempt started (now when omitted).
    """
    row = {
        "partition_date": partition_date,
        "run_id": run_id,
        "validation_run_id": validation_run_id,
        "status": REFUSED if isinstance(error, LoadRefused) else FAILED,
        **(counts or {}),
        "rows_loaded": 0,
        "content_checksum": content_checksum,
        "attempts": attempts,
        "started_at": started_at or _utcnow(),
        "finished_at": _utcnow(),
        "detail": str(error) if isinstance(error, LoadRefused) else f"{type(error).__name__}: {_first_line(error)}",
    }
    try:
        with _write_connection(engine) as connection, connection.begin():
            connection.execute(sa.insert(audit), [row])
    except Exception:  # noqa: BLE001
        logger.exception("could not audit the failed load of partition %s", partition_date)


def current_load_audit(connection: Connection, partition_date: date) -> dict | None:
    """The audit row of the partition's current facts (None when never loaded, or emptied since)."""
    latest = (
        connection.execute(
            sa.select(audit)
            .where(audit.c.partition_date == partition_date, audit.c.status.in_((LOADED, BREAK_GLASS)))
            .order_by(audit.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(latest) if latest is not None and latest["status"] == LOADED else None


def record_validation(
    engine: Engine,
    partition_date: date,
    run_id: str,
    quarantined: pd.DataFrame,
    rows_received: int,
    status: str,
    detail: str | None = None,
) -> None:
    """Store a validation's rejects and its audit row (``validated`` or ``blocked``) in one transaction.

    Rejects of earlier validations are replaced, except those of the loaded version, which stay
    with the facts they balance until a new load replaces both.

    Args:
        engine: the warehouse engine.
        partition_date: the day validated.
        run_id: the validating run.
        quarantined: the rejected rows (transforms.REJECT_COLUMNS).
        rows_received: rows the source delivered for the day.
        status: ``validated`` or ``blocked``.
        detail: why a day was blocked (``blocked_detail``).
    """
    now = _utcnow()
    with _write_connection(engine) as connection, connection.begin():
        _lock_partition(connection, partition_date)
        current = current_load_audit(connection, partition_date)
        keep = {current["validation_run_id"]} - {run_id} if current else set()
        remove_rejects(connection, partition_date, next(iter(keep), None))
        bulk_insert(connection, rejects, quarantined.assign(partition_date=partition_date, validation_run_id=run_id))
        connection.execute(
            sa.insert(audit),
            [
                {
                    "partition_date": partition_date,
                    "run_id": run_id,
                    "validation_run_id": run_id,
                    "status": status,
                    "rows_received": rows_received,
                    "rows_valid": rows_received - len(quarantined),
                    "rows_rejected": len(quarantined),
                    "started_at": now,
                    "finished_at": now,
                    "detail": detail,
                }
            ],
        )


_STAMP_COLUMNS = ("departure_time", "arrival_time")
READ_BACK_ROWS = 50_000  # rows of a day held at once while the reconcile check re-hashes it


def _read_back_order(column: sa.Column) -> sa.ColumnElement:
    return column  # ascending: the order facts_checksum hashes in (SQLite compares text by code point)


def _facts_query(engine: Engine, partition_dates: list[date]) -> sa.Select:
    selected = [
        # SQLite keeps times as text: parsing a whole column at once beats one Python datetime per value.
        sa.type_coerce(column, sa.String).label(column.name)
        if column.name in _STAMP_COLUMNS and engine.dialect.name == "sqlite"
        else column
        for column in facts.columns
    ]
    return sa.select(*selected).where(facts.c.partition_date.in_(partition_dates))


def _facts_frame(rows: list[sa.Row]) -> pd.DataFrame:
    names = [column.name for column in facts.columns]
    # Column by column: building a frame from Row objects probes each row's attributes (seconds per million).
    by_column = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    frame = pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in zip(names, by_column, strict=True)})
    frame = frame.infer_objects()
    for column in _STAMP_COLUMNS:
        stamps = pd.to_datetime(frame[column], format="ISO8601")
        frame[column] = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    return frame


def read_facts(engine: Engine, partition_dates: list[date]) -> pd.DataFrame:
    """The facts of some partitions, timestamps as UTC-aware, ordered by shipment id."""
    with engine.connect() as connection:
        rows = connection.execute(_facts_query(engine, partition_dates).order_by(facts.c.shipment_id)).all()
    return _facts_frame(rows)


def read_back_checksum(engine: Engine, day: date) -> tuple[int, str]:
    """The stored day's row count and ``facts_checksum``, read back ``READ_BACK_ROWS`` rows at a time.

    A whole day read at once held every value as a Python object (about 1 GiB per million rows).
    On SQLite the raw cursor's columns are rendered without a frame (``sqlite_read_back``, about
    twice as fast). Otherwise, or for a value not in the commit's stored form, slices are hashed as they
    arrive while they arrive in shipment id order; should the database sort otherwise (a
    collation), the day is read whole and sorted here: the digest never changes.

    Args:
        engine: the warehouse engine.
        day: the partition.

    Returns:
        (fact rows stored for the day, their checksum).
    """
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection, connection.begin():  # one snapshot for every attempt
            fast = sqlite_day_checksum(connection, day, READ_BACK_ROWS)
        if fast is not None:
            return fast
    query = _facts_query(engine, [day]).order_by(_read_back_order(facts.c.shipment_id))
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=READ_BACK_ROWS).execute(query)
        hashed = facts_checksum_of_slices(_facts_frame(rows) for rows in result.partitions())
        result.close()
    if hashed is not None:
        return hashed
    stored = read_facts(engine, [day])
    return len(stored), facts_checksum(stored)


def break_glass_remove_partition(engine: Engine, partition_date: date, actor: str, reason: str) -> dict[str, int]:
    """The administrator's deliberate way to empty one partition, recorded with who and why.

    Args:
        engine: the warehouse engine.
        partition_date: the day to empty (facts and rejects).
        actor: who asks (a person, not a role).
        reason: why, in words an auditor will read later (at least 10 characters).

    Returns:
        How many fact and reject rows were removed.
    """
    if not actor.strip() or len(reason.strip()) < 10:
        raise ValueError("break-glass needs the actor's name and a reason of at least 10 characters")
    now = _utcnow()
    with _write_connection(engine) as connection, connection.begin():
        if connection.dialect.name == "postgresql":  # the owner-only function audits it, with the database user
            return pg_break_glass(connection, partition_date, actor.strip(), reason.strip())
        _lock_partition(connection, partition_date)
        removed_facts, removed_rejects = remove_partition(connection, partition_date)
        connection.execute(
            sa.insert(audit),
            [
                {
                    "partition_date": partition_date,
                    "run_id": "break-glass",
                    "status": BREAK_GLASS,
                    "rows_loaded": 0,
                    "started_at": now,
                    "finished_at": _utcnow(),
                    "actor": actor.strip(),
                    "detail": f"{reason.strip()} (removed {removed_facts} facts, {removed_rejects} rejects)",
                }
            ],
        )
    return {"facts": removed_facts, "rejects": removed_rejects}
