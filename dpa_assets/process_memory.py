"""Freed memory goes back to the operating system, so a day's peak RSS is what the day holds, not what it once held.

A day's load allocates and frees many arrays of a few MiB (a column of 300,000 rows is 2.4 MiB).
Two allocators keep such memory after it is freed (measured at 300,000 rows, ``dpa materialize``):

- Arrow's default pool (mimalloc) keeps freed pages for reuse: the CSV read and each Parquet round
  trip left about 100 MiB behind. The system pool gives them back to malloc, at no cost in time.
- glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), so later
  blocks come from the heap and stay there when freed. ``malloc_trim`` between stages (a few ms)
  gives the free pages back. A fixed low threshold would do it at once, but costs a page fault per
  page of every temporary array (10% more wall time), so it is not used.

No value changes; only where the bytes live.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyarrow as pa


@functools.cache
def return_freed_memory() -> None:
    """From now on, Arrow allocates through malloc, which can give freed memory back (once per process)."""
    pa.set_memory_pool(pa.system_memory_pool())


def release_free_heap() -> None:
    """Give the free pages of malloc's heap back to the OS, after a stage that freed much (glibc only)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> object:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl): their allocators are left as they are
        return None
