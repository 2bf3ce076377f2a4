"""Storage of the intermediate assets (``raw_freight``, ``validated_freight``) in the Dagster home, as Parquet.

Each stored day is a folder ``<storage>/<asset>/<day>.parquet/`` holding one Parquet file per frame
(``parquet_frames``: exact round trip) and ``stored.json`` with what kind of value it is and its
other fields. Loading reads Parquet and JSON only: nothing stored runs code when loaded, unlike the
pickles Dagster's filesystem IO manager writes (and older DPA versions left in ``<storage>/<asset>/<day>``:
those are never opened; loading one fails with a message saying to re-materialize the day).

They are copies of freight data outside the protected warehouse, so they are bounded: writing a day
removes that asset's stored days (and old pickles) written more than ``retention_days`` ago.
An input that is not stored fails with a message naming the day and what to run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field
from upath import UPath

from dpa_assets.parquet_frames import read_frame, write_frame
from dpa_assets.process_memory import release_free_heap, return_freed_memory
from dpa_assets.transforms import ValidationOutcome

DEFAULT_RETENTION_DAYS = 7
_DESCRIPTION = "stored.json"
_FORMAT_VERSION = 1
# What the folder of a stored day may hold, by kind; nothing else is ever built from a stored folder.
_KINDS: dict[str, type] = {"DataFrame": pd.DataFrame, "ValidationOutcome": ValidationOutcome}
# Entries of an asset's folder the retention may remove: stored days, old pickles, unfinished writes.
_DAY_ENTRY = re.compile(r"\d{4}-\d{2}-\d{2}(\.parquet)?(\.(new|old)-[0-9a-f]{32})?")


class StoredByOlderVersion(Exception):
    """A day stored as a pickle by an older DPA version; it is never loaded."""

    def __init__(self, day: str):
        super().__init__(day)
        self.day = day


def missing_input_message(context: dg.InputContext) -> str:
    """What the on-call reads when an upstream day is not stored."""
    asset = context.asset_key.to_user_string()
    days = ", ".join(context.asset_partition_keys) if context.has_asset_partitions else "this run"
    first = context.asset_partition_keys[0] if context.has_asset_partitions else "DAY"
    return (
        f"{asset} for {days} is not stored (never materialized, or the Dagster storage was cleaned): "
        f"materialize the whole chain for the day first, e.g. `dpa materialize --date {first}`"
    )


def pickled_input_message(context: dg.InputContext, day: str) -> str:
    """What the on-call reads when an upstream day was stored by an older version, as a pickle."""
    return (
        f"{context.asset_key.to_user_string()} for {day} was stored by an older DPA version as a pickle, "
        f"which is never loaded (loading a pickle runs code): re-materialize the day, "
        f"e.g. `dpa materialize --date {day}`"
    )


def release_stored_output(context: dg.OutputContext, value: object) -> None:
    """Let go of an output the run would otherwise keep in memory after it is stored.

    ``execute_in_process`` (``dpa materialize``, ``dg.materialize``) keeps every output value for
    ``result.output_for_node`` until the result itself goes: a day's raw frame, its validation and its
    facts would pile up step after step (about 0.5 GiB per 300,000 rows), then stay while the next
    day loads. Nothing in DPA reads them there: the next step loads its input from storage. A run
    launched by the daemon or the UI keeps no such copy; nor does a context built outside a run.
    """
    try:
        captured = context.step_context.output_capture
    except (dg.DagsterInvariantViolationError, AttributeError):
        return
    if captured:
        for handle in [handle for handle, held in captured.items() if held is value]:
            del captured[handle]


class ParquetIntermediates(dg.UPathIOManager):
    """Stores DataFrames and ``ValidationOutcome``s under a local folder, one folder per partition."""

    extension = ".parquet"

    def __init__(self, base_path: UPath, retention_days: int):
        super().__init__(base_path=base_path)
        self._retention_seconds = retention_days * 86_400

    def dump_to_path(self, context: dg.OutputContext, obj: object, path: UPath) -> None:
        return_freed_memory()  # a step of its own process (multiprocess executor) stores and loads days too
        self._store(Path(path), obj, expire_others=context.has_asset_partitions)
        release_stored_output(context, obj)
        release_free_heap()  # the Arrow table written and the value no longer held

    def store_day(self, asset_key: dg.AssetKey, partition_key: str, value: object) -> Path:
        """Store one day of an asset where its output would go, for a run that records days itself
        (the range backfill); a later run loads it like any stored day.

        Args:
            asset_key: the asset.
            partition_key: the day.
            value: a DataFrame or ValidationOutcome.

        Returns:
            The stored day's folder.
        """
        target = Path(self._base_path.joinpath(*asset_key.path, f"{partition_key}{self.extension}"))
        target.parent.mkdir(parents=True, exist_ok=True)
        self._store(target, value, expire_others=True)
        return target

    def _store(self, target: Path, obj: object, expire_others: bool) -> None:
        staging = target.with_name(f"{target.name}.new-{uuid.uuid4().hex}")
        staging.mkdir()
        try:
            _write_value(obj, staging)
        except BaseException:
            shutil.rmtree(staging)
            raise
        _replace_folder(staging, target)
        legacy = target.with_suffix("")
        if legacy.is_file():
            legacy.unlink()  # the pickle an older version left for this day: stale, and never loaded
        if expire_others:
            _remove_expired(target.parent, keep=target, older_than=time.time() - self._retention_seconds)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> object:
        return_freed_memory()
        folder = Path(path)
        if not (folder / _DESCRIPTION).is_file():
            if folder.with_suffix("").is_file():
                raise StoredByOlderVersion(folder.with_suffix("").name)
            raise FileNotFoundError(folder)
        release_free_heap()  # what the previous step left, before the day is read in
        try:
            return _read_value(folder)
        finally:
            release_free_heap()  # the Arrow table the frames were built from

    def load_input(self, context: dg.InputContext) -> object:
        try:
            return super().load_input(context)
        except FileNotFoundError as error:
            raise dg.Failure(description=missing_input_message(context), allow_retries=False) from error
        except StoredByOlderVersion as error:
            raise dg.Failure(description=pickled_input_message(context, error.day), allow_retries=False) from error


class IntermediateIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet storage of the intermediate days in the Dagster home, kept ``retention_days``."""

    base_dir: str | None = Field(default=None, description="Folder of the stored days; default <DAGSTER_HOME>/storage")
    retention_days: int = Field(
        default=DEFAULT_RETENTION_DAYS,
        ge=1,
        description="Stored days written longer ago than this are removed when the asset stores another day",
    )

    def create_io_manager(self, context: dg.InitResourceContext) -> ParquetIntermediates:
        base = self.base_dir or context.instance.storage_directory()
        return ParquetIntermediates(UPath(base), self.retention_days)


