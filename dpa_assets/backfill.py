"""The range backfill: many days in one Dagster run, each day committed and audited on its own.

Dagster's single-run backfill (``BackfillPolicy.single_run()``) hands each asset step all the days of
the range at once and records a step's days all or nothing: one missing landing file would fail the
365 days of ``raw_freight``, and one day above the 30% rule would block the commit of every day.
So the range backfill is its own job: one op that takes the days in order and, for each, does what
the three assets and their checks do for one day (the same functions, ``assets.receive_day`` …),
then records what Dagster records for a one-day run: a materialization of each asset and an
evaluation of each check, for that day. The UI's partitions, checks and lineage read the same as
after one run per day, without a run's fixed cost per day.

A day that fails (source, parse, the 30% rule, a refused commit) is audited like in its own run
and the next day goes on; the run fails at the end naming the failed days, so alerts fire.
Faults of the warehouse itself (unreachable, diverged from Dagster's record, a protected table
gone) stop the range at once: every further day would meet them too.
"""

import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field

from dpa_assets.assets import (
    CODE_VERSIONS,
    blocked_day_detail,
    raw_freight,
    receive_day,
    refuse_diverged_warehouse,
    shape_day,
    validate_day,
    validated_freight,
    warehouse_facts,
)
from dpa_assets.checks import (
    facts_reconcile_with_audit,
    reconcile_partition,
    rejection_rate,
    rejection_rate_result,
    shipment_ids_unique_across_facts,
    shipment_ids_unique_result,
)
from dpa_assets.intermediate_io_manager import ParquetIntermediates
from dpa_assets.io_manager import commit_metadata
from dpa_assets.partitions import daily_partitions
from dpa_assets.recovery.heartbeat import run_heartbeat
from dpa_assets.resources import FreightSource, PayloadArchiveResource, ValidationPolicyResource, WarehouseResource
from dpa_assets.settings import BACKFILL_DAYS_TAG, BACKFILL_OP
from dpa_assets.transforms import ValidationOutcome
from dpa_assets.warehouse.ledger import LoadRefused, WarehouseBusy, commit_partition
from dpa_assets.warehouse.protection import ProtectedTableMissing

CODE_VERSION_TAG = "dagster/code_version"  # the tag Dagster puts on a materialization it records itself
LOADED, BLOCKED, FAILED = "loaded", "blocked", "failed"

# Called after each day with (day, status, detail), in the process running the op: how `dpa backfill`
# prints progress while the run goes on. A run launched from the UI has none.
progress_listeners: list[Callable[[str, str, str], None]] = []


class BackfillRange(dg.Config):
    """The days a range backfill loads, both included."""

    first_day: str = Field(description="First day to load, YYYY-MM-DD")
    last_day: str = Field(description="Last day to load, YYYY-MM-DD (included)")


@dataclass(frozen=True)
class DayOutcome:
    """What became of one day of the range."""

    day: str
    status: str  # LOADED, BLOCKED or FAILED
    detail: str = ""


class RangeStopped(Exception):
    """A fault of the warehouse itself: no further day can be loaded."""


def range_days(first_day: str, last_day: str) -> list[str]:
    """The days of a range, refusing one outside the partition set (before the start, today, future).

    Args:
        first_day: the first day, ``YYYY-MM-DD``.
        last_day: the last day, included.

    Returns:
        Every day of the range, in order.
    """
    try:
        first, last = date.fromisoformat(first_day), date.fromisoformat(last_day)
    except ValueError as error:
        raise dg.Failure(description=f"the range {first_day}..{last_day} is not two YYYY-MM-DD days") from error
    if first > last:
        raise dg.Failure(description=f"the range starts on {first} after it ends on {last}")
    days = [(first + timedelta(days=offset)).isoformat() for offset in range((last - first).days + 1)]
    outside = [day for day in (days[0], days[-1]) if not daily_partitions.has_partition_key(day)]
    if outside:
        raise dg.Failure(
            description=f"{outside[0]} is not a freight day (first day {daily_partitions.start.date()}, "
            f"last closed day {daily_partitions.get_last_partition_key()}); nothing was loaded"
        )
    return days


