"""Landing payloads: a structurally broken file fails loudly, naming the file and the fault.

Every structural fault an export or a transfer can produce (nothing delivered, empty, cut off, wrong
delimiter, missing, renamed or duplicated columns, two files concatenated, binary data, broken quoting)
raises ``PayloadError`` whose message starts with the file path and says what is wrong; through Dagster
it fails the run and leaves the warehouse exactly as it was. Row-level problems never raise: the row is
kept as text and validation rejects it. Property tests mutate valid files at random: the parser returns
text rows or a ``PayloadError``, never any other exception.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import io
import random
import sys
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import dpa_assets.sources.payload as payload_module
from dpa_assets.freight_model import RAW_COLUMNS
from dpa_assets.resources import LandingDirSource
from dpa_assets.schemas import ARROW_TEXT
from dpa_assets.sources.generator import GeneratedDay, generate_day, landing_file_name, write_landing_file
from dpa_assets.sources.payload import (
    SOURCE_LINE,
    ParsedPayload,
    PayloadError,
    ReceivedPayload,
    _parse_plain_lines,
    _parse_with_csv_module,
    csv_text,
    parse_csv,
)
from dpa_assets.transforms import validate_freight
from dpa_assets_tests.conftest import PARTITION_KEY, make_resources
from dpa_assets_tests.support.warehouse import rows, scalar, snapshot
from dpa_assets_tests.test_assets import materialize

DAY = date.fromisoformat(PARTITION_KEY)
BOM = codecs.BOM_UTF8
ORIGIN = f"/landing/{landing_file_name(DAY)}"


# --- building and reading landing files -------------------------------------------------------------


def _csv(header: list[str], rows: list[list[str]], delimiter: str = ",", encoding: str = "utf-8") -> bytes:
    """A CSV file as the freight system's exporter writes it (CRLF line endings)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode(encoding)


def _rows(records: list[dict[str, str]]) -> list[list[str]]:
    return [[record[column] for column in RAW_COLUMNS] for record in records]


def _without_column(content: bytes, column: str) -> bytes:
    header, *rows = csv.reader(io.StringIO(content.decode("utf-8"), newline=""))
    index = header.index(column)
    return _csv(header[:index] + header[index + 1 :], [row[:index] + row[index + 1 :] for row in rows])


def _cut_in_last_line(content: bytes) -> bytes:
    """The file as a transfer that died halfway through its last line leaves it."""
    body = content.rstrip(b"\r\n")
    last_line_start = body.rfind(b"\n") + 1
    return body[: last_line_start + (len(body) - last_line_start) // 2]


def _parse_file(path: Path, content: bytes) -> ParsedPayload:
    """Write the landing file, then fetch and parse it the way ``raw_freight`` does."""
    path.write_bytes(content)
    source = LandingDirSource(landing_dir=str(path.parent))
    return source.parse(source.fetch_day(PARTITION_KEY))


def _fault(path: Path, content: bytes) -> str:
    """The ``PayloadError`` message for a broken landing file; it must start with the file path."""
    with pytest.raises(PayloadError) as caught:
        _parse_file(path, content)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message


@pytest.fixture
def landing_file(generated_day: GeneratedDay, landing_dir: Path) -> Path:
    return landing_dir / landing_file_name(generated_day.day)


# --- structural faults: one test each ------------------------------------------------------------------


def test_missing_file_says_no_landing_file_was_delivered(landing_dir, partition_key):
    with pytest.raises(PayloadError) as caught:
        LandingDirSource(landing_dir=str(landing_dir)).fetch_day(partition_key)

    assert str(caught.value).startswith(f"{landing_dir / landing_file_name(DAY)}: ")
    assert "no landing file for 2026-11-20" in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"  \r\n\t\n", BOM, BOM + b"\r\n"],
    ids=["zero_bytes", "whitespace_only", "byte_order_mark_only", "byte_order_mark_and_newline"],
)
def test_empty_file_is_refused_as_empty(landing_file, content):
    assert "the file is empty" in _fault(landing_file, content)


@pytest.mark.parametrize("ending", [b"\r\n", b""], ids=["with_newline", "without_newline"])
def test_header_only_file_says_there_are_no_movements(landing_file, ending):
    content = _csv(list(RAW_COLUMNS), []).rstrip(b"\r\n") + ending

    assert "has a header but no movements" in _fault(landing_file, content)


