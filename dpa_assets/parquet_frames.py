"""Pandas frames stored as Parquet exactly: what is written is what is read back, and reading runs no code.

``DataFrame.to_parquet`` is not exact: it stores None and NaN of a text column as the same null and
re-infers text dtypes on the way back. Here each column is written by a codec recorded in the file
and rebuilt as exactly the dtype it had (values, None vs NaN vs <NA>, column order and labels, index):

- NumPy numbers and booleans: as themselves; NaN stays a NaN value, not a null.
- ``Int*``/``UInt*``/``boolean``: values, with a Parquet null for ``<NA>``.
- ``datetime64[unit]``, naive or with a time zone: Arrow timestamps of that unit (UTC); ``NaT`` a null.
- text (``str``/``string``, either storage): Arrow strings, with a null for the missing value.
- ``object`` columns of ``str``, None, NaN and ``<NA>`` only: Arrow strings, plus a marker column
  telling the missing values apart, written only when one is not None.
- Text holding a lone surrogate ('\\ud800'; a received payload can carry one, and the rules quarantine
  its row) is not valid UTF-8, so it cannot be an Arrow string. Such a column, and only such a column,
  is stored as binary holding ``value.encode("utf-8", "surrogatepass")`` and marked
  ``utf-8-surrogatepass``; reading decodes it the same way. Other text stays readable by any Parquet tool.
- The index: a ``RangeIndex`` by start, stop and step; any other single-level index as one more column.

Labels, dtypes and codecs are JSON in the schema metadata (``dpa.frame``). Any other dtype or value
refuses to be stored (``TypeError``) rather than come back different. Reading takes Parquet and
JSON only: no pickle, and no Arrow extension type (pyarrow does not unpickle those).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dpa_assets.text_vectors import shared_texts

METADATA_KEY = b"dpa.frame"
FORMAT_VERSION = 1
_UTF8, _SURROGATE_TEXT = "utf-8", "utf-8-surrogatepass"
_NONE, _NAN, _NA = 1, 2, 3  # marker values of the missing kinds in an object column
_MASKED = {f"{sign}Int{bits}" for sign in ("", "U") for bits in (8, 16, 32, 64)} | {"boolean"}
_NAT = np.iinfo(np.int64).min


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to the Parquet file ``path``; raises ``TypeError`` for what cannot come back exact."""
    # Row groups of 100,000 rows: the writer encodes a group at a time (a whole 1,000,000-row day at
    # once held its encoded columns too, ~50 MiB more at the load's peak). No dictionaries and no
    # column statistics: the file is always read whole, and a day wrote ~35% faster without them
    # (the file grows ~15%, still compressed).
    pq.write_table(
        frame_to_table(frame),
        path,
        row_group_size=ROW_GROUP_ROWS,
        use_dictionary=False,
        write_statistics=False,
    )


ROW_GROUP_ROWS = 100_000


def read_frame(path: Path) -> pd.DataFrame:
    """The frame ``write_frame`` wrote to ``path``; raises ``ValueError`` for a file it did not write.

    The file is read a column at a time: the Arrow copy of one column is held while it becomes
    pandas, not the whole day's (about 60 MiB at 300,000 received rows).
    """
    stored = pq.ParquetFile(path)

    def column(field: str) -> pa.ChunkedArray:
        return stored.read(columns=[field]).column(0)

    return _frame_of(stored.schema_arrow.metadata, column)


def frame_to_table(frame: pd.DataFrame) -> pa.Table:
    """The Arrow table holding ``frame`` exactly, its layout in the schema metadata."""
    if frame.attrs:
        raise TypeError("frames with attrs are not stored: attrs would not come back")
    arrays: dict[str, pa.Array] = {}
    codecs = []
    for position, label in enumerate(frame.columns):
        _require_name(label, "column label")
        codecs.append(_encode(frame.iloc[:, position], f"c{position}", arrays))
    layout = {
        "version": FORMAT_VERSION,
        "rows": len(frame),
        "columns": {"labels": list(frame.columns), "dtype": str(frame.columns.dtype), "name": frame.columns.name},
        "codecs": codecs,
        "index": _encode_index(frame.index, arrays),
    }
    _require_name(frame.columns.name, "columns name")
    table = pa.table(arrays) if arrays else pa.table({"rows": pa.nulls(len(frame))})
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(layout).encode("ascii")})


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    """The frame a table made by ``frame_to_table`` holds."""
    return _frame_of(table.schema.metadata, table.column)


