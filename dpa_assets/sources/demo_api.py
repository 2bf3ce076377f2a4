"""A small, real freight API (docs/freight-api.md) serving synthetic days, with switchable faults.

It runs on loopback for the demo (``dpa serve-api``) and the tests. Faults can be armed per day,
per page and for a number of requests, so each extraction threat of the continuity plan can be
played against the real client.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from dpa_assets.partitions import LOCAL_TZ
from dpa_assets.sources.generator import generate_day

FAULT_KINDS = (
    "offline",
    "error_500",
    "error_503",
    "rate_limited",
    "slow",
    "truncated_json",
    "wrong_field_names",
    "duplicate_page",
)
RENAMED_FIELDS = {"net_tonnage": "netTonnage", "shipment_id": "shipmentId"}
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000


@dataclass
class Fault:
    """One armed fault: which requests it hits and how."""

    kind: str
    day: str | None = None  # None: any day
    times: int = 1  # matching requests still to hit; -1: every one
    page: int | None = None  # None: any page
    retry_after: float = 1.0
    delay: float = 5.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(FAULT_KINDS)}")


def parse_fault(spec: str) -> Fault:
    """``KIND[:DAY[:TIMES]]`` as given to ``dpa serve-api --fault``; ``ValueError`` saying which part is wrong."""
    kind, day, times = (spec.split(":") + ["", ""])[:3]
    if day and not _is_day(day):
        raise ValueError(f"fault {spec!r}: {day!r} is not a day in YYYY-MM-DD form")
    if times and not (times.isdigit() or times == "-1"):
        raise ValueError(f"fault {spec!r}: {times!r} is not a number of TIMES (a count, or -1 for every request)")
    return Fault(kind=kind, day=day or None, times=int(times) if times else 1)


def _is_day(text: str) -> bool:
    """A day as the API's ``date`` parameter spells it (YYYY-MM-DD; a fault on another spelling never fires)."""
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == len("YYYY-MM-DD")


@functools.lru_cache(maxsize=64)
def _day_records(day: str, seed: int, rows: int | None) -> tuple[dict, ...]:
    records = generate_day(date.fromisoformat(day), rows=rows, seed=seed).records
    return tuple(_as_api_movement(record) for record in records)


def _as_api_movement(record: dict[str, str]) -> dict:
    """The API sends numbers as JSON numbers where they parse, as the contract's example shows."""
    movement: dict = dict(record)
    for field in ("net_tonnage", "wagon_count", "revenue_xaf"):
        try:
            number = float(record[field])
            movement[field] = int(number) if field != "net_tonnage" and number.is_integer() else number
        except ValueError:
            pass  # a bad number travels as the text the freight system held
    movement["arrival_time"] = record["arrival_time"] or None
    return movement


def _page_token(page: int) -> str:
    return base64.urlsafe_b64encode(f"page-{page}".encode()).decode()


def _page_from_token(token: str | None) -> int | None:
    if not token:
        return 1
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        return int(text.removeprefix("page-")) if text.startswith("page-") else None
    except (ValueError, UnicodeDecodeError):
        return None


