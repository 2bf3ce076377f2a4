"""The intermediate days in the Dagster home: stored as Parquet, read back exactly, never unpickled, kept bounded.

What ``raw_freight`` and ``validated_freight`` store is what ``validated_freight`` and ``warehouse_facts``
load: same dtypes, values (None, NaN and <NA> told apart; text with NUL, emoji or a lone surrogate),
column order and index; checked on random frames and on the frames the pipeline makes. A pickle left by
an older version is never opened, and days written longer ago than the retention are removed.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpa_assets import assets, parquet_frames
from dpa_assets.freight_model import RAW_COLUMNS
from dpa_assets.intermediate_io_manager import IntermediateIOManager
from dpa_assets.parquet_frames import read_frame, write_frame
from dpa_assets.schemas import ARROW_TEXT
from dpa_assets.sources.generator import generate_day, landing_file_name
from dpa_assets.sources.payload import ReceivedPayload, parse_csv
from dpa_assets.transforms import ValidationOutcome, validate_freight
from dpa_assets_tests.conftest import PARTITION_KEY, make_resources
from dpa_assets_tests.test_assets import ALL_ASSETS
from dpa_assets_tests.test_column_bounds import days_with_extremes, received_day

DAY = date.fromisoformat(PARTITION_KEY)
ODD_TEXT = ["\ud800", "a\udfffb", "\x00", "a\x00b", "😀", "", " ", "日本語", "\r\n", '"quoted, comma"']


# --- comparing exactly --------------------------------------------------------------------------------


def _cells(values: pd.Series | pd.Index) -> list[tuple]:
    """Each cell with its type: None, NaN and <NA> differ here although pandas' comparison lets them pass."""
    return [(type(value), value if isinstance(value, str) else repr(value)) for value in values]


