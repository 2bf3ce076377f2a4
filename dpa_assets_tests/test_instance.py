"""The shipped Dagster instances: SQLite locally, PostgreSQL in production, with the same run queue rules."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from dpa_assets.instance import install_instance_yaml, instance_yaml
from dpa_assets.sources.generator import generate_day, write_landing_file
from dpa_assets_tests.support import services

REPO = Path(__file__).resolve().parents[1]
DAY = "2026-11-20"
PG_VARIABLES = ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_PORT")


def test_local_deployment_installs_the_sqlite_instance(tmp_path, monkeypatch):
    monkeypatch.delenv("DPA_DEPLOYMENT", raising=False)

    installed = yaml.safe_load(install_instance_yaml(tmp_path / "home").read_text())

    assert "storage" not in installed  # Dagster's default: SQLite under the home
    assert installed == yaml.safe_load(instance_yaml("local"))


def test_production_deployment_installs_the_postgres_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("DPA_DEPLOYMENT", "production")

    installed = yaml.safe_load(install_instance_yaml(tmp_path / "home").read_text())

    assert set(installed["storage"]) == {"postgres"}
    assert installed["run_coordinator"]["class"] == "QueuedRunCoordinator"
    runs = installed["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] >= 1
    local_limits = yaml.safe_load(instance_yaml("local"))["concurrency"]["runs"]["tag_concurrency_limits"]
    assert runs["tag_concurrency_limits"] == local_limits  # one run per freight day, as locally
    assert installed["run_monitoring"]["enabled"] is True
    assert installed["telemetry"]["enabled"] is False


def test_an_existing_instance_file_is_kept_whatever_the_deployment(tmp_path, monkeypatch):
    home = tmp_path / "home"
    local = install_instance_yaml(home).read_text()
    monkeypatch.setenv("DPA_DEPLOYMENT", "production")

    assert install_instance_yaml(home).read_text() == local


def test_unknown_deployment_installs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DPA_DEPLOYMENT", "staging")

    with pytest.raises(ValueError, match="local, production"):
        install_instance_yaml(tmp_path / "home")
    assert not (tmp_path / "home" / "dagster.yaml").exists()


def test_production_instance_takes_every_connection_value_from_the_environment():
    postgres_db = yaml.safe_load(instance_yaml("production"))["storage"]["postgres"]["postgres_db"]

    from_env = {key: value["env"] for key, value in postgres_db.items() if isinstance(value, dict)}
    assert set(from_env.values()) == set(PG_VARIABLES)
    assert {key: value for key, value in postgres_db.items() if key not in from_env} == {
        "scheme": "postgresql+psycopg2"  # psycopg 3, SQLAlchemy 2.1's default, is not installed
    }


def _dagster_role(pg_url: str) -> tuple[str, str]:
    """A login role owning the test database, with a password that needs URL quoting."""
    role = f"dpa_dagster_{uuid.uuid4().hex[:8]}"
    password = f"p@ss:w/rd%{secrets.token_hex(8)}"
    url = sa.make_url(pg_url)
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        # Identifiers come from our own uuid; the password is a literal PostgreSQL must receive inline.
        connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD %(password)s", {"password": password})
        connection.exec_driver_sql(f'ALTER DATABASE "{url.database}" OWNER TO {role}')
    admin.dispose()
    return role, password


def _production_env(pg_url: str, role: str, password: str, tmp_path: Path) -> dict[str, str]:
    url = sa.make_url(pg_url)
    return {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "DPA_DEPLOYMENT": "production",
        "DAGSTER_PG_USERNAME": role,
        "DAGSTER_PG_PASSWORD": password,
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_DB": url.database,
        "DPA_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        "DPA_LANDING_DIR": str(tmp_path / "landing"),
        "DPA_ARCHIVE_DIR": str(tmp_path / "archive"),
    }


def _run_records(pg_url: str, run_id: str) -> tuple[str | None, list[str]]:
    """The run's status and event types as Dagster stored them in PostgreSQL."""
    engine = sa.create_engine(pg_url)
    with engine.connect() as connection:
        status = connection.execute(sa.text("SELECT status FROM runs WHERE run_id = :id"), {"id": run_id}).scalar()
        events = connection.execute(
            sa.text("SELECT dagster_event_type FROM event_logs WHERE run_id = :id AND dagster_event_type IS NOT NULL"),
            {"id": run_id},
        ).scalars()
        event_types = list(events)
    engine.dispose()
    return status, event_types


