"""Fixtures: real SQLite files, a real PostgreSQL server, landing files, a real Dagster instance."""

from __future__ import annotations

import os
import uuid
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from dpa_assets.intermediate_io_manager import IntermediateIOManager
from dpa_assets.io_manager import WarehouseIOManager
from dpa_assets.resources import (
    LandingDirSource,
    PayloadArchiveResource,
    ValidationPolicyResource,
    WarehouseResource,
)
from dpa_assets.sources.generator import GeneratedDay, generate_day, write_landing_file
from dpa_assets_tests.support.postgres import PostgresCluster, start_cluster

PARTITION_KEY = "2026-11-20"


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway server for the session, or the one ``DPA_TEST_PG_URL`` points at."""
    if os.environ.get("DPA_TEST_PG_URL"):
        yield None
        return
    try:
        cluster = start_cluster()
    except Exception as error:  # noqa: BLE001
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and could not be started: {error}")
        pytest.skip(f"PostgreSQL not available: {error}")
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster | None) -> str:
    """A fresh, empty database for one test."""
    name = f"dpa_test_{uuid.uuid4().hex[:12]}"
    admin_url = os.environ.get("DPA_TEST_PG_URL") or pg_cluster.admin_url
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.sqlite'}"


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on both the embedded default and production's database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def partition_key() -> str:
    return PARTITION_KEY


@pytest.fixture
def landing_dir(tmp_path: Path) -> Path:
    return tmp_path / "landing"


@pytest.fixture
def generated_day(landing_dir: Path, partition_key: str) -> GeneratedDay:
    """The partition's landing file, written by the generator (about 4% bad rows)."""
    generated = generate_day(date.fromisoformat(partition_key), seed=7)
    write_landing_file(landing_dir, generated)
    return generated


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Dagster home for `dpa` commands run in this process, on embedded defaults (no DPA_* settings)."""
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name in ("DPA_WAREHOUSE_URL", "DPA_LANDING_DIR", "DPA_ARCHIVE_DIR", "DPA_DEPLOYMENT"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def instance(tmp_path: Path):
    """A real, persistent Dagster instance in a temp folder."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        yield test_instance


def make_resources(
    landing_dir: Path, warehouse_url: str, tmp_path: Path, max_rejection_rate: float = 0.30
) -> dict[str, object]:
    warehouse = WarehouseResource(url=warehouse_url, lock_retry_base_seconds=0.05)
    return {
        "freight_source": LandingDirSource(landing_dir=str(landing_dir)),
        "payload_archive": PayloadArchiveResource(archive_dir=str(tmp_path / "archive")),
        "warehouse": warehouse,
        "validation_policy": ValidationPolicyResource(max_rejection_rate=max_rejection_rate),
        "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse),
        "io_manager": IntermediateIOManager(),
    }


@pytest.fixture
def resources(landing_dir: Path, warehouse_url: str, tmp_path: Path) -> dict[str, object]:
    return make_resources(landing_dir, warehouse_url, tmp_path)
