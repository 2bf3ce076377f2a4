"""How patient the recovery sensors are: when a run counts as a zombie, which days catch-up loads."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class RecoveryPolicyResource(dg.ConfigurableResource):
    """Thresholds of the zombie-run reconciler and of the catch-up sensor."""

    stale_heartbeat_seconds: int = Field(
        default=600, gt=0, description="A run whose heartbeat is older than this is a zombie (worker on any host)"
    )
    start_grace_seconds: int = Field(default=300, gt=0, description="Time a run may take to record its first heartbeat")
    max_runtime_seconds: int = Field(
        default=3 * 3600,
        gt=0,
        description="A run still going after this is failed (Dagster's run monitoring stops it first, at 7200 s)",
    )
    catch_up_days: int = Field(default=3, ge=1, description="How many recent days the catch-up sensor watches")
    catch_up_max_runs_per_tick: int = Field(default=2, ge=1, description="Most days requested by one tick")
    catch_up_retry_minutes: int = Field(
        default=60, ge=0, description="Wait after a day's last run before catch-up tries it again"
    )
    catch_up_after_hours: float = Field(
        default=4.0,
        ge=0,
        description="Hours after a day ends before catch-up may load it (the nightly schedule runs at 02:30)",
    )