def assert_identical(stored: pd.DataFrame, loaded: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(loaded, stored, check_exact=True, check_index_type=True, check_column_type=True)
    assert list(loaded.columns) == list(stored.columns) and loaded.columns.dtype == stored.columns.dtype
    assert type(loaded.index) is type(stored.index) and loaded.index.dtype == stored.index.dtype
    assert _cells(loaded.index) == _cells(stored.index)
    for position in range(stored.shape[1]):
        before, after = stored.iloc[:, position], loaded.iloc[:, position]
        assert after.dtype == before.dtype
        if before.dtype == object:
            assert _cells(after) == _cells(before)
        elif before.dtype.kind == "f":
            assert after.to_numpy().tobytes() == before.to_numpy().tobytes()  # -0.0 and NaN bit for bit


def assert_same_outcome(stored: ValidationOutcome, loaded: ValidationOutcome) -> None:
    assert type(loaded) is ValidationOutcome
    assert_identical(stored.valid, loaded.valid)
    assert_identical(stored.rejects, loaded.rejects)
    assert (loaded.partition_key, loaded.rows_received, loaded.validation_run_id) == (
        stored.partition_key,
        stored.rows_received,
        stored.validation_run_id,
    )


# --- random frames ------------------------------------------------------------------------------------

text = st.text(st.characters(exclude_categories=()), max_size=8) | st.sampled_from(ODD_TEXT)
missing = st.sampled_from([None, np.nan, pd.NA])
stamps = st.datetimes(
    min_value=pd.Timestamp("1700-01-01").to_pydatetime(), max_value=pd.Timestamp("2200-01-01").to_pydatetime()
)


def _column(kind: str, size: int) -> st.SearchStrategy:
    def cells(values: st.SearchStrategy) -> st.SearchStrategy:
        return st.lists(values, min_size=size, max_size=size)

    return {
        "object": cells(text | missing).map(lambda values: pd.array(values, dtype=object)),
        "string": cells(text | st.none()).map(lambda values: pd.array(values, dtype=pd.StringDtype("python"))),
        "str": cells(text | st.none()).map(lambda values: pd.array(values, dtype="str")),
        "int64": cells(st.integers(-(2**63), 2**63 - 1)).map(lambda values: np.array(values, dtype=np.int64)),
        "uint8": cells(st.integers(0, 255)).map(lambda values: np.array(values, dtype=np.uint8)),
        "float64": cells(st.floats() | st.sampled_from([-0.0, np.nan])).map(lambda values: np.array(values, float)),
        "bool": cells(st.booleans()).map(lambda values: np.array(values, dtype=bool)),
        "Int64": cells(st.integers(-(2**63), 2**63 - 1) | st.none()).map(lambda values: pd.array(values, "Int64")),
        "boolean": cells(st.booleans() | st.none()).map(lambda values: pd.array(values, dtype="boolean")),
        "utc": cells(stamps | st.none()).map(lambda values: pd.array(pd.DatetimeIndex(values, tz="UTC").as_unit("us"))),
        "douala": cells(stamps | st.none()).map(
            lambda values: pd.array(
                pd.DatetimeIndex(values).tz_localize("Africa/Douala", ambiguous="NaT").as_unit("ms")
            )
        ),
        "naive": cells(stamps | st.none()).map(lambda values: pd.array(pd.DatetimeIndex(values).as_unit("ns"))),
    }[kind]


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    """Frames of the dtypes the pipeline stores, with odd labels, odd text and every kind of missing value."""
    size = draw(st.integers(0, 6))
    kinds = draw(
        st.lists(
            st.sampled_from(
                ["object", "string", "str", "int64", "uint8", "float64", "bool"]
                + ["Int64", "boolean", "utc", "douala", "naive"]
            ),
            max_size=6,
        )
    )
    labels = draw(st.lists(text, min_size=len(kinds), max_size=len(kinds)))  # duplicates allowed
    frame = pd.DataFrame({position: draw(_column(kind, size)) for position, kind in enumerate(kinds)})
    frame.columns = pd.Index(labels, dtype=draw(st.sampled_from(["object", "str"])))
    index = draw(st.sampled_from(["range", "shifted_range", "text", "Int64"]))
    if index == "shifted_range":
        frame.index = pd.RangeIndex(7, 7 + 3 * size, 3, name="line")
    elif index == "text":
        frame.index = pd.Index(draw(_column("object", size)), dtype=object, name=draw(text | st.none()))
    elif index == "Int64":
        frame.index = pd.Index(draw(_column("Int64", size)))
    return frame


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=frames())
def test_any_frame_comes_back_exactly(frame, tmp_path):
    write_frame(frame, tmp_path / "frame.parquet")

    assert_identical(frame, read_frame(tmp_path / "frame.parquet"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=frames(), arrow_text=st.lists(st.text(st.characters(exclude_categories=("Cs",))) | st.none(), max_size=9))
def test_any_frame_comes_back_exactly_from_many_row_groups(frame, arrow_text, tmp_path):
    """A day is written a row group at a time (bounded writer memory); the groups read back as one frame."""
    frame = frame.copy()
    frame["arrow_text"] = pd.array((arrow_text * len(frame))[: len(frame)] or [None] * len(frame), dtype=ARROW_TEXT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parquet_frames, "ROW_GROUP_ROWS", 2)
        write_frame(frame, tmp_path / "frame.parquet")

    assert pq.ParquetFile(tmp_path / "frame.parquet").num_row_groups == max(1, -(-len(frame) // 2))
    assert_identical(frame, read_frame(tmp_path / "frame.parquet"))


@pytest.mark.parametrize(
    "frame, refused",
    [
        (pd.DataFrame({"a": pd.array([1, "x"], dtype=object)}), "object column holds a int"),
        (pd.DataFrame({"a": pd.Categorical(["x"])}), "dtype category"),
        (pd.DataFrame({1: ["x"]}), "column label 1 is not text"),
        (pd.DataFrame({"a": [1]}, index=pd.MultiIndex.from_tuples([("x", 1)])), "MultiIndex"),
    ],
    ids=["number_in_object_column", "categorical", "number_label", "multi_index"],
)
def test_a_frame_that_would_not_come_back_exactly_is_refused(frame, refused, tmp_path):
    with pytest.raises(TypeError, match=refused):
        write_frame(frame, tmp_path / "frame.parquet")


# --- through the IO manager ---------------------------------------------------------------------------


class Storage:
    """The IO manager as Dagster runs it, on a real instance, storing and loading one asset's days."""

    def __init__(self, instance: dg.DagsterInstance, **config):
        with dg.build_init_resource_context(instance=instance) as init:
            self.instance, self.manager = instance, IntermediateIOManager(**config).create_io_manager(init)

    def _output(self, asset: str, day: str) -> dg.OutputContext:
        # Contexts are closed (``with``): an open one keeps an ephemeral Dagster instance alive.
        return dg.build_output_context(asset_key=dg.AssetKey(asset), partition_key=day, instance=self.instance)

    def store(self, asset: str, value: object, day: str = PARTITION_KEY) -> None:
        with self._output(asset, day) as context:
            self.manager.handle_output(context, value)

    def load(self, asset: str, day: str = PARTITION_KEY) -> object:
        with (
            self._output(asset, day) as upstream,
            dg.build_input_context(
                asset_key=dg.AssetKey(asset), partition_key=day, upstream_output=upstream, instance=self.instance
            ) as context,
        ):
            return self.manager.load_input(context)


@pytest.fixture
def storage(instance) -> Storage:
    return Storage(instance)


def _pipeline_frames(records_or_content) -> tuple[pd.DataFrame, ValidationOutcome]:
    raw = (
        parse_csv(ReceivedPayload("landing.csv", records_or_content)).frame
        if isinstance(records_or_content, bytes)
        else received_day(records_or_content)
    )
    return raw, validate_freight(raw, PARTITION_KEY, {"SHP-20261120-00003"})


def test_a_generated_day_comes_back_exactly(storage, instance, generated_day, landing_dir):
    raw, outcome = _pipeline_frames((landing_dir / landing_file_name(DAY)).read_bytes())
    outcome = ValidationOutcome(**{**outcome.__dict__, "validation_run_id": "run-\ud800"})
    assert outcome.rows_rejected and outcome.valid["arrival_time"].isna().any()  # rejects and NaT both present

    storage.store("raw_freight", raw)
    storage.store("validated_freight", outcome)

    assert_identical(raw, storage.load("raw_freight"))
    assert_same_outcome(outcome, storage.load("validated_freight"))
    stored = Path(instance.storage_directory()) / "validated_freight" / f"{PARTITION_KEY}.parquet"
    assert sorted(path.name for path in stored.iterdir()) == ["rejects.parquet", "stored.json", "valid.parquet"]
    assert all(path.read_bytes()[:4] == b"PAR1" for path in stored.glob("*.parquet"))
    assert json.loads((stored / "stored.json").read_text())["kind"] == "ValidationOutcome"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=days_with_extremes())
def test_received_days_with_extreme_values_come_back_exactly(records, storage):
    raw, outcome = _pipeline_frames(records)

    storage.store("raw_freight", raw)
    storage.store("validated_freight", outcome)

    assert_identical(raw, storage.load("raw_freight"))
    assert_same_outcome(outcome, storage.load("validated_freight"))


def test_storing_a_day_again_replaces_it(storage):
    first, second = (received_day(generate_day(DAY, rows=rows, seed=rows).records) for rows in (5, 3))

    storage.store("raw_freight", first)
    storage.store("raw_freight", second)

    assert_identical(second, storage.load("raw_freight"))


def test_a_value_of_another_kind_is_refused(storage):
    with pytest.raises(TypeError, match="keeps DataFrames and ValidationOutcomes, not dict"):
        storage.store("raw_freight", {"rows": 1})


# --- pickles left by an older version --------------------------------------------------------------------


class _RunsWhenUnpickled:
    """What a pickle can do when loaded: here, create a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _leave_old_pickle(instance: dg.DagsterInstance, asset: str, marker: Path) -> Path:
    """The file Dagster's pickling IO manager (DPA before Parquet) left for the day."""
    path = Path(instance.storage_directory()) / asset / PARTITION_KEY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_RunsWhenUnpickled(marker)))
    return path


