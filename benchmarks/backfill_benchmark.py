"""How long does a backfill of many small days take, one Dagster run per day, next to the same work without Dagster?

    .venv/bin/python benchmarks/backfill_benchmark.py [--days 10] [--rows 5000] [--repeats 1] [--skip-runs-per-day]

Issue 10's target: 365 days of 5,000 rows in under 3 minutes. Contenders, each a whole process on
a fresh SQLite warehouse and Dagster home, the same generated landing files:

- one run per day: ``dpa materialize --from D --to D`` (every day its own run, its checks recorded
  per partition, a bad day failing alone);
- one run for the range: ``dpa backfill --from D --to D`` (``freight_backfill_job``: the same work and
  the same per-day records, each day its own transaction, a bad day failing alone, in one run);
- the work alone: the same steps called directly in one process, no Dagster (parse, validate with
  the cross-day lookup, record the validation and rejects, shape and checksum the facts, commit the
  day with its audit row, reconcile it and check ids across days). Any single-run backfill still does
  this work for every day: it is the floor the single run approaches.

``--days 365`` runs the issue's size (several minutes per repetition); the default extrapolates from 10.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

# Same folder (run as benchmarks/backfill_benchmark.py); importing it also puts the project on sys.path.
from load_benchmark import dpa_env, isolated

from dpa_assets.sources.generator import generate_day, write_landing_file

# A year back from a fixed day, so --days 365 stays among closed days; the partition set starts there.
FIRST_DAY = date(2025, 1, 6)
TARGET_DAYS, TARGET_SECONDS = 365, 180.0
PYTHON = sys.executable
DPA = str(Path(sys.executable).with_name("dpa"))

_WORK_ALONE = """
import sys
from datetime import date, timedelta
from pathlib import Path
from dpa_assets.checks import reconcile_partition
from dpa_assets.sources.payload import ReceivedPayload, parse_csv
from dpa_assets.transforms import facts_checksum, to_facts, validate_freight
from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import VALIDATED, PartitionLoad, commit_partition, record_validation
from dpa_assets.warehouse.protection import ensure_schema
from dpa_assets.warehouse.reports import duplicated_shipment_ids, shipment_ids_loaded_elsewhere
landing, url, first, days = Path(sys.argv[1]), sys.argv[2], date.fromisoformat(sys.argv[3]), int(sys.argv[4])
engine = create_warehouse_engine(url)
ensure_schema(engine)
for offset in range(days):
    day = first + timedelta(days=offset)
    path = landing / f"freight_{day.isoformat()}.csv"
    raw = parse_csv(ReceivedPayload(str(path), path.read_bytes())).frame
    elsewhere = shipment_ids_loaded_elsewhere(engine, raw["shipment_id"].str.strip().tolist(), day)
    outcome = validate_freight(raw, day.isoformat(), elsewhere)
    record_validation(engine, day, "bench", outcome.rejects, outcome.rows_received, VALIDATED)
    facts = to_facts(outcome.valid, day.isoformat())
    checksum = facts_checksum(facts)
    load = PartitionLoad(day, "bench", "bench", facts, outcome.rejects, outcome.rows_received, checksum)
    row = commit_partition(engine, load)
    result = reconcile_partition(engine, day, {"content_checksum": checksum, "row_count": row["rows_loaded"]})
    assert result.passed, result.metadata
    assert not duplicated_shipment_ids(engine)
"""


def bench_env(env: dict) -> dict:
    return {**env, "DPA_PARTITION_START": FIRST_DAY.isoformat()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=10, help=f"days in the range (the issue's size: {TARGET_DAYS})")
    parser.add_argument("--rows", type=int, default=5000, help="rows per day")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--skip-runs-per-day",
        action="store_true",
        help="leave out one run per day (~10 min at 365 days; take its per-day figure from a shorter run)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dpa-backfill-bench-"))
    try:
        landing = work / "landing"
        days = [FIRST_DAY + timedelta(days=offset) for offset in range(args.days)]
        for day in days:
            write_landing_file(landing, generate_day(day, rows=args.rows, seed=1))
        timings = measure(args, work, landing, days)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render(timings, args))
    return 0


PER_DAY, SINGLE, ALONE = (
    "one run per day (dpa materialize --from/--to)",
    "one run for the range (dpa backfill --from/--to)",
    "the work alone",
)


def measure(
    args: argparse.Namespace, work: Path, landing: Path, days: list[date]
) -> dict[str, list[tuple[float, float]]]:
    """(wall seconds, peak RSS MiB) of each contender, per repetition."""
    timings: dict[str, list[tuple[float, float]]] = {PER_DAY: [], SINGLE: [], ALONE: []}
    first, last = days[0].isoformat(), days[-1].isoformat()
    for repeat in range(args.repeats):
        commands = {
            PER_DAY: [DPA, "materialize", "--from", first, "--to", last],
            SINGLE: [DPA, "backfill", "--from", first, "--to", last],
        }
        if args.skip_runs_per_day:
            del commands[PER_DAY]
        for name, command in commands.items():
            home = Path(tempfile.mkdtemp(dir=work))
            env = bench_env(dpa_env(home, landing, f"sqlite:///{home / 'warehouse.sqlite'}"))
            seconds, rss, _ = isolated(command, env)
            timings[name].append((seconds, rss))
            print(f"  [{repeat + 1}/{args.repeats}] {name}: {seconds:.1f} s, {rss:.0f} MiB", flush=True)
        alone = Path(tempfile.mkdtemp(dir=work))
        url = f"sqlite:///{alone / 'warehouse.sqlite'}"
        command = [PYTHON, "-c", _WORK_ALONE, str(landing), url, first, str(len(days))]
        seconds, rss, _ = isolated(command, bench_env(dpa_env(alone, landing, "")))
        timings[ALONE].append((seconds, rss))
        print(f"  [{repeat + 1}/{args.repeats}] {ALONE}: {seconds:.1f} s, {rss:.0f} MiB", flush=True)
    return timings


def render(timings: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> str:
    lines = [
        f"| {args.days} days of {args.rows:,} rows, SQLite | wall s, median (min-max) | s per day "
        f"| {TARGET_DAYS} days, extrapolated s | target {TARGET_SECONDS:.0f} s | peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, measured in timings.items():
        if not measured:
            continue
        seconds = [wall for wall, _ in measured]
        median = statistics.median(seconds)
        per_day = median / args.days
        whole = per_day * TARGET_DAYS
        lines.append(
            f"| {name} | {median:.1f} ({min(seconds):.1f}-{max(seconds):.1f}) | {per_day:.2f} "
            f"| {whole:.0f} | {'met' if whole < TARGET_SECONDS else 'missed'} | {max(r for _, r in measured):,.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
