"""The payload archive: bytes kept as received, named by their full SHA-256, a sidecar written once."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from dpa_assets.resources import PayloadArchiveResource
from dpa_assets.sources.generator import GeneratedDay
from dpa_assets.sources.payload import ReceivedPayload
from dpa_assets_tests.conftest import PARTITION_KEY, make_resources
from dpa_assets_tests.test_assets import materialize

CSV_BYTES = "shipment_id,customer\r\nSHP-1,Edéa Bois\r\n".encode()


def _archive(tmp_path: Path) -> PayloadArchiveResource:
    return PayloadArchiveResource(archive_dir=str(tmp_path / "archive"))


def _payload(content: bytes = CSV_BYTES) -> ReceivedPayload:
    return ReceivedPayload(origin="/landing/freight_2026-11-20.csv", content=content)


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_the_archived_name_carries_the_full_sha256(tmp_path):
    stored = _archive(tmp_path).store(PARTITION_KEY, _payload())

    digest = hashlib.sha256(CSV_BYTES).hexdigest()
    assert stored.name == f"received-{digest}.csv"
    assert stored.read_bytes() == CSV_BYTES
    sidecar = json.loads(stored.with_name(stored.name + ".meta.json").read_text(encoding="utf-8"))
    assert sidecar["sha256"] == digest and sidecar["bytes"] == len(CSV_BYTES)


def test_receiving_the_same_bytes_again_keeps_the_first_sidecar_and_logs_the_receipt(tmp_path):
    archive = _archive(tmp_path)
    stored = archive.store(PARTITION_KEY, _payload())
    sidecar = stored.with_name(stored.name + ".meta.json")
    first = sidecar.read_bytes()
    time.sleep(0.01)  # a rewritten sidecar would carry a later archived_at

    again = archive.store(PARTITION_KEY, _payload())

    assert again == stored
    assert sidecar.read_bytes() == first
    receipts = (tmp_path / "archive" / PARTITION_KEY / "receipts.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["file"] for line in receipts] == [stored.name, stored.name]
    assert json.loads(receipts[0])["received_at"] == json.loads(first)["archived_at"]


def test_concurrent_receipts_of_the_same_bytes_leave_one_complete_copy(tmp_path):
    archive = _archive(tmp_path)
    content = CSV_BYTES * 20_000  # large enough for writers to overlap
    problems: list[BaseException] = []

    def store() -> None:
        try:
            archive.store(PARTITION_KEY, _payload(content))
        except BaseException as error:  # noqa: BLE001 - any failure of a writer fails the test
            problems.append(error)

    writers = [threading.Thread(target=store) for _ in range(8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert problems == []
    digest = hashlib.sha256(content).hexdigest()
    folder = tmp_path / "archive" / PARTITION_KEY
    assert _files(folder) == sorted([f"received-{digest}.csv", f"received-{digest}.csv.meta.json", "receipts.jsonl"])
    assert (folder / f"received-{digest}.csv").read_bytes() == content
    assert json.loads((folder / f"received-{digest}.csv.meta.json").read_text(encoding="utf-8"))["sha256"] == digest
    assert len((folder / "receipts.jsonl").read_text(encoding="utf-8").splitlines()) == 8


def test_a_damaged_archived_copy_is_reported_not_trusted(tmp_path):
    archive = _archive(tmp_path)
    stored = archive.store(PARTITION_KEY, _payload())
    stored.write_bytes(b"bit rot")

    with pytest.raises(OSError, match="does not match the received bytes"):
        archive.store(PARTITION_KEY, _payload())


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # one bit, in the last block
        lambda data: data + b"\n",  # a byte more
        lambda data: data[:-1],  # a byte less
    ],
    ids=["flipped bit", "longer", "shorter"],
)
def test_a_large_archived_copy_damaged_anywhere_is_reported(tmp_path, damage):
    content = CSV_BYTES + b"".join(b"x" * 99 + b"\n" for _ in range(200_000))  # ~20 MB: several blocks
    archive = _archive(tmp_path)
    stored = archive.store(PARTITION_KEY, _payload(content))
    assert stored.read_bytes() == content  # the first receipt's copy is whole
    stored.write_bytes(damage(content))

    with pytest.raises(OSError, match="does not match the received bytes"):
        archive.store(PARTITION_KEY, _payload(content))


def test_a_landing_day_is_archived_under_its_full_sha256(
    landing_dir, generated_day: GeneratedDay, sqlite_url, tmp_path, instance
):
    landing = next(landing_dir.glob("freight_*.csv")).read_bytes()

    result = materialize(make_resources(landing_dir, sqlite_url, tmp_path), PARTITION_KEY, instance)

    assert result.success
    digest = hashlib.sha256(landing).hexdigest()
    archived_as = result.asset_materializations_for_node("raw_freight")[0].metadata["archived_as"].value
    assert Path(archived_as) == tmp_path / "archive" / PARTITION_KEY / f"received-{digest}.csv"
    assert Path(archived_as).read_bytes() == landing


def test_an_archive_that_cannot_be_written_fails_the_day_in_one_line(
    generated_day: GeneratedDay, landing_dir: Path, sqlite_url: str, tmp_path: Path, instance
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive folder should be")
    resources = make_resources(landing_dir, sqlite_url, tmp_path)
    resources["payload_archive"] = PayloadArchiveResource(archive_dir=str(blocker))

    result = materialize(resources, PARTITION_KEY, instance)

    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert failure.step_key == "raw_freight"
    message = failure.step_failure_data.error.message
    assert "could not be archived" in message and str(blocker) in message
    assert not result.asset_materializations_for_node("warehouse_facts")
