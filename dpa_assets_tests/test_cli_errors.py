"""Every operator error is one clear line and a non-zero exit from ``dpa``, never a Python traceback."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from dpa_assets.sources.generator import generate_day, write_landing_file

DAY = "2026-11-20"
STACK_MARKERS = ("Traceback", "Stack Trace", 'File "')


def _dpa(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DPA_")}
    clean.update({"DAGSTER_HOME": str(home), **env})
    dpa = str(Path(sys.executable).with_name("dpa"))
    return subprocess.run([dpa, *args], env=clean, capture_output=True, text=True, timeout=300)


def _assert_one_clear_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode != 0
    for marker in STACK_MARKERS:
        assert marker not in result.stdout + result.stderr, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DPA_DEPLOYMENT": "bogus"}, ("DPA_DEPLOYMENT", "local, production")),
        ({"DPA_FREIGHT_SOURCE": "ftp"}, ("DPA_FREIGHT_SOURCE", "landing, api")),
        ({"DPA_PARTITION_START": "26/11/2026"}, ("DPA_PARTITION_START", "YYYY-MM-DD")),
        ({"DPA_DEPLOYMENT": "production"}, ("DPA_WAREHOUSE_URL", "DPA_LANDING_DIR", "DPA_ARCHIVE_DIR")),
        ({"DPA_FREIGHT_SOURCE": "api"}, ("DPA_FREIGHT_API_URL", "DPA_FREIGHT_API_TOKEN")),
    ],
    ids=["unknown deployment", "unknown source", "bad start date", "production unset", "api unset"],
)
@pytest.mark.parametrize("load", [("materialize", "--date", DAY), ("backfill", "--from", DAY, "--to", DAY)])
def test_bad_configuration_is_one_line(tmp_path, env, expected, load):
    _assert_one_clear_line(_dpa(tmp_path / "home", *load, **env), *expected)


@pytest.mark.parametrize("day", ["2030-01-01", "2025-12-31"], ids=["future", "before the start"])
def test_a_day_outside_the_partition_set_is_one_line(tmp_path, day):
    _assert_one_clear_line(_dpa(tmp_path / "home", "materialize", "--date", day), day, "first day")
    _assert_one_clear_line(_dpa(tmp_path / "home", "backfill", "--from", day, "--to", day), day, "first day")


def test_a_missing_landing_file_says_failed_and_why_without_stack_traces(tmp_path):
    result = _dpa(tmp_path / "home", "materialize", "--date", DAY)

    assert result.returncode == 1
    output = result.stdout + result.stderr
    for marker in STACK_MARKERS:
        assert marker not in output, output
    assert "no landing file for 2026-11-20" in output
    summary = [line for line in result.stdout.splitlines() if line.startswith(DAY)]
    assert summary and all("not run" not in line for line in summary)
    assert "failed" in summary[-1]


@pytest.mark.parametrize("load", [("materialize", "--date", DAY), ("backfill", "--from", DAY, "--to", DAY)])
def test_a_blocked_day_says_blocked_and_why(tmp_path, load):
    home = tmp_path / "home"
    write_landing_file(home / "landing", generate_day(date.fromisoformat(DAY), rows=100, seed=3, bad_fraction=0.5))

    result = _dpa(home, *load)

    assert result.returncode == 1
    output = result.stdout + result.stderr
    for marker in STACK_MARKERS:
        assert marker not in output, output
    assert "blocked" in output and "50.0%" in output and "30% rule" in output


def test_a_dropped_protected_table_is_one_line(tmp_path):
    home = tmp_path / "home"
    write_landing_file(home / "landing", generate_day(date.fromisoformat(DAY), rows=50, seed=3))
    assert _dpa(home, "materialize", "--date", DAY).returncode == 0
    with sqlite3.connect(home / "warehouse.sqlite") as outside:
        outside.execute("DROP TABLE freight_rejects")

    for command in (("materialize", "--date", DAY), ("backfill", "--from", DAY, "--to", DAY), ("setup-warehouse",)):
        result = _dpa(home, *command)
        assert result.returncode != 0
        output = result.stdout + result.stderr
        for marker in STACK_MARKERS:
            assert marker not in output, output
        assert "freight_rejects" in output


def test_output_cut_short_by_the_reader_is_not_a_traceback(tmp_path):
    """`dpa doctor | head -1`: the reader closes the pipe early; dpa stops quietly."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DPA_")}
    clean["DAGSTER_HOME"] = str(tmp_path / "home")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is already gone: every write of dpa meets a broken pipe
    dpa = str(Path(sys.executable).with_name("dpa"))
    try:
        result = subprocess.run(
            [dpa, "list-partitions", "--last", "3"], env=clean, stdout=write_end, stderr=subprocess.PIPE, timeout=300
        )
    finally:
        os.close(write_end)
    errors = result.stderr.decode()
    for marker in (*STACK_MARKERS, "BrokenPipeError"):
        assert marker not in errors, errors


