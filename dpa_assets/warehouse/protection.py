"""Create the warehouse tables and lock them against erasure; idempotent, safe to run concurrently.

Updates are always refused and the audit trail is append-only. A day's facts and rejects are
removed only to be replaced: on SQLite by a transaction holding a *permit* for that day, on
PostgreSQL only inside ``SECURITY DEFINER`` functions owned by the table owner, and only together
with an audit row written in the same transaction. PostgreSQL also refuses TRUNCATE and DROP TABLE.
SQLite has no DDL triggers: a dropped table cannot be prevented there, but it is detected and
never silently recreated (see ``ProtectedTableMissing``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dpa_assets.settings import AUDIT_TABLE, FACT_TABLE, PROTECTED_TABLES, REJECT_TABLE
from dpa_assets.warehouse.engine import WRITE_OPTION, is_sqlite
from dpa_assets.warehouse.tables import audit, facts, metadata, rejects

PERMIT_TABLE = "dpa_write_permit"  # SQLite only: rows live inside one transaction, never committed
SCHEMA_MARKER_TABLE = "dpa_schema_marker"
PG_PERMIT_SETTING = "dpa.partition_replace"
PG_DROP_SETTING = "dpa.allow_drop"
# PostgreSQL: the days a transaction removed, checked against its audit rows at commit; its rows
# are deleted by that check, so the table is empty outside a replacing transaction.
PENDING_REPLACE_TABLE = "dpa_replace_pending"
_REFUSAL_FORMAT = (
    "% is protected against %: only the DPA partition commit or the documented break-glass command may change it"
)
PIPELINE_ROLE = "dpa_pipeline"  # the least-privilege role of sql/least_privilege.sql
# The stored day's digest, computed by the database (PostgreSQL): an order-independent sum of each
# row's md5 (two 64-bit halves summed apart), streamed, so no day is ever read back into Python.
FACTS_DIGEST_FUNCTION = "dpa_facts_digest"
DIGEST_VERSION = "md5sum1"
DIGEST_COLUMN = "warehouse_digest"
PARTITIONED_TABLES = (FACT_TABLE, REJECT_TABLE)  # tables whose partitions a permit may replace
_SETUP_LOCK_KEY = 0x445041  # "DPA": serializes concurrent schema setup on PostgreSQL
# The day's advisory lock. ``day - DATE '0001-01-01' + 1`` is Python's ``date.toordinal()``, the
# key ledger._lock_partition passes, so the functions and the ledger take the same lock.
_PG_DAY_LOCK = f"pg_advisory_xact_lock(hashtext('{FACT_TABLE}'), target_day - DATE '0001-01-01' + 1)"

INSTALLED, MISSING, NOT_POSSIBLE, NOT_APPLICABLE = "installed", "missing", "not possible", "n/a"
OWNER, SUPERUSER = "the warehouse owner", "a superuser"
logger = logging.getLogger(__name__)


class ProtectedTableMissing(RuntimeError):
    """A protected table was dropped after setup; recreating it empty would hide the loss."""


class ProtectionIncomplete(RuntimeError):
    """Protection the owner must install is missing or outdated, and this role cannot install it."""


@dataclass(frozen=True)
class ProtectionPiece:
    """One part of the erasure protection and whether it is in place."""

    name: str
    state: str  # installed | missing | not possible | n/a
    detail: str = ""
    installer: str = ""  # who can install it when missing ("" = not setup's job)


def _refusal(table: str, action: str) -> str:
    return (
        f"{table} is protected against {action}: only the DPA partition commit "
        "or the documented break-glass command may change it"
    )


# --- SQLite -------------------------------------------------------------------------------------


def _sqlite_statements() -> list[str]:
    statements = [f"CREATE TABLE IF NOT EXISTS {PERMIT_TABLE} (table_name TEXT NOT NULL, partition_date DATE NOT NULL)"]
    for table in PROTECTED_TABLES:
        permit = (
            f"WHEN NOT EXISTS (SELECT 1 FROM {PERMIT_TABLE} p WHERE p.table_name = '{table}' "
            "AND p.partition_date = OLD.partition_date) "
            if table in PARTITIONED_TABLES
            else ""
        )
        statements.append(
            f"CREATE TRIGGER IF NOT EXISTS {table}_refuse_delete BEFORE DELETE ON {table} {permit}"
            f"BEGIN SELECT RAISE(ABORT, '{_refusal(table, 'DELETE')}'); END"
        )
        statements.append(
            f"CREATE TRIGGER IF NOT EXISTS {table}_refuse_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{_refusal(table, 'UPDATE')}'); END"
        )
    return statements


def _sqlite_status(connection: Connection) -> list[ProtectionPiece]:
    found = {row[0]: row[1] for row in connection.exec_driver_sql("SELECT name, type FROM sqlite_master")}
    expected = [f"{table}_refuse_{action}" for table in PROTECTED_TABLES for action in ("delete", "update")]
    absent = [name for name in expected if found.get(name) != "trigger"]
    return [
        ProtectionPiece("row triggers", MISSING if absent else INSTALLED, ", ".join(absent) or "DELETE, UPDATE", OWNER),
        ProtectionPiece(
            "permit table", INSTALLED if found.get(PERMIT_TABLE) == "table" else MISSING, PERMIT_TABLE, OWNER
        ),
        ProtectionPiece("DROP guard", INSTALLED, "DPA connections only"),
        ProtectionPiece("DROP from outside clients", NOT_POSSIBLE, "not possible on SQLite: detected at next run"),
        _piece("warehouse digest", [_digest_column_problem(connection)], f"{AUDIT_TABLE}.{DIGEST_COLUMN}", OWNER),
    ]


# --- PostgreSQL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PgFunction:
    name: str
    parameters: str  # as declared, with names
    identity: str  # argument types only, as in ``to_regprocedure``
    returns: str
    body: str
    security_definer: bool = False

    @property
    def signature(self) -> str:
        return f"{self.name}({self.identity})"

    def ddl(self, schema: str) -> str:
        security = "SECURITY DEFINER " if self.security_definer else ""
        # A pinned search_path, pg_temp last: callers cannot shadow our tables or functions.
        return (
            f"CREATE OR REPLACE FUNCTION {self.name}({self.parameters}) RETURNS {self.returns} "
            f"LANGUAGE plpgsql {security}SET search_path = {schema}, pg_temp AS $${self.body}$$"
        )


def _facts_row_text() -> str:
    """A fact row's columns rendered the same in every session, for ``ROW(...)::text``.

    Times, dates and floats are rendered from their binary forms: their text output depends on the
    session's TimeZone, DateStyle and extra_float_digits, and rounding would hide a tiny change.
    ``ROW(...)::text`` quotes texts, so no two different rows render alike (NULL renders as nothing,
    an empty text as ``""``).
    """
    rendered = []
    for column in facts.columns:
        if isinstance(column.type, sa.DateTime):
            rendered.append(f"encode(timestamptz_send({column.name}), 'hex')")
        elif isinstance(column.type, sa.Date):
            rendered.append(f"({column.name} - DATE '2000-01-01')")
        elif isinstance(column.type, sa.Float):
            rendered.append(f"encode(float8send({column.name}), 'hex')")
        else:  # texts and integers: their output does not depend on the session
            rendered.append(column.name)
    return ", ".join(rendered)


def facts_digest_query() -> sa.TextClause:
    """``FACTS_DIGEST_FUNCTION``'s count and digest of the day ``:day``, as a plain query the client sends.

    The reconcile check sends this instead of calling the function: PL/pgSQL runs its ``SELECT INTO``
    without parallel workers, while this query lets PostgreSQL hash the day's rows in parallel (about
    half the time on two cores). md5 is a LATERAL function scan, so it runs once per row (an inlined
    subquery would run it once per use of ``h``). The same rows give the function's very digest.
    """
    return sa.text(
        f"SELECT count(*) AS row_count, format('{DIGEST_VERSION}:%s:%s',"
        " coalesce(sum(('x' || left(h, 16))::bit(64)::bigint), 0),"
        " coalesce(sum(('x' || right(h, 16))::bit(64)::bigint), 0)) AS digest"
        f" FROM {FACT_TABLE} CROSS JOIN LATERAL md5(ROW({_facts_row_text()})::text) AS h"
        " WHERE partition_date = :day"
    )


# record_out quotes a field that is empty or holds one of these bytes (isspace in a UTF-8 or C locale).
_RECORD_QUOTED_BYTES = np.zeros(256, dtype=bool)
_RECORD_QUOTED_BYTES[list(b'"\\(),\t\n\x0b\f\r ')] = True


class FactsDigest:
    """``FACTS_DIGEST_FUNCTION``'s digest of fact rows, computed from their binary COPY fields as sent.

    The commit writes this into the audit row instead of asking the database to re-hash the day it
    just wrote (~3 s per 1M rows there; here the rows are rendered by Arrow and hashed while the
    server ingests the COPY). Each row is rendered as ``ROW(_facts_row_text())::text`` renders it
    in a UTF-8 database, so the reconcile check, which recomputes the digest by SQL from the stored
    rows, finds the same value unless a stored value differs from the one sent.
    """

    def __init__(self) -> None:
        self.rows = 0
        self._sums = [0, 0]

    def add(self, names: list[str], fields: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Hash one slice of rows: ``names`` are its columns, ``fields`` their (sizes, payload) as COPY sends them."""
        by_name = dict(zip(names, fields, strict=True))
        rendered = [_rendered_field(column.type, *by_name[column.name]) for column in facts.columns]
        comma, empty = _text(","), _text("")
        rows = pc.binary_join_element_wise(*rendered, comma, null_handling="replace", null_replacement="")
        rows = pc.binary_join_element_wise(_text("("), rows, _text(")"), empty).cast(pa.large_binary())
        md5 = hashlib.md5
        halves = np.frombuffer(b"".join([md5(row).digest() for row in rows.to_pylist()]), dtype=">i8")
        for index in (0, 1):  # exact sums, as PostgreSQL's numeric sum of the signed 64-bit halves
            half = halves[index::2].astype(np.int64)
            self._sums[index] += int((half >> 32).sum()) * 2**32 + int((half & 0xFFFFFFFF).sum())
        self.rows += len(rows)

    def hexdigest(self) -> str:
        """The digest as ``FACTS_DIGEST_FUNCTION`` formats it."""
        return f"{DIGEST_VERSION}:{self._sums[0]}:{self._sums[1]}"


