"""Keep every received payload exactly as it arrived, with its checksum, before anything parses it.

A bad day can then be inspected and replayed; nothing the freight system sent is ever lost. Files
are content-addressed (full SHA-256) and written once: a file and its ``.meta.json`` sidecar appear
complete or not at all, and are never rewritten. Each receipt, first or repeated, is one line of the
day's append-only ``receipts.jsonl``, so receiving the same bytes again loses no history.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from dpa_assets.sources.payload import ReceivedPayload

RECEIPTS_LOG = "receipts.jsonl"
RECEIVED, RESPONSE = "received", "response"  # what the asset parses; one raw HTTP response
_SUFFIXES = {"application/json": ".json", "text/csv": ".csv"}


def _suffix(media_type: str) -> str:
    if media_type in _SUFFIXES:
        return _SUFFIXES[media_type]
    return ".txt" if media_type.startswith("text/") else ".bin"


def _write_once(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data`` atomically; leave an existing file alone.

    The bytes go to a private temporary file first, which is then hard-linked to its name: the link
    fails if another writer got there first, so concurrent receipts never see a half-written file.
    """
    if path.exists():
        return
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # the same content-addressed bytes, stored by a concurrent receipt
    finally:
        os.unlink(temporary)


def _holds(path: Path, data: bytes) -> bool:
    """Whether the file holds exactly ``data``, compared a block at a time: no second copy of a large
    payload in memory (reading it whole to re-hash it held one). Blocks are compared as bytes: a
    memoryview compares twice as slowly."""
    block = 8 * 1024 * 1024
    with path.open("rb") as file:
        for start in range(0, len(data), block):
            if file.read(block) != data[start : start + block]:
                return False
        return file.read(1) == b""


def _append_line(path: Path, record: Mapping[str, object]) -> None:
    # One write on an O_APPEND descriptor: concurrent receipts add whole lines, never interleaved.
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(handle, line)
        os.fsync(handle)
    finally:
        os.close(handle)


class DayArchive:
    """The archive folder of one day: ``<root>/<day>/``."""

    def __init__(self, folder: Path):
        self.folder = folder

    def store(
        self, payload: ReceivedPayload, kind: str = RECEIVED, details: Mapping[str, object] | None = None
    ) -> Path:
        """Keep the payload's bytes as ``<kind>-<sha256><suffix>`` with a sidecar, and log the receipt.

        Args:
            payload: the bytes as received.
            kind: ``received`` for what the asset parses, ``response`` for one raw HTTP response.
            details: what else the sidecar and the receipt record (page, attempt, HTTP status).

        Returns:
            The archived file; receiving identical bytes again reuses it and only adds a receipt.
        """
        digest = payload.sha256
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{kind}-{digest}{_suffix(payload.media_type)}"
        received_at = datetime.now(UTC).isoformat()
        extra = dict(details or {})
        _write_once(target, payload.content)
        sidecar = {
            "origin": payload.origin,
            "sha256": digest,
            "bytes": len(payload.content),
            "media_type": payload.media_type,
            **extra,
            "archived_at": received_at,
        }
        _write_once(target.with_name(target.name + ".meta.json"), json.dumps(sidecar, indent=2).encode("utf-8"))
        if not _holds(target, payload.content):
            raise OSError(f"archive copy {target} does not match the received bytes (disk fault?)")
        receipt = {"received_at": received_at, "file": target.name, "sha256": digest, "origin": payload.origin}
        _append_line(self.folder / RECEIPTS_LOG, {**receipt, **extra})
        return target

    def store_response(self, payload: ReceivedPayload, details: Mapping[str, object]) -> Path:
        """Keep one HTTP response body as received, whatever its status (see ``store``)."""
        return self.store(payload, RESPONSE, details)
