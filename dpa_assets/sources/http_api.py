"""Client side of the freight API (docs/freight-api.md): fetch a day's pages, then parse them.

Fetching survives the network: timeouts, dropped connections, 5xx, 429 (honouring Retry-After)
and truncated bodies are retried with exponential backoff and jitter, bounded in attempts and
total time. Every HTTP response, failed or not, is handed to an archive callback as the bytes
received before anything looks at it. Parsing checks the pages are one consistent sequence and the
fields are the contract's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import requests

from dpa_assets.freight_model import RAW_COLUMNS
from dpa_assets.sources.errors import SourceRefused, SourceUnavailable
from dpa_assets.sources.payload import SOURCE_LINE, ParsedPayload, PayloadError, ReceivedPayload

ENDPOINT_PATH = "/v1/movements"
MEDIA_TYPE = "application/json"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_PAGES = 10_000  # a guard against a server that never stops handing out tokens
EXCERPT_CHARS = 200  # of a response body quoted in an error message

# Receives each response as (bytes as received, {"page", "attempt", "status"}) before it is read.
ResponseArchive = Callable[[ReceivedPayload, dict[str, object]], object]


@dataclass(frozen=True)
class RetryBudget:
    """How hard one day's fetch tries before it gives up."""

    max_attempts: int = 6
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0
    max_total_seconds: float = 300.0


@dataclass(frozen=True)
class ApiSettings:
    base_url: str
    token: str = field(repr=False)  # a secret: never in a repr, a log or an error message
    connect_timeout_seconds: float = 3.05
    read_timeout_seconds: float = 30.0
    page_size: int = 500

    @property
    def endpoint(self) -> str:
        return self.base_url.rstrip("/") + ENDPOINT_PATH


class _Retryable(Exception):
    def __init__(self, problem: str, retry_after: float | None = None):
        super().__init__(problem)
        self.retry_after = retry_after


def _retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date or garbage: fall back to our own backoff


