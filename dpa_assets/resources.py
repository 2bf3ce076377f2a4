"""Resources: where freight comes from, where payloads are archived, the warehouse, the quality policy.

Local defaults live under the Dagster home (``DAGSTER_HOME``, else ``./.dagster_home``) and are
resolved when a run uses them, never at import.
"""

import functools
import os
from abc import ABC, abstractmethod
from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import Engine, make_url

from dpa_assets.settings import (
    DEFAULT_MAX_REJECTION_RATE,
    DEFAULT_UI_BASE_URL,
    ENV_ALERT_JOURNAL,
    ENV_ARCHIVE_DIR,
    ENV_FREIGHT_API_TOKEN,
    ENV_FREIGHT_API_URL,
    ENV_LANDING_DIR,
    ENV_UI_BASE_URL,
    ENV_WAREHOUSE_URL,
)
from dpa_assets.sources.archive import DayArchive
from dpa_assets.sources.generator import landing_file_name
from dpa_assets.sources.http_api import ApiSettings, RetryBudget, api_payload, fetch_pages, parse_api_payload
from dpa_assets.sources.payload import ParsedPayload, PayloadError, ReceivedPayload, parse_csv
from dpa_assets.warehouse.engine import DEFAULT_LOCK_TIMEOUT_SECONDS, create_warehouse_engine, safe_url
from dpa_assets.warehouse.ledger import RetrySettings
from dpa_assets.warehouse.protection import ensure_schema


def local_home() -> Path:
    """The Dagster home the local deployment keeps its files in."""
    return Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home")


def configured(value: str | None) -> str | None:
    """A field's value. Outside a run (``dpa`` reads ``defs``) an ``EnvVar`` field still holds the
    variable's name, not its value: read it here, and refuse an unset one rather than use a default.
    """
    if not isinstance(value, dg.EnvVar):
        return value
    resolved = value.get_value()
    if not resolved:
        raise ValueError(f"{value.env_var_name} is not set; this deployment requires it")
    return resolved


class FreightSource(dg.ConfigurableResource, ABC):
    """Delivers one day of freight movements as received bytes, and parses them."""

    retry_step_on_outage: bool = Field(
        default=True,
        description="When the source stays unreachable, let raw_freight's RetryPolicy try the step again later",
    )

    @abstractmethod
    def fetch_day(self, partition_key: str, archive: DayArchive | None = None) -> ReceivedPayload:
        """The day's payload exactly as received; raises ``PayloadError`` when there is none.

        A source that talks to a server hands every raw response to ``archive`` as it arrives.
        """

    def parse(self, payload: ReceivedPayload) -> ParsedPayload:
        """Text rows of a payload; raises ``PayloadError`` on a structural fault."""
        return parse_csv(payload)

    def delivered(self, partition_key: str) -> bool | None:
        """Whether the day is there to fetch, when the source can tell without fetching it.

        None: it cannot tell cheaply (a server would count the probe as a call); try the day.
        """
        return None


class LandingDirSource(FreightSource):
    """Reads the CSV landing file the freight system drops for each day."""

    landing_dir: str | None = Field(
        default=None,
        description=f"Folder of freight_YYYY-MM-DD.csv files; default ${ENV_LANDING_DIR} or <DAGSTER_HOME>/landing",
    )

    def resolved_dir(self) -> Path:
        return Path(configured(self.landing_dir) or os.environ.get(ENV_LANDING_DIR) or local_home() / "landing")

    def delivered(self, partition_key: str) -> bool | None:
        return (self.resolved_dir() / landing_file_name(date.fromisoformat(partition_key))).is_file()

    def fetch_day(self, partition_key: str, archive: DayArchive | None = None) -> ReceivedPayload:
        # The file is the payload: raw_freight archives it whole, there are no responses to keep.
        path = self.resolved_dir() / landing_file_name(date.fromisoformat(partition_key))
        try:
            return ReceivedPayload(origin=str(path), content=path.read_bytes())
        except FileNotFoundError as error:
            raise PayloadError(f"{path}: no landing file for {partition_key} (not delivered yet?)") from error
        except OSError as error:
            raise PayloadError(f"{path}: cannot read the landing file: {error.strerror}") from error


class HttpFreightApiSource(FreightSource):
    """Fetches a day from the freight system's HTTP API (docs/freight-api.md)."""

    base_url: str = Field(description=f"API root, e.g. http://127.0.0.1:8765 (${ENV_FREIGHT_API_URL})")
    token: str = Field(repr=False, description=f"Bearer token (${ENV_FREIGHT_API_TOKEN}); never logged")
    connect_timeout_seconds: float = Field(default=3.05, gt=0, description="Wait for a TCP connection")
    read_timeout_seconds: float = Field(default=30.0, gt=0, description="Wait for an answer once connected")
    page_size: int = Field(default=500, ge=1, le=1000, description="Movements per page")
    max_attempts: int = Field(default=6, ge=1, description="Tries per page before the day fails")
    backoff_base_seconds: float = Field(default=0.5, gt=0, description="First backoff delay; doubles, with jitter")
    backoff_max_seconds: float = Field(default=30.0, gt=0, description="Longest single backoff delay")
    max_total_seconds: float = Field(default=300.0, gt=0, description="Longest total time spent on one day")

    def _settings(self) -> ApiSettings:
        return ApiSettings(
            base_url=self.base_url,
            token=self.token,
            connect_timeout_seconds=self.connect_timeout_seconds,
            read_timeout_seconds=self.read_timeout_seconds,
            page_size=self.page_size,
        )

    def fetch_day(self, partition_key: str, archive: DayArchive | None = None) -> ReceivedPayload:
        budget = RetryBudget(
            max_attempts=self.max_attempts,
            base_delay_seconds=self.backoff_base_seconds,
            max_delay_seconds=self.backoff_max_seconds,
            max_total_seconds=self.max_total_seconds,
        )
        settings = self._settings()
        pages = fetch_pages(
            settings,
            partition_key,
            budget,
            log=dg.get_dagster_logger(),
            archive=archive.store_response if archive is not None else None,
        )
        return api_payload(settings, partition_key, pages)

    def parse(self, payload: ReceivedPayload) -> ParsedPayload:
        return parse_api_payload(payload)