def test_file_cut_in_the_middle_of_the_last_line_is_truncated(landing_file, generated_day):
    message = _fault(landing_file, _cut_in_last_line(landing_file.read_bytes()))

    last_line = len(generated_day.records) + 1
    assert f"line {last_line} has" in message and "truncated" in message


def test_file_cut_inside_its_last_value_was_cut_off_during_transfer(landing_file, generated_day):
    content = landing_file.read_bytes().rstrip(b"\r\n")[:-1]

    message = _fault(landing_file, content)

    assert "does not end with a line break" in message and "cut off during transfer" in message


def test_row_with_too_few_fields_in_the_middle_names_its_line(landing_file, generated_day):
    rows = _rows(generated_day.records)
    del rows[48][5]  # file line 50 lost its commodity and the comma before it

    message = _fault(landing_file, _csv(list(RAW_COLUMNS), rows))

    assert "line 50 has 11 fields where the header has 12" in message


@pytest.mark.parametrize("delimiter", [";", "\t"], ids=["semicolon", "tab"])
def test_wrong_delimiter_is_named(landing_file, generated_day, delimiter):
    content = _csv(list(RAW_COLUMNS), _rows(generated_day.records), delimiter=delimiter)

    message = _fault(landing_file, content)

    assert f"separated by {delimiter!r}, expected ','" in message and "wrong delimiter" in message


def test_missing_required_column_is_named(landing_file):
    message = _fault(landing_file, _without_column(landing_file.read_bytes(), "customer"))

    assert "required columns missing: ['customer']" in message and "unexpected" not in message


def test_renamed_column_names_the_missing_and_the_unexpected_column(landing_file, generated_day):
    header = ["net_weight" if column == "net_tonnage" else column for column in RAW_COLUMNS]

    message = _fault(landing_file, _csv(header, _rows(generated_day.records)))

    assert "required columns missing: ['net_tonnage']" in message
    assert "unexpected columns ['net_weight'] (renamed?)" in message


def test_duplicated_header_column_is_named(landing_file, generated_day):
    header = [*RAW_COLUMNS, "customer"]
    rows = [row + [row[RAW_COLUMNS.index("customer")]] for row in _rows(generated_day.records)]

    message = _fault(landing_file, _csv(header, rows))

    assert "columns appear twice in the header: ['customer']" in message


@pytest.mark.parametrize("mark", [b"", BOM], ids=["plain", "each_with_byte_order_mark"])
def test_header_repeated_in_the_middle_means_two_files_were_concatenated(landing_file, generated_day, mark):
    first = landing_file.read_bytes()
    second = _csv(list(RAW_COLUMNS), _rows(generate_day(date(2026, 11, 21), rows=5).records))

    message = _fault(landing_file, mark + first + mark + second)

    repeated_at = len(generated_day.records) + 2
    assert f"the header appears again at line {repeated_at}" in message
    assert "two files were concatenated" in message


@pytest.mark.parametrize(
    "garbage",
    [
        lambda good: random.Random(20261120).randbytes(2048) + b"\x00",
        lambda good: gzip.compress(good),
        lambda good: good + b"\x00" * 4096,
    ],
    ids=["random_bytes", "gzip_under_a_csv_name", "nul_padding_after_a_crash"],
)
def test_binary_garbage_is_refused_as_binary(landing_file, garbage: Callable[[bytes], bytes]):
    message = _fault(landing_file, garbage(landing_file.read_bytes()))

    assert "binary data" in message and "not CSV text" in message


def _with_customer(records: list[dict[str, str]], index: int, raw_value: bytes) -> bytes:
    """The file with one customer value replaced by raw bytes, quotes and all."""
    rows = _rows(records)
    rows[index][RAW_COLUMNS.index("customer")] = "RAW-VALUE"
    return _csv(list(RAW_COLUMNS), rows).replace(b"RAW-VALUE", raw_value)


def test_text_after_a_closing_quote_is_malformed_csv(landing_file, generated_day):
    content = _with_customer(generated_day.records, 8, b'"Ciments" du Littoral')  # file line 10

    message = _fault(landing_file, content)

    assert "malformed CSV near line 10" in message and "',' expected after '\"'" in message


def test_quote_never_closed_is_malformed_csv(landing_file, generated_day):
    content = _with_customer(generated_day.records, -1, b'"Ciments du Littoral')

    message = _fault(landing_file, content)

    assert "malformed CSV near line" in message and "unexpected end of data" in message


