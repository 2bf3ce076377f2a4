"""The Dagster instance settings DPA ships: one run per freight day at a time."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

INSTANCE_FILE = "dagster.yaml"


def instance_yaml() -> str:
    """The shipped ``dagster.yaml`` text."""
    return resources.files(__name__).joinpath(INSTANCE_FILE).read_text(encoding="utf-8")


def install_instance_yaml(home: Path) -> Path:
    """Put the shipped ``dagster.yaml`` in a Dagster home that has none; never overwrite one.

    Args:
        home: the Dagster home folder (created if missing).

    Returns:
        The path of the home's ``dagster.yaml``.
    """
    home.mkdir(parents=True, exist_ok=True)
    target = home / INSTANCE_FILE
    if not target.exists():
        target.write_text(instance_yaml(), encoding="utf-8")
    return target