def _rendered_field(column_type: sa.types.TypeEngine, sizes: np.ndarray, payload: np.ndarray) -> pa.Array:
    """One column's values as ``_facts_row_text`` renders them inside ``ROW(...)::text`` (null for NULL)."""
    present = sizes >= 0
    if isinstance(column_type, sa.DateTime | sa.Float):  # encode(..._send(x), 'hex'): the 8 bytes sent, in hex
        return _arrow_texts(np.where(present, 16, -1), np.frombuffer(payload.tobytes().hex().encode(), np.uint8))
    if isinstance(column_type, sa.Date | sa.Integer):  # days since 2000-01-01, and integers: in decimal
        width = 8 if isinstance(column_type, sa.BigInteger) else 4
        values = np.zeros(len(sizes), dtype=np.int64)
        values[present] = payload.view(f">i{width}")
        return pc.cast(pa.array(values, mask=~present), pa.large_string())
    return _as_record_field(_arrow_texts(sizes, payload), sizes, payload)


def _as_record_field(texts: pa.Array, sizes: np.ndarray, payload: np.ndarray) -> pa.Array:
    """Texts quoted as record_out quotes them; the rows that need it are found on the bytes (a regex cost more)."""
    needs = sizes == 0
    # Every byte record_out quotes is below '-' or is a backslash: two comparisons find the few
    # candidates (a table lookup and a per-row sum over every byte cost twice as much).
    candidates = np.flatnonzero((payload < ord("-")) | (payload == ord("\\")))
    quoted_at = candidates[_RECORD_QUOTED_BYTES[payload[candidates]]]
    if len(quoted_at):
        needs[np.searchsorted(np.cumsum(np.maximum(sizes, 0)), quoted_at, side="right")] = True
    if not needs.any():
        return texts
    escapes = (payload == ord('"')) | (payload == ord("\\"))
    escaped = pc.replace_substring_regex(texts, r'(["\\])', r"\1\1") if escapes.any() else texts
    quoted = pc.binary_join_element_wise(_text('"'), escaped, _text('"'), _text(""))
    return quoted if needs.all() else pc.if_else(pa.array(needs), quoted, texts)


