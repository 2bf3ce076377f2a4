"""One set of resources per deployment (``DPA_DEPLOYMENT``, default ``local``) and freight source
(``DPA_FREIGHT_SOURCE``: ``landing`` files, the default, or the HTTP ``api``).

Building a set does no I/O: engines and folders are opened when a run first uses them.
"""

from __future__ import annotations

import os

import dagster as dg

from dpa_assets.alerts.sms import SmsGatewayResource
from dpa_assets.configuration import unknown_choice
from dpa_assets.intermediate_io_manager import IntermediateIOManager
from dpa_assets.io_manager import WarehouseIOManager
from dpa_assets.recovery.policy import RecoveryPolicyResource
from dpa_assets.resources import (
    AlertJournalResource,
    FreightSource,
    HttpFreightApiSource,
    LandingDirSource,
    PayloadArchiveResource,
    ValidationPolicyResource,
    WarehouseResource,
)
from dpa_assets.settings import (
    DEPLOYMENTS,
    ENV_ARCHIVE_DIR,
    ENV_DEPLOYMENT,
    ENV_FREIGHT_API_TOKEN,
    ENV_FREIGHT_API_URL,
    ENV_FREIGHT_SOURCE,
    ENV_LANDING_DIR,
    ENV_SMS_API_KEY,
    ENV_SMS_BASE_URL,
    ENV_SMS_RECIPIENTS,
    ENV_SMS_SENDER,
    ENV_SMS_USERNAME,
    ENV_WAREHOUSE_URL,
    FREIGHT_SOURCES,
)


def current_deployment() -> str:
    """The deployment named by ``DPA_DEPLOYMENT``; an unknown name is an error, never a fallback."""
    problem = unknown_choice(os.environ, ENV_DEPLOYMENT, "local", DEPLOYMENTS)
    if problem:
        raise ValueError(problem)
    return os.environ.get(ENV_DEPLOYMENT, "local")


def current_freight_source() -> str:
    """Where freight comes from, named by ``DPA_FREIGHT_SOURCE`` (default ``landing``)."""
    problem = unknown_choice(os.environ, ENV_FREIGHT_SOURCE, "landing", FREIGHT_SOURCES)
    if problem:
        raise ValueError(problem)
    return os.environ.get(ENV_FREIGHT_SOURCE, "landing")


def warehouse_kind() -> str:
    """``postgres`` or ``sqlite``: the warehouse ``DPA_WAREHOUSE_URL`` names (SQLite when unset),
    shown as a kind on the assets it writes."""
    url = os.environ.get(ENV_WAREHOUSE_URL, "")
    return "postgres" if url.startswith("postgresql") else "sqlite"


def sms_gateway() -> SmsGatewayResource:
    """The SMS gateway, bound to the ``DPA_SMS_*`` variables that are set.

    ``dg.EnvVar`` keeps the key out of the definitions (the UI shows the variable's name), but an
    unset one fails the resource; so only set variables are bound, and with none the gateway is
    "not configured": alerts are journaled and wait, the pipeline works on embedded defaults.
    """
    names = {
        "base_url": ENV_SMS_BASE_URL,
        "username": ENV_SMS_USERNAME,
        "api_key": ENV_SMS_API_KEY,
        "recipients": ENV_SMS_RECIPIENTS,
        "sender": ENV_SMS_SENDER,
    }
    return SmsGatewayResource(**{field: dg.EnvVar(name) for field, name in names.items() if os.environ.get(name)})


def freight_source_env_fields(deployment: str, freight_source: str) -> dict[str, str]:
    """The freight source's fields bound to environment variables (field -> variable name).

    Shared by the definitions and by a run config that sets one more field of the source: Dagster
    replaces a resource's whole config with the run's, so that config must bind these again.
    """
    if freight_source == "api":
        return {"base_url": ENV_FREIGHT_API_URL, "token": ENV_FREIGHT_API_TOKEN}
    if deployment == "production":
        # Production names every location explicitly: a missing variable fails the run, loudly.
        return {"landing_dir": ENV_LANDING_DIR}
    return {}


def build_resources(deployment: str, freight_source: str = "landing") -> dict[str, object]:
    """The resources of one deployment.

    Args:
        deployment: one of ``settings.DEPLOYMENTS``.
        freight_source: one of ``settings.FREIGHT_SOURCES``.

    Returns:
        Resource key -> resource, for ``dg.Definitions``.
    """
    if freight_source not in FREIGHT_SOURCES:
        raise ValueError(f"unknown freight source {freight_source!r}; allowed: {', '.join(FREIGHT_SOURCES)}")
    if deployment == "local":
        warehouse = WarehouseResource()
        landing = LandingDirSource()
        archive = PayloadArchiveResource()
    elif deployment == "production":
        # Production names every location explicitly: a missing variable fails the run, loudly.
        warehouse = WarehouseResource(url=dg.EnvVar(ENV_WAREHOUSE_URL))
        landing = LandingDirSource(**_env_bound(freight_source_env_fields(deployment, "landing")))
        archive = PayloadArchiveResource(archive_dir=dg.EnvVar(ENV_ARCHIVE_DIR))
    else:
        raise ValueError(f"unknown deployment {deployment!r}; allowed: {', '.join(DEPLOYMENTS)}")
    source: FreightSource = landing
    if freight_source == "api":
        source = HttpFreightApiSource(**_env_bound(freight_source_env_fields(deployment, "api")))
    return {
        "freight_source": source,
        "payload_archive": archive,
        "warehouse": warehouse,
        "validation_policy": ValidationPolicyResource(),
        "alert_journal": AlertJournalResource(),
        "sms_gateway": sms_gateway(),
        "recovery_policy": RecoveryPolicyResource(),
        "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse),
        "io_manager": IntermediateIOManager(),
    }


def _env_bound(fields: dict[str, str]) -> dict[str, dg.EnvVar]:
    return {field: dg.EnvVar(name) for field, name in fields.items()}