@dg.op(
    name=BACKFILL_OP,
    description="For each day of the range in order: fetch and archive, validate and quarantine, the 30% rule, "
    "commit with its audit row, reconcile; each day recorded as its own partition, a bad day failing alone.",
)
def load_days_in_order(
    context: dg.OpExecutionContext,
    config: BackfillRange,
    freight_source: FreightSource,
    payload_archive: PayloadArchiveResource,
    warehouse: WarehouseResource,
    validation_policy: ValidationPolicyResource,
    io_manager: dg.ResourceParam[ParquetIntermediates],
) -> None:
    """Load the range day by day; fail at the end, naming them, if any day failed."""
    days = range_days(config.first_day, config.last_day)
    context.instance.add_run_tags(context.run.run_id, {BACKFILL_DAYS_TAG: f"{days[0]}..{days[-1]}"})
    loader = DayLoader(context, freight_source, payload_archive, warehouse, validation_policy, io_manager)
    with run_heartbeat(context):
        outcomes = loader.load_all(days)
    failed = [outcome for outcome in outcomes if outcome.status != LOADED]
    context.log.info(f"{len(outcomes) - len(failed)} of {len(days)} days loaded")
    if failed:
        raise dg.Failure(description=failure_summary(failed, len(days)), allow_retries=False)


def failure_summary(failed: list[DayOutcome], total: int, shown: int = 3) -> str:
    """One line: how many days failed, the first few with why."""
    first = "; ".join(f"{outcome.day} {outcome.status}: {outcome.detail}" for outcome in failed[:shown])
    more = f"; and {len(failed) - shown} more (the run's log lists each)" if len(failed) > shown else ""
    return f"{len(failed)} of {total} days not loaded: {first}{more}"[:2000]