def _text(value: str) -> pa.Scalar:
    return pa.scalar(value, pa.large_string())  # Arrow joins arrays and scalars of one string type only


def _arrow_texts(sizes: np.ndarray, payload: np.ndarray) -> pa.Array:
    """A string array over back-to-back UTF-8 bytes, without copying them (size -1 is NULL)."""
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(np.maximum(sizes, 0), out=offsets[1:])
    buffers = [pa.py_buffer(np.packbits(sizes >= 0, bitorder="little")), pa.py_buffer(offsets), pa.py_buffer(payload)]
    return pa.Array.from_buffers(pa.large_string(), len(sizes), buffers)


def _pg_functions() -> dict[str, _PgFunction]:
    protected = ", ".join(f"'{name}'" for name in PROTECTED_TABLES)
    functions = [
        # Statement-level: UPDATE of any protected table and DELETE from the audit trail are refused
        # before a row is touched, with one call per statement instead of one per row.
        _PgFunction(
            "dpa_refuse_row_change",
            "",
            "",
            "trigger",
            f"""
BEGIN
  RAISE EXCEPTION '{_REFUSAL_FORMAT}', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
""",
        ),
        # A day's facts or rejects are removed only inside the replace functions: their setting
        # names the day AND they run as the table owner (a role that forges the setting is not the
        # owner). Checked once per DELETE statement over its transition table, after it ran: an
        # error here undoes the whole statement. Each day removed is then queued for the audit check.
        _PgFunction(
            "dpa_check_partition_delete",
            "",
            "",
            "trigger",
            f"""
BEGIN
  IF current_user IS DISTINCT FROM (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = TG_RELID)
     OR EXISTS (SELECT 1 FROM removed
                WHERE partition_date::text IS DISTINCT FROM current_setting('{PG_PERMIT_SETTING}', true)) THEN
    RAISE EXCEPTION '{_REFUSAL_FORMAT}', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
  END IF;
  INSERT INTO {PENDING_REPLACE_TABLE} (table_name, partition_date, statuses)
  SELECT DISTINCT TG_TABLE_NAME, partition_date, TG_ARGV FROM removed;
  RETURN NULL;
END
""",
        ),
        # Deferred to commit, once per day removed: a day removed without an audit row written in
        # the same transaction (xmin = this transaction) is refused, so calling a replace function
        # alone erases nothing. The queue row is then dropped: it never outlives its transaction.
        # SECURITY DEFINER: at commit it runs as the pipeline role, which has no right on the queue.
        _PgFunction(
            "dpa_require_replace_audit",
            "",
            "",
            "trigger",
            f"""
BEGIN
  IF NOT EXISTS (SELECT 1 FROM {AUDIT_TABLE} a WHERE a.partition_date = NEW.partition_date
                 AND a.status = ANY (NEW.statuses) AND a.xmin = pg_current_xact_id()::xid) THEN
    RAISE EXCEPTION 'partition % of % may be replaced only together with its audit row',
      NEW.partition_date, NEW.table_name USING ERRCODE = 'insufficient_privilege';
  END IF;
  DELETE FROM {PENDING_REPLACE_TABLE} WHERE ctid = NEW.ctid;
  RETURN NULL;
END
""",
            security_definer=True,
        ),
        _PgFunction(
            "dpa_refuse_truncate",
            "",
            "",
            "trigger",
            """
BEGIN
  RAISE EXCEPTION '% is protected against TRUNCATE', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END
""",
        ),
        _PgFunction(
            "dpa_refuse_drop",
            "",
            "",
            "event_trigger",
            f"""
DECLARE dropped record;
BEGIN
  FOR dropped IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
    IF dropped.object_type = 'table' AND dropped.object_name IN ({protected})
       AND dropped.schema_name = current_schema()
       AND current_setting('{PG_DROP_SETTING}', true) IS DISTINCT FROM 'yes' THEN
      RAISE EXCEPTION 'table % is protected against DROP', dropped.object_identity
        USING ERRCODE = 'insufficient_privilege';
    END IF;
  END LOOP;
END
""",
        ),
        _PgFunction(
            "dpa_replace_partition",
            "target_day date, OUT removed_facts bigint, OUT removed_rejects bigint",
            "date",
            "record",
            f"""
BEGIN
  PERFORM {_PG_DAY_LOCK};
  PERFORM set_config('{PG_PERMIT_SETTING}', target_day::text, true);
  DELETE FROM {FACT_TABLE} WHERE partition_date = target_day;
  GET DIAGNOSTICS removed_facts = ROW_COUNT;
  DELETE FROM {REJECT_TABLE} WHERE partition_date = target_day;
  GET DIAGNOSTICS removed_rejects = ROW_COUNT;
  PERFORM set_config('{PG_PERMIT_SETTING}', '', true);
END
""",
            security_definer=True,
        ),
        _PgFunction(
            "dpa_replace_rejects",
            "target_day date, keep_validation_run_id text",
            "date, text",
            "bigint",
            f"""
DECLARE removed bigint;
BEGIN
  PERFORM {_PG_DAY_LOCK};
  PERFORM set_config('{PG_PERMIT_SETTING}', target_day::text, true);
  DELETE FROM {REJECT_TABLE} WHERE partition_date = target_day
    AND (keep_validation_run_id IS NULL OR validation_run_id <> keep_validation_run_id);
  GET DIAGNOSTICS removed = ROW_COUNT;
  PERFORM set_config('{PG_PERMIT_SETTING}', '', true);
  RETURN removed;
END
""",
            security_definer=True,
        ),
        _PgFunction(
            FACTS_DIGEST_FUNCTION,
            "target_day date, OUT row_count bigint, OUT digest text",
            "date",
            "record",
            f"""
BEGIN
  -- OFFSET 0 keeps the subquery whole: inlined, md5 would run once per use of h.
  SELECT count(*), format('{DIGEST_VERSION}:%s:%s', coalesce(sum(('x' || left(h, 16))::bit(64)::bigint), 0),
                          coalesce(sum(('x' || right(h, 16))::bit(64)::bigint), 0))
    INTO row_count, digest
    FROM (SELECT md5(ROW({_facts_row_text()})::text) AS h
          FROM {FACT_TABLE} WHERE partition_date = target_day OFFSET 0) AS hashed;
END
""",
        ),
        _PgFunction(
            "dpa_break_glass",
            "target_day date, who text, why text, OUT removed_facts bigint, OUT removed_rejects bigint",
            "date, text, text",
            "record",
            f"""
BEGIN
  IF coalesce(btrim(who), '') = '' OR length(btrim(coalesce(why, ''))) < 10 THEN
    RAISE EXCEPTION 'break-glass needs the actor''s name and a reason of at least 10 characters'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT * INTO removed_facts, removed_rejects FROM dpa_replace_partition(target_day);
  INSERT INTO {AUDIT_TABLE} (partition_date, run_id, status, rows_loaded, started_at, finished_at, actor, detail)
  VALUES (target_day, 'break-glass', 'break_glass', 0, now(), clock_timestamp(), btrim(who),
          format('%s (removed %s facts, %s rejects; database user %s)',
                 btrim(why), removed_facts, removed_rejects, session_user));
END
""",
            security_definer=True,
        ),
    ]
    return {function.name: function for function in functions}


