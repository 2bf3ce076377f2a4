"""Cross-check the warehouse against Dagster's own record of what was committed to it.

A SQLite file can be rewritten by anyone who can write the file: tables dropped, rows deleted
through a forged permit, the whole file replaced. Refusing that is impossible there, so every run
that writes to the warehouse first compares it with what Dagster recorded as materialized (day,
run, row count, checksum) and stops, naming the days, when committed data is gone. Starting a new
warehouse on purpose is an explicit, recorded act (``dpa new-warehouse``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dpa_assets.settings import FACT_TABLE
from dpa_assets.warehouse.ledger import BREAK_GLASS, LOADED
from dpa_assets.warehouse.tables import audit, facts

FACTS_KEY = dg.AssetKey(FACT_TABLE)
NEW_WAREHOUSE_TAG = "dpa/new_warehouse"  # observation metadata: this warehouse was started anew here
PAGE = 1000
SHOWN_DAYS = 8


class WarehouseDiverged(RuntimeError):
    """Committed data that Dagster recorded is no longer in the warehouse."""


@dataclass(frozen=True)
class RecordedLoad:
    """Dagster's latest materialization of one day of ``warehouse_facts`` in one warehouse."""

    day: date
    run_id: str
    row_count: int | None
    checksum: str | None


def _new_warehouse_storage_id(instance: dg.DagsterInstance, warehouse: str) -> int | None:
    """The event id of the latest deliberate restart of this warehouse, if any."""
    cursor = None
    while True:
        result = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=FACTS_KEY), limit=PAGE, cursor=cursor, ascending=False
        )
        for record in result.records:
            observation = record.asset_observation
            if observation is not None and _text(observation.metadata.get(NEW_WAREHOUSE_TAG)) == warehouse:
                return record.storage_id
        if not result.has_more:
            return None
        cursor = result.cursor


def _text(value: object) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def recorded_loads(instance: dg.DagsterInstance, warehouse: str) -> dict[date, RecordedLoad]:
    """The latest materialization of each day that Dagster recorded for this warehouse.

    Args:
        instance: the Dagster instance.
        warehouse: the warehouse as the IO manager names it in metadata (password masked).

    Returns:
        Day -> its latest recorded load, only since the warehouse was last started anew.
    """
    since = _new_warehouse_storage_id(instance, warehouse)
    latest: dict[date, RecordedLoad] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=FACTS_KEY, after_storage_id=since),
            limit=PAGE,
            cursor=cursor,
            ascending=True,
        )
        for record in result.records:
            materialization = record.asset_materialization
            if materialization is None or record.partition_key is None:
                continue
            metadata = materialization.metadata
            if _text(metadata.get("warehouse")) != warehouse:
                continue
            row_count = _text(metadata.get("row_count"))
            day = date.fromisoformat(record.partition_key)
            latest[day] = RecordedLoad(
                day=day,
                run_id=record.run_id,
                row_count=int(row_count) if row_count is not None else None,
                checksum=_text(metadata.get("content_checksum")),
            )
        if not result.has_more:
            return latest
        cursor = result.cursor


def _warehouse_state(engine: Engine) -> tuple[dict[date, int], dict[date, list[dict]]]:
    """Fact rows per day, and each day's loaded / break-glass audit rows, oldest first."""
    with engine.connect() as connection:
        counts = dict(
            connection.execute(
                sa.select(facts.c.partition_date, sa.func.count()).group_by(facts.c.partition_date)
            ).all()
        )
        history: dict[date, list[dict]] = {}
        for row in connection.execute(
            sa.select(
                audit.c.id,
                audit.c.partition_date,
                audit.c.run_id,
                audit.c.status,
                audit.c.rows_loaded,
                audit.c.content_checksum,
            )
            .where(audit.c.status.in_((LOADED, BREAK_GLASS)))
            .order_by(audit.c.id)
        ).mappings():
            history.setdefault(row["partition_date"], []).append(dict(row))
    return counts, history