class DayLoader:
    """Does one day's work after another, recording each day's events as Dagster would."""

    def __init__(
        self,
        context: dg.OpExecutionContext,
        freight_source: FreightSource,
        payload_archive: PayloadArchiveResource,
        warehouse: WarehouseResource,
        validation_policy: ValidationPolicyResource,
        intermediates: ParquetIntermediates,
    ):
        self.context = context
        self.run_id = context.run.run_id
        self.freight_source = freight_source
        self.payload_archive = payload_archive
        self.warehouse = warehouse
        self.validation_policy = validation_policy
        self.intermediates = intermediates  # where raw_freight's and validated_freight's days are stored

    def load_all(self, days: list[str]) -> list[DayOutcome]:
        """Every day in order; a warehouse fault stops the range, failing the days not reached."""
        self._refuse_diverged()
        outcomes: list[DayOutcome] = []
        committed: list[str] = []
        for number, day in enumerate(days):
            try:
                outcome = self.load_day(day)
            except RangeStopped as stop:
                outcomes += [DayOutcome(rest, FAILED, f"not reached: {stop}") for rest in days[number:]]
                break
            outcomes.append(outcome)
            if outcome.status == LOADED:
                committed.append(day)
            for listener in progress_listeners:
                listener(day, outcome.status, outcome.detail)
        self._check_ids_unique(committed)
        return outcomes

    def load_day(self, day: str) -> DayOutcome:
        """One day: the three assets' work and their checks, each recorded for the day."""
        try:
            with self._warehouse_faults_stop_the_range():
                return self._load(day)
        except RangeStopped:
            raise
        except dg.Failure as failure:
            return self._failed(day, failure.description or str(failure))
        except (LoadRefused, WarehouseBusy) as refusal:
            return self._failed(day, str(refusal))
        except Exception as error:  # noqa: BLE001 - one bad day fails alone; the ledger has its attempt
            self.context.log.error(traceback.format_exc())  # unexpected: the run's log keeps the trace
            return self._failed(day, f"{type(error).__name__}: {error}")

    def _load(self, day: str) -> DayOutcome:
        raw, raw_metadata = receive_day(day, self.freight_source, self.payload_archive)
        self._store_and_record(raw_freight.key, day, raw, raw_metadata)
        outcome, verdict = self._validate(day, raw)
        if not verdict.passed:  # in the ledger's words, as `dpa materialize` says it
            return DayOutcome(day, BLOCKED, blocked_day_detail(outcome, self.validation_policy.max_rejection_rate))
        self._commit_and_reconcile(day, outcome)
        return DayOutcome(day, LOADED)

    def _validate(self, day: str, raw: pd.DataFrame) -> tuple[ValidationOutcome, dg.AssetCheckResult]:
        """validated_freight and its rejection_rate check, for one day."""
        started = time.monotonic()
        outcome, _blocked, metadata = validate_day(self.warehouse, raw, day, self.run_id, self.validation_policy)
        metadata["validation_seconds"] = dg.MetadataValue.float(round(time.monotonic() - started, 3))
        self._store_and_record(validated_freight.key, day, outcome, metadata)
        verdict = rejection_rate_result(outcome, self.validation_policy)
        self._record_check(rejection_rate.check_key, day, verdict)
        return outcome, verdict

    def _commit_and_reconcile(self, day: str, outcome: ValidationOutcome) -> None:
        """warehouse_facts through its own commit, then its reconcile check, for one day."""
        load, facts_metadata = shape_day(self.warehouse, outcome, day, self.run_id)
        started = time.monotonic()
        engine = self.warehouse.get_engine()
        audit_row = commit_partition(engine, load, retry=self.warehouse.retry_settings(), log=self.context.log)
        recorded = commit_metadata(audit_row, self.warehouse.display_url(), time.monotonic() - started)
        self._record(warehouse_facts.key, day, {**facts_metadata, **recorded})
        plain = {name: getattr(value, "value", value) for name, value in recorded.items()}
        self._record_check(
            facts_reconcile_with_audit.check_key, day, reconcile_partition(engine, date.fromisoformat(day), plain)
        )

    @contextmanager
    def _warehouse_faults_stop_the_range(self) -> Iterator[None]:
        try:
            yield
        except ProtectedTableMissing as error:
            raise RangeStopped(str(error)) from error
        except sa.exc.OperationalError as error:
            raise RangeStopped(f"the warehouse failed: {str(error.orig).strip().splitlines()[0]}") from error

    def _failed(self, day: str, reason: str) -> DayOutcome:
        self.context.log.error(f"{day} not loaded: {reason}")
        return DayOutcome(day, FAILED, reason)

    def _refuse_diverged(self) -> None:
        refuse_diverged_warehouse(self.context.instance, self.warehouse)

    def _store_and_record(self, asset_key: dg.AssetKey, day: str, value: object, metadata: dict) -> None:
        self.intermediates.store_day(asset_key, day, value)
        self._record(asset_key, day, metadata)

    def _record(self, asset_key: dg.AssetKey, day: str, metadata: dict) -> None:
        self.context.log_event(
            dg.AssetMaterialization(
                asset_key=asset_key,
                partition=day,
                metadata=metadata,
                tags={CODE_VERSION_TAG: CODE_VERSIONS[asset_key.to_user_string()]},
            )
        )

    def _record_check(self, check_key: dg.AssetCheckKey, day: str, result: dg.AssetCheckResult) -> None:
        self.context.log_event(
            dg.AssetCheckEvaluation(
                asset_key=check_key.asset_key,
                check_name=check_key.name,
                passed=result.passed,
                metadata=result.metadata,
                severity=result.severity,
                partition=day,
            )
        )

    def _check_ids_unique(self, committed: list[str]) -> None:
        """The all-days id check, once for the range, recorded for each committed day."""
        if not committed:
            return
        result = shipment_ids_unique_result(self.warehouse)
        for day in committed:
            self._record_check(shipment_ids_unique_across_facts.check_key, day, result)
