"""Deterministic synthetic freight days for the demo and the tests.

The same (day, seed) always gives the same rows. A few percent of rows carry exactly one
realistic defect each, and the generator says which, so tests can count expected rejections.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from dpa_assets.freight_model import RAW_COLUMNS, luhn_check_digit
from dpa_assets.partitions import LOCAL_TZ
from dpa_assets.reference import commodity_payloads, station_names

CUSTOMERS = (
    "Ciments du Littoral",
    "Bois de l'Est SA",
    "Alu Sanaga Export",
    "Coton du Nord",
    "Hydrocarbures Centre Distribution",
    "Terminal Conteneurs Douala",
    "Céréales de l'Adamaoua",
    "Travaux de la Voie",
)
DEFECTS = (
    "bad_check_digit",
    "unknown_station",
    "same_origin_destination",
    "negative_tonnage",
    "overloaded",
    "zero_wagons",
    "arrival_before_departure",
    "departure_outside_day",
    "unparseable_number",
    "missing_customer",
    "duplicate_shipment_id",
)


@dataclass(frozen=True)
class GeneratedDay:
    """One synthetic day: its rows (raw text values) and the shipment rows made bad on purpose."""

    day: date
    records: list[dict[str, str]]
    bad_rows: dict[int, str] = field(default_factory=dict)  # row index -> defect name

    @property
    def bad_count(self) -> int:
        return len(self.bad_rows)


def day_seed(day: date, seed: int) -> int:
    """A stable per-day seed (Python's ``hash`` of str is salted per process, so not used)."""
    return day.toordinal() * 1_000_003 + seed


def _wagon_number(rng: random.Random) -> str:
    payload = rng.choice(("31", "33", "21", "23")) + "".join(rng.choices("0123456789", k=9))
    return payload + str(luhn_check_digit(payload))


def _good_record(rng: random.Random, day: date, sequence: int) -> dict[str, str]:
    stations = list(station_names())
    payloads = commodity_payloads()
    commodity = rng.choice(list(payloads))
    origin, destination = rng.sample(stations, 2)
    wagons = rng.randint(1, 24)
    tonnage = round(wagons * payloads[commodity] * rng.uniform(0.55, 0.98), 1)
    departure = datetime(day.year, day.month, day.day, tzinfo=LOCAL_TZ) + timedelta(minutes=rng.randint(0, 24 * 60 - 1))
    in_transit = rng.random() < 0.05
    arrival = "" if in_transit else (departure + timedelta(minutes=rng.randint(90, 40 * 60))).isoformat()
    return {
        "shipment_id": f"SHP-{day:%Y%m%d}-{sequence:05d}",
        "waybill_number": f"WB{day:%y%m%d}{sequence:05d}",
        "wagon_number": _wagon_number(rng),
        "origin_station": origin,
        "destination_station": destination,
        "commodity": commodity,
        "net_tonnage": f"{tonnage}",
        "wagon_count": str(wagons),
        "departure_time": departure.isoformat(),
        "arrival_time": arrival,
        "customer": rng.choice(CUSTOMERS),
        "revenue_xaf": str(round(tonnage * rng.uniform(9_000, 42_000))),
    }


def _break(record: dict[str, str], defect: str, records: list[dict[str, str]]) -> None:
    """Give a good record exactly one defect, in place."""
    if defect == "bad_check_digit":
        last = int(record["wagon_number"][-1])
        record["wagon_number"] = record["wagon_number"][:-1] + str((last + 1) % 10)
    elif defect == "unknown_station":
        record["destination_station"] = "XXX"
    elif defect == "same_origin_destination":
        record["destination_station"] = record["origin_station"]
    elif defect == "negative_tonnage":
        record["net_tonnage"] = "-" + record["net_tonnage"]
    elif defect == "overloaded":
        record["net_tonnage"] = str(float(record["wagon_count"]) * 99.0)
    elif defect == "zero_wagons":
        record["wagon_count"] = "0"
    elif defect == "arrival_before_departure":
        departure = datetime.fromisoformat(record["departure_time"])
        record["arrival_time"] = (departure - timedelta(hours=3)).isoformat()
    elif defect == "departure_outside_day":
        departure = datetime.fromisoformat(record["departure_time"])
        record["departure_time"] = (departure - timedelta(days=2)).isoformat()
        record["arrival_time"] = ""
    elif defect == "unparseable_number":
        record["net_tonnage"] = record["net_tonnage"].replace(".", ",") + " t"
    elif defect == "missing_customer":
        record["customer"] = ""
    elif defect == "duplicate_shipment_id":
        # Only later repeats are rejected, so the copy must come after the original.
        record["shipment_id"] = records[0]["shipment_id"]


def generate_day(day: date, rows: int | None = None, seed: int = 0, bad_fraction: float = 0.04) -> GeneratedDay:
    """Generate one day of freight movements.

    Args:
        day: the business day (Africa/Douala) the movements depart on.
        rows: how many rows; by default 180 to 299, chosen by the seed.
        seed: varies the data for the same day.
        bad_fraction: share of rows given one defect each (rounded down).

    Returns:
        The rows as text, as the freight system would send them, and which rows are bad.
    """
    rng = random.Random(day_seed(day, seed))
    count = rows if rows is not None else rng.randint(180, 299)
    records = [_good_record(rng, day, sequence) for sequence in range(1, count + 1)]
    bad_total = int(count * bad_fraction)
    # Row 0 stays good: duplicates copy its shipment id.
    bad_indices = sorted(rng.sample(range(1, count), bad_total)) if bad_total and count > 1 else []
    bad_rows: dict[int, str] = {}
    for index in bad_indices:
        defect = rng.choice(DEFECTS)
        _break(records[index], defect, records)
        bad_rows[index] = defect
    return GeneratedDay(day=day, records=records, bad_rows=bad_rows)


def landing_file_name(day: date) -> str:
    """The landing file name the freight system drops for a day."""
    return f"freight_{day.isoformat()}.csv"


def write_landing_file(landing_dir: Path, generated: GeneratedDay) -> Path:
    """Write a generated day as the UTF-8 CSV landing file; returns its path."""
    landing_dir.mkdir(parents=True, exist_ok=True)
    path = landing_dir / landing_file_name(generated.day)
    tmp = path.with_suffix(".csv.part")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RAW_COLUMNS)
        writer.writeheader()
        writer.writerows(generated.records)
    tmp.replace(path)  # a reader never sees half a file
    return path