# --- tolerated variations ----------------------------------------------------------------------------


def test_extra_columns_are_tolerated_and_reported(landing_file, generated_day):
    header = [*RAW_COLUMNS[:5], "remarks", *RAW_COLUMNS[5:], "wagon_type"]
    rows = [[*row[:5], "fragile", *row[5:], "Tadns"] for row in _rows(generated_day.records)]

    parsed = _parse_file(landing_file, _csv(header, rows))

    assert parsed.extra_columns == ["remarks", "wagon_type"]
    assert list(parsed.frame.columns) == [SOURCE_LINE, *RAW_COLUMNS]
    assert parsed.frame["customer"].tolist() == [record["customer"] for record in generated_day.records]


def test_extra_column_named_source_line_does_not_replace_the_line_numbers(landing_file, generated_day):
    rows = [[*row, "999"] for row in _rows(generated_day.records)]

    parsed = _parse_file(landing_file, _csv([*RAW_COLUMNS, SOURCE_LINE], rows))

    assert parsed.extra_columns == [SOURCE_LINE]
    assert parsed.frame[SOURCE_LINE].tolist() == list(range(2, len(rows) + 2))


def test_quoted_value_over_two_lines_is_kept_and_numbered_by_the_line_where_its_row_ends(landing_file, generated_day):
    records = [dict(record) for record in generated_day.records]
    records[1]["customer"] = "Ciments du Littoral\r\nDépôt Bonabéri, quai 2"  # file lines 3-4

    parsed = _parse_file(landing_file, _csv(list(RAW_COLUMNS), _rows(records)))

    assert parsed.frame.at[1, "customer"] == records[1]["customer"]
    # The row is numbered where it ends (line 4), as the csv module counts; later rows shift by one.
    assert parsed.frame[SOURCE_LINE].tolist()[:4] == [2, 4, 5, 6]
    assert parsed.frame[SOURCE_LINE].iloc[-1] == len(records) + 2


def test_values_are_kept_exactly_as_received(landing_file, generated_day):
    records = [dict(record) for record in generated_day.records]
    kept = {"customer": ' Bois "Est", SA ', "commodity": "NA", "waybill_number": "", "origin_station": "null"}
    records[3].update(kept)

    parsed = _parse_file(landing_file, _csv(list(RAW_COLUMNS), _rows(records)))

    assert {column: parsed.frame.at[3, column] for column in kept} == kept
    assert all(parsed.frame[column].dtype == ARROW_TEXT for column in RAW_COLUMNS)  # no Python object per value


def test_latin1_file_is_accepted_and_its_accents_decoded(landing_file, generated_day):
    records = [dict(record) for record in generated_day.records]
    records[0]["customer"], records[1]["customer"] = "Scierie d'Edéa", "Transit Bélabo"

    parsed = _parse_file(landing_file, _csv(list(RAW_COLUMNS), _rows(records), encoding="latin-1"))

    assert parsed.encoding == "latin-1"
    assert parsed.frame["customer"].tolist() == [record["customer"] for record in records]
    assert "Céréales de l'Adamaoua" in parsed.frame["customer"].tolist()


def test_utf8_file_with_one_stray_byte_is_refused_not_garbled(landing_file, generated_day):
    content = _csv(list(RAW_COLUMNS), _rows(generated_day.records))
    assert "é".encode() in content  # real UTF-8 accents ("Céréales") elsewhere in the file
    damaged = content.replace(b"Travaux de la Voie", b"Travaux de la Vo\xf6e", 1)

    message = _fault(landing_file, damaged)

    assert "is UTF-8 but byte" in message and "0xf6" in message


def test_blank_first_line_says_where_the_header_should_be(landing_file, generated_day):
    message = _fault(landing_file, b"\r\n" + _csv(list(RAW_COLUMNS), _rows(generated_day.records)))
    assert "first line is blank" in message


def test_json_document_instead_of_csv_is_named(landing_file):
    message = _fault(landing_file, b'{"movements": [{"shipment_id": "SHP-1"}]}\n')
    assert "JSON document, not the expected CSV" in message


