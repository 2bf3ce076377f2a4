"""The SQLite reconcile's fast re-hash: raw cursor rows turned into the checksum's texts, no frame.

``facts_checksum`` hashes each fact row as its values' canonical texts joined by ``\\x1f`` and
ended by ``\\x1e``. Read through SQLAlchemy rows and a pandas frame that cost ~12 s per million
rows; here each slice the driver returns goes straight into Arrow columns (in C), and Arrow joins
the rows in C as ``facts_checksum`` does: text is already its canonical text, integers are cast to
their digits, tonnages are rendered and times checked once per distinct value. A value is
accepted only in the exact form the commit stores (SQLite reads any other storage type as NULL,
which is refused; times are rendered back to the very same text); anything else makes this path
give up, and the caller re-hashes the day the general way, so the digest is always the one
``facts_checksum`` gives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpa_assets.transforms import FACT_COLUMNS, value_bytes
from dpa_assets.warehouse.tables import facts

FIELD, ROW_END = "\x1f", "\x1e"  # facts_checksum's separators
_TEXT = pa.large_string()  # offsets past 2 GiB: a slice's joined rows never overflow
_FIELD, _ROW_END, _NOTHING = (pa.scalar(text, _TEXT) for text in (FIELD, ROW_END, ""))
# Tried in turn: the commit inserts a day in shipment id order, so rowid order usually is that
# order and needs no sort; SQLite sorts by id otherwise. Rows are checked to come in id order.
READ_ORDERS = ("rowid", "shipment_id")
# Years whose timestamps the general path reads like any other (pandas' nanosecond range).
_STAMP_YEARS = range(1678, 2262)
# Read from the table; partition_date is not: the WHERE clause matches only the day's own text.
_READ = tuple(name for name in FACT_COLUMNS if name != "partition_date")


class _OutOfOrder(Exception):
    """The rows did not come in shipment id order: hash them in another order."""


class _Unusual(Exception):
    """A value is not in the form the commit stores: only the general path renders it exactly."""


def sqlite_day_checksum(connection: Connection, day: date, slice_rows: int) -> tuple[int, str] | None:
    """``facts_checksum`` of the day's stored facts, computed ``slice_rows`` rows at a time.

    Args:
        connection: a connection to the SQLite warehouse, in a transaction (one snapshot).
        day: the partition.
        slice_rows: rows held at once.

    Returns:
        (fact rows stored for the day, their checksum), or None when a stored value is not in the
        commit's form or no order came out sorted: the caller then re-hashes the general way.
    """
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        for order in READ_ORDERS:
            # Names come from our own table definition, never from data; the day is bound.
            selected = ", ".join(map(_selected, _READ))
            cursor.execute(
                f"SELECT {selected} FROM {facts.name} WHERE partition_date = ? ORDER BY {order}",
                (day.isoformat(),),  # the text SQLAlchemy's SQLite Date stores
            )
            try:
                return _hash_rows(_slices(cursor, slice_rows), day.isoformat())
            except _OutOfOrder:
                continue
            except _Unusual:
                return None
        return None
    finally:
        cursor.close()


def _selected(name: str) -> str:
    """The column as read: NULL unless stored with the commit's storage type (a time: text, ``T`` in place).

    Checked by SQLite rather than per value in Python: Arrow, given a type, takes 2 for 2.0 and a
    BLOB's bytes for text, so only NULL is left to refuse.
    """
    kind = facts.c[name].type
    if isinstance(kind, sa.DateTime):
        # NULL is read as empty text, as the general path hashes it.
        return f"CASE WHEN typeof({name}) = 'text' THEN replace({name}, ' ', 'T') WHEN {name} IS NULL THEN '' END"
    return f"CASE WHEN typeof({name}) = '{_STORAGE[_arrow_type(kind)]}' THEN {name} END"


def _arrow_type(kind: sa.types.TypeEngine) -> pa.DataType:
    if isinstance(kind, sa.Float):
        return pa.float64()
    if isinstance(kind, sa.Integer):
        return pa.int64()
    if isinstance(kind, (sa.String, sa.DateTime)):  # a time is read as text
        return _TEXT
    raise TypeError(f"no fast rendering for {kind!r}")  # a new column type: add one


_STORAGE = {pa.float64(): "real", pa.int64(): "integer", _TEXT: "text"}  # SQLite's typeof names
_ROW = pa.struct([(name, _arrow_type(facts.c[name].type)) for name in _READ])
# Distinct tonnages and times recur from slice to slice: each is rendered or checked once, up to
# this many remembered (then forgotten, to bound memory on a day of all different values).
_REMEMBERED = 200_000


def _slices(cursor: Any, slice_rows: int) -> Iterator[list[tuple]]:  # a sqlite3 cursor
    while rows := cursor.fetchmany(slice_rows):
        yield rows


def _hash_rows(slices: Iterator[list[tuple]], day_text: str) -> tuple[int, str]:
    digest, count, last = hashlib.sha256(), 0, None
    id_position = _READ.index("shipment_id")
    day = pa.scalar(day_text, _TEXT)
    doubles = _Tonnages()
    stamps: set[str] = set()  # times found canonical
    for rows in slices:
        columns = _columns(rows)
        last = _require_id_order(columns[id_position], last)
        texts = [_texts(facts.c[name], values, doubles, stamps) for name, values in zip(_READ, columns, strict=True)]
        texts[-1] = pc.binary_join_element_wise(texts[-1], _ROW_END, _NOTHING)
        digest.update(value_bytes(pc.binary_join_element_wise(day, *texts, _FIELD)))
        count += len(rows)
    return count, digest.hexdigest()


def _columns(rows: list[tuple]) -> list[pa.Array]:
    """The slice's columns as Arrow, converted in C straight from the row tuples; a NULL is refused."""
    try:
        columns = pa.array(rows, _ROW).flatten()
    except (pa.ArrowException, UnicodeEncodeError) as error:  # a lone surrogate: the commit never stores one
        raise _Unusual from error
    if any(column.null_count for column in columns):  # a value not stored with its column's type (_selected)
        raise _Unusual
    return columns