class AlertJournalResource(dg.ConfigurableResource):
    """Where failure alerts are archived (one JSON line each)."""

    journal_file: str | None = Field(
        default=None,
        description=f"Journal file; default ${ENV_ALERT_JOURNAL} or <DAGSTER_HOME>/alerts/journal.jsonl",
    )

    ui_base_url: str | None = Field(
        default=None,
        description=f"Dagster UI root for the run links in alerts; default ${ENV_UI_BASE_URL} or {DEFAULT_UI_BASE_URL}",
    )

    first_tick_lookback_hours: float = Field(
        default=24.0,
        gt=0,
        description="With no cursor and an empty journal (the sensor's first deploy), alert the failures of the "
        "last this many hours only: an old instance's history is not sent as a burst of SMS",
    )

    def path(self) -> Path:
        default = local_home() / "alerts" / "journal.jsonl"
        return Path(configured(self.journal_file) or os.environ.get(ENV_ALERT_JOURNAL) or default)

    def run_link(self, run_id: str) -> str:
        """The run's page in the Dagster UI."""
        base = self.ui_base_url or os.environ.get(ENV_UI_BASE_URL) or DEFAULT_UI_BASE_URL
        return f"{base.rstrip('/')}/runs/{run_id}"


class PayloadArchiveResource(dg.ConfigurableResource):
    """Where received payloads are kept, byte for byte, per day."""

    archive_dir: str | None = Field(
        default=None, description=f"Archive folder; default ${ENV_ARCHIVE_DIR} or <DAGSTER_HOME>/archive"
    )

    def root(self) -> Path:
        return Path(configured(self.archive_dir) or os.environ.get(ENV_ARCHIVE_DIR) or local_home() / "archive")

    def for_day(self, partition_key: str) -> DayArchive:
        """The day's folder, which the source fills with every response as it arrives."""
        return DayArchive(self.root() / partition_key)

    def store(self, partition_key: str, payload: ReceivedPayload) -> Path:
        return self.for_day(partition_key).store(payload)


@functools.cache
def _engine_for(url: str, lock_timeout_seconds: float) -> Engine:
    # One engine (pool) per URL per process, shared with existing_engine(); the schema is checked
    # once, on first use.
    engine = _plain_engine_for(url, lock_timeout_seconds)
    ensure_schema(engine)
    return engine


@functools.cache
def _plain_engine_for(url: str, lock_timeout_seconds: float) -> Engine:
    return create_warehouse_engine(url, lock_timeout_seconds)


def sqlite_file_missing(url: str) -> bool:
    """Whether the URL names a SQLite database file that is not there."""
    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:" or path.startswith("file:"):
        return False
    return not Path(path).exists()


class WarehouseResource(dg.ConfigurableResource):
    """The data warehouse (SQLite file or PostgreSQL) holding facts, rejects and the audit trail."""

    url: str | None = Field(
        default=None,
        description=f"SQLAlchemy URL; default ${ENV_WAREHOUSE_URL} or sqlite:///<DAGSTER_HOME>/warehouse.sqlite",
    )
    lock_retry_attempts: int = Field(default=5, ge=1, description="Tries of a commit that meets a lock conflict")
    lock_retry_base_seconds: float = Field(default=0.2, gt=0, description="First backoff delay; doubles each try")
    lock_timeout_seconds: float = Field(
        default=DEFAULT_LOCK_TIMEOUT_SECONDS, gt=0, description="Longest wait for one lock before a retry"
    )

    def resolved_url(self) -> str:
        if self.url:
            return configured(self.url)
        if os.environ.get(ENV_WAREHOUSE_URL):
            return os.environ[ENV_WAREHOUSE_URL]
        home = local_home()
        home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{home / 'warehouse.sqlite'}"

    def display_url(self) -> str:
        """The URL without its password, for logs and metadata."""
        return safe_url(self.resolved_url())

    def get_engine(self) -> Engine:
        return _engine_for(self.resolved_url(), self.lock_timeout_seconds)

    def existing_engine(self) -> Engine | None:
        """The warehouse as it is, creating nothing: no tables set up, and None for a SQLite file that
        does not exist (connecting would create it). For the checks and reports that must not turn a
        deleted warehouse into an empty one."""
        url = self.resolved_url()
        if sqlite_file_missing(url):
            return None
        return _plain_engine_for(url, self.lock_timeout_seconds)

    def retry_settings(self) -> RetrySettings:
        return RetrySettings(max_attempts=self.lock_retry_attempts, base_delay_seconds=self.lock_retry_base_seconds)


class ValidationPolicyResource(dg.ConfigurableResource):
    """How much bad data a day may carry before the warehouse refuses it."""

    max_rejection_rate: float = Field(
        default=DEFAULT_MAX_REJECTION_RATE,
        ge=0.0,
        le=1.0,
        description="Largest rejected/received share that still loads (exactly this share passes)",
    )

    def blocks(self, rows_rejected: int, rows_received: int) -> bool:
        """True when the day must not be loaded. An empty day rejects nothing, so it passes."""
        if rows_received == 0:
            return False
        # Compare as integers so that exactly 30% passes despite float rounding.
        return rows_rejected * 1_000_000 > round(self.max_rejection_rate * 1_000_000) * rows_received
