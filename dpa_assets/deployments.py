"""One set of resources per deployment, chosen by ``DPA_DEPLOYMENT`` (default ``local``).

Building a set does no I/O: engines and folders are opened when a run first uses them.
"""

from __future__ import annotations

import os

import dagster as dg

from dpa_assets.io_manager import WarehouseIOManager
from dpa_assets.resources import (
    FreightSource,
    LandingDirSource,
    PayloadArchiveResource,
    ValidationPolicyResource,
    WarehouseResource,
)
from dpa_assets.settings import DEPLOYMENTS, ENV_ARCHIVE_DIR, ENV_DEPLOYMENT, ENV_LANDING_DIR, ENV_WAREHOUSE_URL


def current_deployment() -> str:
    """The deployment named by ``DPA_DEPLOYMENT``; an unknown name is an error, never a fallback."""
    deployment = os.environ.get(ENV_DEPLOYMENT, "local")
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"{ENV_DEPLOYMENT}={deployment!r} is unknown; allowed: {', '.join(DEPLOYMENTS)}")
    return deployment


def build_resources(deployment: str) -> dict[str, object]:
    """The resources of one deployment.

    Args:
        deployment: one of ``settings.DEPLOYMENTS``.

    Returns:
        Resource key -> resource, for ``dg.Definitions``.
    """
    if deployment == "local":
        warehouse = WarehouseResource()
        source: FreightSource = LandingDirSource()
        archive = PayloadArchiveResource()
    elif deployment == "production":
        # Production names every location explicitly: a missing variable fails the run, loudly.
        warehouse = WarehouseResource(url=dg.EnvVar(ENV_WAREHOUSE_URL))
        source = LandingDirSource(landing_dir=dg.EnvVar(ENV_LANDING_DIR))
        archive = PayloadArchiveResource(archive_dir=dg.EnvVar(ENV_ARCHIVE_DIR))
    else:
        raise ValueError(f"unknown deployment {deployment!r}; allowed: {', '.join(DEPLOYMENTS)}")
    return {
        "freight_source": source,
        "payload_archive": archive,
        "warehouse": warehouse,
        "validation_policy": ValidationPolicyResource(),
        "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse),
    }
