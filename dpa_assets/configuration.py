"""What is wrong with the environment a deployment runs in, said before anything is built.

Read by ``dpa`` before it loads the code location, so that a bad setting is one line for the
operator instead of a traceback from deep inside Dagster's config system. No Dagster here: the
partition set itself is built from one of these settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import sqlalchemy as sa
import yaml

from dpa_assets.settings import (
    DEFAULT_PARTITION_START,
    DEPLOYMENTS,
    ENV_ARCHIVE_DIR,
    ENV_DEPLOYMENT,
    ENV_FREIGHT_API_TOKEN,
    ENV_FREIGHT_API_URL,
    ENV_FREIGHT_SOURCE,
    ENV_LANDING_DIR,
    ENV_PARTITION_START,
    ENV_WAREHOUSE_URL,
    FREIGHT_SOURCES,
)

PRODUCTION_REQUIRED = (ENV_WAREHOUSE_URL, ENV_LANDING_DIR, ENV_ARCHIVE_DIR)
API_REQUIRED = (ENV_FREIGHT_API_URL, ENV_FREIGHT_API_TOKEN)


def unknown_choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str | None:
    """The problem with a setting that names one of a few choices, or None when it is one of them."""
    value = env.get(name, default)
    return None if value in allowed else f"{name}={value!r} is unknown; allowed: {', '.join(allowed)}"


def configuration_problems(environ: Mapping[str, str] | None = None) -> list[str]:
    """Each problem of the DPA settings, as a sentence that says what to set.

    Args:
        environ: the environment to judge (default: this process's).

    Returns:
        Problems in the order an operator fixes them; empty when the settings are usable.
    """
    env = os.environ if environ is None else environ
    problems = [
        problem
        for problem in (
            unknown_choice(env, ENV_DEPLOYMENT, "local", DEPLOYMENTS),
            unknown_choice(env, ENV_FREIGHT_SOURCE, "landing", FREIGHT_SOURCES),
        )
        if problem
    ]
    deployment = env.get(ENV_DEPLOYMENT, "local")
    source = env.get(ENV_FREIGHT_SOURCE, "landing")
    start = env.get(ENV_PARTITION_START, DEFAULT_PARTITION_START)
    try:
        date.fromisoformat(start)
    except ValueError:
        problems.append(f"{ENV_PARTITION_START}={start!r} is not a date in YYYY-MM-DD form")
    url_problem = warehouse_url_problem(env.get(ENV_WAREHOUSE_URL))
    if url_problem:
        problems.append(url_problem)
    required = (PRODUCTION_REQUIRED if deployment == "production" else ()) + (API_REQUIRED if source == "api" else ())
    missing = [name for name in required if not env.get(name)]
    if missing:
        why = f"{ENV_DEPLOYMENT}=production" if deployment == "production" else f"{ENV_FREIGHT_SOURCE}=api"
        problems.append(f"{why} needs {', '.join(missing)} set in the environment")
    return problems


def warehouse_url_problem(url: str | None) -> str | None:
    """Why ``DPA_WAREHOUSE_URL`` cannot name a usable warehouse, or None (unset means the local SQLite file).

    The URL itself is never quoted back unparsed: it may hold the password.
    """
    if not url:
        return None
    usable = "use postgresql+psycopg2://user@host/db or sqlite:///path"
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return f"{ENV_WAREHOUSE_URL} is not a SQLAlchemy URL; {usable}"
    try:
        parsed.get_dialect().import_dbapi()
    except (sa.exc.NoSuchModuleError, ImportError) as error:
        shown = parsed.render_as_string(hide_password=True)
        return f"{ENV_WAREHOUSE_URL}={shown}: its driver cannot be loaded ({error}); {usable}"
    return None


def instance_env_problem(instance_file: Path, environ: Mapping[str, str] | None = None) -> str | None:
    """Which variables a Dagster home's ``dagster.yaml`` reads (``env: NAME``) and are not set, or None.

    An unreadable file is left to Dagster, whose message names its fault.
    """
    env = os.environ if environ is None else environ
    try:
        settings = yaml.safe_load(instance_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    missing = [name for name in dict.fromkeys(_env_names(settings)) if not env.get(name)]
    if not missing:
        return None
    return f"{instance_file} reads {', '.join(missing)} from the environment: set them (docs/deployment.md)"


def _env_names(node: object) -> list[str]:
    """Every ``env: NAME`` of a parsed YAML tree, in the order they appear."""
    if isinstance(node, dict):
        own = [node["env"]] if isinstance(node.get("env"), str) else []
        return own + [name for value in node.values() for name in _env_names(value)]
    if isinstance(node, list):
        return [name for value in node for name in _env_names(value)]
    return []
