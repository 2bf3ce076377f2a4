"""The Dagster instance settings DPA ships: one run per freight day at a time.

``local`` keeps Dagster's SQLite storage under the home; ``production`` keeps runs, event logs and
schedules in PostgreSQL (``DAGSTER_PG_*``; docs/deployment.md).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from dpa_assets.settings import ENV_DEPLOYMENT

INSTANCE_FILE = "dagster.yaml"
SHIPPED_FILES = {"local": "dagster.yaml", "production": "dagster.production.yaml"}


def instance_yaml(deployment: str = "local") -> str:
    """The shipped ``dagster.yaml`` text of a deployment (``settings.DEPLOYMENTS``)."""
    if deployment not in SHIPPED_FILES:
        raise ValueError(f"no instance file for deployment {deployment!r}; allowed: {', '.join(SHIPPED_FILES)}")
    return resources.files(__name__).joinpath(SHIPPED_FILES[deployment]).read_text(encoding="utf-8")


def install_instance_yaml(home: Path) -> Path:
    """Put the current deployment's ``dagster.yaml`` in a Dagster home that has none; never overwrite one.

    The deployment is ``DPA_DEPLOYMENT`` (default ``local``); an unknown one is an error.

    Args:
        home: the Dagster home folder (created if missing).

    Returns:
        The path of the home's ``dagster.yaml``.
    """
    # Read here rather than through deployments.py: installing a file must not build the code location.
    text = instance_yaml(os.environ.get(ENV_DEPLOYMENT, "local"))
    home.mkdir(parents=True, exist_ok=True)
    target = home / INSTANCE_FILE
    if not target.exists():
        target.write_text(text, encoding="utf-8")
    return target