PG_FUNCTIONS = _pg_functions()
REPLACE_FUNCTIONS = ("dpa_replace_partition", "dpa_replace_rejects")
PIPELINE_FUNCTIONS = (*REPLACE_FUNCTIONS, FACTS_DIGEST_FUNCTION)  # the pipeline role may EXECUTE these
BREAK_GLASS_FUNCTION = "dpa_break_glass"
# (trigger, table, timing and level, function, arguments). One call per statement, not per row:
# replacing a day of 200k rows fired 400k trigger calls (about 1.5 s per 100k rows).
_AUDIT_STATUSES = {
    FACT_TABLE: "'loaded', 'break_glass'",
    REJECT_TABLE: "'loaded', 'validated', 'blocked', 'break_glass'",
}
_ROW_TRIGGERS = [
    (
        f"{t}_refuse_change",
        t,
        f"BEFORE UPDATE{'' if t in PARTITIONED_TABLES else ' OR DELETE'} ON {t} FOR EACH STATEMENT",
        "dpa_refuse_row_change",
        "",
    )
    for t in PROTECTED_TABLES
] + [
    (
        f"{t}_check_delete",
        t,
        f"AFTER DELETE ON {t} REFERENCING OLD TABLE AS removed FOR EACH STATEMENT",
        "dpa_check_partition_delete",
        statuses,
    )
    for t, statuses in _AUDIT_STATUSES.items()
]
_TRUNCATE_TRIGGERS = [
    (f"{t}_refuse_truncate", t, f"BEFORE TRUNCATE ON {t} FOR EACH STATEMENT", "dpa_refuse_truncate", "")
    for t in PROTECTED_TABLES
]
_AUDIT_TRIGGER = ("replace_needs_audit", PENDING_REPLACE_TABLE, "dpa_require_replace_audit")
# Per-row triggers of earlier versions, dropped when setup installs the statement-level ones.
_OUTDATED_TRIGGERS = [(f"{t}_refuse_row_change", t) for t in PROTECTED_TABLES] + [
    (f"{t}_replace_needs_audit", t) for t in PARTITIONED_TABLES
]
FORBIDDEN_TABLE_PRIVILEGES = ("DELETE", "UPDATE", "TRUNCATE", "TRIGGER", "REFERENCES")


