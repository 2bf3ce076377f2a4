"""The three daily freight assets: received rows -> validated rows -> committed warehouse facts.

Assets stay thin: they fetch, call a transform, attach metadata for the UI plots, and return.
"""

import dataclasses
import time
from datetime import date

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from dpa_assets.deployments import warehouse_kind
from dpa_assets.partitions import daily_partitions, require_known_partition
from dpa_assets.process_memory import release_free_heap, return_freed_memory
from dpa_assets.recovery.heartbeat import beating
from dpa_assets.resources import (
    FreightSource,
    PayloadArchiveResource,
    ValidationPolicyResource,
    WarehouseResource,
)
from dpa_assets.settings import FACT_TABLE
from dpa_assets.sources.errors import SourceRefused, SourceUnavailable
from dpa_assets.sources.payload import SOURCE_LINE, PayloadError
from dpa_assets.transforms import (
    ValidationOutcome,
    facts_checksum,
    stripped_texts,
    to_facts,
    top_rejection_reasons,
    validate_freight,
)
from dpa_assets.warehouse.ledger import (
    BLOCKED,
    VALIDATED,
    PartitionLoad,
    blocked_detail,
    record_failed_attempt,
    record_validation,
)
from dpa_assets.warehouse.protection import ProtectedTableMissing
from dpa_assets.warehouse.reports import shipment_ids_loaded_elsewhere
from dpa_assets.warehouse.tables import facts as facts_table
from dpa_assets.warehouse_record import (
    WarehouseDiverged,
    recorded_loads,
    verify_warehouse_matches_dagster,
    verify_warehouse_still_there,
)

GROUP = "freight"
OWNERS = ["team:freight-data"]
# What the UI shows beside each asset. Bump an asset's code version when its rules change, so the
# UI marks the days computed by older code.
CODE_VERSIONS = {"raw_freight": "1", "validated_freight": "1", "warehouse_facts": "1"}


def _column_schema(table: sa.Table) -> dg.TableSchema:
    """The warehouse table's own definition, as the column list the UI shows (no second copy)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=str(column.type),
                constraints=dg.TableColumnConstraints(nullable=bool(column.nullable), unique=bool(column.unique)),
            )
            for column in table.columns
        ]
    )


# Longer outages than the client's own retries cover: try the whole step again, minutes apart.
# Corrupt payloads and a refused token are not retried (their Failure says allow_retries=False):
# the bytes and the token won't change by themselves.
RAW_FREIGHT_RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@dg.asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    retry_policy=RAW_FREIGHT_RETRY_POLICY,
    owners=OWNERS,
    kinds={"pandas"},
    code_version=CODE_VERSIONS["raw_freight"],
)
@beating
def raw_freight(
    context: dg.AssetExecutionContext,
    freight_source: FreightSource,
    payload_archive: PayloadArchiveResource,
) -> pd.DataFrame:
    """Movements of one day exactly as the freight system delivered them (text values, archived)."""
    frame, metadata = receive_day(
        require_known_partition(context.partition_key).isoformat(), freight_source, payload_archive
    )
    context.add_output_metadata(metadata)
    return frame


def receive_day(
    key: str, freight_source: FreightSource, payload_archive: PayloadArchiveResource
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Fetch one day, archive it byte for byte, parse it (raw_freight's work, also the range backfill's).

    Args:
        key: the day, ``YYYY-MM-DD``.
        freight_source: where the day comes from.
        payload_archive: where every received byte is kept first.

    Returns:
        The day's rows as text columns, and the metadata the UI shows for them.

    Raises:
        dg.Failure: saying why nothing was written (refused, unavailable, unreadable, archive broken).
    """
    return_freed_memory()  # a day's arrays come and go: their memory must not stay with the process
    day_archive = payload_archive.for_day(key)
    try:
        payload = freight_source.fetch_day(key, day_archive)  # archives each raw response as it arrives
        archived = day_archive.store(payload)
        parsed = freight_source.parse(payload)
    except SourceRefused as error:
        # Retrying with the same token only piles up refusals (and may lock the account).
        raise dg.Failure(
            description=f"Freight for {key} was refused by the source: {error}. Nothing was written.",
            allow_retries=False,
        ) from error
    except SourceUnavailable as error:
        raise dg.Failure(
            description=f"Freight for {key} could not be fetched: {error}. Nothing was written.",
            allow_retries=freight_source.retry_step_on_outage,
        ) from error
    except PayloadError as error:
        raise dg.Failure(
            description=f"Freight for {key} cannot be read: {error}. Nothing was written.",
            allow_retries=False,
        ) from error
    except OSError as error:
        # Nothing is loaded that is not kept first; a full disk or a bad folder needs a person.
        raise dg.Failure(
            description=f"Freight for {key} could not be archived in {payload_archive.root()}: "
            f"{error.strerror or error}. Nothing was written; fix the archive folder (space, path), "
            "then re-run the day.",
            allow_retries=False,
        ) from error
    metadata = {
        "source": payload.origin,
        "archived_as": dg.MetadataValue.path(str(archived)),
        "sha256": payload.sha256,
        "encoding": parsed.encoding,
        "extra_columns": ", ".join(parsed.extra_columns) or "none",
        "rows_received": dg.MetadataValue.int(len(parsed.frame)),
        "dagster/row_count": dg.MetadataValue.int(len(parsed.frame)),
    }
    release_free_heap()  # the payload's bytes, text and Arrow table are gone; the frame stays
    return parsed.frame, metadata


