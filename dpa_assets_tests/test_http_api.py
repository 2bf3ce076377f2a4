"""The freight API client against the real demo server on 127.0.0.1, fault by fault."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
import requests

from dpa_assets.resources import HttpFreightApiSource
from dpa_assets.sources.demo_api import FreightApiServer
from dpa_assets.sources.errors import SourceRefused, SourceUnavailable
from dpa_assets.sources.generator import generate_day
from dpa_assets.sources.http_api import ApiSettings, RetryBudget, api_payload, fetch_pages, parse_api_payload
from dpa_assets.sources.payload import PayloadError
from dpa_assets.transforms import validate_freight
from dpa_assets_tests.conftest import make_resources
from dpa_assets_tests.support.warehouse import scalar, snapshot
from dpa_assets_tests.test_assets import materialize

DAY = "2026-11-20"
TOKEN = "test-token-3f9a"
SEED = 7
FAST = RetryBudget(max_attempts=4, base_delay_seconds=0.01, max_delay_seconds=0.05, max_total_seconds=30)


@pytest.fixture
def server():
    with FreightApiServer(token=TOKEN, seed=SEED) as running:
        yield running


def settings_for(server: FreightApiServer, **overrides) -> ApiSettings:
    return ApiSettings(
        **{"base_url": server.url, "token": TOKEN, "read_timeout_seconds": 0.5, "page_size": 100, **overrides}
    )


def page_requests(server: FreightApiServer) -> int:
    return sum(1 for request in server.requests if request["path"] == "/v1/movements")


def fetch_and_parse(server: FreightApiServer, budget: RetryBudget = FAST, **overrides):
    settings = settings_for(server, **overrides)
    return parse_api_payload(api_payload(settings, DAY, fetch_pages(settings, DAY, budget)))


def test_a_day_is_fetched_page_by_page_and_matches_the_source(server):
    parsed = fetch_and_parse(server, page_size=40)
    generated = generate_day(date.fromisoformat(DAY), seed=SEED)
    assert len(parsed.frame) == len(generated.records)
    assert page_requests(server) == -(-len(generated.records) // 40)
    outcome = validate_freight(parsed.frame, DAY)
    assert outcome.rows_rejected == generated.bad_count
    assert parsed.frame.loc[0, "shipment_id"] == generated.records[0]["shipment_id"]


@pytest.mark.parametrize("kind", ["error_500", "error_503", "offline", "truncated_json"])
def test_transient_faults_are_retried_then_succeed(server, kind, caplog):
    server.add_fault(kind, times=2, page=2)
    parsed = fetch_and_parse(server)
    assert len(parsed.frame) == len(generate_day(date.fromisoformat(DAY), seed=SEED).records)
    assert sum(1 for record in caplog.records if "retrying in" in record.message) == 2


def test_slow_answer_beyond_the_read_timeout_is_retried(server):
    server.add_fault("slow", delay=1.2, times=1)
    started = time.monotonic()
    parsed = fetch_and_parse(server, read_timeout_seconds=0.3)
    assert len(parsed.frame) > 0
    assert time.monotonic() - started < 5


def test_retry_after_is_honoured(server):
    server.add_fault("rate_limited", retry_after=0.4, times=1)
    waits: list[float] = []
    settings = settings_for(server)
    fetch_pages(settings, DAY, FAST, sleep=lambda seconds: (waits.append(seconds), time.sleep(seconds)))
    assert waits == [0.4]


@pytest.mark.parametrize(
    ("kind", "options", "problem"),
    [
        ("error_503", {}, "HTTP 503"),
        ("offline", {}, "connection failed"),
        ("truncated_json", {}, "not valid JSON"),
        ("slow", {"delay": 1.0}, "no answer within the timeout"),
    ],
)
def test_persistent_faults_fail_cleanly_after_bounded_attempts(server, kind, options, problem):
    server.add_fault(kind, times=-1, **options)
    with pytest.raises(SourceUnavailable) as raised:
        fetch_and_parse(server, read_timeout_seconds=0.3)
    message = str(raised.value)
    assert DAY in message and f"{server.url}/v1/movements" in message
    assert "failed 4 times" in message and problem in message
    assert TOKEN not in message


def test_connection_refused_when_the_api_is_down():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    settings = ApiSettings(base_url=f"http://127.0.0.1:{port}", token=TOKEN)
    with pytest.raises(SourceUnavailable, match="failed 4 times.*connection refused"):
        fetch_pages(settings, DAY, FAST)


def test_total_time_bound_stops_retrying_early(server):
    server.add_fault("rate_limited", retry_after=5, times=-1)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="failed 1 times"):
        fetch_and_parse(server, budget=RetryBudget(max_attempts=10, max_total_seconds=2))
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("status_fault", "error", "match"),
    [
        ("token", SourceRefused, "HTTP 401, the API refused the token"),
        ("future", SourceUnavailable, "not published yet"),
    ],
)
def test_auth_and_unpublished_days_are_not_retried(server, status_fault, error, match):
    settings = settings_for(server, token="wrong") if status_fault == "token" else settings_for(server)
    day = "2099-01-01" if status_fault == "future" else DAY
    with pytest.raises(error, match=match):
        fetch_pages(settings, day, FAST)
    assert page_requests(server) == 1


def test_wrong_field_names_are_a_structural_fault(server):
    server.add_fault("wrong_field_names", times=-1)
    with pytest.raises(PayloadError, match=r"lack required fields \['shipment_id', 'net_tonnage'\].*renamed"):
        fetch_and_parse(server)


def test_a_duplicated_page_is_detected(server):
    server.add_fault("duplicate_page", page=2, times=1)
    with pytest.raises(PayloadError, match="page 1 was served twice"):
        fetch_and_parse(server)


@pytest.mark.parametrize(
    ("page_text", "match"),
    [
        ("[1, 2]", "page 1 is not a movements page"),
        ('{"movements": "none"}', "page 1 is not a movements page"),
        ('{"page": 1, "page_count": 1, "total_movements": 1, "movements": [42]}', "movements must be JSON objects"),
        ('{"page": 1, "page_count": 2, "total_movements": 0, "movements": []}', "received 1 of 2 pages"),
    ],
)
def test_json_that_is_not_the_expected_shape_is_a_structural_fault(server, page_text, match):
    payload = api_payload(settings_for(server), DAY, [page_text])
    with pytest.raises(PayloadError, match=match):
        parse_api_payload(payload)


def test_api_down_through_dagster_fails_cleanly(server, sqlite_url, tmp_path, instance):
    resources = api_resources(server, sqlite_url, tmp_path)
    server.stop()  # connection refused from now on
    result = materialize(resources, DAY, instance)
    assert not result.success
    message = result.failure_data_for_node("raw_freight").error.message
    assert "connection refused" in message and "failed 3 times" in message and DAY in message
    assert snapshot(sqlite_url).get("warehouse_facts", []) == []


def test_bad_values_in_a_page_are_row_level_not_structural(server):
    parsed = fetch_and_parse(server)
    outcome = validate_freight(parsed.frame, DAY)
    assert outcome.rows_rejected > 0 and len(outcome.valid) > 0


def api_resources(
    server: FreightApiServer, warehouse_url: str, tmp_path: Path, retry_step: bool = False, token: str = TOKEN
) -> dict:
    resources = make_resources(tmp_path / "unused-landing", warehouse_url, tmp_path)
    resources["freight_source"] = HttpFreightApiSource(
        base_url=server.url,
        token=token,
        read_timeout_seconds=0.5,
        max_attempts=3,
        backoff_base_seconds=0.01,
        page_size=100,
        retry_step_on_outage=retry_step,
    )
    return resources


def test_materialize_from_the_api_loads_the_day(server, warehouse_url, tmp_path, instance):
    result = materialize(api_resources(server, warehouse_url, tmp_path), DAY, instance)
    assert result.success
    generated = generate_day(date.fromisoformat(DAY), seed=SEED)
    loaded = scalar(warehouse_url, "SELECT count(*) FROM warehouse_facts")
    assert loaded == len(generated.records) - generated.bad_count
    archived = [path for path in (tmp_path / "archive" / DAY).glob("received-*.json") if ".meta." not in path.name]
    assert len(archived) == 1 and json.loads(archived[0].read_text())["pages"]


def _all_event_text(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(str(record.event_log_entry) for record in instance.get_records_for_run(run_id).records)


@pytest.mark.parametrize(
    ("kind", "options", "phrase"),
    [
        ("error_503", {"times": -1}, "could not be fetched"),
        ("offline", {"times": -1}, "connection failed"),
        ("slow", {"times": -1, "delay": 1.0}, "no answer within the timeout"),
        ("rate_limited", {"times": -1, "retry_after": 0.05}, "HTTP 429"),
        ("truncated_json", {"times": -1}, "not valid JSON"),
        ("wrong_field_names", {"times": -1}, "lack required fields"),
        ("duplicate_page", {"times": 1, "page": 2}, "served twice"),
    ],
)
def test_failed_fetch_leaves_the_warehouse_unchanged(server, warehouse_url, tmp_path, instance, kind, options, phrase):
    resources = api_resources(server, warehouse_url, tmp_path)
    assert materialize(resources, DAY, instance).success
    before = snapshot(warehouse_url)
    server.add_fault(kind, **options)

    result = materialize(resources, DAY, instance)

    assert not result.success
    failure = result.failure_data_for_node("raw_freight")
    assert DAY in failure.error.message and phrase in failure.error.message
    assert f"{server.url}/v1/movements" in failure.error.message
    assert snapshot(warehouse_url) == before
    assert TOKEN not in _all_event_text(instance, result.run_id)


@pytest.mark.slow
def test_the_step_retry_policy_rides_out_a_longer_outage(server, sqlite_url, tmp_path, instance):
    server.add_fault("error_503", times=-1)
    resources = api_resources(server, sqlite_url, tmp_path, retry_step=True)

    def api_comes_back() -> None:
        while page_requests(server) < 3:  # the first step attempt has used its 3 tries
            time.sleep(0.05)
        server.clear_faults()

    threading.Thread(target=api_comes_back, daemon=True).start()
    result = materialize(resources, DAY, instance)

    assert result.success
    retried = [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried and retried[0].step_key == "raw_freight"
    assert scalar(sqlite_url, "SELECT count(*) FROM warehouse_facts") > 0


def test_serve_api_command_serves_the_contract(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DPA_FREIGHT_API_TOKEN": TOKEN}
    dpa = str(Path(sys.executable).with_name("dpa"))
    process = subprocess.Popen(
        [dpa, "serve-api", "--port", str(port), "--fault", f"error_503:{DAY}:1"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "freight API on" in process.stdout.readline()
        url = f"http://127.0.0.1:{port}/v1/movements"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert requests.get(url, params={"date": DAY}, headers=headers, timeout=5).status_code == 503
        answer = requests.get(url, params={"date": DAY}, headers=headers, timeout=5)
        assert answer.status_code == 200 and answer.json()["page"] == 1
        assert requests.get(url, params={"date": DAY}, timeout=5).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- the archive keeps every response as received ---------------------------------------------------


def _receipts(tmp_path: Path) -> list[dict]:
    log = tmp_path / "archive" / DAY / "receipts.jsonl"
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []


def _responses(tmp_path: Path) -> list[dict]:
    """Receipts of raw HTTP responses, in arrival order, each with the archived bytes and sidecar."""
    folder = tmp_path / "archive" / DAY
    found = []
    for receipt in _receipts(tmp_path):
        if receipt["file"].startswith("response-"):
            sidecar = json.loads((folder / (receipt["file"] + ".meta.json")).read_text(encoding="utf-8"))
            found.append({**receipt, "content": (folder / receipt["file"]).read_bytes(), "sidecar": sidecar})
    return found


def _attempts(responses: list[dict]) -> list[tuple[int, int, int]]:
    return [(response["page"], response["attempt"], response["status"]) for response in responses]


def test_every_response_is_archived_as_received_before_parsing(server, sqlite_url, tmp_path, instance):
    server.add_fault("rate_limited", retry_after=0.01, page=1, times=1)
    server.add_fault("error_503", page=2, times=1)
    server.add_fault("truncated_json", page=3, times=1)

    result = materialize(api_resources(server, sqlite_url, tmp_path), DAY, instance)

    assert result.success
    responses = _responses(tmp_path)
    assert _attempts(responses) == [(1, 1, 429), (1, 2, 200), (2, 1, 503), (2, 2, 200), (3, 1, 200), (3, 2, 200)]
    for response in responses:
        assert len(response["sha256"]) == 64 and hashlib.sha256(response["content"]).hexdigest() == response["sha256"]
        assert response["file"] == f"response-{response['sha256']}.json"
        assert response["sidecar"]["media_type"] == "application/json"
    assert json.loads(responses[2]["content"]) == {"error": "server_error", "message": "injected 503"}
    page_3 = json.dumps(server.page_body(DAY, 3, 100), ensure_ascii=False).encode("utf-8")
    assert responses[4]["content"] == page_3[: len(page_3) // 2]  # the truncated bytes, not a parse of them
    assert responses[5]["content"] == page_3
    day_file = Path(result.asset_materializations_for_node("raw_freight")[0].metadata["archived_as"].value)
    assert day_file.name == f"received-{hashlib.sha256(day_file.read_bytes()).hexdigest()}.json"
    last_per_page = {response["page"]: response["sha256"] for response in responses}  # the accepted answers
    assert json.loads(day_file.read_bytes())["page_sha256"] == list(last_per_page.values())


@pytest.mark.parametrize(("kind", "status"), [("error_500", 500), ("truncated_json", 200)])
def test_a_failed_day_keeps_the_bytes_of_every_failed_attempt(server, sqlite_url, tmp_path, instance, kind, status):
    server.add_fault(kind, times=-1)

    result = materialize(api_resources(server, sqlite_url, tmp_path), DAY, instance)

    assert not result.success
    responses = _responses(tmp_path)
    assert _attempts(responses) == [(1, 1, status), (1, 2, status), (1, 3, status)]
    assert len({response["file"] for response in responses}) == 1  # the same bytes thrice: one file
    assert [receipt for receipt in _receipts(tmp_path) if receipt["file"].startswith("received-")] == []


# --- a refused token, and secrets in messages --------------------------------------------------------


def test_a_refused_token_fails_the_day_at_once_without_step_retries(server, sqlite_url, tmp_path, instance):
    resources = api_resources(server, sqlite_url, tmp_path, retry_step=True, token="wrong-token-77")

    result = materialize(resources, DAY, instance)

    assert not result.success
    assert page_requests(server) == 1
    assert [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"] == []
    message = result.failure_data_for_node("raw_freight").error.message.strip()
    assert "HTTP 401" in message and "refused the token" in message and DAY in message
    assert len(message.splitlines()) == 1
    events = _all_event_text(instance, result.run_id)
    assert "wrong-token-77" not in events and TOKEN not in events
    assert snapshot(sqlite_url).get("warehouse_facts", []) == []
    assert _attempts(_responses(tmp_path)) == [(1, 1, 401)]


def test_neither_the_settings_nor_the_resource_show_the_token():
    settings = ApiSettings(base_url="http://127.0.0.1:9", token=TOKEN)
    source = HttpFreightApiSource(base_url="http://127.0.0.1:9", token=TOKEN)
    for text in (repr(settings), str(settings), repr(source), str(source)):
        assert TOKEN not in text and "127.0.0.1:9" in text


class _NoisyProxyHandler(BaseHTTPRequestHandler):
    """An intermediary answering a long, multi-line error page that echoes the request headers."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        echoed = f"Authorization: {self.headers.get('Authorization')}"
        page = f"<html>\r\n<h1>\x1b[31mI'm a teapot\x07</h1>\n<pre>{echoed}</pre>\n{'x' * 5000}</html>"
        data = page.encode("utf-8")
        self.send_response(418)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def noisy_proxy():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NoisyProxyHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def test_an_unexpected_answer_is_reported_as_one_short_printable_line_without_the_token(noisy_proxy, tmp_path):
    settings = ApiSettings(base_url=noisy_proxy, token=TOKEN)

    with pytest.raises(PayloadError) as raised:
        fetch_pages(settings, DAY, FAST)

    message = str(raised.value)
    assert "HTTP 418" in message and "I'm a teapot" in message
    assert TOKEN not in message
    assert message.isprintable() and len(message) < len(settings.endpoint) + 300
