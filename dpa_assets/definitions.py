"""The DPA code location: the one module that assembles assets, checks, jobs, schedules, resources."""

from __future__ import annotations

import dagster as dg

from dpa_assets import assets, checks
from dpa_assets.deployments import build_resources, current_deployment, current_freight_source
from dpa_assets.jobs import daily_freight_job, freight_backfill_job, freshness_check_job
from dpa_assets.recovery.sensors import freight_catch_up_sensor, zombie_run_reconciler_sensor
from dpa_assets.schedules import daily_freight_schedule, freshness_check_schedule
from dpa_assets.sensors import freight_failure_alert_sensor

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[daily_freight_job, freight_backfill_job, freshness_check_job],
    schedules=[daily_freight_schedule, freshness_check_schedule],
    sensors=[freight_failure_alert_sensor, zombie_run_reconciler_sensor, freight_catch_up_sensor],
    resources=build_resources(current_deployment(), current_freight_source()),
)
