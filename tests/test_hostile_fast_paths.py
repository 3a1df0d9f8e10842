"""The fast ingest paths give the hostile corpus exactly what the general paths give.

Ingest has fast paths (``_io._read_text_fast``: files of ``_io._FAST_MIN_BYTES`` or more read
by pyarrow straight from disk; ``_parse``: common ISO timestamps and plain decimals read from
their bytes, columns of few distinct values parsed once per value; ``validate``: from
``_PARALLEL_MIN_ROWS`` rows the column parses run in worker threads). Every case of the hostile
corpus (tests/data/hostile, EXPECTED.toml) is read

- at its natural size with every fast path forced on (the size threshold lowered to 0, the
  distinct-value path taken for any column with a repeated value) and with every fast path
  off: the same tables, report, notes and errors;
- padded above the real threshold with blank lines after its last record (which add no
  rows): the same outcome as at its natural size;
- with its body repeated past the real threshold: the same table (rows, row numbers,
  malformed rows, notes) through the fast reader as through the general one.

The hostile values themselves (decimal commas, currency marks, US times, far-future,
epoch and Excel-serial timestamps, ...) go through each fast parser and the general one.
Generated files (every dialect of test_properties_ingest, and files made of the bytes that
decide between the readers) read the same through both readers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _corpus import CASES, HOSTILE, kwargs, source
from hypothesis import given
from hypothesis import strategies as st
from test_properties_ingest import dialects, exports, write_export

import funnelstats as fs
from funnelstats import FunnelDataError
from funnelstats.ingest import _io, _parse, validate

NEVER = 1 << 62

# Files the fast reader takes when the size threshold is lowered to 0. The others go to the
# general path: compressed, XLSX, not UTF-8, or with what sends the general path to its exact
# reader (a blank line, also inside a quoted cell; a quote never closed; a ragged row).
FAST_READER_TAKES = {
    "amounts.csv",
    "ambiguous_dates.csv",
    "dst_local_times.csv",
    "duplicate_headers.csv",
    "duplicate_rows.csv",
    "epoch_mixed_with_iso.csv",
    "epoch_ms.csv",
    "excel_serial.csv",
    "excel_sep_line.csv",
    "far_future.csv",
    "formula_cells.csv",
    "html_names.csv",
    "huge_cell.csv",
    "invisible_characters.csv",
    "leading_zeros.csv",
    "missing_values.csv",
    "mixed_offsets.csv",
    "nul_bytes.csv",
    "one_deal_50000_events.csv",
    "pre_1990.csv",
    "salesforce_history.csv",
    "same_timestamp.csv",
    "semicolon_decimal_comma.csv",
    "slash_dates_day_first.csv",
    "stage_case_spaces.csv",
    "tab_delimited.tsv",
    "unicode_stages.csv",
    "us_dates_am_pm.csv",
    "utf8_bom.csv",
    "won_open_lost.csv",
}


@contextlib.contextmanager
def fast_paths(on: bool, *, threshold: int | None = None) -> Iterator[None]:
    """Every fast path forced on (``on``) or off; ``threshold`` sets the reader's size limit."""
    saved = (_io._FAST_MIN_BYTES, _parse.FAST_PATH, _parse._SAMPLE_ROWS, _parse._FEW)
    saved_rows = validate._PARALLEL_MIN_ROWS
    _io._FAST_MIN_BYTES = threshold if threshold is not None else (0 if on else NEVER)
    _parse.FAST_PATH = on
    # the column parses in worker threads (on) or one after the other (off)
    validate._PARALLEL_MIN_ROWS = 0 if on else NEVER
    if on:  # any column with a repeated value is parsed once per distinct value
        _parse._SAMPLE_ROWS, _parse._FEW = 0, 1 - 1e-9
    try:
        yield
    finally:
        _io._FAST_MIN_BYTES, _parse.FAST_PATH, _parse._SAMPLE_ROWS, _parse._FEW = saved
        validate._PARALLEL_MIN_ROWS = saved_rows


