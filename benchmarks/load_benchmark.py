"""How fast does a day go from received rows to committed facts, and what does the fast path buy?

    .venv/bin/python benchmarks/load_benchmark.py [--rows 50000] [--pg-url URL]

Prints validation throughput and peak memory, then commit throughput of the partition commit on
SQLite and PostgreSQL, each beside a baseline measured in the same run on the same data: one
INSERT statement per row in a single transaction (what the fast paths replace). Without
--pg-url a throwaway PostgreSQL cluster is started from the machine's binaries.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpa_assets.sources.generator import generate_day  # noqa: E402
from dpa_assets.sources.payload import SOURCE_LINE  # noqa: E402
from dpa_assets.transforms import facts_checksum, to_facts, validate_freight  # noqa: E402
from dpa_assets.warehouse.engine import create_warehouse_engine  # noqa: E402
from dpa_assets.warehouse.ledger import (  # noqa: E402
    VALIDATED,
    PartitionLoad,
    as_records,
    commit_partition,
    record_validation,
)
from dpa_assets.warehouse.protection import ensure_schema  # noqa: E402
from dpa_assets.warehouse.tables import facts  # noqa: E402

DAY = "2026-11-20"


def _raw_frame(rows: int) -> pd.DataFrame:
    generated = generate_day(date.fromisoformat(DAY), rows=rows, seed=1)
    raw = pd.DataFrame(generated.records, dtype=object)
    raw.insert(0, SOURCE_LINE, range(2, rows + 2))
    return raw


def measure_validation(raw: pd.DataFrame) -> tuple[PartitionLoad, float, float]:
    started = time.perf_counter()
    outcome = validate_freight(raw, DAY)
    fact_rows = to_facts(outcome.valid, DAY)
    seconds = time.perf_counter() - started
    tracemalloc.start()  # a second, traced pass for memory: tracing slows the timed one down
    validate_freight(raw, DAY)
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    load = PartitionLoad(
        partition_date=date.fromisoformat(DAY),
        run_id="bench",
        validation_run_id="bench",
        facts=fact_rows,
        rejects=outcome.rejects,
        rows_received=outcome.rows_received,
        content_checksum=facts_checksum(fact_rows),
    )
    return load, seconds, peak_mib


def row_by_row_seconds(engine: sa.Engine, load: PartitionLoad, run: int) -> float:
    """The baseline: the same rows, one INSERT statement each, one transaction, another day."""
    records = as_records(load.facts.assign(load_run_id="baseline"), engine.dialect.name)
    other_day = date(2026, 11, 1 + run)
    for record in records:
        record["partition_date"] = other_day
        record["shipment_id"] = f"B{run}-{record['shipment_id']}"
    started = time.perf_counter()
    with engine.begin() as connection:
        for record in records:
            connection.execute(facts.insert().values(**record))
    return time.perf_counter() - started


def measure_commit(name: str, url: str, load: PartitionLoad, repeats: int = 3) -> None:
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    # The commit refuses a load whose validation is not recorded as passed, as in the pipeline.
    record_validation(engine, load.partition_date, load.validation_run_id, load.rejects, load.rows_received, VALIDATED)
    fast, slow = [], []
    for run in range(repeats):
        started = time.perf_counter()
        commit_partition(engine, replace(load, run_id=f"bench-{run}"))
        fast.append(time.perf_counter() - started)
        slow.append(row_by_row_seconds(engine, load, run))
    rows = len(load.facts)
    best_fast, best_slow = min(fast), min(slow)
    print(
        f"{name:<10} commit (delete + bulk insert + audit): {best_fast:7.3f} s  {rows / best_fast:>10,.0f} rows/s"
        f"   row-by-row INSERT baseline: {best_slow:7.3f} s   speed-up x{best_slow / best_fast:5.1f}"
    )
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--pg-url", help="an empty PostgreSQL database (default: start a throwaway cluster)")
    args = parser.parse_args()

    raw = _raw_frame(args.rows)
    load, seconds, peak_mib = measure_validation(raw)
    print(f"rows received {len(raw):,}  valid {len(load.facts):,}  rejected {len(load.rejects):,}")
    raw_mib = raw.memory_usage(deep=True).sum() / 2**20
    print(
        f"validation + shaping: {seconds:7.3f} s  {len(raw) / seconds:>10,.0f} rows/s  "
        f"peak {peak_mib:,.0f} MiB = x{peak_mib / raw_mib:.1f} the received frame ({raw_mib:,.0f} MiB)"
    )

    with tempfile.TemporaryDirectory() as folder:
        measure_commit("sqlite", f"sqlite:///{Path(folder) / 'bench.sqlite'}", load)
    if args.pg_url:
        measure_commit("postgresql", args.pg_url, load)
        return 0
    from dpa_assets_tests.support.postgres import start_cluster

    cluster = start_cluster()
    try:
        admin = sa.create_engine(cluster.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql("CREATE DATABASE bench")
        admin.dispose()
        measure_commit("postgresql", cluster.url("bench"), load)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
