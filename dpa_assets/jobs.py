"""The nightly job: every freight asset and its checks for one day."""

from __future__ import annotations

import dagster as dg

from dpa_assets.assets import GROUP

daily_freight_job = dg.define_asset_job(
    name="daily_freight_job",
    selection=dg.AssetSelection.groups(GROUP),
    description="Fetch, validate and commit one day of freight movements.",
)