@dg.asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pandas", "pandera"},
    code_version=CODE_VERSIONS["validated_freight"],
)
@beating
def validated_freight(
    context: dg.AssetExecutionContext,
    raw_freight: pd.DataFrame,
    warehouse: WarehouseResource,
    validation_policy: ValidationPolicyResource,
) -> ValidationOutcome:
    """The day's movements split into valid rows and quarantined rejects with their reasons."""
    started = time.monotonic()
    key = require_known_partition(context.partition_key).isoformat()  # it writes rejects: only for a known day
    refuse_diverged_warehouse(context.instance, warehouse)
    outcome, _blocked, metadata = validate_day(warehouse, raw_freight, key, context.run.run_id, validation_policy)
    metadata["validation_seconds"] = dg.MetadataValue.float(round(time.monotonic() - started, 3))
    context.add_output_metadata(metadata)
    return outcome


def validate_day(
    warehouse: WarehouseResource,
    raw: pd.DataFrame,
    key: str,
    run_id: str,
    validation_policy: ValidationPolicyResource,
) -> tuple[ValidationOutcome, bool, dict[str, dg.MetadataValue]]:
    """Validate one day and store its rejects and verdict (validated_freight's work, also the range backfill's).

    Args:
        warehouse: where rejects and the verdict are stored.
        raw: the day's received rows.
        key: the day, ``YYYY-MM-DD``.
        run_id: the run validating it.
        validation_policy: the rejection-rate maximum.

    Returns:
        The outcome, whether the day is blocked, and the metadata the UI shows for it.
    """
    return_freed_memory()
    day = date.fromisoformat(key)
    engine = warehouse.get_engine()
    loaded_elsewhere = shipment_ids_loaded_elsewhere(engine, stripped_texts(raw["shipment_id"]), day)
    release_free_heap()  # the ids as Python text and the query (~200 MiB at 1,000,000 rows) are gone
    outcome = dataclasses.replace(validate_freight(raw, key, loaded_elsewhere), validation_run_id=run_id)
    release_free_heap()  # the typed day and the rules' arrays are gone; the outcome is stored next
    blocked = validation_policy.blocks(outcome.rows_rejected, outcome.rows_received)
    # Rejects are stored even when the day is blocked: the quarantine is what the on-call reads.
    # The verdict is stored too: the partition commit refuses a blocked day whatever launches it.
    record_validation(
        engine,
        day,
        run_id,
        outcome.rejects,
        outcome.rows_received,
        BLOCKED if blocked else VALIDATED,
        detail=blocked_day_detail(outcome, validation_policy.max_rejection_rate) if blocked else None,
    )
    metadata = validation_metadata(outcome)
    metadata["dagster/row_count"] = dg.MetadataValue.int(len(outcome.valid))  # the asset's, not its check's
    return outcome, blocked, metadata


def refuse_diverged_warehouse(instance: dg.DagsterInstance, warehouse: WarehouseResource) -> None:
    """Fail the step, writing nothing, when committed days Dagster recorded are gone from the warehouse."""
    url = warehouse.display_url()
    recorded = recorded_loads(instance, url)  # read once: both checks and the message use it
    try:
        # Before get_engine(), which sets up a warehouse it finds empty: a deleted one stays deleted.
        verify_warehouse_still_there(recorded, warehouse.existing_engine(), url)
        verify_warehouse_matches_dagster(recorded, warehouse.get_engine(), url)
    except WarehouseDiverged as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
    except ProtectedTableMissing as error:
        days = ", ".join(day.isoformat() for day in sorted(recorded))
        known = f"; Dagster recorded loads of {days} in it" if days else ""
        raise dg.Failure(description=f"{error}{known}. Nothing was written.", allow_retries=False) from error


