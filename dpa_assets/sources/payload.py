"""Turn a received payload (bytes exactly as they arrived) into a frame of text values.

Structural faults (the whole payload is unusable) raise ``PayloadError`` with a message an on-call
engineer can act on. Row-level problems (a bad number in one row) are left to validation.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from typing import Any  # csv's reader type is private

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from dpa_assets.freight_model import RAW_COLUMNS
from dpa_assets.schemas import ARROW_TEXT

SOURCE_LINE = "source_line"  # 1-based line in the received file, kept so rejects point back to it
_CONTROL_BYTES = bytes(range(0, 9)) + bytes(range(14, 32)) + b"\x7f"
_OTHER_DELIMITERS = (";", "\t", "|")
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]+")  # an accented letter as UTF-8 writes it


class PayloadError(ValueError):
    """The payload's structure is broken; ``str(error)`` names the origin and the fault."""


@dataclass(frozen=True)
class ReceivedPayload:
    """Bytes as received from a source, with where they came from."""

    origin: str  # file path or URL, shown in every error message
    content: bytes
    media_type: str = "text/csv"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class ParsedPayload:
    """Rows of a payload as text, plus what the parse noticed without failing."""

    frame: pd.DataFrame
    encoding: str
    extra_columns: list[str] = field(default_factory=list)


def decode_text(payload: ReceivedPayload) -> tuple[str, str]:
    """Decode as UTF-8; accept Latin-1 (older exports write "Edéa" that way) unless it is binary.

    Returns:
        The text and the encoding used.
    """
    raw = payload.content
    # A byte-order mark alone is what an exporter that died after its first write leaves: still empty.
    if not raw.removeprefix(codecs.BOM_UTF8).strip():
        raise PayloadError(f"{payload.origin}: the file is empty")
    if any(byte in _CONTROL_BYTES for byte in raw[:65536]) or b"\x00" in raw:
        raise PayloadError(f"{payload.origin}: the file holds binary data (control bytes), not CSV text")
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as error:
        if _UTF8_MULTIBYTE.search(raw):
            # Real UTF-8 accents next to an invalid byte: a damaged UTF-8 file. Reading it as
            # Latin-1 would silently turn every "Edéa" into "EdÃ©a", so refuse it instead.
            raise PayloadError(
                f"{payload.origin}: the file is UTF-8 but byte {error.start} "
                f"(0x{raw[error.start]:02x}) is not valid UTF-8; the file is damaged or mixes encodings"
            ) from error
        return raw.decode("latin-1"), "latin-1"


def _check_header(origin: str, header: list[str]) -> list[str]:
    names = [name.strip() for name in header]
    if not any(names):
        raise PayloadError(f"{origin}: the first line is blank; the header must be on line 1")
    if len(names) == 1:
        for delimiter in _OTHER_DELIMITERS:
            if delimiter in names[0]:
                raise PayloadError(
                    f"{origin}: the header is separated by {delimiter!r}, expected ','; "
                    "the file was exported with the wrong delimiter"
                )
    missing = [column for column in RAW_COLUMNS if column not in names]
    if missing:
        unexpected = [name for name in names if name not in RAW_COLUMNS]
        hint = f"; unexpected columns {unexpected} (renamed?)" if unexpected else ""
        raise PayloadError(f"{origin}: required columns missing: {missing}{hint}")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise PayloadError(f"{origin}: columns appear twice in the header: {duplicated}")
    return names


def csv_text(payload: ReceivedPayload) -> tuple[str, str]:
    """The decoded text and its encoding; raises ``PayloadError`` when it is not text or is JSON."""
    text, encoding = decode_text(payload)
    if text.lstrip().startswith(("{", "[")):
        raise PayloadError(f"{payload.origin}: the file holds a JSON document, not the expected CSV")
    return text, encoding


