"""Start the Dagster daemon and webserver as real processes, talk GraphQL to them, and stop them.

Each service gets its own process group (its code servers and run workers are its children), so
stopping one ends exactly what this test started, by PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``BIN/args[0] args[1:]`` in a new session, output to ``log``."""
    with log.open("wb") as handle:
        return subprocess.Popen(
            [str(BIN / args[0]), *args[1:]],
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_service(process: subprocess.Popen, grace_seconds: float = 30.0) -> None:
    """SIGTERM the service's process group, then SIGKILL what is left of it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_seconds)
            # The leader is gone; its group may still hold code servers or run workers.
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            pass


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    response = requests.post(
        f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def wait_for_webserver(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Wait until the webserver answers; fail with its log if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"webserver exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise AssertionError(f"webserver not answering after {timeout}s:\n{log.read_text(errors='replace')}")


def location_of(port: int, repository: str = "__repository__", timeout: float = 120.0) -> str:
    """The code location name the webserver loaded the repository under.

    The webserver answers before its code server has loaded the definitions (slower on a busy
    machine): the repository list stays empty until then, so it is asked again until the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        data = graphql(
            port,
            "{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name } } }"
            " ... on PythonError { message } } }",
        )
        nodes = data["repositoriesOrError"].get("nodes")
        if nodes or time.monotonic() >= deadline:
            break
        time.sleep(1)
    assert nodes, data
    return next(node["location"]["name"] for node in nodes if node["name"] == repository)


def launch_partition_run(port: int, location: str, job: str, partition: str) -> str:
    """Submit one partition's run through the webserver, as the UI's *Materialize* does; returns its id."""
    return launch_run(port, location, job, {}, {"dagster/partition": partition})


def launch_run(port: int, location: str, job: str, run_config: dict, tags: dict[str, str] | None = None) -> str:
    """Submit a run through the webserver, as the UI's Launchpad does; returns its id."""
    data = graphql(
        port,
        "mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename"
        " ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }"
        " ... on RunConfigValidationInvalid { errors { message } } } }",
        {
            "params": {
                "selector": {"repositoryLocationName": location, "repositoryName": "__repository__", "jobName": job},
                "runConfigData": run_config,
                "executionMetadata": {"tags": [{"key": key, "value": value} for key, value in (tags or {}).items()]},
            }
        },
    )
    result = data["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_for_run(port: int, run_id: str, timeout: float) -> str:
    """Poll the run until it ends; returns its final status (or the last one seen at the timeout)."""
    deadline = time.monotonic() + timeout
    status = "UNKNOWN"
    while time.monotonic() < deadline:
        data = graphql(port, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id})
        status = data["runOrError"]["status"]
        if status in TERMINAL_RUN_STATUSES:
            return status
        time.sleep(2)
    return status
