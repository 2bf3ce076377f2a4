"""The validator's exact outputs on fixed days stay what they were before it was made fast (issue 10).

Each day's valid frame, rejects frame (reasons, summaries, raw records), facts and checksum are reduced
to one SHA-256. The expected digests were computed once by the value-by-value implementation (commit
f421129, before the vectorized one) and pasted here: a change to any value, dtype, order or reason
text of any row changes a digest. When a result changes on purpose, recompute them and say why in
the commit.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from datetime import date

import pandas as pd
import pytest

from dpa_assets.freight_model import RAW_COLUMNS
from dpa_assets.schemas import ARROW_TEXT
from dpa_assets.sources.generator import generate_day
from dpa_assets.sources.payload import SOURCE_LINE
from dpa_assets.transforms import facts_checksum, to_facts, validate_freight
from dpa_assets_tests.test_column_bounds import KIND, NUMBER_EXTREMES, TEXT_EXTREMES, TIMESTAMP_EXTREMES
from dpa_assets_tests.test_schemas import EXTREMES, RULES

DAY = "2026-11-20"
UNSTORABLE_SURROGATE = re.compile("[\ud800-\udfff]")
# Spellings that sit next to the rules: padding, blanks, signs, exponents, odd offsets and dates.
ODD_VALUES = {
    "number": [" 12 ", "", "   ", "+5", "-0", "0.0", "1.", "007", "3.0", "3.5", "2.5e0", "1e-7", "12,5 t", "٣"],
    "text": ["", "  ", " DLA ", "dla", "XXX", "218124712173 ", " SHP-20261120-00001", "\t", "a\u00a0b", "\ufeffx"],
    "timestamp": [
        *("", " 2026-11-20T08:00:00+01:00 ", "2026-11-20T08:00:00+0100", "2026-11-20 08:00:00Z", "2026-11-20"),
        *("2026-11-20T08:00:00+05:30", "2026-11-20T08:00:00.5-03:00", "2026-11-19T23:30:00", "2026-11-21T00:00:00"),
        *("2026-11-20T25:00:00+01:00", "2026-02-30T08:00:00Z", "1969-12-31T23:59:59Z", "2300-01-01T00:00:00Z"),
    ],
}
POOL = {kind: list(values) for kind, values in ODD_VALUES.items()}
POOL["number"] += NUMBER_EXTREMES
POOL["text"] += TEXT_EXTREMES
POOL["timestamp"] += TIMESTAMP_EXTREMES
for _rule, _column, _bad in [*RULES, *EXTREMES]:
    for _name, _value in _bad.items():
        POOL[KIND[_name]].append(_value)


def received(records: list[dict[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=list(RAW_COLUMNS), dtype=object)
    frame.insert(0, SOURCE_LINE, range(2, len(records) + 2))
    return frame


def generated(rows: int, seed: int, bad_fraction: float) -> list[dict[str, str]]:
    return generate_day(date.fromisoformat(DAY), rows=rows, seed=seed, bad_fraction=bad_fraction).records


def odd_day(rows: int, seed: int, cells: int) -> list[dict[str, str]]:
    """A generated day with odd and extreme values put into ``cells`` cells chosen by the seed."""
    records = generated(rows, seed, 0.2)
    rng = random.Random(seed)
    for _ in range(cells):
        row, column = rng.randrange(rows), rng.choice(RAW_COLUMNS)
        records[row][column] = rng.choice(POOL[KIND[column]])
    for _ in range(rows // 20):  # resends of earlier ids, some padded
        row = rng.randrange(1, rows)
        records[row]["shipment_id"] = rng.choice(["", " "]) + records[rng.randrange(row)]["shipment_id"]
    return records


def _cell(value: object) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return f"{type(value).__name__}:"
    if isinstance(value, pd.Timestamp):
        return f"Timestamp:{value.isoformat()}:{value.unit}"
    if isinstance(value, str):
        return "str:" + json.dumps(value)  # escapes lone surrogates, which UTF-8 cannot encode
    return f"{type(value).__name__}:{value!r}"


def frame_digest(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(repr([list(frame.columns), [str(kind) for kind in frame.dtypes], frame.index.tolist()]).encode())
    for column in frame.columns:
        digest.update("\x1f".join(map(_cell, frame[column].tolist())).encode() + b"\x1e")
    return digest.hexdigest()


def outputs_digest(raw: pd.DataFrame, loaded_elsewhere: frozenset[str] = frozenset()) -> str:
    outcome = validate_freight(raw, DAY, loaded_elsewhere)
    facts = to_facts(outcome.valid, DAY)
    parts = [frame_digest(outcome.valid), frame_digest(outcome.rejects), frame_digest(facts), facts_checksum(facts)]
    parts.append(str((outcome.rows_received, outcome.rows_rejected)))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


ELSEWHERE = frozenset({"SHP-20261120-00007", "SHP-20261120-00100", "SHP-20261120-00101 ", "nowhere"})
DAYS = {
    "usual_day": (lambda: received(generated(3_000, 0, 0.04)), frozenset()),
    "half_bad": (lambda: received(generated(2_000, 1, 0.5)), frozenset()),
    "almost_all_bad": (lambda: received(generated(1_500, 2, 0.95)), ELSEWHERE),
    "odd_values": (lambda: received(odd_day(1_200, 3, 600)), ELSEWHERE),
    "odd_values_dense": (lambda: received(odd_day(400, 4, 2_000)), frozenset()),
    "all_good": (lambda: received(generated(500, 5, 0.0)), frozenset()),
    "one_row": (lambda: received(generated(1, 6, 0.0)), frozenset()),
}
EXPECTED = {  # computed by the value-by-value implementation (commit f421129)
    "usual_day": "6e73213c0d56595b3d94d35d43a5d5367b569611fd3f84d3dcdfe80da959abc5",
    "half_bad": "3c2d1a5dfb69ffa6db98313d58055a5d6f26dcdda6fbc13a093f4ee1c355749d",
    "almost_all_bad": "cf06eb155fd29197514fa245d9ba51daf9c01008846eb92b0f7a60288ae320f5",
    "odd_values": "076b98f767f37d1916f7d1af8c056910ad35fbe636956ae8d12cac52e768d64b",
    "odd_values_dense": "82706a999f498c85379c1b6cdd980164a2841b77cd8f32a8ead80c271d90e8ff",
    "all_good": "22544798bf6186ca7cfa1aacac805fc26dde35823339c560ac8f626e48b5e0cf",
    "one_row": "1b2ffe633cac4ddbce6366b06db2e29eb4659397eb6e36dbedc14686ce8b358d",
}


@pytest.mark.parametrize("name", sorted(DAYS))
def test_outputs_are_those_of_the_value_by_value_validator(name):
    build, loaded_elsewhere = DAYS[name]
    assert outputs_digest(build(), loaded_elsewhere) == EXPECTED[name]


@pytest.mark.parametrize("name", ["odd_values", "half_bad"])
def test_text_columns_of_pandas_string_type_give_the_same_outputs(name):
    # A columnar intermediate (Parquet) hands the rows back as pandas strings instead of objects.
    build, loaded_elsewhere = DAYS[name]
    raw = build()
    as_strings = raw.astype({column: "string" for column in RAW_COLUMNS})
    assert outputs_digest(as_strings, loaded_elsewhere) == outputs_digest(raw, loaded_elsewhere)


def _utf8(value: object) -> object:
    """The value, or a stand-in where UTF-8 (so Arrow) cannot hold it: a CSV payload never carries one."""
    if isinstance(value, str) and UNSTORABLE_SURROGATE.search(value):
        return "?"
    return value


@pytest.mark.parametrize("name", sorted(DAYS))
def test_text_held_by_arrow_gives_the_same_outputs(name):
    # A CSV payload is read into Arrow text, and typed without a Python string per value where it can.
    build, loaded_elsewhere = DAYS[name]
    raw = build()
    raw[list(RAW_COLUMNS)] = raw[list(RAW_COLUMNS)].map(_utf8)
    as_arrow = raw.astype(dict.fromkeys(RAW_COLUMNS, ARROW_TEXT))
    assert outputs_digest(as_arrow, loaded_elsewhere) == outputs_digest(raw, loaded_elsewhere)
