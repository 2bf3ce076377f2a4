"""Keep every received payload exactly as it arrived, with its checksum, before anything parses it.

A bad day can then be inspected and replayed; nothing the freight system sent is ever lost.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from dpa_assets.sources.payload import ReceivedPayload


def archive_payload(archive_root: Path, partition_key: str, payload: ReceivedPayload) -> Path:
    """Write the payload under ``<root>/<day>/`` named by its checksum, plus a JSON sidecar.

    Args:
        archive_root: the archive directory.
        partition_key: the day the payload is for.
        payload: the bytes as received.

    Returns:
        The archived file; receiving identical bytes again reuses it.
    """
    digest = payload.sha256
    suffix = ".json" if payload.media_type == "application/json" else ".csv"
    folder = archive_root / partition_key
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"received-{digest[:16]}{suffix}"
    if not target.exists():
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(payload.content)
        partial.replace(target)
    sidecar = {
        "origin": payload.origin,
        "sha256": digest,
        "bytes": len(payload.content),
        "media_type": payload.media_type,
        "archived_at": datetime.now(UTC).isoformat(),
    }
    target.with_name(target.name + ".meta.json").write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
    if hashlib.sha256(target.read_bytes()).hexdigest() != digest:
        raise OSError(f"archive copy {target} does not match the received bytes (disk fault?)")
    return target
