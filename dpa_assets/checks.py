"""Asset checks the on-call engineer and the auditors read in the UI, recorded per partition.

``partitions_def`` on a check is a Dagster preview feature; it is what records a result for each
day (without it the UI shows one unpartitioned result and the check would load every partition).
"""

import warnings
from datetime import date, datetime

import dagster as dg
from sqlalchemy.engine import Engine

from dpa_assets.assets import validated_freight, validation_metadata, warehouse_facts
from dpa_assets.freshness import expected_day, judge_freshness
from dpa_assets.partitions import LOCAL_TZ, daily_partitions
from dpa_assets.resources import ValidationPolicyResource, WarehouseResource
from dpa_assets.transforms import ValidationOutcome, top_rejection_reasons
from dpa_assets.warehouse.ledger import read_back_checksum
from dpa_assets.warehouse.reports import (
    duplicated_shipment_ids,
    first_loaded_at,
    latest_loaded_audit,
    quarantined_count,
    stored_digest,
    unique_index_enforced,
    warehouse_set_up,
)

# The preview warning is printed on every code-location load; we chose the feature deliberately.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def.*")


@dg.asset_check(
    asset=validated_freight,
    blocking=True,
    partitions_def=daily_partitions,
    description="Rejected/received share of the day is at most the configured maximum (default 30%).",
)
def rejection_rate(
    validated_freight: ValidationOutcome, validation_policy: ValidationPolicyResource
) -> dg.AssetCheckResult:
    """Blocks warehouse_facts for a day whose rejected share exceeds the policy's maximum."""
    return rejection_rate_result(validated_freight, validation_policy)


def rejection_rate_result(
    outcome: ValidationOutcome, validation_policy: ValidationPolicyResource
) -> dg.AssetCheckResult:
    """The rejection-rate verdict of one validated day, with what the auditor reads beside it.

    Args:
        outcome: the day's validation.
        validation_policy: the maximum rejected share.

    Returns:
        Failed (ERROR) when the rejected share is above the maximum.
    """
    blocked = validation_policy.blocks(outcome.rows_rejected, outcome.rows_received)
    metadata = validation_metadata(outcome)
    metadata["max_rejection_rate_percent"] = dg.MetadataValue.float(
        round(validation_policy.max_rejection_rate * 100, 2)
    )
    metadata["max_rejection_rate"] = dg.MetadataValue.float(validation_policy.max_rejection_rate)
    if outcome.rows_received == 0:
        metadata["note"] = dg.MetadataValue.text("empty day: nothing received, nothing rejected")
    # First in the table, in words: the auditor reads the verdict without opening the markdown.
    metadata = {"verdict": dg.MetadataValue.text(_verdict(outcome, validation_policy, blocked)), **metadata}
    return dg.AssetCheckResult(passed=not blocked, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)


def _verdict(outcome: ValidationOutcome, policy: ValidationPolicyResource, blocked: bool) -> str:
    maximum = f"{policy.max_rejection_rate * 100:g}%"
    share = f"{outcome.rejection_rate:.1%} of {outcome.rows_received} rows rejected"
    if not blocked:
        return f"{share}, within the {maximum} maximum: the day loads"
    reasons = top_rejection_reasons(outcome.rejects, limit=3)
    top = ", ".join(f"{row.column}: {row.rule} ({row.rows})" for row in reasons.itertuples(index=False))
    return f"{share}, above the {maximum} maximum: BLOCKED; top reasons: {top}"


def _latest_materialization_metadata(context: dg.AssetCheckExecutionContext, partition_key: str) -> dict:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=warehouse_facts.key, asset_partitions=[partition_key]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return {}
    return {key: value.value for key, value in records[0].asset_materialization.metadata.items()}


@dg.asset_check(
    asset=warehouse_facts,
    partitions_def=daily_partitions,
    description="The day's facts match its audit row (count, checksum, received = loaded + rejected) "
    "and Dagster's materialization record.",
)
def facts_reconcile_with_audit(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """Recount and re-hash the stored partition and compare with the ledger and Dagster's record."""
    recorded = _latest_materialization_metadata(context, context.partition_key)
    return reconcile_partition(warehouse.get_engine(), date.fromisoformat(context.partition_key), recorded)


def reconcile_partition(engine: Engine, day: date, recorded: dict) -> dg.AssetCheckResult:
    """Compare a stored partition with its loaded audit row and with Dagster's materialization.

    Args:
        engine: the warehouse engine.
        day: the partition.
        recorded: metadata of Dagster's latest materialization of that partition.

    Returns:
        Passed when counts, checksums and the received = loaded + quarantined balance all agree.
    """
    audit = latest_loaded_audit(engine, day)
    if audit is None:
        return dg.AssetCheckResult(passed=False, metadata={"problems": "no loaded audit row for this day"})
    if audit["warehouse_digest"] is not None:  # PostgreSQL: the database re-hashes the day where it is
        stored_rows, checksum = stored_digest(engine, day)
        expected, method = audit["warehouse_digest"], "database digest"
    else:  # SQLite, or a day loaded before the digest existed: read the day back and re-hash it
        stored_rows, checksum = read_back_checksum(engine, day)
        expected, method = audit["content_checksum"], "read back"
    quarantined = quarantined_count(engine, day, audit["validation_run_id"])
    problems = [
        text
        for failed, text in (
            (stored_rows != audit["rows_loaded"], "stored fact rows differ from the audit row"),
            (checksum != expected, "stored facts' checksum differs from the audit row"),
            (audit["rows_received"] != stored_rows + quarantined, "received != loaded + quarantined"),
            (
                recorded.get("content_checksum") != audit["content_checksum"],
                "Dagster's record and the audit row disagree",
            ),
            (
                recorded.get("row_count") != audit["rows_loaded"],
                "Dagster's row count and the audit row disagree",
            ),
        )
        if failed
    ]
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "rows_received": dg.MetadataValue.int(audit["rows_received"]),
            "rows_in_warehouse": dg.MetadataValue.int(stored_rows),
            "rows_quarantined": dg.MetadataValue.int(quarantined),
            "audit_checksum": audit["content_checksum"],
            "verified_by": method,
            "expected_warehouse_checksum": expected,
            "warehouse_checksum": str(checksum),
            "dagster_checksum": str(recorded.get("content_checksum")),
            "problems": "; ".join(problems) or "none",
        },
    )


