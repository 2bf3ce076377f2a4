"""A small fake of Africa's Talking's SMS API on 127.0.0.1 that records every request.

It answers like the real one (HTTP 201, ``SMSMessageData.Recipients[]`` with ``statusCode`` 101)
and can be told to fail (``down``: HTTP 503) or to refuse the key (HTTP 401).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class FakeSmsGateway:
    username: str = "dpa-oncall"
    api_key: str = "atsk_test_9f8e7d6c5b4a"
    down: bool = False
    requests: list[RecordedRequest] = field(default_factory=list)

    def start(self) -> FakeSmsGateway:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = {key: values[0] for key, values in parse_qs(body).items()}
                gateway.requests.append(RecordedRequest(self.path, dict(self.headers), form))
                status, answer = gateway.answer(self.path, dict(self.headers), form)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, headers: dict[str, str], form: dict[str, str]) -> tuple[int, dict]:
        if self.down:
            return 503, {"error": "service unavailable"}
        if path != "/version1/messaging":
            return 404, {"error": "not found"}
        if headers.get("apiKey") != self.api_key or form.get("username") != self.username:
            return 401, {"error": "The supplied authentication is invalid"}
        recipients = [
            {"number": number, "status": "Success", "statusCode": 101, "cost": "XAF 25", "messageId": f"ATXid_{i}"}
            for i, number in enumerate(form.get("to", "").split(","))
        ]
        return 201, {
            "SMSMessageData": {"Message": f"Sent to {len(recipients)}/{len(recipients)}", "Recipients": recipients}
        }

    def messages(self) -> list[str]:
        return [request.form.get("message", "") for request in self.requests if request.form.get("message")]
