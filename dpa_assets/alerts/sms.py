"""SMS through an HTTP gateway speaking Africa's Talking's SMS API.

``POST <base>/version1/messaging``, form fields ``username``, ``to`` (comma-separated), ``message``
and optional ``from``; headers ``apiKey`` and ``Accept: application/json``. The answer lists each
recipient under ``SMSMessageData.Recipients[]`` with a ``statusCode``: 100 (processed), 101 (sent)
and 102 (queued) mean the gateway accepted the message for that number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dagster as dg
import requests
from pydantic import Field

from dpa_assets.settings import (
    DEFAULT_SMS_BASE_URL,
    ENV_SMS_API_KEY,
    ENV_SMS_BASE_URL,
    ENV_SMS_RECIPIENTS,
    ENV_SMS_SENDER,
    ENV_SMS_USERNAME,
)

ACCEPTED_STATUS_CODES = frozenset({100, 101, 102})
_RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class SendOutcome:
    """What the gateway made of one message."""

    delivered: bool
    reason: str  # why not delivered, or "accepted"
    recipients: list[dict] = field(default_factory=list)  # [{"number", "status", "statusCode"}]
    attempts: int = 0


class _Retryable(Exception):
    pass


class SmsGatewayResource(dg.ConfigurableResource):
    """Sends alert SMS; "not configured" (no username, key or recipients) is a normal state."""

    base_url: str = Field(default=DEFAULT_SMS_BASE_URL, description=f"Gateway root (${ENV_SMS_BASE_URL})")
    username: str | None = Field(default=None, description=f"Gateway account name (${ENV_SMS_USERNAME})")
    api_key: str | None = Field(default=None, repr=False, description=f"Gateway API key (${ENV_SMS_API_KEY}); secret")
    recipients: str | None = Field(
        default=None, description=f"Comma-separated phone numbers, e.g. +237670000001 (${ENV_SMS_RECIPIENTS})"
    )
    sender: str | None = Field(default=None, description=f"Sender id or short code, optional (${ENV_SMS_SENDER})")
    connect_timeout_seconds: float = Field(default=2.0, gt=0, description="Wait for a TCP connection")
    read_timeout_seconds: float = Field(default=4.0, gt=0, description="Wait for the gateway's answer")
    max_attempts: int = Field(default=3, ge=1, description="Tries per message within one sensor tick")
    backoff_base_seconds: float = Field(default=0.5, gt=0, description="First delay between tries; doubles")
    tick_budget_seconds: float = Field(
        default=8.0, gt=0, description="Longest time one sensor tick spends delivering; the rest waits for the next"
    )

    def recipient_list(self) -> list[str]:
        return [number.strip() for number in (self.recipients or "").split(",") if number.strip()]

    def configured(self) -> bool:
        return bool(self.username and self.api_key and self.recipient_list())

    def send(self, message: str, deadline: float) -> SendOutcome:
        """Send one message to every recipient, retrying transient faults until ``deadline``.

        Args:
            message: the SMS text.
            deadline: ``time.monotonic()`` value after which no new attempt starts.

        Returns:
            Delivered when the gateway accepted it for at least one recipient.
        """
        attempt = 0
        reason = "no attempt made (tick budget spent)"
        while attempt < self.max_attempts and time.monotonic() < deadline:
            attempt += 1
            try:
                return self._post(message, attempt)
            except _Retryable as error:
                reason = str(error)
            delay = self.backoff_base_seconds * 2 ** (attempt - 1)
            if attempt >= self.max_attempts or time.monotonic() + delay >= deadline:
                break
            time.sleep(delay)
        return SendOutcome(delivered=False, reason=self._redact(reason), attempts=attempt)

    def _post(self, message: str, attempt: int) -> SendOutcome:
        form = {"username": self.username, "to": ",".join(self.recipient_list()), "message": message}
        if self.sender:
            form["from"] = self.sender
        url = f"{self.base_url.rstrip('/')}/version1/messaging"
        try:
            response = requests.post(
                url,
                data=form,
                headers={"apiKey": self.api_key or "", "Accept": "application/json"},
                timeout=(self.connect_timeout_seconds, self.read_timeout_seconds),
            )
        except requests.RequestException as error:
            raise _Retryable(f"POST {url}: {type(error).__name__}") from error
        if response.status_code in _RETRYABLE_HTTP:
            raise _Retryable(f"POST {url}: HTTP {response.status_code}")
        if response.status_code in (401, 403):
            return SendOutcome(
                False,
                f"POST {url}: HTTP {response.status_code}, the gateway refused the username or API key",
                attempts=attempt,
            )
        if response.status_code >= 400:
            return SendOutcome(False, self._redact(f"POST {url}: HTTP {response.status_code}"), attempts=attempt)
        return self._outcome(response, attempt)

    def _outcome(self, response: requests.Response, attempt: int) -> SendOutcome:
        try:
            listed = response.json()["SMSMessageData"]["Recipients"]
            recipients = [
                {
                    "number": str(r.get("number", "")),
                    "status": str(r.get("status", "")),
                    "statusCode": int(r["statusCode"]),
                }
                for r in listed
            ]
        except (ValueError, KeyError, TypeError):
            return SendOutcome(False, f"HTTP {response.status_code} with an unreadable answer", attempts=attempt)
        accepted = [r for r in recipients if r["statusCode"] in ACCEPTED_STATUS_CODES]
        if accepted:
            return SendOutcome(True, "accepted", recipients, attempt)
        statuses = ", ".join(f"{r['number']}: {r['status']}" for r in recipients) or "no recipient listed"
        return SendOutcome(False, self._redact(f"no recipient accepted ({statuses})")[:300], recipients, attempt)

    def _redact(self, text: str) -> str:
        # Whatever the gateway echoes, the key never reaches the journal or a log.
        return text.replace(self.api_key, "***") if self.api_key else text