# --- one stored value -----------------------------------------------------------------------------


def _write_value(value: object, folder: Path) -> None:
    """Write the frames of ``value`` as Parquet and its other fields as JSON into ``folder``."""
    if isinstance(value, pd.DataFrame):
        kind, frames, fields = "DataFrame", {"frame": value}, {}
    elif isinstance(value, ValidationOutcome):
        kind, frames, fields = "ValidationOutcome", {}, {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            (frames if isinstance(item, pd.DataFrame) else fields)[field.name] = item
    else:
        raise TypeError(f"the intermediate storage keeps DataFrames and ValidationOutcomes, not {type(value).__name__}")
    for name, frame in frames.items():
        write_frame(frame, folder / f"{name}.parquet")
    description = {"version": _FORMAT_VERSION, "kind": kind, "frames": sorted(frames), "fields": fields}
    # Written last: a folder without it is an unfinished write and is never read.
    (folder / _DESCRIPTION).write_text(json.dumps(description), encoding="ascii")


def _read_value(folder: Path) -> object:
    description = json.loads((folder / _DESCRIPTION).read_text(encoding="ascii"))
    if description.get("version") != _FORMAT_VERSION or description.get("kind") not in _KINDS:
        raise ValueError(f"{folder}: not a stored day this version reads ({description.get('kind')!r})")
    frames = {name: read_frame(folder / f"{name}.parquet") for name in description["frames"]}
    if description["kind"] == "DataFrame":
        return frames["frame"]
    return ValidationOutcome(**frames, **description["fields"])


def _replace_folder(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; a reader sees the old day, then the new one (or briefly none)."""
    if not target.exists():
        staging.rename(target)
        return
    retired = target.with_name(f"{target.name}.old-{uuid.uuid4().hex}")
    target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired)


def _remove_expired(folder: Path, keep: Path, older_than: float) -> None:
    """Remove the stored days, old pickles and unfinished writes in ``folder`` last written before ``older_than``."""
    for entry in folder.iterdir():
        if entry == keep or not _DAY_ENTRY.fullmatch(entry.name) or entry.stat().st_mtime >= older_than:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)  # another run may be removing it too
        else:
            entry.unlink(missing_ok=True)