def _pg_install_statements(schema: str, owner: str, pipeline_exists: bool) -> list[str]:
    statements = [
        f"CREATE TABLE IF NOT EXISTS {PENDING_REPLACE_TABLE} "
        "(table_name text NOT NULL, partition_date date NOT NULL, statuses text[] NOT NULL)",
        f"ALTER TABLE {PENDING_REPLACE_TABLE} OWNER TO {owner}",
        f"REVOKE ALL ON {PENDING_REPLACE_TABLE} FROM PUBLIC",
        *(function.ddl(schema) for function in PG_FUNCTIONS.values()),
    ]
    for trigger, table in _OUTDATED_TRIGGERS:
        statements.append(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    for trigger, table, timing, function, arguments in (*_ROW_TRIGGERS, *_TRUNCATE_TRIGGERS):
        statements.append(f"CREATE OR REPLACE TRIGGER {trigger} {timing} EXECUTE FUNCTION {function}({arguments})")
        statements.append(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
    trigger, table, function = _AUDIT_TRIGGER
    # Constraint triggers (the only ones that can wait for commit) are per row and have no OR REPLACE;
    # the queue holds one row per day removed, so this fires once or twice per replace.
    statements.append(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    statements.append(
        f"CREATE CONSTRAINT TRIGGER {trigger} AFTER INSERT ON {table} "
        f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {function}()"
    )
    statements.append(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
    for function in PG_FUNCTIONS.values():
        # Owned by the table owner even when a superuser runs setup: the row trigger lets
        # deletes through only for the owner, and SECURITY DEFINER runs as the function's owner.
        statements.append(f"ALTER FUNCTION {function.signature} OWNER TO {owner}")
        statements.append(f"REVOKE ALL ON FUNCTION {function.signature} FROM PUBLIC")
    if pipeline_exists:
        tables = ", ".join(PROTECTED_TABLES)
        statements.append(f"REVOKE {', '.join(FORBIDDEN_TABLE_PRIVILEGES)} ON {tables} FROM {PIPELINE_ROLE}")
        statements.append(f"REVOKE ALL ON FUNCTION {PG_FUNCTIONS[BREAK_GLASS_FUNCTION].signature} FROM {PIPELINE_ROLE}")
        for name in PIPELINE_FUNCTIONS:
            statements.append(f"GRANT EXECUTE ON FUNCTION {PG_FUNCTIONS[name].signature} TO {PIPELINE_ROLE}")
    return statements


def _function_problem(connection: Connection, function: _PgFunction, owner: str | None) -> str | None:
    found = (
        connection.execute(
            sa.text(
                "SELECT p.prosrc, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner) AS owner, "
                "p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a "
                "WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public_execute "
                "FROM pg_proc p WHERE p.oid = to_regprocedure(:signature)"
            ),
            {"signature": function.signature},
        )
        .mappings()
        .first()
    )
    if found is None:
        return f"{function.name}: not created"
    pinned = any(
        setting.startswith("search_path=") and setting.endswith("pg_temp") for setting in found["proconfig"] or []
    )
    if found["prosrc"] != function.body or found["prosecdef"] != function.security_definer or not pinned:
        return f"{function.name}: outdated definition"
    if owner is not None and found["owner"] != owner:
        return f"{function.name}: owned by {found['owner']}, not the table owner {owner}"
    if found["public_execute"]:
        return f"{function.name}: EXECUTE granted to PUBLIC"
    return None


def _trigger_problems(connection: Connection, triggers: list[tuple[str, str, str]]) -> list[str]:
    """Each (trigger, table, function) must exist, call that function, and be enabled."""
    found = {
        row.tgname: row
        for row in connection.exec_driver_sql(
            "SELECT t.tgname, t.tgenabled, t.tgfoid::regproc::text AS function FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal "
            "AND c.relnamespace = current_schema()::regnamespace"
        )
    }
    problems = []
    for trigger, table, function in triggers:
        row = found.get(trigger)
        if row is None or row.function != function:
            problems.append(f"{trigger}: not created")
        elif row.tgenabled == "D":
            problems.append(f"{trigger}: disabled on {table}")
    return problems


def _piece(name: str, problems: list[str | None], installed_detail: str, installer: str) -> ProtectionPiece:
    problems = [problem for problem in problems if problem]
    return ProtectionPiece(name, MISSING if problems else INSTALLED, "; ".join(problems) or installed_detail, installer)


def _pipeline_role_piece(connection: Connection, owner: str | None) -> ProtectionPiece:
    role = connection.execute(
        sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = :role"), {"role": PIPELINE_ROLE}
    ).first()
    name = f"{PIPELINE_ROLE} privileges"
    if role is None:
        return ProtectionPiece(name, NOT_APPLICABLE, f"no {PIPELINE_ROLE} role (create it with least_privilege.sql)")
    if role.rolsuper:
        return ProtectionPiece(name, MISSING, f"{PIPELINE_ROLE} is a superuser: it can disable any protection")
    if owner is None:
        return ProtectionPiece(name, MISSING, "tables not created")
    if connection.execute(
        sa.text("SELECT pg_has_role(:role, :owner, 'MEMBER')"), {"role": PIPELINE_ROLE, "owner": owner}
    ).scalar():
        return ProtectionPiece(name, MISSING, f"{PIPELINE_ROLE} is a member of the owner role {owner}")
    problems = []
    for table in PROTECTED_TABLES:
        held = [
            privilege
            for privilege in FORBIDDEN_TABLE_PRIVILEGES
            if connection.execute(
                sa.text("SELECT has_table_privilege(:role, :table, :privilege)"),
                {"role": PIPELINE_ROLE, "table": table, "privilege": privilege},
            ).scalar()
        ]
        if held:
            problems.append(f"holds {', '.join(held)} on {table}")
    expected_execute = [(name, True) for name in PIPELINE_FUNCTIONS] + [(BREAK_GLASS_FUNCTION, False)]
    for function_name, wanted in expected_execute:
        signature = PG_FUNCTIONS[function_name].signature
        granted = connection.execute(
            sa.text(
                "SELECT CASE WHEN to_regprocedure(:signature) IS NULL THEN NULL "
                "ELSE has_function_privilege(:role, to_regprocedure(:signature), 'EXECUTE') END"
            ),
            {"role": PIPELINE_ROLE, "signature": signature},
        ).scalar()
        if granted is not None and granted != wanted:
            problems.append(f"{'lacks' if wanted else 'holds'} EXECUTE on {function_name}")
    detail = "INSERT and SELECT, EXECUTE on the replace functions; no DELETE, UPDATE, TRUNCATE"
    return _piece(name, problems, detail, OWNER)


def _pg_status(connection: Connection) -> list[ProtectionPiece]:
    owner = connection.execute(
        sa.text("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass(:table)"), {"table": FACT_TABLE}
    ).scalar()
    is_superuser = connection.exec_driver_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar()

    def functions(*names: str) -> list[str | None]:
        return [_function_problem(connection, PG_FUNCTIONS[name], owner) for name in names]

    def triggers(specs: list[tuple]) -> list[str]:
        return _trigger_problems(connection, [(trigger, table, function) for trigger, table, _, function, _ in specs])

    event = connection.exec_driver_sql(
        "SELECT evtenabled, evtfoid::regproc::text AS function FROM pg_event_trigger WHERE evtname = 'dpa_refuse_drop'"
    ).first()
    drop_problems = functions("dpa_refuse_drop")
    if event is None or event.function != "dpa_refuse_drop":
        drop_problems.append("not created" + ("" if is_superuser else ": needs a superuser"))
    elif event.evtenabled == "D":
        drop_problems.append("disabled" + ("" if is_superuser else ": needs a superuser"))
    tables = ", ".join(PROTECTED_TABLES)
    return [
        _piece(
            "row triggers",
            [*functions("dpa_refuse_row_change", "dpa_check_partition_delete"), *triggers(_ROW_TRIGGERS)],
            tables,
            OWNER,
        ),
        _piece("TRUNCATE triggers", [*functions("dpa_refuse_truncate"), *triggers(_TRUNCATE_TRIGGERS)], tables, OWNER),
        _piece("DROP event trigger", drop_problems, "dpa_refuse_drop", SUPERUSER),
        _piece(
            "replace functions",
            [
                *functions(*REPLACE_FUNCTIONS, "dpa_require_replace_audit"),
                *_trigger_problems(connection, [_AUDIT_TRIGGER]),
            ],
            "replace a day only with its audit row, as the owner",
            OWNER,
        ),
        _piece("break-glass function", functions(BREAK_GLASS_FUNCTION), "owner only; audits the database user", OWNER),
        _piece(
            "warehouse digest",
            [*functions(FACTS_DIGEST_FUNCTION), _digest_column_problem(connection)],
            f"{FACTS_DIGEST_FUNCTION} and {AUDIT_TABLE}.{DIGEST_COLUMN}",
            OWNER,
        ),
        _pipeline_role_piece(connection, owner),
    ]


def _pg_roles(connection: Connection) -> tuple[str, bool, bool]:
    """(table owner, may act as the owner, is superuser) for the current user."""
    row = connection.execute(
        sa.text(
            "SELECT pg_get_userbyid(c.relowner) AS owner, pg_has_role(c.relowner, 'MEMBER') AS acts_as_owner, "
            "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser "
            "FROM pg_class c WHERE c.oid = to_regclass(:table)"
        ),
        {"table": FACT_TABLE},
    ).first()
    return row.owner, row.acts_as_owner, row.superuser


def _pg_install(connection: Connection) -> None:
    owner, _, is_superuser = _pg_roles(connection)
    preparer = connection.dialect.identifier_preparer
    schema = preparer.quote(connection.exec_driver_sql("SELECT current_schema()").scalar())
    pipeline_exists = connection.execute(
        sa.text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": PIPELINE_ROLE}
    ).first()
    for statement in _pg_install_statements(schema, preparer.quote(owner), pipeline_exists is not None):
        _execute_ddl(connection, statement)
    if is_superuser:
        _execute_ddl(connection, "DROP EVENT TRIGGER IF EXISTS dpa_refuse_drop")
        _execute_ddl(connection, "CREATE EVENT TRIGGER dpa_refuse_drop ON sql_drop EXECUTE FUNCTION dpa_refuse_drop()")


def _execute_ddl(connection: Connection, statement: str) -> None:
    # Straight to the DB-API cursor without parameters, so the '%' of PL/pgSQL's RAISE format
    # strings is not read as a parameter marker.
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


# --- Both databases -----------------------------------------------------------------------------


def _digest_column_problem(connection: Connection) -> str | None:
    inspector = sa.inspect(connection)
    if AUDIT_TABLE not in inspector.get_table_names():
        return f"{AUDIT_TABLE}: not created"
    columns = {column["name"] for column in inspector.get_columns(AUDIT_TABLE)}
    return None if DIGEST_COLUMN in columns else f"{AUDIT_TABLE}.{DIGEST_COLUMN}: not created"


def _add_digest_column(connection: Connection) -> None:
    """Warehouses set up before the digest get its audit column; their old audit rows keep NULL."""
    if _digest_column_problem(connection) is not None:
        column_type = audit.c[DIGEST_COLUMN].type.compile(dialect=connection.dialect)
        _execute_ddl(connection, f"ALTER TABLE {AUDIT_TABLE} ADD COLUMN {DIGEST_COLUMN} {column_type}")


def _status(connection: Connection) -> list[ProtectionPiece]:
    return _sqlite_status(connection) if connection.dialect.name == "sqlite" else _pg_status(connection)


def protection_status(engine: Engine) -> list[ProtectionPiece]:
    """Each piece of the erasure protection, installed or missing and why; reads only.

    Args:
        engine: the warehouse engine.

    Returns:
        The pieces, in a fixed order per database.
    """
    with engine.connect() as connection:
        return _status(connection)


def _installers(connection: Connection) -> set[str]:
    """Whose pieces the current user may install."""
    if connection.dialect.name == "sqlite":
        return {OWNER}
    _, acts_as_owner, is_superuser = _pg_roles(connection)
    return ({OWNER} if acts_as_owner else set()) | ({SUPERUSER} if is_superuser else set())


def ensure_schema(engine: Engine) -> list[ProtectionPiece]:
    """Create missing tables and install missing protection; refuse to go on if a protected table was dropped.

    When everything is in place no DDL runs, so a least-privilege pipeline role that owns
    nothing (see ``sql/least_privilege.sql``) can call this on every start. A piece this role
    cannot install is logged; the pieces only the owner installs raise ``ProtectionIncomplete``.

    Args:
        engine: the warehouse engine.

    Returns:
        The protection pieces after setup.
    """
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        if not is_sqlite(engine):
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SETUP_LOCK_KEY})")
        existing = set(sa.inspect(connection).get_table_names())
        survivors = sorted(existing & set(PROTECTED_TABLES))
        if SCHEMA_MARKER_TABLE not in existing and survivors:
            # Set up before, then the marker (and maybe tables) removed: recreating would hide a loss.
            raise ProtectedTableMissing(
                f"the warehouse was set up before ({', '.join(survivors)} exist) but {SCHEMA_MARKER_TABLE} "
                "is gone; restore the warehouse from backup (README: 'Restoring a dropped table') before loading again"
            )
        if SCHEMA_MARKER_TABLE in existing:
            missing = [name for name in PROTECTED_TABLES if name not in existing]
            if missing:
                raise ProtectedTableMissing(
                    f"protected warehouse tables {missing} were dropped after setup; restore them "
                    "from backup (README: 'Restoring a dropped table') before loading again"
                )
        else:
            metadata.create_all(connection)
            connection.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {SCHEMA_MARKER_TABLE} (created_at TEXT)")
        pieces = _status(connection)
        installers = _installers(connection)
        if any(piece.state == MISSING and piece.installer in installers for piece in pieces):
            _add_digest_column(connection)
            if is_sqlite(engine):
                for statement in _sqlite_statements():
                    _execute_ddl(connection, statement)
            else:
                _pg_install(connection)
            pieces = _status(connection)
    _report(pieces)
    return pieces


# Without these the pipeline must not load; the others (DROP guard, role privileges) are reported.
_NEEDED_TO_LOAD = {
    "row triggers",
    "permit table",
    "TRUNCATE triggers",
    "replace functions",
    "break-glass function",
    "warehouse digest",
}


def _report(pieces: list[ProtectionPiece]) -> None:
    missing = [piece for piece in pieces if piece.state == MISSING]
    for piece in missing:
        logger.warning("warehouse protection: %s missing (%s)", piece.name, piece.detail)
    owner_pieces = [piece for piece in missing if piece.name in _NEEDED_TO_LOAD]
    if owner_pieces:
        names = "; ".join(f"{piece.name}: {piece.detail}" for piece in owner_pieces)
        raise ProtectionIncomplete(
            f"warehouse protection missing or outdated ({names}); run `dpa setup-warehouse` as the warehouse owner"
        )


def _sqlite_delete_with_permit(connection: Connection, partition_date: date, statement: sa.Delete) -> int:
    grant_partition_permit(connection, partition_date)
    removed = connection.execute(statement).rowcount
    revoke_partition_permit(connection)
    return removed


def remove_partition(connection: Connection, partition_date: date) -> tuple[int, int]:
    """Remove one day's facts and rejects inside the caller's transaction, to replace them.

    On PostgreSQL the transaction must also write the day's ``loaded`` (or ``break_glass``)
    audit row before it commits, or the commit is refused.

    Args:
        connection: a connection with an open write transaction.
        partition_date: the day.

    Returns:
        (facts removed, rejects removed).
    """
    if connection.dialect.name == "sqlite":
        return (
            _sqlite_delete_with_permit(
                connection, partition_date, sa.delete(facts).where(facts.c.partition_date == partition_date)
            ),
            _sqlite_delete_with_permit(
                connection, partition_date, sa.delete(rejects).where(rejects.c.partition_date == partition_date)
            ),
        )
    row = connection.execute(sa.text("SELECT * FROM dpa_replace_partition(:day)"), {"day": partition_date}).one()
    return row.removed_facts, row.removed_rejects


def remove_rejects(connection: Connection, partition_date: date, keep_validation_run_id: str | None) -> int:
    """Remove one day's rejects except those of one validation, inside the caller's transaction.

    Args:
        connection: a connection with an open write transaction (which writes the day's audit row).
        partition_date: the day.
        keep_validation_run_id: the validation whose rejects stay, or None to remove all.

    Returns:
        How many rejects were removed.
    """
    if connection.dialect.name == "sqlite":
        statement = sa.delete(rejects).where(rejects.c.partition_date == partition_date)
        if keep_validation_run_id is not None:
            statement = statement.where(rejects.c.validation_run_id != keep_validation_run_id)
        return _sqlite_delete_with_permit(connection, partition_date, statement)
    return connection.execute(
        sa.text("SELECT dpa_replace_rejects(:day, :keep)"), {"day": partition_date, "keep": keep_validation_run_id}
    ).scalar_one()


def pg_break_glass(connection: Connection, partition_date: date, actor: str, reason: str) -> dict[str, int]:
    """Empty one day through the owner-only function, which writes the audit row with the database user."""
    row = connection.execute(
        sa.text("SELECT * FROM dpa_break_glass(:day, :actor, :reason)"),
        {"day": partition_date, "actor": actor, "reason": reason},
    ).one()
    return {"facts": row.removed_facts, "rejects": row.removed_rejects}


def grant_partition_permit(connection: Connection, partition_date: date) -> None:
    """SQLite: allow this transaction, and only it, to delete one partition of the partitioned tables."""
    if connection.dialect.name != "sqlite":
        raise RuntimeError("on PostgreSQL a day is replaced only through dpa_replace_partition")
    connection.execute(
        sa.text(f"INSERT INTO {PERMIT_TABLE} (table_name, partition_date) VALUES (:t, :d)"),
        [{"t": table, "d": partition_date.isoformat()} for table in PARTITIONED_TABLES],
    )


def revoke_partition_permit(connection: Connection) -> None:
    """SQLite: remove the permit before commit."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"DELETE FROM {PERMIT_TABLE}")