def test_utf8_byte_order_mark_is_accepted(landing_file):
    plain = _parse_file(landing_file, landing_file.read_bytes())

    with_mark = _parse_file(landing_file, BOM + landing_file.read_bytes())

    assert with_mark.encoding == "utf-8"
    pd.testing.assert_frame_equal(with_mark.frame, plain.frame)


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_line_endings_do_not_change_the_rows(landing_file, generated_day, newline):
    content = _csv(list(RAW_COLUMNS), _rows(generated_day.records)).replace(b"\r\n", newline)

    parsed = _parse_file(landing_file, content)

    assert parsed.frame[list(RAW_COLUMNS)].values.tolist() == _rows(generated_day.records)


@pytest.mark.parametrize(
    "column, bad_value",
    [("net_tonnage", "12,5 t"), ("wagon_count", "douze"), ("departure_time", "31/02/2026 08:00")],
)
def test_bad_value_in_one_row_is_kept_as_text_for_validation_to_reject(
    landing_file, generated_day, partition_key, column, bad_value
):
    records = [dict(record) for record in generated_day.records]
    records[5][column] = bad_value  # file line 7

    parsed = _parse_file(landing_file, _csv(list(RAW_COLUMNS), _rows(records)))

    assert len(parsed.frame) == len(records)
    assert parsed.frame.at[5, column] == bad_value and parsed.frame.at[5, SOURCE_LINE] == 7
    assert 7 in validate_freight(parsed.frame, partition_key).rejects["source_line"].tolist()


# --- through Dagster: the run fails, the warehouse does not move ------------------------------------------

DAGSTER_FAULTS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (_cut_in_last_line, "truncated"),
    "wrong_delimiter": (lambda good: good.replace(b",", b";"), "wrong delimiter"),
    "binary_garbage": (lambda good: random.Random(7).randbytes(4096) + b"\x00", "binary data"),
    "missing_column": (lambda good: _without_column(good, "wagon_count"), "required columns missing"),
}


@pytest.mark.parametrize("fault", sorted(DAGSTER_FAULTS))
def test_structural_fault_fails_the_run_and_leaves_the_warehouse_unchanged(
    fault, resources, warehouse_url, landing_file, partition_key, instance
):
    assert materialize(resources, partition_key, instance).success
    before = snapshot(warehouse_url)
    break_file, phrase = DAGSTER_FAULTS[fault]
    landing_file.write_bytes(break_file(landing_file.read_bytes()))

    result = materialize(resources, partition_key, instance)

    assert not result.success
    message = result.failure_data_for_node("raw_freight").user_failure_data.description
    assert f"cannot be read: {landing_file}: " in message and phrase in message
    assert not result.asset_materializations_for_node("warehouse_facts")
    assert before["warehouse_facts"] and snapshot(warehouse_url) == before


# --- property tests: random damage gives text rows or a PayloadError, nothing else --------------------------


@functools.cache
def _valid_files() -> tuple[bytes, ...]:
    """Valid landing files as the generator writes them, plus LF-only, BOM and Latin-1 variants."""
    with tempfile.TemporaryDirectory() as folder:
        small, larger = (
            write_landing_file(Path(folder), generate_day(DAY, rows=rows, seed=seed)).read_bytes()
            for rows, seed in ((8, 1), (30, 2))
        )
    return small, larger, small.replace(b"\r\n", b"\n"), BOM + small, larger.decode().encode("latin-1")


def _truncate(draw, content: bytes) -> bytes:
    return content[: draw(st.integers(0, len(content)))]


def _flip_bytes(draw, content: bytes) -> bytes:
    data = bytearray(content)
    for _ in range(draw(st.integers(1, 8)) if data else 0):
        data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


def _drop_column(draw, content: bytes) -> bytes:
    lines = content.splitlines(keepends=True)
    column = draw(st.integers(0, len(RAW_COLUMNS) - 1))
    where = draw(st.sampled_from(["header", "rows", "both"]))
    chosen = {"header": range(0, 1), "rows": range(1, len(lines)), "both": range(len(lines))}[where]

    def drop(line: bytes) -> bytes:
        body = line.rstrip(b"\r\n")
        fields = body.split(b",")
        return b",".join(fields[:column] + fields[column + 1 :]) + line[len(body) :]

    return b"".join(drop(line) if number in chosen else line for number, line in enumerate(lines))


def _shuffle_lines(draw, content: bytes) -> bytes:
    return b"".join(draw(st.permutations(content.splitlines(keepends=True))))


def _duplicate_lines(draw, content: bytes) -> bytes:
    lines = content.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3)) if lines else 0):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(lines)))
    return b"".join(lines)


