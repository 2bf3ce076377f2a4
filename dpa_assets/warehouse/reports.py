"""Read-only views of the audit trail for the CLI and the checks."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dpa_assets.warehouse.tables import audit, facts, rejects


def latest_audit(engine: Engine, partition_date: date) -> dict | None:
    """The newest audit row of a partition, whatever its status."""
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(audit).where(audit.c.partition_date == partition_date).order_by(audit.c.id.desc()).limit(1)
        ).mappings().first()
    return dict(row) if row else None


def partition_counts(engine: Engine, partition_date: date) -> dict[str, int]:
    """Fact and quarantined row counts of one partition, as the warehouse holds them now."""
    with engine.connect() as connection:
        fact_rows = connection.execute(
            sa.select(sa.func.count()).select_from(facts).where(facts.c.partition_date == partition_date)
        ).scalar_one()
        reject_rows = connection.execute(
            sa.select(sa.func.count()).select_from(rejects).where(rejects.c.partition_date == partition_date)
        ).scalar_one()
    return {"facts": fact_rows, "rejects": reject_rows}