def test_a_pickle_left_by_an_older_version_is_never_loaded(storage, instance, tmp_path):
    marker = tmp_path / "pickle-ran"
    _leave_old_pickle(instance, "validated_freight", marker)

    with pytest.raises(dg.Failure) as caught:
        storage.load("validated_freight")

    assert not marker.exists()
    message = caught.value.description
    assert "\n" not in message and "stored by an older DPA version as a pickle" in message
    assert f"re-materialize the day, e.g. `dpa materialize --date {PARTITION_KEY}`" in message


def test_warehouse_facts_alone_over_an_old_pickle_fails_saying_to_rematerialize(
    sqlite_url, landing_dir, generated_day, tmp_path, instance
):
    marker = tmp_path / "pickle-ran"
    _leave_old_pickle(instance, "validated_freight", marker)

    result = dg.materialize(
        ALL_ASSETS,
        resources=make_resources(landing_dir, sqlite_url, tmp_path),
        partition_key=PARTITION_KEY,
        instance=instance,
        selection=[assets.warehouse_facts],
        raise_on_error=False,
    )

    assert not result.success and not marker.exists()
    failure = result.failure_data_for_node("warehouse_facts").user_failure_data.description
    assert f"validated_freight for {PARTITION_KEY} was stored by an older DPA version" in failure


