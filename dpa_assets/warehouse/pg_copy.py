"""PostgreSQL binary COPY of a DataFrame, built column by column with numpy.

Binary COPY spares the server parsing text into dates, numbers and timestamps (half of a text
COPY's server time here), and building it from whole columns spares Python a loop over rows.
The buffer is produced in slices of rows while the server consumes the previous slice, so the
client's work and the server's overlap and memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import sqlalchemy as sa

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")  # signature, flags, extension
TRAILER = (-1).to_bytes(2, "big", signed=True)
NULL = -1  # a field length of -1 is SQL NULL
PG_EPOCH_US = np.datetime64("2000-01-01T00:00:00", "us")  # binary dates and timestamps count from here
PG_EPOCH_DAY = np.datetime64("2000-01-01", "D")
ROWS_PER_SLICE = 20_000  # a few MiB of buffer and index arrays at a time
SEND_BYTES = 1 << 20
SCATTER_BYTES = 1 << 20


Fields = list[tuple[np.ndarray, np.ndarray]]  # per column: (byte size per row or -1 for NULL, payload bytes)


def copy_frame(
    cursor: object, table: sa.Table, frame: pd.DataFrame, watch: Callable[[list[str], Fields], None] | None = None
) -> None:
    """COPY a frame's rows into a table through a DB-API (psycopg2) cursor, in its transaction.

    Args:
        cursor: a psycopg2 cursor of the connection holding the transaction.
        table: the target table; each frame column must be one of its columns.
        frame: the rows; NaN, NaT, None and pd.NA are NULL, timestamps are stored as UTC.
        watch: called with the column names and the binary fields of each slice of rows, as sent.
    """
    encoders = [_encoder(table.c[name].type) for name in frame.columns]
    statement = f"COPY {table.name} ({', '.join(frame.columns)}) FROM STDIN (FORMAT binary)"
    reader = _Reader(_slices(frame, encoders, watch))
    try:
        cursor.copy_expert(statement, reader, size=SEND_BYTES)
    except Exception:
        # psycopg2 turns an error raised while reading into a cancelled query: raise the cause.
        if reader.error is not None:
            raise reader.error from None
        raise


class _Reader:
    """A file-like ``read`` over a stream of byte buffers, as ``copy_expert`` consumes it."""

    def __init__(self, buffers: Iterator[bytes | memoryview]) -> None:
        self._buffers = buffers
        self._current = memoryview(b"")
        self.error: Exception | None = None

    def read(self, size: int = SEND_BYTES) -> bytes:
        try:
            return self._read(size)
        except Exception as error:
            self.error = error
            raise

    def _read(self, size: int) -> bytes:
        while not self._current:
            chunk = next(self._buffers, None)
            if chunk is None:
                return b""
            self._current = memoryview(chunk)
        out, self._current = self._current[:size], self._current[size:]
        return out.tobytes()


def _slices(
    frame: pd.DataFrame, encoders: list, watch: Callable[[list[str], Fields], None] | None
) -> Iterator[bytes | memoryview]:
    yield HEADER
    for start in range(0, len(frame), ROWS_PER_SLICE):
        part = frame.iloc[start : start + ROWS_PER_SLICE]
        fields = [encode(part[name]) for name, encode in zip(part.columns, encoders, strict=True)]
        if watch is not None:
            watch(list(part.columns), fields)
        yield _rows(fields, len(part)).data
    yield TRAILER


def _rows(fields: Fields, count: int) -> np.ndarray:
    """Lay out rows: field count, then per field its length and bytes (no bytes for NULL)."""
    row_bytes = 2 + sum(4 + np.maximum(sizes, 0) for sizes, _ in fields)
    starts = np.zeros(count, dtype=np.int64)
    np.cumsum(row_bytes[:-1], out=starts[1:])
    buffer = np.empty(int(row_bytes.sum()), dtype=np.uint8)
    _scatter_fixed(buffer, starts, np.full(count, len(fields), dtype=">i2"))
    position = starts + 2
    for sizes, payload in fields:
        _scatter_fixed(buffer, position, sizes.astype(">i4"))
        position += 4
        _scatter_variable(buffer, position, np.maximum(sizes, 0), payload)
        position += np.maximum(sizes, 0)
    return buffer


def _scatter_fixed(buffer: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    width = values.dtype.itemsize
    buffer[at[:, None] + np.arange(width)] = values.view(np.uint8).reshape(-1, width)


def _scatter_variable(buffer: np.ndarray, at: np.ndarray, sizes: np.ndarray, payload: np.ndarray) -> None:
    """Copy each row's bytes (``payload`` holds them back to back, in row order) to its place."""
    if not len(payload):
        return
    ends = np.cumsum(sizes)
    source_starts = ends - sizes
    shift = at - source_starts
    # About a MiB of payload at a time: a byte's position takes 8 bytes, twice over (a slice of
    # 20,000 rejects carries ~20 MiB of JSON: ~300 MiB of positions at once).
    first = 0
    while first < len(sizes):
        last = max(first + 1, int(np.searchsorted(ends, source_starts[first] + SCATTER_BYTES, side="right")))
        begin, end = int(source_starts[first]), int(ends[last - 1])
        buffer[np.repeat(shift[first:last], sizes[first:last]) + np.arange(begin, end)] = payload[begin:end]
        first = last