def blocked_day_detail(outcome: ValidationOutcome, max_rejection_rate: float) -> str:
    """The ledger's words for a blocked day: the rate against the rule and the top reasons."""
    reasons = top_rejection_reasons(outcome.rejects, limit=5)
    top = ", ".join(f"{row.column}: {row.rule} ({row.rows})" for row in reasons.itertuples(index=False))
    return blocked_detail(outcome.rows_rejected, outcome.rows_received, max_rejection_rate, top)


def validation_metadata(outcome: ValidationOutcome) -> dict[str, dg.MetadataValue]:
    """Counts the UI plots across partitions, plus the top rejection reasons as a table."""
    reasons = top_rejection_reasons(outcome.rejects) if outcome.rows_rejected else None
    return {
        # A table renders inline in the UI's metadata panel (markdown is behind "[Show Markdown]");
        # the alert sensor reads it too (alerts/watch.py).
        "top_reasons": reasons_table(reasons),
        "rows_received": dg.MetadataValue.int(outcome.rows_received),
        "rows_valid": dg.MetadataValue.int(len(outcome.valid)),
        "rows_rejected": dg.MetadataValue.int(outcome.rows_rejected),
        "rejection_rate_percent": dg.MetadataValue.float(round(outcome.rejection_rate * 100, 2)),
        "rejection_rate": dg.MetadataValue.float(round(outcome.rejection_rate, 6)),
    }


REASON_COLUMNS = dg.TableSchema(
    columns=[
        dg.TableColumn("column", "string"),
        dg.TableColumn("rule", "string"),
        dg.TableColumn("rows", "int"),
    ]
)


def reasons_table(reasons: pd.DataFrame | None) -> dg.TableMetadataValue:
    """The top rejection reasons as the table the UI shows inline (and the alert sensor reads)."""
    records = [] if reasons is None else reasons.to_dict("records")
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"column": r["column"], "rule": r["rule"], "rows": int(r["rows"])}) for r in records],
        schema=REASON_COLUMNS,
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    io_manager_key="warehouse_io_manager",
    owners=OWNERS,
    # Read when the code location loads: the deployment's warehouse, as the UI's kind badge.
    kinds={"pandas", warehouse_kind()},
    code_version=CODE_VERSIONS["warehouse_facts"],
    metadata={
        "dagster/table_name": dg.MetadataValue.text(FACT_TABLE),
        "dagster/column_schema": dg.MetadataValue.table_schema(_column_schema(facts_table)),
    },
)
@beating
def warehouse_facts(
    context: dg.AssetExecutionContext, validated_freight: ValidationOutcome, warehouse: WarehouseResource
) -> PartitionLoad:
    """The day's valid movements as warehouse facts, committed atomically with their audit row."""
    refuse_diverged_warehouse(context.instance, warehouse)
    load, metadata = shape_day(warehouse, validated_freight, context.partition_key, context.run.run_id)
    context.add_output_metadata(metadata)
    return load


def shape_day(
    warehouse: WarehouseResource, outcome: ValidationOutcome, key: str, run_id: str
) -> tuple[PartitionLoad, dict[str, dg.MetadataValue]]:
    """The facts of one validated day, ready to commit (warehouse_facts' work, also the range backfill's).

    Args:
        warehouse: where a failed shaping is recorded.
        outcome: the day's validation.
        key: the day, ``YYYY-MM-DD``.
        run_id: the run committing it.

    Returns:
        What the commit writes, and the metadata the UI shows for it.
    """
    return_freed_memory()
    validation_run_id = outcome.validation_run_id or run_id
    try:
        facts = to_facts(outcome.valid, key)
        checksum = facts_checksum(facts)
    except Exception as error:
        # Shaping failed before the commit: the ledger still records the attempt and why.
        record_failed_attempt(warehouse.get_engine(), date.fromisoformat(key), run_id, error, validation_run_id)
        raise
    metadata = {
        "rows_received": dg.MetadataValue.int(outcome.rows_received),
        "rows_valid": dg.MetadataValue.int(len(facts)),
        "rows_rejected": dg.MetadataValue.int(outcome.rows_rejected),
        "rejection_rate": dg.MetadataValue.float(round(outcome.rejection_rate, 6)),
        "dagster/row_count": dg.MetadataValue.int(len(facts)),
    }
    load = PartitionLoad(
        partition_date=date.fromisoformat(key),
        run_id=run_id,
        validation_run_id=validation_run_id,
        facts=facts,
        rejects=outcome.rejects,
        rows_received=outcome.rows_received,
        content_checksum=checksum,
        source_line_by_id=outcome.valid.set_index("shipment_id")[SOURCE_LINE],
    )
    return load, metadata
