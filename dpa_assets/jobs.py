"""Jobs: the nightly load of one day, and the morning freshness check."""

from __future__ import annotations

import dagster as dg

from dpa_assets.assets import GROUP
from dpa_assets.checks import yesterday_loaded_by_six

daily_freight_job = dg.define_asset_job(
    name="daily_freight_job",
    # The freshness check judges the clock, not a partition: it has its own morning job.
    selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.checks(yesterday_loaded_by_six),
    description="Fetch, validate and commit one day of freight movements, with its checks.",
)

freshness_check_job = dg.define_asset_job(
    name="freshness_check_job",
    selection=dg.AssetSelection.checks(yesterday_loaded_by_six),
    description="Is yesterday's freight in the warehouse by 06:00 Africa/Douala?",
)