@dg.asset_check(
    asset=warehouse_facts,
    partitions_def=daily_partitions,
    description="No shipment id appears twice anywhere in the fact table (all days).",
)
def shipment_ids_unique_across_facts(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Guard against double billing, even if the unique index were ever dropped."""
    return shipment_ids_unique_result(warehouse)


def shipment_ids_unique_result(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Passed when no shipment id is in the fact table twice, whatever the day."""
    engine = warehouse.get_engine()
    # How, for the auditor: the database's unique index on every row, or a scan of the whole table.
    enforced = unique_index_enforced(engine)
    verified_by = "the table's unique index on shipment_id" if enforced else "whole-table scan"
    duplicates = duplicated_shipment_ids(engine, index_enforced=enforced)
    table = "\n".join(["| shipment_id | copies |", "| --- | --- |", *(f"| {sid} | {n} |" for sid, n in duplicates)])
    return dg.AssetCheckResult(
        passed=not duplicates,
        metadata={
            "verified_by": dg.MetadataValue.text(verified_by),
            "duplicated_ids": dg.MetadataValue.int(len(duplicates)),
            "examples": dg.MetadataValue.md(table if duplicates else "none"),
        },
    )


FRESHNESS_CHECK = dg.AssetCheckKey(warehouse_facts.key, "yesterday_loaded_by_six")


@dg.op(
    name=FRESHNESS_CHECK.name,
    description="Yesterday's freight (Africa/Douala) is in the warehouse by 06:00 local time.",
)
def yesterday_loaded_by_six(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    """Freshness for the morning reports, run only by freshness_check_schedule at 06:05 local time.

    An op, not an ``@asset_check``: Dagster puts every check of an asset in the implicit asset job,
    so "Materialize all…" in the UI would judge the clock inside every load of an old day.
    Dagster's own freshness tools do not say what the plan asks: a ``FreshnessPolicy`` looks at the
    asset's latest materialization of *any* day, and ``build_time_partition_freshness_checks``
    is an asset check too (so in every "Materialize all…") and cannot tell late from missing.
    The verdict is recorded as the check evaluation ``warehouse_facts:yesterday_loaded_by_six``,
    so it shows in the run and the alert sensor reads it like any failed check.
    """
    context.log_event(freshness_evaluation(datetime.now(LOCAL_TZ), warehouse))


def freshness_evaluation(now: datetime, warehouse: WarehouseResource) -> dg.AssetCheckEvaluation:
    """Judge the day expected at ``now`` against its 06:00 deadline.

    Args:
        now: when the rule is evaluated (timezone-aware).
        warehouse: where the loads are audited.

    Returns:
        Passed when the expected day was first loaded by its deadline; a missing day is an ERROR,
        a late one a WARN.
    """
    day, _deadline = expected_day(now)
    engine = warehouse.existing_engine()  # a clock check never sets a warehouse up
    loaded = first_loaded_at(engine, [day]) if engine is not None and warehouse_set_up(engine) else {}
    verdict = judge_freshness(now, loaded)
    return dg.AssetCheckEvaluation(
        asset_key=FRESHNESS_CHECK.asset_key,
        check_name=FRESHNESS_CHECK.name,
        passed=verdict.on_time,
        # Missing entirely is an outage; loaded late is worth a warning on the dashboard.
        severity=dg.AssetCheckSeverity.ERROR if verdict.loaded_at is None else dg.AssetCheckSeverity.WARN,
        metadata={
            "expected_day": dg.MetadataValue.text(verdict.expected_day.isoformat()),
            "deadline": dg.MetadataValue.text(verdict.deadline.isoformat()),
            "loaded_at": dg.MetadataValue.text(
                verdict.loaded_at.astimezone(LOCAL_TZ).isoformat() if verdict.loaded_at else "not loaded"
            ),
            "minutes_late": dg.MetadataValue.float(round(verdict.minutes_late, 1)),
        },
    )