class FreightApiServer:
    """The demo freight API on a loopback port; ``port=0`` picks a free one."""

    def __init__(self, token: str, host: str = "127.0.0.1", port: int = 0, seed: int = 0, rows: int | None = None):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the demo freight API only listens on loopback")
        self.token, self.seed, self.rows = token, seed, rows
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.requests: list[dict] = []  # what was asked, for tests and the demo log
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add_fault(self, kind: str, **options: object) -> Fault:
        fault = Fault(kind=kind, **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, day: str, page: int) -> Fault | None:
        """The first armed fault matching this request, used up by one."""
        with self._lock:
            for fault in self._faults:
                if fault.times != 0 and fault.day in (None, day) and fault.page in (None, page):
                    fault.times -= 1 if fault.times > 0 else 0
                    return fault
        return None

    def start(self) -> FreightApiServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="freight-api", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FreightApiServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def page_body(self, day: str, page: int, page_size: int) -> dict | None:
        records = _day_records(day, self.seed, self.rows)
        page_count = max(1, -(-len(records) // page_size))
        if not 1 <= page <= page_count:
            return None
        return {
            "date": day,
            "page": page,
            "page_count": page_count,
            "total_movements": len(records),
            "movements": list(records[(page - 1) * page_size : page * page_size]),
            "next_page_token": _page_token(page + 1) if page < page_count else None,
        }


def _last_published_day() -> date:
    return datetime.now(LOCAL_TZ).date() - timedelta(days=1)


def _handler_for(server: FreightApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet by default
            pass

        def _send_json(self, status: int, body: dict | bytes, headers: dict[str, str] | None = None) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: HTTPStatus, code: str, message: str, headers: dict[str, str] | None = None) -> None:
            self._send_json(status, {"error": code, "message": message}, headers)

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            if urlparse(self.path).path != "/_faults":
                return self._error(HTTPStatus.NOT_FOUND, "not_found", "no such endpoint")
            try:
                length = int(self.headers.get("Content-Length", "0"))
                fault = server.add_fault(**json.loads(self.rfile.read(length) or b"{}"))
            except (TypeError, ValueError) as error:
                return self._error(HTTPStatus.BAD_REQUEST, "bad_fault", str(error))
            self._send_json(HTTPStatus.CREATED, asdict(fault))

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            url = urlparse(self.path)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            server.requests.append({"path": url.path, **query})
            if url.path != "/v1/movements":
                return self._error(HTTPStatus.NOT_FOUND, "not_found", "no such endpoint")
            if self.headers.get("Authorization") != f"Bearer {server.token}":
                return self._error(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
            self._movements(query)

        def _movements(self, query: dict[str, str]) -> None:
            day, page = query.get("date", ""), _page_from_token(query.get("page_token"))
            try:
                published = date.fromisoformat(day) <= _last_published_day()
                page_size = int(query.get("page_size", DEFAULT_PAGE_SIZE))
            except ValueError:
                return self._error(HTTPStatus.BAD_REQUEST, "bad_request", "date must be YYYY-MM-DD, page_size a number")
            if page is None or not 1 <= page_size <= MAX_PAGE_SIZE:
                return self._error(HTTPStatus.BAD_REQUEST, "bad_request", "bad page_token or page_size")
            if not published:
                return self._error(HTTPStatus.NOT_FOUND, "not_published", f"{day} is not published yet")
            fault = server.take_fault(day, page)
            if fault is not None and self._apply(fault, day, page, page_size):
                return
            body = server.page_body(day, page, page_size)
            if body is None:
                return self._error(HTTPStatus.BAD_REQUEST, "bad_request", f"page {page} does not exist")
            self._send_json(HTTPStatus.OK, body)

        def _apply(self, fault: Fault, day: str, page: int, page_size: int) -> bool:
            """Play a fault; True when the response has been sent (or deliberately not)."""
            if fault.kind == "offline":
                self.close_connection = True
                self.connection.shutdown(2)  # reset: the client sees a dropped connection
                return True
            if fault.kind in ("error_500", "error_503"):
                status = HTTPStatus(int(fault.kind[-3:]))
                self._error(status, "server_error", f"injected {status.value}")
                return True
            if fault.kind == "rate_limited":
                retry_after = {
                    "Retry-After": str(
                        int(fault.retry_after) if float(fault.retry_after).is_integer() else fault.retry_after
                    )
                }
                self._error(HTTPStatus.TOO_MANY_REQUESTS, "rate_limited", "slow down", retry_after)
                return True
            if fault.kind == "slow":
                time.sleep(fault.delay)
                return False
            body = server.page_body(day, page if fault.kind != "duplicate_page" else max(1, page - 1), page_size)
            if body is None:
                return False
            if fault.kind == "wrong_field_names":
                body["movements"] = [
                    {RENAMED_FIELDS.get(name, name): value for name, value in movement.items()}
                    for movement in body["movements"]
                ]
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            self._send_json(HTTPStatus.OK, data[: len(data) // 2] if fault.kind == "truncated_json" else data)
            return True

    return Handler