def _frame_of(metadata: dict | None, column: Callable[[str], pa.ChunkedArray]) -> pd.DataFrame:
    """The frame whose layout is in ``metadata``; ``column(field)`` gives a stored field's values."""
    raw = (metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError("not a frame stored by dpa_assets (no dpa.frame metadata)")
    layout = json.loads(raw)
    if layout.get("version") != FORMAT_VERSION:
        raise ValueError(f"stored frame format {layout.get('version')!r}, this version reads {FORMAT_VERSION}")
    frame = pd.DataFrame(index=pd.RangeIndex(layout["rows"]))
    for position, codec in enumerate(layout["codecs"]):
        # One column at a time, as its own block: a frame built from all of them at once copies
        # them into one 2-D block first (a second copy of the day's object columns).
        frame[position] = _decode(column, codec)
    frame.index = _decode_index(column, layout["index"], layout["rows"])
    labels = layout["columns"]
    frame.columns = pd.Index(labels["labels"], dtype=labels["dtype"], name=labels["name"])
    return frame


def _require_name(name: object, what: str) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"{what} {name!r} is not text; only text labels are stored")


# --- columns --------------------------------------------------------------------------------------


def _encode(values: pd.Series, field: str, arrays: dict[str, pa.Array]) -> dict:
    """Add the Arrow array(s) of one column to ``arrays``; return its codec."""
    dtype = values.dtype
    codec: dict = {"field": field, "dtype": str(dtype)}
    if isinstance(dtype, pd.StringDtype):
        codec.update(kind="string", storage=dtype.storage, na="na" if dtype.na_value is pd.NA else "nan")
        if dtype.storage == "pyarrow":  # already Arrow strings: stored as they are, no Python object per value
            arrays[field], codec["text"] = pa.array(values.array), _UTF8
        else:
            arrays[field], codec["text"] = _text_array(values.to_numpy(dtype=object, na_value=None))
    elif isinstance(dtype, np.dtype) and dtype.kind == "O":
        codec["kind"] = "object"
        text, kinds = values.to_numpy(), None
        try:  # only text and None: the usual case, one pass in Arrow
            arrays[field], codec["text"] = _text_array(text)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            text, kinds = _object_text(text)
            arrays[field], codec["text"] = _text_array(text)
        if kinds is not None:
            codec["missing"] = f"{field}_missing"
            arrays[codec["missing"]] = pa.array(kinds, type=pa.uint8())
    elif str(dtype) in _MASKED:
        codec["kind"] = "masked"
        arrays[field] = pa.array(values.array)
    elif isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "M"):
        codec.update(_timestamp_codec(dtype))
        naive = values.dt.tz_convert(None) if isinstance(dtype, pd.DatetimeTZDtype) else values
        zone = "UTC" if isinstance(dtype, pd.DatetimeTZDtype) else None
        arrays[field] = pa.array(naive.to_numpy(), type=pa.timestamp(codec["unit"], tz=zone), from_pandas=True)
    elif isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        codec["kind"] = "numpy"
        arrays[field] = pa.array(values.to_numpy(), from_pandas=False)
    else:
        raise TypeError(f"column dtype {dtype} is not stored exactly; convert it first")
    return codec


