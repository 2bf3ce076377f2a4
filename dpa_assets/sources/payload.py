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

import pandas as pd

from dpa_assets.freight_model import RAW_COLUMNS

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


def parse_csv(payload: ReceivedPayload) -> ParsedPayload:
    """Parse a CSV landing payload strictly into text columns.

    Args:
        payload: the bytes as received.

    Returns:
        One row per movement, every value a string, plus ``source_line``.
    """
    text, encoding = decode_text(payload)
    if text.lstrip().startswith(("{", "[")):
        raise PayloadError(f"{payload.origin}: the file holds a JSON document, not the expected CSV")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        names = _check_header(payload.origin, header)
        rows, lines = _read_rows(payload.origin, reader, names)
    except csv.Error as error:
        raise PayloadError(f"{payload.origin}: malformed CSV near line {reader.line_num}: {error}") from error
    if not rows:
        raise PayloadError(f"{payload.origin}: the file has a header but no movements")
    if not text.endswith(("\n", "\r")):
        raise PayloadError(
            f"{payload.origin}: the file does not end with a line break; it was cut off "
            f"during transfer (last line {lines[-1]})"
        )
    # Extra columns are dropped before numbering, so one named like ours cannot clash with the line numbers.
    frame = pd.DataFrame(rows, columns=names, dtype=object)[list(RAW_COLUMNS)]
    frame.insert(0, SOURCE_LINE, lines)
    extra = [name for name in names if name not in RAW_COLUMNS]
    return ParsedPayload(frame=frame, encoding=encoding, extra_columns=extra)


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