def divergences(
    recorded: dict[date, RecordedLoad], counts: dict[date, int], history: dict[date, list[dict]]
) -> list[str]:
    """One line per day whose committed data no longer matches Dagster's record.

    Args:
        recorded: Dagster's latest load of each day.
        counts: fact rows per day in the warehouse now.
        history: each day's loaded / break-glass audit rows, oldest first.

    Returns:
        Problems, by day; empty when the warehouse holds what Dagster recorded.
    """
    problems = []
    for day, load in sorted(recorded.items()):
        rows = history.get(day, [])
        own = next((row for row in rows if row["status"] == LOADED and row["run_id"] == load.run_id), None)
        stored = counts.get(day, 0)
        if own is None:
            problems.append(
                f"{day}: loaded by run {load.run_id} ({load.row_count} rows) but the audit row is gone, "
                f"{stored} rows stored"
            )
            continue
        if (load.row_count, load.checksum) != (own["rows_loaded"], own["content_checksum"]):
            problems.append(f"{day}: the audit row of run {load.run_id} differs from Dagster's record")
            continue
        # A later load or an audited break-glass may have replaced the day since Dagster's record.
        current = rows[-1]
        expected = 0 if current["status"] == BREAK_GLASS else current["rows_loaded"]
        if stored != expected:
            problems.append(f"{day}: {expected} rows committed, {stored} stored")
    return problems


def verify_warehouse_still_there(recorded: dict[date, RecordedLoad], engine: Engine | None, warehouse: str) -> None:
    """Stop before anything is set up when a warehouse Dagster recorded loads into is gone as a whole.

    Setting up the tables of a deleted SQLite file (or of a PostgreSQL schema wiped of every DPA
    table) would leave an empty warehouse where the loads were: the next run would still see the
    divergence, but the README promises nothing is recreated empty.

    Args:
        recorded: the loads Dagster recorded into this warehouse (``recorded_loads``).
        engine: the warehouse as it is (``WarehouseResource.existing_engine``); None: the file is gone.
        warehouse: the warehouse's masked URL, for the message.
    """
    if not recorded:
        return
    if engine is not None:
        with engine.connect() as connection:
            if set(sa.inspect(connection).get_table_names()) & {facts.name, audit.name}:
                return  # set up: a dropped table is ensure_schema's and the comparison's to name
    days = sorted(recorded)
    shown = ", ".join(day.isoformat() for day in days[:SHOWN_DAYS]) + (
        f" and {len(days) - SHOWN_DAYS} more" if len(days) > SHOWN_DAYS else ""
    )
    raise WarehouseDiverged(
        f"the warehouse {warehouse} is gone (no file, or none of its tables) but Dagster recorded loads of "
        f"{shown} in it. Nothing was written or created. Restore the warehouse from backup, or start a new "
        "one on purpose with `dpa new-warehouse`"
    )


def verify_warehouse_matches_dagster(recorded: dict[date, RecordedLoad], engine: Engine, warehouse: str) -> None:
    """Stop before writing when the warehouse lost or changed committed days Dagster knows of.

    Args:
        recorded: the loads Dagster recorded into this warehouse (``recorded_loads``).
        engine: the warehouse engine.
        warehouse: the warehouse's masked URL, for the message.
    """
    if not recorded:
        return
    counts, history = _warehouse_state(engine)
    problems = divergences(recorded, counts, history)
    if problems:
        shown = "; ".join(problems[:SHOWN_DAYS]) + (
            f"; and {len(problems) - SHOWN_DAYS} more" if len(problems) > SHOWN_DAYS else ""
        )
        raise WarehouseDiverged(
            f"the warehouse {warehouse} no longer holds what Dagster recorded as committed: {shown}. "
            "Nothing was written. Restore the warehouse from backup, or start a new one on purpose "
            "with `dpa new-warehouse`"
        )


def record_new_warehouse(instance: dg.DagsterInstance, warehouse: str, actor: str, reason: str) -> None:
    """Record in Dagster that this warehouse starts anew: earlier loads are no longer expected in it.

    Args:
        instance: the Dagster instance.
        warehouse: the warehouse's masked URL.
        actor: who decided it.
        reason: why, for the auditors.
    """
    instance.report_runless_asset_event(
        dg.AssetObservation(
            asset_key=FACTS_KEY,
            metadata={NEW_WAREHOUSE_TAG: warehouse, "actor": actor, "reason": reason},
        )
    )