# --- One encoder per column type: a Series -> (byte size per row or -1 for NULL, payload bytes) ---


def _encoder(column_type: sa.types.TypeEngine):  # noqa: ANN202 - a function of the encoders below
    if isinstance(column_type, sa.DateTime):
        return _timestamps
    if isinstance(column_type, sa.Date):
        return _dates
    if isinstance(column_type, sa.BigInteger):
        return lambda values: _integers(values, ">i8")
    if isinstance(column_type, sa.Integer):
        return lambda values: _integers(values, ">i4")
    if isinstance(column_type, sa.Float):
        return _doubles
    if isinstance(column_type, sa.String):  # String, Text
        return _texts
    raise TypeError(f"no binary COPY encoder for {column_type!r}")


def _fixed(values: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.where(missing, NULL, values.dtype.itemsize).astype(np.int64)
    return sizes, values[~missing].view(np.uint8).ravel()


def _integers(values: pd.Series, kind: str) -> tuple[np.ndarray, np.ndarray]:
    missing = values.isna().to_numpy()
    numbers = (values.fillna(0) if missing.any() else values).to_numpy(dtype=np.int64)
    info = np.iinfo(kind)
    if len(numbers) and (numbers.min() < info.min or numbers.max() > info.max):
        raise ValueError(f"{values.name}: a value does not fit the column's {info.bits}-bit integer")
    return _fixed(numbers.astype(kind), missing)


def _doubles(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    doubles = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return _fixed(doubles.astype(">f8"), np.isnan(doubles))  # NaN is NULL, as the CSV path stored it


def _timestamps(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    stamps = pd.to_datetime(values).dt.round("us").to_numpy(dtype="datetime64[us]")
    missing = np.isnat(stamps)
    micros = (stamps - PG_EPOCH_US).astype(np.int64)
    return _fixed(micros.astype(">i8"), missing)


def _dates(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    codes, distinct = pd.factorize(values)  # a partition holds one day: convert each date once
    since = (np.array(list(distinct), dtype="datetime64[D]") - PG_EPOCH_DAY).astype(np.int64)
    missing = codes < 0
    days = np.where(missing, 0, since[np.where(missing, 0, codes)] if len(since) else 0)
    return _fixed(days.astype(">i4"), missing)


def _texts(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    missing = values.isna().to_numpy()
    present = values[~missing] if missing.any() else values
    texts = present.tolist()
    if not isinstance(values.dtype, pd.StringDtype) and not all(type(value) is str for value in texts):
        texts = [str(value) for value in texts]
    joined = "".join(texts)
    if joined.isascii():  # the usual case: one encode for the column, sizes from lengths
        payload, lengths = joined.encode("ascii"), np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    else:
        encoded = [text.encode("utf-8") for text in texts]
        payload, lengths = b"".join(encoded), np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    sizes = np.full(len(values), NULL, dtype=np.int64)
    sizes[~missing] = lengths
    return sizes, np.frombuffer(payload, dtype=np.uint8)
