"""The SQLite reconcile's fast re-hash: raw cursor columns turned into the checksum's texts, no frame.

``facts_checksum`` hashes each fact row as its values' canonical texts joined by ``\\x1f`` and
ended by ``\\x1e``. Read through SQLAlchemy rows and a pandas frame that cost ~12 s per million
rows; here the driver's values go straight into column lists: text is already its canonical
text, integers are written with ``str``, tonnage and times are rendered once per distinct value.
A value is accepted only in the exact form the commit stores (type checked, times rendered back
to the very same text); anything else makes this path give up, and the caller re-hashes the day
the general way, so the digest is always the one ``facts_checksum`` gives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date, datetime
from itertools import repeat
from operator import itemgetter, le
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpa_assets.transforms import FACT_COLUMNS
from dpa_assets.warehouse.tables import facts

FIELD, ROW_END = "\x1f", "\x1e"  # facts_checksum's separators
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
    """The column as read: a stored time with the ISO ``T`` already in place (NULL as empty text)."""
    if isinstance(facts.c[name].type, sa.DateTime):
        # A BLOB or number becomes NULL, which the join refuses: only stored text is taken.
        return f"CASE WHEN typeof({name}) = 'text' THEN replace({name}, ' ', 'T') WHEN {name} IS NULL THEN '' END"
    return name


def _slices(cursor: Any, slice_rows: int) -> Iterator[list[tuple]]:  # a sqlite3 cursor
    while rows := cursor.fetchmany(slice_rows):
        yield rows


def _hash_rows(slices: Iterator[list[tuple]], day_text: str) -> tuple[int, str]:
    digest, count, last = hashlib.sha256(), 0, None
    id_position = _READ.index("shipment_id")
    for rows in slices:
        columns = [list(map(itemgetter(position), rows)) for position in range(len(_READ))]
        _require_id_order(columns[id_position], last)
        last = columns[id_position][-1]
        texts = [
            repeat(day_text),
            *(_texts(facts.c[name], values) for name, values in zip(_READ, columns, strict=True)),
        ]
        try:
            block = ROW_END.join(map(FIELD.join, zip(*texts, strict=False))) + ROW_END  # repeat() never ends
        except TypeError as error:  # a text column holds NULL or a BLOB: not the commit's form
            raise _Unusual from error
        digest.update(block.encode("utf-8"))
        count += len(rows)
    return count, digest.hexdigest()


def _require_id_order(ids: list, last: object) -> None:
    """Shipment ids non-decreasing within the slice and from the previous one (code point order)."""
    try:
        if not all(map(le, ids[:-1], ids[1:])) or (last is not None and not le(last, ids[0])):
            raise _OutOfOrder
    except TypeError as error:  # an id that is not text
        raise _Unusual from error


def _texts(column: sa.Column, values: list) -> list:
    """A column's canonical texts (``transforms._canonical_texts`` for the commit's stored form)."""
    if isinstance(column.type, sa.DateTime):
        return _stamps(values)
    if isinstance(column.type, sa.Float):
        return _doubles(values)
    if isinstance(column.type, sa.Integer):
        if set(map(type, values)) != {int}:
            raise _Unusual
        return list(map(str, values))
    if isinstance(column.type, sa.String):
        return values  # joining raises TypeError if one is not text
    raise TypeError(f"{column.name}: no fast rendering for {column.type!r}")  # a new column type: add one


def _doubles(values: list) -> list[str]:
    """``repr(round(x, 6))`` of each stored double, rendered once per distinct bit pattern."""
    if set(map(type, values)) != {float}:
        raise _Unusual
    bits = np.array(values, dtype=np.float64).view(np.int64)  # bits: 0.0 and -0.0 stay apart
    distinct, where = np.unique(bits, return_inverse=True)
    rendered = [repr(round(value, 6)) for value in distinct.view(np.float64).tolist()]
    return np.asarray(rendered, dtype=object)[where].tolist()


def _stamps(values: list) -> list:
    """Times as read (``_selected``), refused unless each is a whole ISO 8601 UTC time with microseconds.

    Such a text is exactly its instant's canonical text, and the one it was read from (with ``T``
    or a space) reads as that same instant on the general path. Empty text is NULL (or stored
    empty), which the general path also hashes as empty. Each distinct value is checked once.
    """
    for value in set(values):
        if value != "" and not _is_canonical_stamp(value):
            raise _Unusual
    return values  # joining raises TypeError for a NULL: a value that was not text


def _is_canonical_stamp(value: object) -> bool:
    if type(value) is not str:
        return False
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return False
    # Naive (UTC), in the general path's year range, and rendered back to the very same text.
    return stamp.tzinfo is None and stamp.year in _STAMP_YEARS and stamp.isoformat("T", "microseconds") == value