def _warehouse_day(warehouse_url: str) -> tuple[int, int]:
    engine = sa.create_engine(warehouse_url)
    with engine.connect() as connection:
        counts = [
            connection.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE partition_date = :day"), {"day": DAY}
            ).scalar()
            for table in ("warehouse_facts", "freight_rejects")
        ]
    engine.dispose()
    return counts[0], counts[1]


@pytest.mark.postgres
def test_production_instance_opens_on_postgres_with_the_run_queue_limits(pg_url, tmp_path, monkeypatch):
    role, password = _dagster_role(pg_url)
    for name, value in _production_env(pg_url, role, password, tmp_path).items():
        monkeypatch.setenv(name, value)
    home = install_instance_yaml(tmp_path / "home").parent

    with dg.DagsterInstance.from_config(str(home)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        storage_class = type(instance.run_storage).__name__
        coordinator_class = type(instance.run_coordinator).__name__

    assert storage_class == "PostgresRunStorage"
    assert coordinator_class == "QueuedRunCoordinator"
    assert queue.max_concurrent_runs == 4
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
        queue.tag_concurrency_limits
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_daemon_and_webserver_run_a_queued_day_on_the_postgres_instance(pg_url, tmp_path):
    """The one-host production set-up of docs/deployment.md, with real processes."""
    role, password = _dagster_role(pg_url)
    env = _production_env(pg_url, role, password, tmp_path)
    generated = generate_day(date.fromisoformat(DAY), seed=7)
    write_landing_file(Path(env["DPA_LANDING_DIR"]), generated)
    # The operator's first command installs the production dagster.yaml into the empty home.
    setup = subprocess.run(
        [str(Path(sys.executable).with_name("dpa")), "setup-warehouse"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    home = Path(env["DAGSTER_HOME"])
    assert "postgres" in yaml.safe_load((home / "dagster.yaml").read_text())["storage"]

    port = services.free_port()
    daemon_log, webserver_log = tmp_path / "daemon.log", tmp_path / "webserver.log"
    started = []
    try:
        started.append(services.start_service(["dagster-daemon", "run", "-w", "workspace.yaml"], REPO, env, daemon_log))
        webserver = services.start_service(
            ["dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"], REPO, env, webserver_log
        )
        started.append(webserver)
        services.wait_for_webserver(port, webserver, webserver_log, timeout=300)

        run_id = services.launch_partition_run(port, services.location_of(port), "daily_freight_job", DAY)
        status = services.wait_for_run(port, run_id, timeout=600)
    finally:
        for process in reversed(started):
            services.stop_service(process)

    logs = daemon_log.read_text(errors="replace") + webserver_log.read_text(errors="replace")
    assert status == "SUCCESS", logs[-6000:]
    stored_status, event_types = _run_records(pg_url, run_id)
    assert stored_status == "SUCCESS"
    # Queued by the webserver, taken off the queue by the daemon (RUN_STARTING: Dagster emits no
    # RUN_DEQUEUED), finished: all recorded in PostgreSQL.
    expected = {"RUN_ENQUEUED", "RUN_STARTING", "RUN_START", "RUN_SUCCESS", "ASSET_MATERIALIZATION"}
    # The column keeps Dagster's stored names (PIPELINE_* for run events).
    assert {dg.DagsterEventType[name].value for name in expected} <= set(event_types)
    assert not list(home.rglob("*.db"))  # no run, event or schedule storage fell back to SQLite files
    loaded, rejected = _warehouse_day(env["DPA_WAREHOUSE_URL"])
    assert loaded > 0 and loaded + rejected == len(generated.records)
    secret_part = password.rsplit("%", 1)[1]  # the same in every quoting of the password
    for text in (logs, *(path.read_text(errors="replace") for path in home.rglob("*") if path.is_file())):
        assert secret_part not in text
