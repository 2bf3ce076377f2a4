"""PostgreSQL binary COPY of a DataFrame, built column by column with numpy and Arrow.

Binary COPY spares the server parsing text into dates, numbers and timestamps (half of a text
COPY's server time here), and building it from whole columns spares Python a loop over rows.
Arrow-backed texts are sent from Arrow's own UTF-8 bytes and offsets, never as Python strings.
The buffer is produced in slices of rows while the server consumes the previous slice, so the
client's work and the server's overlap and memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")  # signature, flags, extension
TRAILER = (-1).to_bytes(2, "big", signed=True)
NULL = -1  # a field length of -1 is SQL NULL
PG_EPOCH_US = np.datetime64("2000-01-01T00:00:00", "us")  # binary dates and timestamps count from here
PG_EPOCH_DAY = np.datetime64("2000-01-01", "D")
ROWS_PER_SLICE = 20_000  # a few MiB of buffer at a time
SEND_BYTES = 1 << 20


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
        yield _rows(fields, len(part))
    yield TRAILER


def _rows(fields: Fields, count: int) -> memoryview:
    """Lay out rows: field count, then per field its length and bytes (no bytes for NULL).

    A run of fixed-width items (the field count, every length, and the values of a column whose
    values all have one width, texts included) is one numpy block of ``count`` rows; Arrow then
    joins the blocks and the variable-width columns row by row in C (a scatter of every byte by
    index arrays cost three times more).
    """
    run = [np.broadcast_to(np.frombuffer(len(fields).to_bytes(2, "big"), np.uint8), (count, 2))]
    pieces = []
    for sizes, payload in fields:
        run.append(sizes.astype(">i4").view(np.uint8).reshape(count, 4))
        width = int(sizes[0])
        if width >= 0 and bool((sizes == width).all()):
            run.append(payload.reshape(count, width))
            continue
        pieces += [_fixed_block(run, count), _binary(_offsets(sizes), payload)]
        run = []
    if run:
        pieces.append(_fixed_block(run, count))
    if len(pieces) == 1:
        return memoryview(pieces[0].buffers()[2])
    rows = pc.binary_join_element_wise(*pieces, pa.scalar(b"", pa.large_binary()))
    _, offsets, data = rows.buffers()
    return memoryview(data)[: int(np.frombuffer(offsets, np.int64)[rows.offset + len(rows)])]


def _fixed_block(parts: list[np.ndarray], count: int) -> pa.Array:
    block = np.ascontiguousarray(np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0])
    width = block.shape[1]
    return _binary(np.arange(0, width * count + 1, width, dtype=np.int64), block.reshape(-1))


def _offsets(sizes: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(np.maximum(sizes, 0), out=offsets[1:])
    return offsets


def _binary(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """Binary values over back-to-back bytes, without copying them (none is NULL: a NULL field sent no bytes)."""
    return pa.Array.from_buffers(pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


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
    arrow = _arrow_text_array(values)
    if arrow is not None:
        return _arrow_text_fields(arrow)
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


def _arrow_text_array(values: pd.Series) -> pa.Array | None:
    """The Arrow array under an Arrow-backed text column (None for other storage: object, Python strings)."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype):
        arrow_backed = dtype.storage == "pyarrow"
    else:
        arrow_backed = isinstance(dtype, pd.ArrowDtype) and (
            pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)
        )
    if not arrow_backed:
        return None
    array = pa.array(values.array)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _arrow_text_fields(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Sizes and payload read off Arrow's offsets and UTF-8 bytes: no Python string per value, no copy."""
    missing = None
    if array.null_count:
        missing = array.is_null().to_numpy(zero_copy_only=False)
        array = pc.fill_null(array, "")  # a NULL slot may still span bytes: empty it
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offsets_buffer, data = array.buffers()
    offsets = np.frombuffer(offsets_buffer, offset_type)[array.offset : array.offset + len(array) + 1]
    sizes = np.diff(offsets).astype(np.int64)
    if missing is not None:
        sizes[missing] = NULL
    payload = np.frombuffer(data, np.uint8) if data is not None else np.empty(0, np.uint8)
    return sizes, payload[int(offsets[0]) : int(offsets[-1])]