@pytest.mark.parametrize(
    ("command", "bad"),
    [
        (("materialize", "--date", "2026/11/25"), "2026/11/25"),
        (("materialize", "--date", "25-11-2026"), "25-11-2026"),
        (("materialize", "--date", "2026-11-31"), "2026-11-31"),
        (("materialize", "--from", "2026-11-01", "--to", "2026-11-2"), "2026-11-2"),
        (("backfill", "--from", "2026.11.20", "--to", "2026-11-22"), "2026.11.20"),
        (
            ("break-glass", "--date", "yesterday", "--confirm", "yesterday", "--actor", "A", "--reason", "x" * 12),
            "yesterday",
        ),
        (("seed-landing", "--end", "20261125"), "20261125"),
    ],
)
def test_a_malformed_date_is_one_line(tmp_path, command, bad):
    _assert_one_clear_line(_dpa(tmp_path / "home", *command), repr(bad), "YYYY-MM-DD")


@pytest.mark.parametrize(
    "command",
    [
        ("materialize", "--last", "-1"),
        ("materialize", "--last", "0"),
        ("demo", "--days", "0"),
        ("seed-landing", "--days", "-2"),
        ("list-partitions", "--last", "-2"),
        ("doctor", "--days", "0"),
        ("recover", "--days", "-1", "--dry-run"),
        ("alerts", "--last", "-1"),
        ("materialize", "--last", "three"),
    ],
)
def test_a_count_below_one_is_one_line(tmp_path, command):
    result = _dpa(tmp_path / "home", *command)
    _assert_one_clear_line(result, command[-2] if command[-1] == "--dry-run" else command[-1], "1 or more")
    assert not (tmp_path / "home" / "landing").exists(), "nothing may be done for a refused count"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed when the block ends: nothing listens there


@pytest.mark.parametrize(
    "command",
    [
        ("materialize", "--date", DAY),
        ("backfill", "--from", DAY, "--to", DAY),
        ("setup-warehouse",),
        ("recover", "--dry-run"),
    ],
)
def test_an_unreachable_warehouse_is_one_line_without_its_password(tmp_path, command):
    home = tmp_path / "home"
    write_landing_file(home / "landing", generate_day(date.fromisoformat(DAY), rows=20, seed=3))
    assert _dpa(home, "alerts").returncode == 0  # a Dagster home, as after a first use
    url = f"postgresql+psycopg2://dpa:s3cret-pw@127.0.0.1:{_closed_port()}/dwh"

    result = _dpa(home, *command, DPA_WAREHOUSE_URL=url)

    _assert_one_clear_line(result, "warehouse", "dpa:***@127.0.0.1")
    assert result.returncode == 1
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_doctor_names_an_unreachable_warehouse_among_its_findings(tmp_path):
    home = tmp_path / "home"
    assert _dpa(home, "alerts").returncode == 0
    url = f"postgresql+psycopg2://dpa:s3cret-pw@127.0.0.1:{_closed_port()}/dwh"

    result = _dpa(home, "doctor", DPA_WAREHOUSE_URL=url)

    assert result.returncode == 1
    output = result.stdout + result.stderr
    for marker in STACK_MARKERS:
        assert marker not in output, output
    assert "s3cret-pw" not in output
    warehouse_lines = [line for line in result.stdout.splitlines() if "dpa:***@127.0.0.1" in line]
    assert warehouse_lines and warehouse_lines[0].startswith("PROBLEM"), result.stdout
    assert any(line.startswith("PROBLEM daemon") for line in result.stdout.splitlines()), "the other findings too"


