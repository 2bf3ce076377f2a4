"""Jobs: the nightly load of one day, the range backfill, and the morning freshness check."""

from __future__ import annotations

import dagster as dg

from dpa_assets.assets import GROUP
from dpa_assets.backfill import load_days_in_order
from dpa_assets.checks import yesterday_loaded_by_six
from dpa_assets.settings import BACKFILL_JOB

daily_freight_job = dg.define_asset_job(
    name="daily_freight_job",
    selection=dg.AssetSelection.groups(GROUP),
    description="Fetch, validate and commit one day of freight movements, with its checks.",
    # One process per run: the run's worker PID (recovery/heartbeat.py) is the process doing the
    # work, and killing it leaves no orphaned step writing on. Three chained steps gain nothing
    # from a process each.
    executor_def=dg.in_process_executor,
)


@dg.job(name="freshness_check_job", description="Is yesterday's freight in the warehouse by 06:00 Africa/Douala?")
def freshness_check_job() -> None:
    """The clock rule alone: no asset is materialized, so no load ever evaluates it (checks.py)."""
    yesterday_loaded_by_six()


@dg.job(
    name=BACKFILL_JOB,
    description="Load a range of days in one run, each day committed and audited on its own (backfill.py).",
    executor_def=dg.in_process_executor,
)
def freight_backfill_job() -> None:
    """Many days, one run: no run's fixed cost per day; each day recorded as its own partition."""
    load_days_in_order()