def _insert_bytes(draw, content: bytes) -> bytes:
    at = draw(st.integers(0, len(content)))
    return content[:at] + draw(st.binary(min_size=1, max_size=16)) + content[at:]


MUTATIONS = (_truncate, _flip_bytes, _drop_column, _shuffle_lines, _duplicate_lines, _insert_bytes)


@st.composite
def mutated_files(draw, below_header: bool = False) -> bytes:
    """A valid landing file damaged by one to three random mutations, optionally only below its header."""
    content = draw(st.sampled_from(_valid_files()))
    header, body = (content[: content.index(b"\n") + 1], content[content.index(b"\n") + 1 :])
    if not below_header:
        header, body = b"", content
    for mutate in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        body = mutate(draw, body)
    return header + body


@settings(max_examples=300, deadline=None)
@given(content=mutated_files())
def test_damaged_file_parses_to_text_rows_or_raises_payload_error(content):
    try:
        parsed = parse_csv(ReceivedPayload(ORIGIN, content))
    except PayloadError as error:
        assert str(error).startswith(f"{ORIGIN}: ")
        return
    assert list(parsed.frame.columns) == [SOURCE_LINE, *RAW_COLUMNS]
    assert all(isinstance(value, str) for column in RAW_COLUMNS for value in parsed.frame[column])


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=mutated_files(below_header=True))  # an intact header lets more files reach validation
def test_damaged_file_through_dagster_never_corrupts_the_warehouse(content, tmp_path, instance):
    # One warehouse for all examples: each run starts from whatever the previous ones left.
    landing, url = tmp_path / "landing", f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    landing.mkdir(exist_ok=True)
    (landing / landing_file_name(DAY)).write_bytes(content)
    before = snapshot(url)

    result = materialize(make_resources(landing, url, tmp_path), PARTITION_KEY, instance)

    after = snapshot(url)
    raw_failure = result.failure_data_for_node("raw_freight") if not result.success else None
    if raw_failure is not None:  # structural fault: a clean Failure naming the file, nothing written
        assert f"cannot be read: {landing / landing_file_name(DAY)}: " in raw_failure.error.message
        assert after == before
        return
    audit = rows(url, "SELECT * FROM load_audit ORDER BY id DESC")[0]
    if audit["status"] == "blocked":  # over 30% rejected: previous facts kept, rejects stored
        assert after["warehouse_facts"] == before.get("warehouse_facts", [])
        return
    assert result.success and audit["status"] == "loaded"
    quarantined = scalar(
        url, "SELECT count(*) FROM freight_rejects WHERE validation_run_id = :v", v=audit["validation_run_id"]
    )
    assert audit["rows_received"] == len(after["warehouse_facts"]) + quarantined


# --- the C parser reads exactly what the csv module reads ------------------------------------------------

_ODD_PIECES = (",", '"', '""', "\r", "\n", "\r\n", " ", "\ufeff", "shipment_id", "\x85", "\t", "a", "é")
_PLAIN = (
    "",
    "SHP-1",
    "12.5",
    " Edéa ",
    "NA",
    "2026-11-20T08:00:00+01:00",
    "Bois de l'Est SA",
    'Bois "Est", SA',
    "12,5 t",
)


@st.composite
def csv_like_files(draw) -> bytes:
    """A header, then rows (well quoted or raw) of values made of commas, quotes, line breaks, BOMs, accents.

    Half the files hold only one-line values, quoted where needed, so that they reach the C parser.
    """
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    header = list(RAW_COLUMNS) + draw(st.lists(st.sampled_from(["remarks", "wagon type"]), max_size=1))
    if draw(st.booleans()):
        header = draw(st.permutations(header))
    clean = draw(st.booleans())
    odd = st.lists(st.sampled_from(_ODD_PIECES), max_size=4).map("".join)
    value = st.sampled_from(_PLAIN) if clean else st.one_of(st.sampled_from(_PLAIN), odd)
    lines = [",".join(f'"{name}"' if draw(st.booleans()) else name for name in header)]
    for _ in range(draw(st.integers(1, 8))):
        fields = draw(st.lists(value, min_size=len(header), max_size=len(header)))
        if not clean:
            fields = fields[: len(header) - draw(st.integers(0, 1))] + draw(st.sampled_from([[], ["extra"]]))
        if clean or draw(st.booleans()):  # as an exporter writes it: quoted where needed
            out = io.StringIO(newline="")
            csv.writer(out, lineterminator=newline).writerow(fields)
            lines.append(out.getvalue().removesuffix(newline))
        else:
            lines.append(",".join(fields))
        lines.extend([""] * draw(st.integers(0, 1)))
    text = newline.join(lines) + (newline if clean else draw(st.sampled_from([newline, "", "\r"])))
    encoding = draw(st.sampled_from(["utf-8", "latin-1"]))
    prefix = draw(st.sampled_from([b"", BOM])) if encoding == "utf-8" else b""
    return prefix + text.encode(encoding, errors="replace")


