"""A column of texts as one array of code points, so per-character rules run without a Python step per value.

A million received values cost a second when each is looked at in Python; joined into one string and
viewed as numbers, the same rules are a few array operations. No Dagster and no pandas here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

ZERO, NINE = ord("0"), ord("9")
_ASCII_SPACE = np.zeros(128, dtype=bool)
_ASCII_SPACE[[code for code in range(128) if chr(code).isspace()]] = True  # what str.strip removes, in ASCII
# Indexed by a byte-wide code point: an ASCII space, or a code point above ASCII (left to str.strip).
_SPACE_OR_WIDE = np.concatenate((_ASCII_SPACE, np.ones(128, dtype=bool)))


@dataclass(frozen=True)
class JoinedTexts:
    """Texts laid end to end: ``codes[starts[i] : starts[i] + lengths[i]]`` are the code points of text i."""

    codes: np.ndarray  # uint8 when every text is Latin-1 (so no surrogate), else uint32
    starts: np.ndarray
    lengths: np.ndarray

    @property
    def ends(self) -> np.ndarray:
        return self.starts + self.lengths

    def without_empty(self, positions: np.ndarray) -> JoinedTexts:
        """The texts at ``positions`` only, where every text left out is empty (so no code point is left out)."""
        return JoinedTexts(self.codes, self.starts[positions], self.lengths[positions])

    def in_slices(self, texts: int) -> Iterator[JoinedTexts]:
        """The texts ``texts`` at a time, in order (views of the code points, no copy)."""
        for first in range(0, len(self.lengths), texts):
            starts, lengths = self.starts[first : first + texts], self.lengths[first : first + texts]
            begin = int(starts[0])
            end = int(starts[-1] + lengths[-1])
            yield JoinedTexts(self.codes[begin:end], starts - begin, lengths)

    def from_end(self, k: int) -> np.ndarray:
        """The k-th code point from the end of each text (1 = last), or 0 for a text shorter than k."""
        long_enough = self.lengths >= k
        if not self.codes.size:
            return np.zeros(len(self.lengths), dtype=np.int64)
        where = np.where(long_enough, self.ends - k, 0)
        return np.where(long_enough, self.codes[where].astype(np.int64), 0)

    def per_text_sum(self, per_code: np.ndarray) -> np.ndarray:
        """The sum of ``per_code`` (one number per code point) over each text; 0 for an empty text."""
        totals = np.zeros(len(self.lengths), dtype=np.int64)
        filled = self.lengths > 0
        if filled.any():
            # reduceat runs from each start to the next one given: an empty text would take its neighbour's.
            # Summed in int64 as it goes: no int64 copy of every code point (8 bytes each) first.
            totals[filled] = np.add.reduceat(per_code, self.starts[filled], dtype=np.int64)
        return totals

    def stripped_or_empty(self) -> np.ndarray:
        """True for each text that is empty or that ``str.strip`` would change (some non-ASCII ends included)."""
        edges = self.lengths == 0
        if not self.codes.size:
            return edges
        if self.codes.dtype == np.uint8 and not edges.any():  # the usual column: a table lookup per end
            return _SPACE_OR_WIDE[self.codes[self.starts]] | _SPACE_OR_WIDE[self.codes[self.ends - 1]]
        filled = ~edges
        for at in (self.starts[filled], self.ends[filled] - 1):
            code = self.codes[at].astype(np.int64)
            # Non-ASCII ends are left to str.strip itself: Unicode has many spaces.
            edges[filled] |= (code > 127) | _ASCII_SPACE[np.minimum(code, 127)]
        return edges

    def unstorable(self) -> np.ndarray:
        """True for each text holding NUL or a lone surrogate (PostgreSQL text and UTF-8 cannot hold them)."""
        codes = self.codes
        suspect = (codes == 0) if codes.dtype == np.uint8 else (codes == 0) | ((codes >= 0xD800) & (codes <= 0xDFFF))
        if not suspect.any():  # the usual day: one pass over the codes, no per-text sums
            return np.zeros(len(self.lengths), dtype=bool)
        return self.per_text_sum(suspect) > 0


def join_texts(texts: np.ndarray | list[str]) -> JoinedTexts:
    """Join Python strings into code points; lone surrogates are kept as their own code point.

    Args:
        texts: Python ``str`` values only (``TypeError`` otherwise).

    Returns:
        The code points with each text's start and length.
    """
    texts = texts.tolist() if isinstance(texts, np.ndarray) else texts  # str.join copies any other sequence first
    joined = "\x00".join(texts)
    codes = _code_points(joined)
    separators = np.flatnonzero(codes == 0)
    if len(separators) == len(texts) - 1:  # no text holds a NUL: the separators are the boundaries
        lengths = np.diff(np.concatenate(([-1], separators, [len(codes)]))) - 1
        codes = codes[codes != 0] if len(separators) else codes
    else:
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        codes = _code_points("".join(texts))
    return JoinedTexts(codes=codes, starts=np.cumsum(lengths) - lengths, lengths=lengths)


def arrow_joined(column: pa.Array | pa.ChunkedArray) -> JoinedTexts | None:
    """The code points of Arrow texts, read in place (no Python string per value), when every text is ASCII.

    In ASCII a byte is a character, so the UTF-8 bytes are the code points and the offsets the starts.

    Args:
        column: Arrow strings (``string`` or ``large_string``) without a null; a chunked column (Arrow's
            CSV reader gives a file over ~1 MiB in blocks) is read as one array.

    Returns:
        The texts as ``join_texts`` gives them, or None when a text is not ASCII or is missing
        (the caller joins Python strings then).
    """
    if column.null_count:
        return None
    if isinstance(column, pa.ChunkedArray):  # the offsets below must run over one buffer
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    width = np.int64 if pa.types.is_large_string(column.type) else np.int32
    _, offsets, data = column.buffers()
    offsets = np.frombuffer(offsets, dtype=width)[column.offset : column.offset + len(column) + 1].astype(np.int64)
    codes = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]] if data is not None else np.zeros(0, np.uint8)
    if codes.size and codes.max() > 127:
        return None
    return JoinedTexts(codes=codes, starts=offsets[:-1] - offsets[0], lengths=np.diff(offsets))


def _code_points(text: str) -> np.ndarray:
    try:  # ASCII and Latin-1 (accented names) fit a byte per code point
        return np.frombuffer(text.encode("latin-1"), dtype=np.uint8)
    except UnicodeEncodeError:
        return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def ascii_digits(codes: np.ndarray) -> np.ndarray:
    """True for each code point that is one of 0-9 (ASCII only; ``str.isdigit`` also takes other scripts)."""
    return (codes >= ZERO) & (codes <= NINE)


def shared_texts(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow text column as Python strings (None for null), one ``str`` per distinct value.

    ``to_numpy`` makes a string object per row (about 60 bytes each); a day repeats its stations,
    commodities, customers and counts, so sharing one object per distinct text keeps those columns
    at 8 bytes a row. The values are equal either way.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = column.dictionary_encode(null_encoding="encode")
    texts = encoded.dictionary.to_numpy(zero_copy_only=False)
    return texts[encoded.indices.to_numpy(zero_copy_only=False)]