def _decode(stored: Callable[[str], pa.ChunkedArray], codec: dict) -> pd.Series:
    column = stored(codec["field"])
    kind, dtype = codec["kind"], codec["dtype"]
    if kind == "string":
        dtype = pd.StringDtype(codec["storage"], na_value=pd.NA if codec["na"] == "na" else np.nan)
        if codec["storage"] == "pyarrow" and codec["text"] == _UTF8:  # Arrow strings stay Arrow strings
            return pd.Series(pd.array(column, dtype=dtype), copy=False)
        return pd.Series(pd.array(_text_values(column, codec["text"]), dtype=dtype))
    if kind == "object":
        text = _text_values(column, codec["text"])
        if "missing" in codec:
            kinds = stored(codec["missing"]).to_numpy()
            text[kinds == _NAN], text[kinds == _NA] = np.nan, pd.NA
        return pd.Series(text, dtype=object)
    if kind == "masked":
        mask = column.is_null().to_numpy(zero_copy_only=False)
        if dtype == "boolean":
            return pd.Series(pd.arrays.BooleanArray(column.fill_null(False).to_numpy(zero_copy_only=False), mask))
        data = column.fill_null(0).to_numpy(zero_copy_only=False)
        return pd.Series(pd.arrays.IntegerArray(data.astype(pd.api.types.pandas_dtype(dtype).numpy_dtype), mask))
    if kind == "timestamp":
        instants = column.cast(pa.int64()).fill_null(_NAT).to_numpy().view(f"M8[{codec['unit']}]")
        naive = pd.Series(instants)
        return naive.dt.tz_localize("UTC").dt.tz_convert(codec["zone"]) if codec["zone"] else naive
    if kind == "numpy":
        return pd.Series(column.to_numpy(zero_copy_only=False).astype(dtype, copy=False))
    raise ValueError(f"unknown column codec {kind!r}")


def _timestamp_codec(dtype: np.dtype | pd.DatetimeTZDtype) -> dict:
    if isinstance(dtype, pd.DatetimeTZDtype):
        if pd.api.types.pandas_dtype(str(dtype)) != dtype:
            raise TypeError(f"time zone of {dtype} is not stored exactly; use a named zone or UTC")
        return {"kind": "timestamp", "unit": dtype.unit, "zone": str(dtype.tz)}
    return {"kind": "timestamp", "unit": np.datetime_data(dtype)[0], "zone": None}


def _object_text(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The text of an object column (None where missing) and the kind of each missing value."""
    text, kinds = values.copy(), np.zeros(len(values), dtype=np.uint8)
    for position, value in enumerate(values):
        if isinstance(value, str):
            continue
        text[position] = None
        if value is None:
            kinds[position] = _NONE
        elif value is pd.NA:
            kinds[position] = _NA
        elif isinstance(value, float) and math.isnan(value):
            kinds[position] = _NAN
        else:
            raise TypeError(f"object column holds a {type(value).__name__}; only text and missing values are stored")
    return text, kinds


def _text_array(text: np.ndarray) -> tuple[pa.Array, str]:
    """Arrow strings, or UTF-8 bytes with surrogates passed through when a value holds a lone surrogate."""
    try:
        return pa.array(text, type=pa.string(), from_pandas=False), _UTF8
    except UnicodeEncodeError:
        # A value that is not text stays as it is, so that Arrow refuses it as it refused it above.
        encoded = [value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value for value in text]
        return pa.array(encoded, type=pa.binary(), from_pandas=False), _SURROGATE_TEXT


def _text_values(column: pa.ChunkedArray, text: str) -> np.ndarray:
    if text == _UTF8:
        return shared_texts(column)  # a repeated text is one Python object, not one per row
    values = column.to_numpy(zero_copy_only=False)
    if text == _SURROGATE_TEXT:
        return np.array([None if value is None else value.decode("utf-8", "surrogatepass") for value in values], object)
    if text != _UTF8:
        raise ValueError(f"unknown text encoding {text!r}")
    return values


# --- index ----------------------------------------------------------------------------------------


def _encode_index(index: pd.Index, arrays: dict[str, pa.Array]) -> dict:
    _require_name(index.name, "index name")
    if isinstance(index, pd.MultiIndex):
        raise TypeError("a MultiIndex is not stored; reset it to columns first")
    if isinstance(index, pd.RangeIndex):
        return {"range": [index.start, index.stop, index.step], "name": index.name}
    return {"codec": _encode(pd.Series(index, copy=False), "index", arrays), "name": index.name}


def _decode_index(stored: Callable[[str], pa.ChunkedArray], layout: dict, rows: int) -> pd.Index:
    if "range" in layout:
        index = pd.RangeIndex(*layout["range"], name=layout["name"])
    else:
        values = _decode(stored, layout["codec"])
        index = pd.Index(values.array, dtype=values.dtype, name=layout["name"])
    if len(index) != rows:
        raise ValueError(f"stored index has {len(index)} rows, the frame {rows}")
    return index