def _read_both_ways(content: bytes) -> list[ParsedPayload | str]:
    payload = ReceivedPayload(ORIGIN, content)
    outcomes: list[ParsedPayload | str] = []
    for parse in (parse_csv, lambda received: _parse_with_csv_module(received.origin, *csv_text(received))):
        try:
            outcomes.append(parse(payload))
        except PayloadError as error:
            outcomes.append(str(error))
    return outcomes


def _assert_same(fast: ParsedPayload | str, slow: ParsedPayload | str) -> None:
    if isinstance(slow, str) or isinstance(fast, str):
        assert fast == slow
        return
    pd.testing.assert_frame_equal(fast.frame, slow.frame, check_exact=True)
    assert fast.frame.columns.dtype == slow.frame.columns.dtype
    assert [type(value) for value in fast.frame.to_numpy().ravel()] == [
        type(value) for value in slow.frame.to_numpy().ravel()
    ]
    assert (fast.encoding, fast.extra_columns) == (slow.encoding, slow.extra_columns)


@settings(max_examples=400, deadline=None)
@given(content=st.one_of(csv_like_files(), mutated_files()))
@example(content=",".join(RAW_COLUMNS).encode() + b"\r\n" + BOM + b"," * 11 + b"\r\n")  # Arrow drops that mark
def test_parse_gives_the_csv_modules_rows_or_its_exact_fault(content):
    fast, slow = _read_both_ways(content)

    _assert_same(fast, slow)


def test_a_generated_day_with_quoted_values_is_read_by_the_c_parser(landing_file, generated_day):
    records = [dict(record) for record in generated_day.records]
    records[4]["customer"], records[9]["net_tonnage"] = 'Bois "Est", SA', "12,5 t"
    content = _csv(list(RAW_COLUMNS), _rows(records))
    text, encoding = csv_text(ReceivedPayload(ORIGIN, content))

    fast = _parse_plain_lines(ORIGIN, content, encoding)

    assert fast is not None  # not the csv module's way
    _assert_same(fast, _parse_with_csv_module(ORIGIN, text, encoding))


def test_a_payload_is_scanned_in_pieces_and_finds_every_byte_across_their_edges(monkeypatch):
    """Line breaks and quotes are found a few MiB at a time; a piece's edge loses or doubles none."""
    data = np.frombuffer(b'a,"b"\n' * 7 + b"\n\n", dtype=np.uint8)
    monkeypatch.setattr(payload_module, "_SCAN_BYTES", 4)
    for byte in (ord("\n"), ord('"')):
        assert payload_module._positions(data, byte).tolist() == np.flatnonzero(data == byte).tolist()


def test_the_decoded_text_is_not_held_while_the_frame_is_built(monkeypatch):
    """The text decoded from the payload (a byte a character) goes before the frame is built: at
    1,000,000 rows it was 150 MiB more at the parse's peak, the peak of the whole load."""
    day = generate_day(date(2026, 3, 2), rows=50_000, seed=1)
    content = _csv(list(RAW_COLUMNS), _rows([dict(record) for record in day.records]))
    read_arrow, held = payload_module._read_arrow, []

    def read_watching_callers(body, names):
        # Arrow's memory is not Python's (tracemalloc does not see it): ask each caller what it holds.
        caller = sys._getframe(1)
        while caller is not None:
            held.extend(name for name, value in caller.f_locals.items() if isinstance(value, str) and len(value) > 1000)
            caller = caller.f_back
        return read_arrow(body, names)

    monkeypatch.setattr(payload_module, "_read_arrow", read_watching_callers)
    parsed = parse_csv(ReceivedPayload(ORIGIN, content))

    assert len(parsed.frame) == len(day.records)
    assert held == []  # no caller keeps the decoded text (or a copy) while Arrow reads the records
