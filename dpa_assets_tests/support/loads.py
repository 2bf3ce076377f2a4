"""Prepared partition loads (facts + rejects + counts) built from generated days, without Dagster."""

from __future__ import annotations

from datetime import date

import pandas as pd
from sqlalchemy.engine import Engine

from dpa_assets.sources.generator import generate_day
from dpa_assets.sources.payload import SOURCE_LINE
from dpa_assets.transforms import facts_checksum, to_facts, validate_freight
from dpa_assets.warehouse.ledger import VALIDATED, PartitionLoad, commit_partition, record_validation


def prepared_load(day: str, run_id: str, rows: int = 300, seed: int = 0, bad_fraction: float = 0.04) -> PartitionLoad:
    generated = generate_day(date.fromisoformat(day), rows=rows, seed=seed, bad_fraction=bad_fraction)
    raw = pd.DataFrame(generated.records, dtype=object)
    raw.insert(0, SOURCE_LINE, range(2, len(raw) + 2))
    return load_from_raw(raw, day, run_id)


def load_from_raw(raw: pd.DataFrame, day: str, run_id: str) -> PartitionLoad:
    """What validated_freight and warehouse_facts hand to the commit, for received text rows."""
    outcome = validate_freight(raw, day)
    facts = to_facts(outcome.valid, day)
    return PartitionLoad(
        partition_date=date.fromisoformat(day),
        run_id=run_id,
        validation_run_id=run_id,
        facts=facts,
        rejects=outcome.rejects,
        rows_received=outcome.rows_received,
        content_checksum=facts_checksum(facts),
        source_line_by_id=outcome.valid.set_index("shipment_id")[SOURCE_LINE],
    )


def record_passed_validation(engine: Engine, load: PartitionLoad) -> PartitionLoad:
    """Record the load's validation as passed, as validated_freight does before a commit may happen."""
    record_validation(engine, load.partition_date, load.validation_run_id, load.rejects, load.rows_received, VALIDATED)
    return load


def commit_validated(engine: Engine, load: PartitionLoad, **options: object) -> dict:
    """Validate-then-commit, the order the pipeline follows; returns the committed audit row."""
    return commit_partition(engine, record_passed_validation(engine, load), **options)