def outcome(path: Path, kw: dict) -> dict:
    """Everything fs.read gives (or the error it raises), with the file's path taken out."""
    name = str(path)
    try:
        d = fs.read(path, **kw)
    except FunnelDataError as exc:
        return {
            "error": (exc.rule, str(exc).replace(name, "<file>"), exc.row, exc.column),
        }
    r = d.report
    return {
        "history": d.history,
        "events": d.events,
        "deals": d.deals,
        "pipeline": (d.pipeline.order, d.pipeline.won, d.pipeline.lost),
        "exported_at": d.exported_at,
        "rows": (r.rows_read, r.rows_kept, r.rows_repaired, r.rows_quarantined),
        "counts": r.counts,
        "layout": r.layout,
        "findings": r.findings,
        "quarantined": r.quarantined,
        "repairs": r.repairs,
        "notes": tuple(n.replace(name, "<file>") for n in r.notes),
    }


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys(), (a.get("error"), b.get("error"))
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, pd.DataFrame):
            pd.testing.assert_frame_equal(va, vb, obj=key)
        else:
            assert va == vb, key


def _text_cases() -> list[dict]:
    """Cases whose file is uncompressed text: the ones a fast reader could be given."""
    out = []
    for c in CASES:
        name = c.get("file", c.get("generate", ""))
        if Path(name).suffix in _io._TEXT_SUFFIXES | {".txt"} and not name.endswith(".gz"):
            out.append(c)
    return out


TEXT_CASES = _text_cases()


def _line_end(raw: bytes) -> bytes:
    """A line feed in the file's encoding."""
    if raw.startswith(b"\xff\xfe"):
        return "\n".encode("utf-16-le")
    if raw.startswith(b"\xfe\xff"):
        return "\n".encode("utf-16-be")
    utf16 = _io._utf16_without_bom(raw)
    return "\n".encode(utf16) if utf16 else b"\n"


# ------------------------------------------------------------------- natural size


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_corpus_case_same_with_and_without_fast_paths(case, tmp_path):
    path = source(case, tmp_path)
    kw = kwargs(case)
    with fast_paths(True):
        took = _io._read_text_fast(path, str(path), encoding=None, delimiter=None) is not None
        fast = outcome(path, kw)
    with fast_paths(False):
        general = outcome(path, kw)
    assert_same(fast, general)
    assert took == (path.name in FAST_READER_TAKES)


# ------------------------------------------------------- padded above the threshold


def test_padding_goes_past_the_threshold():
    assert _io._FAST_MIN_BYTES == 1 << 20