def excerpt(body: bytes, secret: str, limit: int = EXCERPT_CHARS) -> str:
    """A short, one-line, printable quote of a response body for an error message, the secret masked."""
    text = body.decode("utf-8", errors="replace")
    if secret:
        text = text.replace(secret, "***")  # before cutting, so no prefix of it can survive
    flat = " ".join("".join(char if char.isprintable() else " " for char in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _media_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower() or "application/octet-stream"


def _get_page_once(
    session: requests.Session,
    settings: ApiSettings,
    params: dict,
    keep: Callable[[requests.Response], None],
) -> str:
    """One request; returns the body text, or raises _Retryable / SourceUnavailable / SourceRefused / PayloadError.

    ``keep`` sees every response first, whatever its status, so its bytes are archived as received.
    """
    try:
        response = session.get(
            settings.endpoint,
            params=params,
            timeout=(settings.connect_timeout_seconds, settings.read_timeout_seconds),
        )
    except requests.Timeout as error:
        raise _Retryable(f"no answer within the timeout ({type(error).__name__})") from error
    except requests.ConnectionError as error:
        raise _Retryable(f"connection failed ({_connection_problem(error)})") from error
    keep(response)
    status = response.status_code
    if status == 200:
        try:
            text = response.content.decode("utf-8")  # JSON is UTF-8 (RFC 8259): no guessing from headers
            json.loads(text)
        except ValueError as error:
            raise _Retryable("the body is not valid JSON (truncated in transit?)") from error
        return text
    if status in RETRYABLE_STATUSES:
        raise _Retryable(f"HTTP {status}", _retry_after_seconds(response) if status == 429 else None)
    if status in (401, 403):
        raise SourceRefused(
            f"GET {settings.endpoint}: HTTP {status}, the API refused the token (check DPA_FREIGHT_API_TOKEN)"
        )
    if status == 404:
        raise SourceUnavailable(f"GET {settings.endpoint}: HTTP 404, the day is not published yet")
    raise PayloadError(
        f"GET {settings.endpoint}: unexpected HTTP {status}: {excerpt(response.content, settings.token)}"
    )


def _connection_problem(error: requests.ConnectionError) -> str:
    text = str(error)
    for marker in (
        "Connection refused",
        "Connection reset",
        "Remote end closed",
        "Name or service not known",
    ):
        if marker in text:
            return marker.lower()
    return type(error).__name__


def fetch_pages(
    settings: ApiSettings,
    day: str,
    budget: RetryBudget = RetryBudget(),
    log: logging.Logger | logging.LoggerAdapter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    archive: ResponseArchive | None = None,
) -> list[str]:
    """Every page body of one day, following ``next_page_token`` to the end.

    Args:
        settings: where the API is and how long to wait for it.
        day: the business day ``YYYY-MM-DD``.
        budget: retry bounds, shared by all pages of the day.
        log: where retries are reported.
        sleep: how to wait between attempts.
        archive: called with the bytes of every response (failed ones too) as soon as it arrives.

    Returns:
        The accepted page bodies (the received UTF-8 bytes, decoded), in the order received.
    """
    log = log or logging.getLogger(__name__)
    started = time.monotonic()
    pages: list[str] = []
    token: str | None = None
    with requests.Session() as session:
        session.headers.update({"Authorization": f"Bearer {settings.token}", "Accept": MEDIA_TYPE})
        while len(pages) < MAX_PAGES:
            params = {
                "date": day,
                "page_size": settings.page_size,
                **({"page_token": token} if token else {}),
            }
            body = _get_with_retries(
                session, settings, params, day, len(pages) + 1, budget, started, log, sleep, archive
            )
            pages.append(body)
            document = json.loads(body)  # valid JSON: _get_page_once checked
            token = document.get("next_page_token") if isinstance(document, dict) else None
            if not token:
                return pages
    raise PayloadError(f"GET {settings.endpoint}?date={day}: more than {MAX_PAGES} pages; the server keeps paging")


def _keeper(archive: ResponseArchive | None, page: int, attempt: int) -> Callable[[requests.Response], None]:
    """What to do with a response the moment it arrives: hand its bytes to the archive."""

    def keep(response: requests.Response) -> None:
        if archive is not None:
            received = ReceivedPayload(origin=response.url, content=response.content, media_type=_media_type(response))
            archive(received, {"page": page, "attempt": attempt, "status": response.status_code})

    return keep


def _get_with_retries(
    session: requests.Session,
    settings: ApiSettings,
    params: dict,
    day: str,
    page: int,
    budget: RetryBudget,
    started: float,
    log,
    sleep: Callable[[float], None],
    archive: ResponseArchive | None,
) -> str:
    for attempt in range(1, budget.max_attempts + 1):
        try:
            return _get_page_once(session, settings, params, _keeper(archive, page, attempt))
        except _Retryable as problem:
            backoff = min(budget.max_delay_seconds, budget.base_delay_seconds * 2 ** (attempt - 1))
            delay = problem.retry_after if problem.retry_after is not None else backoff * random.uniform(0.5, 1.5)
            elapsed = time.monotonic() - started
            if attempt == budget.max_attempts or elapsed + delay > budget.max_total_seconds:
                raise SourceUnavailable(
                    f"freight for {day}: GET {settings.endpoint} (page {page}) failed {attempt} times "
                    f"over {elapsed:.1f}s; last problem: {problem}"
                ) from problem
            log.warning(
                f"freight for {day}: page {page} attempt {attempt}/{budget.max_attempts} failed ({problem}); "
                f"retrying in {delay:.2f}s"
            )
            sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def api_payload(settings: ApiSettings, day: str, pages: list[str]) -> ReceivedPayload:
    """Wrap the accepted pages (each body verbatim as a string) into the one payload the parser reads.

    ``page_sha256`` names each page's archived response (``response-<sha256>.json``).
    """
    digests = [hashlib.sha256(page.encode("utf-8")).hexdigest() for page in pages]
    envelope = {"endpoint": settings.endpoint, "date": day, "pages": pages, "page_sha256": digests}
    return ReceivedPayload(
        origin=f"{settings.endpoint}?date={day}",
        content=json.dumps(envelope, ensure_ascii=False, indent=1).encode("utf-8"),
        media_type=MEDIA_TYPE,
    )


def _text(value: object) -> str:
    """Movement values as the text the validator expects; JSON null is an empty field."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _page_documents(origin: str, pages: list) -> list[dict]:
    documents = []
    for number, text in enumerate(pages, start=1):
        try:
            document = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            document = None
        if not isinstance(document, dict) or not isinstance(document.get("movements"), list):
            raise PayloadError(
                f"{origin}: page {number} is not a movements page (expected an object with a 'movements' list)"
            )
        documents.append(document)
    return documents


def _check_sequence(origin: str, documents: list[dict]) -> None:
    numbers = [document.get("page") for document in documents]
    if numbers != list(range(1, len(documents) + 1)):
        repeated = sorted({n for n in numbers if numbers.count(n) > 1})
        hint = f"page {repeated[0]} was served twice" if repeated else "pages are out of order"
        raise PayloadError(f"{origin}: inconsistent paging, {hint} (received pages {numbers})")
    counts = {(document.get("page_count"), document.get("total_movements")) for document in documents}
    if len(counts) != 1:
        raise PayloadError(f"{origin}: page_count/total_movements changed between pages: {sorted(counts, key=str)}")
    page_count, total = counts.pop()
    received = sum(len(document["movements"]) for document in documents)
    if page_count != len(documents) or total != received:
        raise PayloadError(
            f"{origin}: incomplete day, received {len(documents)} of {page_count} pages and "
            f"{received} of {total} movements"
        )


def parse_api_payload(payload: ReceivedPayload) -> ParsedPayload:
    """Parse an archived API payload into text rows, after checking paging and field names.

    Args:
        payload: what ``api_payload`` built.

    Returns:
        One row per movement, every value text, plus ``source_line`` (the movement's position).
    """
    try:
        envelope = json.loads(payload.content.decode("utf-8"))
        pages = envelope["pages"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise PayloadError(f"{payload.origin}: the archived API payload is unreadable ({error})") from error
    documents = _page_documents(payload.origin, pages)
    _check_sequence(payload.origin, documents)
    movements = [movement for document in documents for movement in document["movements"]]
    if not movements:
        raise PayloadError(f"{payload.origin}: the API returned no movements for the day")
    if not all(isinstance(movement, dict) for movement in movements):
        raise PayloadError(f"{payload.origin}: movements must be JSON objects")
    fields = set().union(*(movement.keys() for movement in movements))
    missing = [column for column in RAW_COLUMNS if any(column not in movement for movement in movements)]
    if missing:
        unexpected = sorted(fields - set(RAW_COLUMNS))
        hint = f"; unexpected fields {unexpected} (renamed?)" if unexpected else ""
        raise PayloadError(f"{payload.origin}: movements lack required fields {missing}{hint}")
    frame = pd.DataFrame(
        [[_text(movement[column]) for column in RAW_COLUMNS] for movement in movements],
        columns=list(RAW_COLUMNS),
        dtype=object,
    )
    frame.insert(0, SOURCE_LINE, range(1, len(frame) + 1))
    return ParsedPayload(frame=frame, encoding="utf-8", extra_columns=sorted(fields - set(RAW_COLUMNS)))
