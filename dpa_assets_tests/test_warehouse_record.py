"""A SQLite warehouse rewritten behind DPA's back is detected against Dagster's record, never papered over.

Each case loads two days with ``dpa materialize`` (a real process, a real Dagster home), damages the
warehouse file the way an outside client can, then asks for a third day: the run must refuse, name
the lost days, and write nothing. ``dpa new-warehouse`` is the one deliberate way to start over.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from dpa_assets.sources.generator import generate_day, write_landing_file
from dpa_assets_tests.support.warehouse import rows, scalar, snapshot

LOADED_DAYS = ("2026-11-18", "2026-11-19")
NEXT_DAY = "2026-11-20"
pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    for key in (*LOADED_DAYS, NEXT_DAY):
        write_landing_file(home / "landing", generate_day(date.fromisoformat(key), rows=60, seed=5))
    return home


def _dpa(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DPA_")}
    env["DAGSTER_HOME"] = str(home)
    dpa = str(Path(sys.executable).with_name("dpa"))
    return subprocess.run([dpa, *args], env=env, capture_output=True, text=True, timeout=300)


def _load(home: Path, *days: str) -> subprocess.CompletedProcess:
    return _dpa(home, "materialize", *[arg for day in days for arg in ("--date", day)])


def _warehouse(home: Path) -> Path:
    return home / "warehouse.sqlite"


def _outside(home: Path, script: str) -> None:
    """What any client with write access to the file can do: no DPA connection, no authorizer."""
    with sqlite3.connect(_warehouse(home)) as connection:
        connection.executescript(script)


def _forged_permit_delete(home: Path) -> None:
    day = LOADED_DAYS[0]
    _outside(
        home,
        f"INSERT INTO dpa_write_permit VALUES ('warehouse_facts', '{day}');"
        f"DELETE FROM warehouse_facts WHERE partition_date = '{day}';"
        "DELETE FROM dpa_write_permit;",
    )


def _delete_file(home: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{_warehouse(home)}{suffix}").unlink(missing_ok=True)


DAMAGES = {
    "dropped fact table": lambda home: _outside(home, "DROP TABLE warehouse_facts;"),
    "dropped marker and fact table": lambda home: _outside(
        home, "DROP TABLE dpa_schema_marker; DROP TABLE warehouse_facts;"
    ),
    "deleted warehouse file": _delete_file,
    "rows deleted through a forged permit": _forged_permit_delete,
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_next_run_refuses_and_names_the_lost_days(home, damage):
    assert _load(home, *LOADED_DAYS).returncode == 0
    DAMAGES[damage](home)
    before = snapshot(f"sqlite:///{_warehouse(home)}") if _warehouse(home).exists() else None

    result = _load(home, NEXT_DAY)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    lost = LOADED_DAYS[:1] if damage == "rows deleted through a forged permit" else LOADED_DAYS
    for day in lost:
        assert day in output, output
    after = snapshot(f"sqlite:///{_warehouse(home)}") if _warehouse(home).exists() else None
    if before is not None:
        assert after == before  # nothing recreated, nothing written
    else:
        assert not _tables(home)  # a deleted warehouse is not recreated empty


def _tables(home: Path) -> list[str]:
    if not _warehouse(home).exists():
        return []
    with sqlite3.connect(_warehouse(home)) as connection:
        return [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


@pytest.mark.parametrize("selection", ["warehouse_facts", "*"])
def test_a_deleted_warehouse_is_not_recreated_by_a_run_launched_with_dagster(home, selection):
    # The UI's and the dagster CLI's path: one asset alone, or all of them, for a day already validated.
    assert _load(home, *LOADED_DAYS, NEXT_DAY).returncode == 0
    _delete_file(home)
    env = {key: value for key, value in os.environ.items() if not key.startswith("DPA_")}
    env["DAGSTER_HOME"] = str(home)
    dagster = str(Path(sys.executable).with_name("dagster"))
    command = [dagster, "asset", "materialize", "-m", "dpa_assets.definitions", "--partition", NEXT_DAY]
    result = subprocess.run([*command, "--select", selection], env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode != 0
    assert LOADED_DAYS[0] in result.stdout + result.stderr
    assert not _tables(home)


NEW_WAREHOUSE = (
    "new-warehouse",
    "--confirm",
    "new-warehouse",
    "--actor",
    "A. Mbarga",
    "--reason",
    "disk failed, no backup",
)


def test_new_warehouse_is_an_explicit_recorded_command(home):
    assert _load(home, *LOADED_DAYS).returncode == 0
    refused = _dpa(home, *NEW_WAREHOUSE)
    assert refused.returncode == 2 and "still holds" in refused.stderr  # never over loaded facts
    _delete_file(home)
    assert _load(home, NEXT_DAY).returncode != 0

    started = _dpa(home, *NEW_WAREHOUSE)

    assert started.returncode == 0, started.stderr
    assert _load(home, NEXT_DAY).returncode == 0
    url = f"sqlite:///{_warehouse(home)}"
    assert scalar(url, "SELECT count(DISTINCT partition_date) FROM warehouse_facts") == 1


def test_an_audited_break_glass_is_not_a_divergence(home):
    assert _load(home, *LOADED_DAYS).returncode == 0
    day = LOADED_DAYS[0]
    glass = _dpa(
        home,
        "break-glass",
        "--date",
        day,
        "--confirm",
        day,
        "--actor",
        "A. Mbarga",
        "--reason",
        "reload after customer dispute",
    )
    assert glass.returncode == 0, glass.stderr

    assert _load(home, NEXT_DAY).returncode == 0
    statuses = rows(
        f"sqlite:///{_warehouse(home)}", "SELECT status FROM load_audit WHERE partition_date = :d", d=NEXT_DAY
    )
    assert {"status": "loaded"} in statuses