@pytest.mark.parametrize("case", TEXT_CASES, ids=[c["id"] for c in TEXT_CASES])
def test_corpus_case_padded_with_blank_lines_reads_as_at_natural_size(case, tmp_path):
    """Blank lines after the last record add no rows: the outcome of the natural file.

    At the real threshold: the large file takes the fast reader when the small one does
    (with the threshold lowered), so the hostile rows before the padding go through it.
    """
    natural = source(case, tmp_path)
    raw = natural.read_bytes()
    if case["id"] == "truncated_in_quote":
        pytest.skip("the file ends inside a quoted cell: line feeds after it belong to that cell")
    if case["id"] == "not_a_table":
        pytest.skip("binary data is told by its share of control characters, which padding dilutes")
    padded = tmp_path / "padded" / natural.name
    padded.parent.mkdir()
    padded.write_bytes(raw + _line_end(raw) * (_io._FAST_MIN_BYTES // len(_line_end(raw)) + 7))
    assert padded.stat().st_size > _io._FAST_MIN_BYTES
    kw = kwargs(case)
    with fast_paths(False):
        want = outcome(natural, kw)
    took = _io._read_text_fast(padded, str(padded), encoding=None, delimiter=None) is not None
    assert took == (natural.name in FAST_READER_TAKES)
    assert_same(outcome(padded, kw), want)


def _repeat_body(raw: bytes, size: int) -> bytes:
    """The file's data lines written again and again (an odd number of times) past ``size``."""
    end = _line_end(raw)
    lines = raw.split(end)
    head = 2 if lines[0].lstrip(b"\xef\xbb\xbf").startswith(b"sep=") else 1
    top, body = end.join(lines[:head]) + end, end.join(lines[head:])
    if not body.endswith(end):
        body += end
    k = size // max(len(body), 1) + 1
    return top + body * (k + (k + 1) % 2)


TEXT_FILES = sorted({c["file"] for c in TEXT_CASES if "file" in c})


@pytest.mark.parametrize("name", TEXT_FILES)
def test_corpus_file_repeated_past_threshold_same_table(name, tmp_path):
    """The hostile rows many times over, in a file above the threshold: the same table,
    through the fast reader whenever it takes the file at its natural size."""
    raw = (HOSTILE / name).read_bytes()
    if not raw.strip():
        pytest.skip("an empty file has no rows to repeat")
    big = tmp_path / name
    big.write_bytes(_repeat_body(raw, _io._FAST_MIN_BYTES))
    assert big.stat().st_size > _io._FAST_MIN_BYTES
    took = _io._read_text_fast(big, str(big), encoding=None, delimiter=None) is not None
    assert took == (name in FAST_READER_TAKES)

    def read() -> object:
        try:
            t = _io.read_table(big)
        except FunnelDataError as exc:
            return (exc.rule, str(exc))
        return t

    fast = read()
    with fast_paths(False):
        general = read()
    if isinstance(general, tuple):
        assert fast == general
        return
    assert isinstance(fast, _io.Table)
    pd.testing.assert_frame_equal(fast.frame, general.frame)
    np.testing.assert_array_equal(fast.rows, general.rows)
    assert fast.malformed == general.malformed
    assert fast.notes == general.notes


# ------------------------------------------------------------------- the values

HOSTILE_TIMES = [
    # US spreadsheets: 12-hour times
    "3/14/2024 9:05 PM",
    "3/14/2024 9:05 pm",
    "3/14/2024 12:00 AM",
    "12/31/2024 12:59:59 p.m.",
    "3/14/2024 13:05 PM",
    # far future and far past
    "2099-01-01T00:00:00Z",
    "2199-12-31",
    "2200-01-01",
    "2262-04-12T00:00:00Z",
    "9999-12-31 23:59:59",
    "1899-12-30",
    "1969-12-31T23:59:59Z",
    # epoch seconds and milliseconds, Excel serials
    "1704067200",
    "1704067200000",
    "45292",
    "45292.5",
    # offsets, zones, DST
    "2024-03-31T02:30:00",
    "2024-10-27T02:30:00",
    "2024-06-01T10:00:00+02:00",
    "2024-06-01T10:00:00-0930",
    "2024-06-01T10:00:00 +02:00",
    "2024-06-01T10:00:00Z extra",
    # invisible characters and spaces
    "\u200b2024-01-01",
    "2024-01-01\x00",
    "\u00a02024-01-01T10:00:00Z",
    # day-first and garbage
    "14.03.2024",
    "14/03/2024 21:05",
    "2024-02-30T10:00:00Z",
    "n/a",
    "",
]

PLAIN_TIMES = ["2024-01-01T10:00:00Z", "2024-01-02", "2024-01-03 04:05:06"]

HOSTILE_AMOUNTS = [
    # decimal commas (the column's convention), with and without thousands points
    "2.500",
    "99,90",
    "1.234,50",
    "-1.234,5",
    "12.345.678",
    # decimal points with thousands commas (Indian grouping too)
    "1,234.50",
    "12,34,567.50",
    # currency marks
    "€ 1.234,50",
    "US$1,234.50",
    "CHF 99.90",
    "Rs. 1,00,000",
    "1 234 €",
    "(500)",
    "\u22121200",
    # not amounts
    "@SUM(A1)",
    "=1+1",
    "12 days",
    "abc",
    "1e309",
    "-5",
    "NaN",
    "n/a",
    "",
    # plain shapes the fast path reads
    "2500",
    "2500.5",
    "0.25",
    "123456789012345",
    "1234567890123456",
]

PLAIN_AMOUNTS = ["1000", "250.5", "99.9"]


def _times(values: list[str | None], **kw) -> tuple:
    s = pd.Series(values, dtype="string[pyarrow]")
    with fast_paths(True):
        forced = _parse.parse_timestamps(s, **kw)
    default = _parse.parse_timestamps(s, **kw)
    with fast_paths(False):
        general = _parse.parse_timestamps(s, **kw)
    return forced, default, general


def _same_times(a, b) -> None:
    for f in ("ns", "missing", "bad", "naive", "dst_ambiguous", "dst_nonexistent"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert (a.ambiguous_format, a.ambiguous_example) == (b.ambiguous_format, b.ambiguous_example)
    assert sorted(set(a.notes)) == sorted(set(b.notes))


def _amounts(values: list[str | None]) -> tuple:
    s = pd.Series(values, dtype="string[pyarrow]")
    with fast_paths(True):
        fast = _parse.parse_amounts(s)
    with fast_paths(False):
        general = _parse.parse_amounts(s)
    return fast, general


def _same_amounts(a, b) -> None:
    np.testing.assert_array_equal(a.values, b.values)
    for f in ("missing", "text", "not_numeric", "negative", "not_finite"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert a.notes == b.notes


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("dayfirst", [None, False, True])
def test_hostile_timestamps_alone_and_among_plain_ones(tz, dayfirst):
    for v in HOSTILE_TIMES:
        for values in ([v, *PLAIN_TIMES], [*PLAIN_TIMES, v, v]):
            forced, default, general = _times(values, tz=tz, dayfirst=dayfirst)
            _same_times(forced, general)
            _same_times(default, general)
    forced, default, general = _times(HOSTILE_TIMES + PLAIN_TIMES, tz=tz, dayfirst=dayfirst)
    _same_times(forced, general)
    _same_times(default, general)


def test_hostile_timestamps_in_a_long_column_of_few_values():
    """40,000 rows or more with few distinct values: the default distinct-value path."""
    values = (HOSTILE_TIMES + PLAIN_TIMES * 20) * 700
    assert len(values) >= 2 * _parse._SAMPLE_ROWS
    s = pd.Series(values, dtype="string[pyarrow]")
    assert _parse._parse_distinct(s, "Europe/Berlin", True) is not None
    _, default, general = _times(values, tz="Europe/Berlin", dayfirst=True)
    _same_times(default, general)


def test_us_times_read_the_same_and_right():
    forced, _, general = _times(["3/14/2024 9:05 PM", "2024-03-15T10:00:00Z"], tz="UTC")
    _same_times(forced, general)
    want = pd.Timestamp("2024-03-14 21:05", tz="UTC").value
    assert forced.ns[0] == want


def test_hostile_amounts_alone_and_among_plain_ones():
    for v in HOSTILE_AMOUNTS:
        for values in ([v, *PLAIN_AMOUNTS], [*PLAIN_AMOUNTS, v, v], [v]):
            _same_amounts(*_amounts(values))
    _same_amounts(*_amounts(HOSTILE_AMOUNTS))


def test_decimal_comma_column_read_as_one_convention_by_the_fast_path():
    """2.500 has the plain shape the fast path reads (as 2.5): in a column of decimal commas
    it is 2500, however it was first read."""
    fast, general = _amounts(["2.500", "99,90", "1.234,50", "10"])
    _same_amounts(fast, general)
    np.testing.assert_array_equal(fast.values, [2500.0, 99.9, 1234.5, 10.0])
    assert fast.text[:3].all() and not fast.text[3]
    assert any("decimal commas" in n for n in fast.notes)


def test_random_mixtures_of_hostile_amounts():
    rng = np.random.default_rng(17)
    pool = HOSTILE_AMOUNTS + PLAIN_AMOUNTS * 5
    for _ in range(80):
        pick = rng.choice(len(pool), size=int(rng.integers(1, 25)))
        values = [pool[i] for i in pick]
        try:
            _same_amounts(*_amounts(values))
        except AssertionError as exc:  # pragma: no cover - shows the input on failure
            raise AssertionError(values) from exc


def _corpus_columns() -> list[tuple[str, str, pd.Series]]:
    """Every column of every text file of the corpus, as the reader gives it."""
    out = []
    for path in sorted(HOSTILE.iterdir()):
        if path.suffix not in (".csv", ".tsv", ".txt") or path.name == "huge_cell.csv":
            continue
        try:
            table = _io.read_table(path)
        except FunnelDataError:
            continue
        for c in table.frame.columns:
            out.append((path.name, c, table.frame[c]))
    return out


CORPUS_COLUMNS = _corpus_columns()


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_every_corpus_column_parses_the_same(tz):
    assert len(CORPUS_COLUMNS) > 100
    for name, column, values in CORPUS_COLUMNS:
        try:
            for dayfirst in (None, True):
                forced, default, general = _times(list(values), tz=tz, dayfirst=dayfirst)
                _same_times(forced, general)
                _same_times(default, general)
            _same_amounts(*_amounts(list(values)))
        except AssertionError as exc:  # pragma: no cover - names the column on failure
            raise AssertionError(f"{name}: {column}") from exc


# ------------------------------------------------------------- generated dialects


@given(exports(), dialects())
def test_a_file_in_any_dialect_reads_the_same_through_the_fast_paths(tmp_path_factory, ex, dialect):
    """Exports written as a spreadsheet or a CRM might (delimiters, CRLF, quotes around
    every cell, UTF-8 with a BOM, UTF-16, Windows-1252, blank lines, gzip, line breaks in
    cells) read the same with every fast path forced on as with every fast path off."""
    frame, _, pipe = ex
    frame = frame.assign(
        note=[f"line {i}\nsecond, line" if i % 3 == 0 else "" for i in range(len(frame))]
    )
    path = tmp_path_factory.mktemp("dialect") / (
        "export.csv.gz" if dialect["compress"] else "export.csv"
    )
    write_export(frame, path, dialect)
    with fast_paths(True):
        fast = outcome(path, {"pipeline": pipe})
    with fast_paths(False):
        general = outcome(path, {"pipeline": pipe})
    assert_same(fast, general)


CELLS = [b"a", b"b1", b"12.5", b"", b" x ", b'"q, 1"', b'"x\ny"', b'"\r\n\r\n"', b'a""b']
CELLS += [b'"', b"\x00", "é".encode(), "\u200b".encode(), b"\xff", b"sep=;", b"\t"]
LINE_ENDS = [b"\n", b"\n", b"\r\n", b"\r\n", b"\r", b"\n\n", b"\r\n\r\n", b"\n\r"]


@st.composite
def raw_files(draw) -> bytes:
    """Mostly well-formed rows with, here and there, the bytes that decide between the
    readers: quotes (closed, doubled, never closed), CR and LF in every combination and
    blank lines, cells holding line breaks, a delimiter too many or too few, a BOM, a sep=
    line, NUL, invisible characters, invalid UTF-8."""
    prefix = draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"sep=;\n", b"\xef\xbb\xbfsep=;\r\n"]))
    delim = b";" if b"sep=" in prefix else draw(st.sampled_from([b",", b";", b"\t"]))
    width = draw(st.integers(1, 4))
    header = delim.join([b"id", b"stage", b"at", b"x"][:width])
    lines = [prefix + header]
    ends = []
    for _ in range(draw(st.integers(0, 12))):
        n = width + draw(st.sampled_from([0, 0, 0, 0, 0, 1, -1]))
        cells = draw(st.lists(st.sampled_from(CELLS[:5] * 6 + CELLS[5:]), min_size=n, max_size=n))
        lines.append(delim.join(cells))
        ends.append(draw(st.sampled_from(LINE_ENDS[:4] * 4 + LINE_ENDS)))
    tail = draw(st.sampled_from([b"", b"\n", b"\r\n", b"\n\n", b"\r\n\r\n\r\n"]))
    out = lines[0] + b"\n"
    for line, end in zip(lines[1:], ends):
        out += line + end
    return out + tail


@given(raw_files(), st.sampled_from([_io._BLOCK_SIZE, 64, 512]))
def test_random_files_read_the_same_by_both_readers(tmp_path_factory, raw, block):
    """The fast reader gives the general reader's table (or declines) on generated files,
    also when pyarrow reads them in blocks of a few rows (cells with line breaks cut)."""
    path = tmp_path_factory.mktemp("bytes") / "export.csv"
    path.write_bytes(raw)
    saved = _io._BLOCK_SIZE
    _io._BLOCK_SIZE = block

    def read() -> object:
        try:
            t = _io.read_table(path)
        except FunnelDataError as exc:
            return (exc.rule, str(exc))
        return (t.frame, t.rows.tolist(), t.malformed, t.notes)

    try:
        with fast_paths(True):
            fast = read()
    finally:
        _io._BLOCK_SIZE = saved
    with fast_paths(False):
        general = read()
    if isinstance(fast[0], pd.DataFrame) and isinstance(general[0], pd.DataFrame):
        pd.testing.assert_frame_equal(fast[0], general[0])
        assert fast[1:] == general[1:]
    else:
        assert fast == general


@given(
    st.lists(st.sampled_from([b"a", b'"', b"\r", b"\n", b","]), max_size=60).map(b"".join),
    st.integers(0, 3),
    st.sampled_from([1, 2, 7, 1 << 24]),
)
def test_byte_scan_answers_as_the_text_checks(raw, start, block):
    """The fast reader's scan (in blocks, any block length) counts the quotes and finds
    the blank lines the general path's checks find on the text."""
    start = min(start, len(raw))
    end = start + len(raw[start:].rstrip(b"\r\n"))
    saved = _io._SCAN_BYTES
    _io._SCAN_BYTES = block
    try:
        quotes, blank = _io._quotes_and_blank(
            np.frombuffer(raw, dtype=np.uint8), start, end, cr=b"\r" in raw[start:end]
        )
    finally:
        _io._SCAN_BYTES = saved
    text = raw[start:].decode()
    assert quotes == text.count('"')
    assert blank == _io._has_blank_line(text)
