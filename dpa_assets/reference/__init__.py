"""Reference lists (stations, commodities) kept as CSV data in the package, not in code.

Operations staff edit the CSV files; validation and the synthetic generator both read them here.
"""

from __future__ import annotations

import csv
import functools
from importlib import resources


def _read_rows(file_name: str) -> list[dict[str, str]]:
    text = resources.files(__name__).joinpath(file_name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@functools.cache
def station_names() -> dict[str, str]:
    """Station code -> station name, e.g. ``{"EDE": "Edéa"}``."""
    return {row["code"]: row["name"] for row in _read_rows("stations.csv")}


@functools.cache
def commodity_payloads() -> dict[str, float]:
    """Commodity code -> maximum net tonnes one wagon may carry."""
    return {row["code"]: float(row["max_payload_t_per_wagon"]) for row in _read_rows("commodities.csv")}