def _require_id_order(ids: pa.Array, last: str | None) -> str:
    """Shipment ids non-decreasing within the slice and from the previous one; returns the slice's last id.

    Arrow compares UTF-8 bytes, whose order is the code point order Python's ``str`` uses.
    """
    # ``all`` of no pairs (a one-row slice) is null, not true: such a slice is in order by itself.
    in_order = len(ids) < 2 or pc.all(pc.less_equal(ids[:-1], ids[1:])).as_py()
    if not in_order or (last is not None and last > ids[0].as_py()):
        raise _OutOfOrder
    return ids[-1].as_py()


def _texts(column: sa.Column, values: pa.Array, doubles: _Tonnages, stamps: set[str]) -> pa.Array:
    """A column's canonical texts (``transforms._canonical_texts`` for the commit's stored form)."""
    if isinstance(column.type, sa.DateTime):
        return _stamps(values, stamps)
    if isinstance(column.type, sa.Float):
        return doubles.texts_of(values)
    return values.cast(_TEXT)  # text as it is; Arrow writes an integer's digits as ``str`` does


class _Tonnages:
    """The canonical texts of the tonnages met so far, by bit pattern (0.0 and -0.0 stay apart).

    A day's tonnages repeat from slice to slice: each distinct one is rendered once, and every row
    finds its text by Arrow's hash lookup, no Python object per row.
    """

    def __init__(self) -> None:
        self.bits = pa.array([], pa.int64())
        self.texts = pa.array([], _TEXT)

    def texts_of(self, values: pa.Array) -> pa.Array:
        """``repr(round(x, 6))`` of each stored double."""
        bits = values.view(pa.int64())
        where = pc.index_in(bits, value_set=self.bits)
        if where.null_count:  # tonnages not met yet
            missing = bits.filter(pc.is_null(where))
            if len(self.bits) > _REMEMBERED:  # memory stays bounded on a day of all different tonnages
                self.bits, self.texts, missing = self.bits[:0], self.texts[:0], bits
            new = pc.unique(missing)
            rendered = [repr(round(value, 6)) for value in new.view(pa.float64()).to_pylist()]
            self.bits = pa.concat_arrays([self.bits, new])
            self.texts = pa.concat_arrays([self.texts, pa.array(rendered, _TEXT)])
            where = pc.index_in(bits, value_set=self.bits)
        return self.texts.take(where)


def _stamps(values: pa.Array, canonical: set[str]) -> pa.Array:
    """Times as read (``_selected``), refused unless each is a whole ISO 8601 UTC time with microseconds.

    Such a text is exactly its instant's canonical text, and the one it was read from (with ``T``
    or a space) reads as that same instant on the general path. Empty text is NULL (or stored
    empty), which the general path also hashes as empty. Each distinct value is checked once.
    """
    if len(canonical) > _REMEMBERED:
        canonical.clear()
    for value in set(pc.unique(values).to_pylist()) - canonical:
        if value != "" and not _is_canonical_stamp(value):
            raise _Unusual
        canonical.add(value)
    return values


def _is_canonical_stamp(value: str) -> bool:
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return False
    # Naive (UTC), in the general path's year range, and rendered back to the very same text.
    return stamp.tzinfo is None and stamp.year in _STAMP_YEARS and stamp.isoformat("T", "microseconds") == value