def test_a_sqlite_warehouse_in_a_missing_folder_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'warehouse.sqlite'}"
    _assert_one_clear_line(_dpa(tmp_path / "home", "setup-warehouse", DPA_WAREHOUSE_URL=url), "warehouse")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", ("DPA_WAREHOUSE_URL", "not a SQLAlchemy URL")),
        ("postgresql://dpa:s3cret-pw@127.0.0.1/dwh", ("DPA_WAREHOUSE_URL", "postgresql+psycopg2://")),
        ("mysql://dpa:s3cret-pw@127.0.0.1/dwh", ("DPA_WAREHOUSE_URL", "postgresql+psycopg2://")),
    ],
    ids=["garbage", "psycopg 3 driver", "unknown driver"],
)
@pytest.mark.parametrize("command", [("materialize", "--date", DAY), ("doctor",)])
def test_an_unusable_warehouse_url_is_one_setting_line(tmp_path, url, expected, command):
    assert _dpa(tmp_path / "home", "alerts").returncode == 0  # a Dagster home, as after a first use
    result = _dpa(tmp_path / "home", *command, DPA_WAREHOUSE_URL=url)

    _assert_one_clear_line(result, *expected)
    assert result.returncode == 2
    assert "s3cret-pw" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("materialize", "--date", DAY),
        ("backfill", "--from", DAY, "--to", DAY),
        ("recover", "--dry-run"),
        ("doctor",),
    ],
)
def test_production_without_its_instance_database_variables_is_one_line(tmp_path, command):
    """The DPA variables are set; the production dagster.yaml's DAGSTER_PG_* are not."""
    home = tmp_path / "home"
    production = {
        "DPA_DEPLOYMENT": "production",
        "DPA_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        "DPA_LANDING_DIR": str(tmp_path / "landing"),
        "DPA_ARCHIVE_DIR": str(tmp_path / "archive"),
    }
    assert _dpa(home, "alerts", **production).returncode == 0  # installs the production dagster.yaml

    result = _dpa(home, *command, **production)

    _assert_one_clear_line(result, "DAGSTER_PG_USERNAME", "DAGSTER_PG_HOST", "dagster.yaml")
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--fault", "bogus"), ("'bogus'", "error_503")),
        (("--fault", "error_503:2026-11-25:x"), ("'x'", "TIMES")),
        (("--fault", "error_503:2026-13-01:3"), ("'2026-13-01'", "YYYY-MM-DD")),
        (("--port", "99999"), ("99999", "65535")),
    ],
    ids=["unknown fault", "bad times", "bad day", "port out of range"],
)
def test_serve_api_bad_arguments_are_one_line(tmp_path, args, expected):
    result = _dpa(tmp_path / "home", "serve-api", *args, DPA_FREIGHT_API_TOKEN="demo-token")
    _assert_one_clear_line(result, *expected)
    assert result.returncode == 2


def test_serve_api_on_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = _dpa(tmp_path / "home", "serve-api", "--port", port, DPA_FREIGHT_API_TOKEN="demo-token")
    _assert_one_clear_line(result, port)


@pytest.fixture
def demo_api(tmp_path):
    """`dpa serve-api` as README's "Where freight comes from" starts it, on a free port; its URL."""
    port = str(_closed_port())
    env = {**os.environ, "DPA_FREIGHT_API_TOKEN": "demo-token-change-me"}
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("dpa")), "serve-api", "--port", port],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "freight API on" in process.stdout.readline()
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_no_step_retry_works_with_the_api_source(tmp_path, demo_api):
    """README: `dpa materialize --date D --no-step-retry` ("source down? fail at once"), with the API source."""
    api = {"DPA_FREIGHT_SOURCE": "api", "DPA_FREIGHT_API_TOKEN": "demo-token-change-me"}

    loaded = _dpa(
        tmp_path / "home", "materialize", "--date", DAY, "--no-step-retry", DPA_FREIGHT_API_URL=demo_api, **api
    )
    down_url = f"http://127.0.0.1:{_closed_port()}"
    down = _dpa(
        tmp_path / "home", "materialize", "--date", "2026-11-21", "--no-step-retry", DPA_FREIGHT_API_URL=down_url, **api
    )

    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert f"{DAY}  loaded" in loaded.stdout
    assert down.returncode == 1
    for marker in STACK_MARKERS:
        assert marker not in down.stdout + down.stderr, down.stdout + down.stderr
    assert "2026-11-21  failed in raw_freight" in down.stdout