def parse_csv(payload: ReceivedPayload) -> ParsedPayload:
    """Parse a CSV landing payload strictly into text columns.

    Args:
        payload: the bytes as received.

    Returns:
        One row per movement, every value a string, plus ``source_line``. The strings are held by
        Arrow (``ARROW_TEXT``), not as a Python object each: decoded text holds no lone surrogate.
    """
    text, encoding = csv_text(payload)
    # decode_text removed one byte-order mark from UTF-8; Latin-1 text is re-encoded so that Arrow reads UTF-8.
    data = payload.content.removeprefix(codecs.BOM_UTF8) if encoding == "utf-8" else text.encode("utf-8")
    # The decoded text (a byte a character: 150 MiB at 1,000,000 rows) is not held while the frame
    # is built; the rare file the C parser leaves to the csv module is decoded again.
    del text
    # The C parser takes the files whose structure it reads exactly as the csv module does; any
    # other file, and every broken one, goes the csv module's way, which words each fault.
    fast = _parse_plain_lines(payload.origin, data, encoding)
    return fast or _parse_with_csv_module(payload.origin, *csv_text(payload))


def _parse_with_csv_module(origin: str, text: str, encoding: str) -> ParsedPayload:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        names = _check_header(origin, header)
        rows, lines = _read_rows(origin, reader, names)
    except csv.Error as error:
        raise PayloadError(f"{origin}: malformed CSV near line {reader.line_num}: {error}") from error
    if not rows:
        raise PayloadError(f"{origin}: the file has a header but no movements")
    if not text.endswith(("\n", "\r")):
        raise PayloadError(
            f"{origin}: the file does not end with a line break; it was cut off during transfer (last line {lines[-1]})"
        )
    # Extra columns are dropped before numbering, so one named like ours cannot clash with the line numbers.
    frame = pd.DataFrame(rows, columns=names, dtype=object)[list(RAW_COLUMNS)].astype(ARROW_TEXT)
    frame.insert(0, SOURCE_LINE, lines)
    return ParsedPayload(frame=frame, encoding=encoding, extra_columns=_extra(names))


def _extra(names: list[str]) -> list[str]:
    return [name for name in names if name not in RAW_COLUMNS]


def _read_rows(origin: str, reader: Any, names: list[str]) -> tuple[list[list[str]], list[int]]:
    rows: list[list[str]] = []
    lines: list[int] = []
    for row in reader:
        if not row:
            continue  # blank line
        # The decoder only strips the first file's byte-order mark; a second file brings its own.
        if [value.strip().removeprefix("\ufeff") for value in row] == names:
            raise PayloadError(
                f"{origin}: the header appears again at line {reader.line_num}; two files were concatenated"
            )
        if len(row) != len(names):
            raise PayloadError(
                f"{origin}: line {reader.line_num} has {len(row)} fields where the header has "
                f"{len(names)}; the file is truncated or corrupt"
            )
        rows.append(row)
        lines.append(reader.line_num)
    return rows, lines


# --- the C parser's way ----------------------------------------------------------------------------
# A line the csv module reads as one whole record: fields unquoted (a quote inside one is a plain
# character) or quoted with doubled inner quotes, no line break inside quotes, nothing after a closing quote.
_FIELD = r'(?:"(?:[^"\r\n]|"")*"|[^",\r\n][^,\r\n]*|)'
_ONE_LINE_RECORD = re.compile(rf"{_FIELD}(?:,{_FIELD})*")
_LF, _CR, _QUOTE = ord("\n"), ord("\r"), ord('"')


@dataclass(frozen=True)
class _Lines:
    """Where each physical line of a payload starts and where its text ends (before CR LF or LF)."""

    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def of(cls, data: bytes) -> _Lines:
        bytes_ = np.frombuffer(data, dtype=np.uint8)
        breaks = _positions(bytes_, _LF)
        starts = np.concatenate(([0], breaks[:-1] + 1))
        before_break = bytes_[np.maximum(breaks - 1, 0)]
        return cls(starts=starts, ends=breaks - ((before_break == _CR) & (breaks > starts)))

    def text(self, data: bytes, line: int) -> str:
        return data[self.starts[line] : self.ends[line]].decode("utf-8")