def test_storing_the_day_again_removes_its_old_pickle(storage, instance, tmp_path):
    old = _leave_old_pickle(instance, "raw_freight", tmp_path / "pickle-ran")
    raw = received_day(generate_day(DAY, rows=4).records)

    storage.store("raw_freight", raw)

    assert not old.exists() and not (tmp_path / "pickle-ran").exists()
    assert_identical(raw, storage.load("raw_freight"))


# --- retention ------------------------------------------------------------------------------------------


def _written_days_ago(path: Path, days: float) -> None:
    then = time.time() - days * 86_400
    os.utime(path, (then, then))


def test_days_written_longer_ago_than_the_retention_are_removed_when_a_day_is_stored(instance, tmp_path):
    storage = Storage(instance, retention_days=7)
    folder = Path(instance.storage_directory()) / "raw_freight"
    raw = received_day(generate_day(DAY, rows=3).records)
    for day, age in (("2026-11-01", 8), ("2026-11-10", 6.9)):
        storage.store("raw_freight", raw, day)
        _written_days_ago(folder / f"{day}.parquet", age)
    old_pickle = _leave_old_pickle(instance, "raw_freight", tmp_path / "never")
    _written_days_ago(old_pickle, 30)
    unrelated = folder / "notes.txt"
    unrelated.write_text("not ours")
    _written_days_ago(unrelated, 30)
    storage.store("validated_freight", _pipeline_frames(generate_day(DAY, rows=3).records)[1], "2026-10-01")
    _written_days_ago(Path(instance.storage_directory()) / "validated_freight" / "2026-10-01.parquet", 9)

    storage.store("raw_freight", raw, "2026-11-19")

    assert sorted(path.name for path in folder.iterdir()) == [
        "2026-11-10.parquet",
        "2026-11-19.parquet",
        "notes.txt",
    ]
    # Each asset's days are pruned when that asset stores one: validated_freight's stay until then.
    assert (Path(instance.storage_directory()) / "validated_freight" / "2026-10-01.parquet").exists()


def test_retention_days_is_a_setting(instance):
    storage = Storage(instance, retention_days=1)
    raw = received_day(generate_day(DAY, rows=3).records)
    storage.store("raw_freight", raw, "2026-11-18")
    _written_days_ago(Path(instance.storage_directory()) / "raw_freight" / "2026-11-18.parquet", 1.5)

    storage.store("raw_freight", raw, "2026-11-19")

    with pytest.raises(dg.Failure, match="raw_freight for 2026-11-18 is not stored"):
        storage.load("raw_freight", "2026-11-18")
    with pytest.raises(ValueError):
        IntermediateIOManager(retention_days=0)


def _text_objects(frame: pd.DataFrame, column: str) -> int:
    return len({id(value) for value in frame[column].to_numpy(dtype=object)})


def test_a_stored_day_shares_one_text_object_per_repeated_value(storage, generated_day, landing_dir):
    """A day repeats stations, commodities and customers: held once each, not once per row.

    A CSV day is Arrow text (no Python object per value) before and after storage; a day of Python
    text (as the HTTP API delivers it) comes back with one object per distinct value.
    """
    received = parse_csv(ReceivedPayload("landing.csv", (landing_dir / landing_file_name(DAY)).read_bytes())).frame
    storage.store("raw_freight", received)
    loaded_arrow = storage.load("raw_freight")
    assert all(frame[column].dtype == ARROW_TEXT for frame in (received, loaded_arrow) for column in RAW_COLUMNS)
    assert_identical(received, loaded_arrow)

    raw = received.astype(dict.fromkeys(RAW_COLUMNS, object))
    storage.store("raw_freight", raw)
    loaded = storage.load("raw_freight")

    for column in ("origin_station", "commodity", "customer"):
        assert _text_objects(loaded, column) == loaded[column].nunique() < len(loaded) / 4
    assert_identical(raw, loaded)