_SCAN_BYTES = 1 << 22  # a comparison of the whole payload would take a byte per byte (46 MiB at 300,000 rows)


def _positions(bytes_: np.ndarray, byte: int) -> np.ndarray:
    """Where ``byte`` occurs in ``bytes_``, found 4 MiB at a time."""
    found = [
        np.flatnonzero(bytes_[start : start + _SCAN_BYTES] == byte) + start
        for start in range(0, len(bytes_), _SCAN_BYTES)
    ]
    return np.concatenate(found) if found else np.zeros(0, dtype=np.intp)


def _parse_plain_lines(origin: str, data: bytes, encoding: str) -> ParsedPayload | None:
    """Parse with Arrow's C parser when every record is one line the csv module would read the same way.

    Args:
        origin: where the payload came from, for the header's faults.
        data: the payload as UTF-8, without the byte-order mark the decoder removed.
        encoding: the payload's encoding, as ``decode_text`` found it.

    Returns:
        The parsed payload, or None when the file needs the csv module: a quoted line break, broken
        quoting, a lone CR, a field over the csv field limit, a wrong field count, a repeated header,
        no rows, no final line break. The csv module then finds the same rows, or words the fault.
    """
    if not data.endswith(b"\n") or data.count(b"\r") != data.count(b"\r\n"):
        return None
    lines = _Lines.of(data)
    lengths = lines.ends - lines.starts
    # Bytes >= characters, so a line within the limit holds no field over it.
    if lengths[0] == 0 or len(lengths) < 2 or lengths.max() > csv.field_size_limit():
        return None
    quoted = np.unique(np.searchsorted(lines.starts, _positions(np.frombuffer(data, np.uint8), _QUOTE), "right") - 1)
    if not all(_ONE_LINE_RECORD.fullmatch(lines.text(data, line)) for line in quoted.tolist()):
        return None
    names = _check_header(origin, next(csv.reader([lines.text(data, 0)])))
    records = np.flatnonzero(lengths[1:] > 0) + 1  # 0-based physical lines; blank lines are skipped
    if len(records) == 0:
        return None
    if data.startswith(codecs.BOM_UTF8, int(lines.starts[1])):
        return None  # Arrow would drop the mark that starts its input; the csv module keeps it in the value
    table = _read_arrow(pa.py_buffer(data)[int(lines.starts[1]) :], names)
    if table is None or table.num_rows != len(records):
        return None
    # A repeated header needs the csv module's wording; a shipment id holding "shipment_id" is rare enough.
    if pc.any(pc.match_substring(table.column(RAW_COLUMNS.index("shipment_id")), "shipment_id")).as_py():
        return None
    frame = pd.DataFrame({SOURCE_LINE: records + 1})
    columns = table.columns
    del table  # no 2-D copy of the frame is made
    for column in RAW_COLUMNS:
        frame[column] = pd.Series(pd.array(columns.pop(0), dtype=ARROW_TEXT), copy=False)
    return ParsedPayload(frame=frame, encoding=encoding, extra_columns=_extra(names))


def _read_arrow(body: pa.Buffer, names: list[str]) -> pa.Table | None:
    """The records below the header as text, in RAW_COLUMNS order; None when a line has the wrong field count."""
    labels = [f"field_{index}" for index in range(len(names))]
    try:
        return pa_csv.read_csv(
            pa.BufferReader(body),
            read_options=pa_csv.ReadOptions(column_names=labels),
            parse_options=pa_csv.ParseOptions(quote_char='"', double_quote=True, newlines_in_values=False),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(labels, pa.string()),
                include_columns=[labels[names.index(column)] for column in RAW_COLUMNS],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        return None
