"""The fast ingest paths give exactly what the general paths give.

Each fast path (pyarrow reading large files straight from disk, pyarrow
parsing common ISO timestamps and plain amounts) is switched off and on, and
the results are compared on tricky inputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import funnelstats as fs
from funnelstats.ingest import _fastparse, _io, _parse, validate

TRICKY_TIMES = [
    # the forms the fast path takes
    "2024-01-01T03:01:54.000Z",
    "2024-01-01T03:01:54Z",
    "2024-01-01 03:01:54Z",
    "2024-01-01T03:01Z",
    "2024-07-01T03:01:54.123456789Z",
    "2024-07-01T03:01:54.5+05:30",
    "2024-07-01T03:01:54+0530",
    "2024-07-01T03:01:54-08",
    "2024-07-01T03:01:54-08:00",
    "2024-07-01T03:01:54+14:59",
    "2024-07-01T03:01:54.000+0000",
    "2024-01-01 03:01:54",
    "2024-01-01T03:01:54.25",
    "2024-01-01 03:01",
    "2024-01-01",
    "1700-01-01",
    "2199-12-31T23:59:59.999999999Z",
    # DST: ambiguous and non-existent local times in Europe/Berlin and New York
    "2024-10-27 02:30:00",
    "2024-03-31 02:30:00",
    "2024-11-03 01:30:00",
    "2024-03-10 02:30:00",
    # near misses and garbage: the general path decides
    "2024-02-30",
    "2023-02-29T10:00:00Z",
    "2024-02-29T10:00:00Z",
    "2024-04-31 10:00",
    "2024-13-01",
    "2024-01-01T24:00:00",
    "2024-01-01T23:59:60Z",
    "2024-01-01T03:01:54.1234567891Z",
    "2024-01-01T03:01:54,5Z",
    "2024-01-01t03:01:54",
    "2024-01-01T03:01:54z",
    "2024-01-01T03:01:54 Z",
    "2024-01-01T03:01:54+25:00",
    "2024-01-01T03",
    " 2024-01-01 ",
    "2024-01-01\t",
    "2024-1-1",
    "20240101",
    "1600-01-01",
    "2300-01-01",
    "0001-01-01T00:00:00Z",
    "03/04/2024",
    "13/04/2024 10:00",
    "1704067200000",
    "45000",
    "yesterday",
    "2024-01-01T03:01:54+05:30 extra",
    "",
    None,
]


def _both(values: pd.Series, **kwargs):
    fast = _parse.parse_timestamps(values, **kwargs)
    _parse.FAST_PATH = False
    try:
        slow = _parse.parse_timestamps(values, **kwargs)
    finally:
        _parse.FAST_PATH = True
    return fast, slow


def _same(fast, slow):
    for f in ("ns", "missing", "bad", "naive", "dst_ambiguous", "dst_nonexistent"):
        np.testing.assert_array_equal(getattr(fast, f), getattr(slow, f), err_msg=f)
    assert fast.ambiguous_format == slow.ambiguous_format
    assert fast.ambiguous_example == slow.ambiguous_example
    assert sorted(set(fast.notes)) == sorted(set(slow.notes))


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York"])
def test_every_tricky_timestamp_alone_and_together(tz):
    for v in TRICKY_TIMES:
        values = pd.Series([v, "2024-05-05T10:00:00Z"], dtype="string[pyarrow]")
        fast, slow = _both(values, tz=tz, dayfirst=True)
        _same(fast, slow)
    values = pd.Series(TRICKY_TIMES, dtype="string[pyarrow]")
    _same(*_both(values, tz=tz, dayfirst=True))


def test_random_mixtures_of_tricky_timestamps():
    rng = np.random.default_rng(3)
    for _ in range(60):
        k = int(rng.integers(1, 40))
        pick = rng.choice(len(TRICKY_TIMES), size=k)
        values = pd.Series([TRICKY_TIMES[i] for i in pick], dtype="string[pyarrow]")
        for tz in ("UTC", "Europe/Berlin"):
            for dayfirst in (None, True):
                try:
                    _same(*_both(values, tz=tz, dayfirst=dayfirst))
                except AssertionError as exc:  # pragma: no cover - shows the input on failure
                    raise AssertionError(f"{list(values)} tz={tz} dayfirst={dayfirst}") from exc


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_columns_with_few_distinct_values_parsed_once_per_value(tz):
    rng = np.random.default_rng(5)
    pick = rng.choice(len(TRICKY_TIMES), size=50_000)
    values = pd.Series([TRICKY_TIMES[i] for i in pick], dtype="string[pyarrow]")
    assert _parse._parse_distinct(values, tz, None) is not None
    for dayfirst in (None, True):
        _same(*_both(values, tz=tz, dayfirst=dayfirst))
    # numbers: their unit is decided on every row, so the column takes the general path
    digits = pd.Series(rng.choice(["1704067200000", "1704153600000"], size=50_000))
    assert _parse._parse_distinct(digits.astype("string[pyarrow]"), tz, None) is None
    # ambiguous slashes: the example row is the first one in the column
    slashes = pd.Series(["2024-01-01"] * 45_000 + ["03/04/2024"] * 5_000, dtype="string[pyarrow]")
    fast, slow = _both(slashes, tz=tz)
    _same(fast, slow)
    assert fast.ambiguous_example == 45_000


def test_fast_path_is_taken_for_common_forms():
    values = pd.Series(
        ["2024-01-01T03:01:54.000Z", "2024-01-01", "2024-01-01 10:00:00", "2024-02-30"],
        dtype="string[pyarrow]",
    )
    assert _parse._parse_fast(values, "UTC", None) is not None
    got = _parse.parse_timestamps(values)
    assert got.ns[0] == pd.Timestamp("2024-01-01T03:01:54Z").value
    assert got.naive.tolist() == [False, True, True, False]
    assert got.bad.tolist() == [False, False, False, True]


def test_a_bad_value_among_many_leaves_the_rest_on_the_fast_path():
    good = pd.date_range("2024-01-01", periods=200_000, freq="min", tz="UTC")
    text = pd.Series(good.strftime("%Y-%m-%dT%H:%M:%S.000Z"), dtype="string[pyarrow]")
    text.iloc[123_456] = "2024-02-30T10:00:00.000Z"
    fast, slow = _both(text)
    _same(fast, slow)
    assert fast.bad.sum() == 1 and fast.bad[123_456]


def test_text_after_a_zone_does_not_shift_the_naive_values_after_it():
    # pandas' ISO parser carries the offset of a failed value over to the next naive one
    values = pd.Series(
        ["2024-01-01T03:01:54+05:30 extra", "2024-11-03 01:30:00"], dtype="string[pyarrow]"
    )
    for fast in (True, False):
        _parse.FAST_PATH = fast
        try:
            got = _parse.parse_timestamps(values)
        finally:
            _parse.FAST_PATH = True
        assert got.bad.tolist() == [True, False]
        assert got.ns[1] == pd.Timestamp("2024-11-03 01:30:00", tz="UTC").value
        assert got.naive.tolist() == [False, True]


def test_object_and_python_strings_use_the_general_path():
    values = pd.Series(["2024-01-01T03:01:54Z", None], dtype=object)
    assert _parse._parse_fast(values, "UTC", None) is None
    _same(*_both(values))


# --------------------------------------------------------------------------- amounts

TRICKY_AMOUNTS = [
    "23000.0",
    "11240.55",
    "0.1",
    "0.3",
    "007.50",
    "0",
    "0.0",
    "999999999999999",
    "99999999999999.9",
    "9999999999999999",
    "16120999.999999998",
    "123456789012345678901234567890",
    "1.",
    ".5",
    "-5",
    "-0.0",
    "+5",
    "1e5",
    "1E-3",
    "1e309",
    "inf",
    "-inf",
    "nan",
    "NaN",
    "null",
    "N/A",
    "-",
    "$1,234.50",
    "1.234,50 €",
    "(500)",
    "USD 1 234",
    " 12.5",
    "12.5 ",
    "1..2",
    "1.2.3",
    "١٢٣",
    "abc",
    "",
    None,
]


def _amounts_both(values: pd.Series):
    fast = _parse.parse_amounts(values)
    _parse.FAST_PATH = False
    try:
        slow = _parse.parse_amounts(values)
    finally:
        _parse.FAST_PATH = True
    for f in ("values", "missing", "text", "not_numeric", "negative", "not_finite"):
        a, b = getattr(fast, f), getattr(slow, f)
        np.testing.assert_array_equal(a, b, err_msg=f)
        if f == "values":  # the same bits, signed zeros included
            np.testing.assert_array_equal(np.signbit(a), np.signbit(b))


def test_tricky_amounts_alone_and_together():
    for v in TRICKY_AMOUNTS:
        _amounts_both(pd.Series([v, "100.25"], dtype="string[pyarrow]"))
    _amounts_both(pd.Series(TRICKY_AMOUNTS, dtype="string[pyarrow]"))


def test_random_decimals_round_as_pandas_reads_them():
    rng = np.random.default_rng(8)
    n = 200_000
    n_digits = rng.integers(1, 16, size=n)
    mant = [str(int(rng.integers(0, 10 ** int(k)))).zfill(int(k)) for k in n_digits]
    point = [int(rng.integers(0, len(m))) for m in mant]
    text = [m if p == 0 else m[:p] + "." + m[p:] for m, p in zip(mant, point)]
    values = pd.Series(text, dtype="string[pyarrow]")
    done, _ = _fastparse.decimal_amounts(values.array._pa_array)
    assert done.all()
    _amounts_both(values)


# --------------------------------------------------------------------------- files


def _rows(n: int, *, extra: str = "") -> str:
    rows = [
        f"D{i // 3:06d},{['Lead', 'Demo', 'Won'][i % 3]},2024-01-{1 + i % 28:02d}T10:00:00Z,"
        f"{i}.5{extra}"
        for i in range(n)
    ]
    return "deal_id,stage,timestamp,amount\n" + "\n".join(rows) + "\n"


def _read_both(path, **kwargs):
    """(fast, general) results; fast is None when the fast path declined."""
    old = _io._FAST_MIN_BYTES
    _io._FAST_MIN_BYTES = 0
    try:
        took = _io._read_text_fast(path, str(path), encoding=kwargs.get("encoding"), delimiter=None)
        fast = _io.read_table(path, **kwargs)
    finally:
        _io._FAST_MIN_BYTES = old
    _io._FAST_MIN_BYTES = 1 << 62
    try:
        slow = _io.read_table(path, **kwargs)
    finally:
        _io._FAST_MIN_BYTES = old
    return fast, slow, took is not None


def _same_table(a, b):
    pd.testing.assert_frame_equal(a.frame, b.frame)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert a.malformed == b.malformed
    assert a.notes == b.notes
    assert a.name == b.name


# name -> (file bytes, whether the fast path takes it)
CASES = {
    "plain": (_rows(30).encode(), True),
    "crlf": (_rows(30).replace("\n", "\r\n").encode(), True),
    "no final newline": (_rows(30).rstrip("\n").encode(), True),
    "semicolons": (_rows(30).replace(",", ";").encode(), True),
    "tabs": (_rows(30).replace(",", "\t").encode(), True),
    "duplicate header": (_rows(30).replace("amount", "stage", 1).encode(), True),
    "utf-8 names": (_rows(30).replace("Lead", "Léad 🚀").encode(), True),
    "quoted cells": (_rows(30).replace("Demo", '"Demo, call"').encode(), True),
    # blank lines inside the file: rows are numbered as a spreadsheet shows them (exact path)
    "blank lines": (_rows(30).replace("\n", "\n\n", 3).encode(), False),
    "blank crlf lines": (
        _rows(30).replace("\n", "\r\n").replace("\r\n", "\r\n\r\n", 5).encode(),
        False,
    ),
    "blank lines at the end": ((_rows(30) + "\n\r\n\n").encode(), True),
    "blank line ended by a lone cr": (_rows(30).replace("\n", "\n\r", 2).encode(), False),
    "row of empty cells": (_rows(30).replace("\n", "\n,,,\n", 2).encode(), False),
    "spaces in header": (_rows(30).replace("deal_id,stage", " deal_id , stage").encode(), True),
    "empty cells": (_rows(30).replace(".5\n", "\n").encode(), True),
    "bom": (b"\xef\xbb\xbf" + _rows(30).encode(), True),
    "bom and sep line": (b"\xef\xbb\xbfsep=;\r\n" + _rows(30).replace(",", ";").encode(), True),
    "sep line": (b"sep=;\n" + _rows(30).replace(",", ";").encode(), True),
    "sep line naming another delimiter": (b"sep=|\n" + _rows(30).encode(), True),
    "utf-16 bom": (_rows(30).encode("utf-16"), False),
    "utf-16 without bom": (_rows(30).encode("utf-16-le"), False),
    "nul bytes in cells": (_rows(30).replace("D000001", "D00\x000001").encode(), True),
    "unclosed quote": (_rows(30).replace("Demo", '"Demo', 1).encode(), False),
    "unclosed quote in last row": (
        _rows(30).rstrip("\n").replace(",Won,", ',"Won,', 1).encode() + b"\n",
        False,
    ),
    "windows-1252": (_rows(30).replace("Lead", "Léad").encode("cp1252"), False),
    "bad utf-8 late": (_rows(30).encode() + b"Z,Lead,2024-01-01,\xff\n", False),
    "quoted newline": (_rows(30).replace("Demo", '"De\nmo"').encode(), True),
    "quoted header": (
        b'"deal_id","stage","timestamp","amount"\n' + _rows(30).encode().split(b"\n", 1)[1],
        False,
    ),
    "ragged row": ((_rows(30) + "X,Lead\n").encode(), False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_file_fast_path_matches_general_path(tmp_path, case):
    raw, expected = CASES[case]
    p = tmp_path / "export.csv"
    p.write_bytes(raw)
    fast, slow, took = _read_both(p)
    _same_table(fast, slow)
    assert took is expected


def test_file_fast_path_with_encoding_given(tmp_path):
    p = tmp_path / "export.csv"
    p.write_bytes(CASES["plain"][0])
    fast, slow, took = _read_both(p, encoding="utf-8")
    _same_table(fast, slow)
    assert took
    p.write_bytes(CASES["windows-1252"][0])
    fast, slow, took = _read_both(p, encoding="cp1252")
    _same_table(fast, slow)
    assert not took


def test_blank_line_ended_by_a_lone_cr_keeps_row_numbers(tmp_path):
    p = tmp_path / "export.csv"
    p.write_bytes(b"deal_id,stage\nA,Lead\n\rB,Won\n")
    t = _io.read_table(p)
    assert t.rows.tolist() == [2, 4]
    assert any("1 blank line(s) skipped (row 3)" in n for n in t.notes)


def test_large_file_with_line_breaks_in_quoted_cells(tmp_path, monkeypatch):
    """Cells holding line breaks in a file of many pyarrow blocks: read by the fast path
    (pyarrow told that cells may hold line breaks), the same as the general path."""
    rows = [f'D{i:06d},Lead,"first line\nsecond, line {i}",{i}' for i in range(20_000)]
    p = tmp_path / "notes.csv"
    p.write_text("deal_id,stage,notes,amount\n" + "\n".join(rows) + "\n")
    monkeypatch.setattr(_io, "_BLOCK_SIZE", 1 << 16)
    assert p.stat().st_size > 10 * _io._BLOCK_SIZE
    fast, slow, took = _read_both(p)
    assert took
    _same_table(fast, slow)
    assert fast.frame["notes"].iloc[-1] == "first line\nsecond, line 19999"


def test_file_fast_path_declines_binary_data(tmp_path):
    p = tmp_path / "export.csv"
    p.write_bytes(b"id,a\n" + b"\x00\x01\x02\x03\x04\x05\x06\x07\x08,a\n" * 40)
    old = _io._FAST_MIN_BYTES
    _io._FAST_MIN_BYTES = 0
    try:
        assert _io._read_text_fast(p, str(p), encoding=None, delimiter=None) is None
        with pytest.raises(fs.FunnelDataError, match="binary data"):
            _io.read_table(p)
    finally:
        _io._FAST_MIN_BYTES = old


def test_file_fast_path_header_only_and_empty(tmp_path):
    p = tmp_path / "h.csv"
    p.write_bytes(b"deal_id,stage,timestamp\n")
    old = _io._FAST_MIN_BYTES
    _io._FAST_MIN_BYTES = 0
    try:
        with pytest.raises(fs.FunnelDataError, match="header but no data rows"):
            _io.read_table(p)
        p.write_bytes(b"\n\n  \n")
        with pytest.raises(fs.FunnelDataError, match="empty"):
            _io.read_table(p)
    finally:
        _io._FAST_MIN_BYTES = old


def test_large_file_takes_the_fast_path_and_reads_the_same(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text(_rows(40_000))
    assert p.stat().st_size > _io._FAST_MIN_BYTES
    assert _io._read_text_fast(p, str(p), encoding=None, delimiter=None) is not None
    fast = _io.read_table(p)
    old = _io._FAST_MIN_BYTES
    _io._FAST_MIN_BYTES = 1 << 62
    try:
        slow = _io.read_table(p)
    finally:
        _io._FAST_MIN_BYTES = old
    _same_table(fast, slow)


# --------------------------------------------------------------------------- whole ingest


def test_salesforce_ingest_identical_with_and_without_fast_paths(tmp_path):
    sim = fs.simulate(1500, seed=11, deleted_rows=0.01)
    export = sim.export.astype({"Amount": object})
    # a few rows the fast paths must hand over
    export.loc[3, "CreatedDate"] = "2024-02-30T10:00:00.000Z"
    export.loc[5, "CreatedDate"] = " 2024-01-03 10:00:00 "
    export.loc[7, "Amount"] = "$1,234.50"
    export.loc[9, "CloseDate"] = "garbage"
    export.loc[11, "Amount"] = ""
    p = tmp_path / "OpportunityHistory.csv"
    export.to_csv(p, index=False)
    kwargs = {"pipeline": sim.pipeline(), "exported_at": sim.truth.exported_at}
    old, old_rows = _io._FAST_MIN_BYTES, validate._PARALLEL_MIN_ROWS
    _io._FAST_MIN_BYTES, validate._PARALLEL_MIN_ROWS = 0, 0
    try:
        fast = fs.read_salesforce(p, **kwargs)
    finally:
        _io._FAST_MIN_BYTES, validate._PARALLEL_MIN_ROWS = old, old_rows
    _io._FAST_MIN_BYTES, _parse.FAST_PATH, validate._PARALLEL_MIN_ROWS = 1 << 62, False, 1 << 62
    try:
        slow = fs.read_salesforce(p, **kwargs)
    finally:
        _io._FAST_MIN_BYTES, _parse.FAST_PATH, validate._PARALLEL_MIN_ROWS = old, True, old_rows
    for attr in ("history", "events", "deals"):
        pd.testing.assert_frame_equal(getattr(fast, attr), getattr(slow, attr))
    for attr in ("findings", "quarantined", "repairs"):
        pd.testing.assert_frame_equal(getattr(fast.report, attr), getattr(slow.report, attr))
    assert fast.report.notes == slow.report.notes
    assert (fast.report.rows_read, fast.report.rows_kept, fast.report.rows_repaired) == (
        slow.report.rows_read,
        slow.report.rows_kept,
        slow.report.rows_repaired,
    )
    assert fast.report.rows_quarantined == slow.report.rows_quarantined > 0


def test_select_rows_from_many_chunks_matches_iloc():
    import pyarrow as pa

    chunks = [pa.array([f"v{i}-{j}" for j in range(7)] + [None]) for i in range(5)]
    s = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(chunks)), index=range(100, 140))
    for pos in ([0, 3, 8, 17, 39], [0], [39], list(range(40)), list(range(1, 40)), []):
        got = pd.Series(_fastparse.select_rows(s, np.array(pos, dtype=np.int64)))
        pd.testing.assert_series_equal(got, s.iloc[pos].reset_index(drop=True))
    with pytest.raises(IndexError):
        _fastparse.select_rows(s, np.array([40]))
    with pytest.raises(ValueError):
        _fastparse.select_rows(s, np.array([3, 3]))


def test_take_rows_from_many_chunks_matches_iloc():
    import pyarrow as pa

    chunks = [pa.array([f"v{i}-{j}" for j in range(7)] + [None]) for i in range(5)]
    s = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(chunks)), index=range(100, 140))
    for pos in ([3, 0, 39, 8, 8, 17], [0], list(range(40)), [39, 38, 7, 15]):
        got = _fastparse.take_rows(s, np.array(pos))
        pd.testing.assert_series_equal(got, s.iloc[pos].reset_index(drop=True))
    with pytest.raises(IndexError):
        _fastparse.take_rows(s, np.array([40]))


@pytest.mark.parametrize("threads", [True, False])
def test_column_parses_give_results_and_errors_where_taken(threads, monkeypatch):
    monkeypatch.setattr(validate, "_PARALLEL_MIN_ROWS", 0 if threads else 1 << 62)
    calls = []

    def work(x, *, fail=False):
        calls.append(x)
        if fail:
            raise ValueError(f"bad {x}")
        return x * 2

    with validate._Parses(10) as parses:
        parses.start("a", work, 1)
        parses.start("b", work, 2, here=True)
        parses.start("c", work, 3, fail=True)
        parses.start("d", work, 4, here=True, fail=True)
        if not threads:  # one after the other: nothing runs before its result is asked for
            assert calls == []
        assert parses.result("a") == 2
        assert parses.result("b") == 4
        with pytest.raises(ValueError, match="bad 3"):
            parses.result("c")
        with pytest.raises(ValueError, match="bad 4"):
            parses.result("d")
    assert sorted(calls) == [1, 2, 3, 4]


def _chunked(values: list, *, seed: int, large: bool) -> pd.Series:
    """``values`` as arrow strings in chunks of random lengths, each a slice of a longer array
    (so offsets do not start at 0 and the data buffer holds bytes outside the chunk)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    kind = pa.large_string() if large else pa.string()
    chunks, i = [], 0
    while i < len(values):
        j = min(len(values), i + int(rng.integers(1, 9)))
        padded = pa.array(["pad é", *values[i:j], "1.5"], type=kind)
        chunks.append(padded.slice(1, j - i))
        i = j
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(chunks, type=kind)))


@pytest.mark.parametrize("large", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_parsers_on_sliced_chunks_match_the_general_path(large, seed):
    rng = np.random.default_rng(seed)
    amounts = list(rng.permutation(np.array(TRICKY_AMOUNTS * 3, dtype=object)))
    _amounts_both(_chunked(amounts, seed=seed, large=large))
    times = list(rng.permutation(np.array(TRICKY_TIMES * 2, dtype=object)))
    _same(*_both(_chunked(times, seed=seed, large=large), tz="Europe/Berlin", dayfirst=True))
    # one shape throughout (the whole column cast at once), then one value that is not
    whole = ["2024-01-01T03:01:54.000Z", "2024-02-29T23:59:59.999Z"] * 20
    _same(*_both(_chunked(whole, seed=seed, large=large)))
    _same(*_both(_chunked([*whole, "2024-02-30T10:00:00.000Z"], seed=seed, large=large)))
    plain = ["20600.0", "30503.34", "7"] * 20
    _amounts_both(_chunked(plain, seed=seed, large=large))


@pytest.mark.parametrize("large", [True, False])
def test_strip_check_of_first_and_last_bytes(large):
    values = ["a", " a", "a ", "", None, "\ta", "a\n", "ab", "é", "x é", "\u00a0a", "~", "!"] * 3
    s = _chunked(values, seed=4, large=large)
    lengths, clean = _fastparse.plain_ends(s.array._pa_array)
    for v, n, ok in zip(values, lengths, clean):
        b = b"" if v is None else v.encode()
        assert n == (-1 if v is None else len(b))
        # clean: empty, or first and last bytes printable ASCII other than a space
        assert ok == (not b or (0x21 <= b[0] <= 0x7E and 0x21 <= b[-1] <= 0x7E))
        if ok:  # surely unchanged by stripping
            assert v is None or v.strip() == v


# ------------------------------------------------------- checks on words, flags and names

WORDS = ["006000000000001", "a", "", None, "a b", " a", "a\t", "é", "~!", "x\u200by", "\x7f"]


@pytest.mark.parametrize("large", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_printable_words_and_empty_values_on_sliced_chunks(large, seed):
    rng = np.random.default_rng(seed)
    for size in (1, 3, 40):
        values = list(rng.choice(np.array(WORDS, dtype=object), size))
        arr = _chunked(values, seed=seed, large=large).array._pa_array
        want = all(v is None or all(0x21 <= b <= 0x7E for b in v.encode()) for v in values)
        assert _fastparse.printable_words(arr) == want
        np.testing.assert_array_equal(
            _fastparse.empty_values(arr), [v is None or v == "" for v in values]
        )
    plain = _chunked(["006000000000001", "x-1", "", None] * 5, seed=seed, large=large)
    assert _fastparse.printable_words(plain.array._pa_array)


def _with_fast_path(on: bool, fn, *args):
    saved = _parse.FAST_PATH
    _parse.FAST_PATH = on
    try:
        return fn(*args)
    finally:
        _parse.FAST_PATH = saved


FLAGS = ["true", "false", "TRUE", " true", "1", "yes", "", None, "false ", "t", "no"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_true_false_flags_read_as_the_general_path(seed):
    from funnelstats.ingest import salesforce

    rng = np.random.default_rng(seed)
    cases = [["true", "false"] * 10, ["false"] * 30, ["true"] * 3, [], ["false", "true", None]]
    cases += [list(rng.choice(np.array(FLAGS, dtype=object), 25)) for _ in range(5)]
    cases += [["false"] * 20 + [str(rng.choice(FLAGS[2:-1]))]]
    for values in cases:
        s = (
            _chunked(values, seed=seed, large=bool(seed % 2))
            if values
            else pd.Series([], dtype="string[pyarrow]")
        )
        fast = _with_fast_path(True, salesforce._truthy, s)
        slow = _with_fast_path(False, salesforce._truthy, s)
        np.testing.assert_array_equal(fast, slow)
        assert fast.dtype == slow.dtype == bool
        # as object strings (no arrow array): the general path
        obj = pd.Series(values, dtype=object)
        np.testing.assert_array_equal(salesforce._truthy(obj), slow)


NOISY = ["16120999.999999998", "20600.0", "12.3456789", "0.1000000001", "7", "12345678", "1.5"]
NOISY += ["123.", "99999999.9999999", "-5.0000000001", "1e5", "$12.00000000001", "", None]


@pytest.mark.parametrize("large", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_candidates_from_the_last_bytes_round_as_before(large, seed):
    from funnelstats.ingest import _crm

    rng = np.random.default_rng(seed)
    for size, plain in ((5, 0), (60, 0), (3, 60), (12, 400)):
        # mixed columns, and columns of plain amounts (few candidates: the last-bytes rule)
        values = list(rng.choice(np.array(NOISY, dtype=object), size)) + ["20600.0"] * plain
        values = list(rng.permutation(np.array(values, dtype=object)))
        s = _chunked(values, seed=seed, large=large)
        fast = _with_fast_path(True, _crm.round_float_noise, s)
        slow = _with_fast_path(False, _crm.round_float_noise, s)
        pd.testing.assert_series_equal(fast[0], slow[0])
        np.testing.assert_array_equal(fast[1], slow[1])
    # mostly integers of 8 digits or more: more candidates than the last bytes rule out
    many = _chunked(["12345678", "16120999.999999998"] * 20, seed=seed, large=large)
    fast = _with_fast_path(True, _crm.round_float_noise, many)
    slow = _with_fast_path(False, _crm.round_float_noise, many)
    pd.testing.assert_series_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
    assert fast[1].sum() == 20


STAGE_NAMES = ["Prospecting", "Closed Won", "Closed Lost", " Prospecting", "prospecting"]
STAGE_NAMES += ["Closed\u200bWon", "", None, "Cafe\u0301", "Café", "Closed  Won"]


@pytest.mark.parametrize("seed", range(6))
def test_stage_and_deal_checks_on_distinct_names_match_the_general_path(seed, tmp_path):
    rng = np.random.default_rng(seed)
    n = 60
    names = ["Prospecting", "Closed Won", "Closed Lost"]
    # nothing to repair; spaces around; an invisible character; an empty name; variants; all
    extra = [[], [" Prospecting"], ["Closed\u200bWon"], [""], ["prospecting", "Cafe\u0301"]]
    odd = names + (extra[seed] if seed < len(extra) else STAGE_NAMES)
    stage = [str(x) if x is not None else "" for x in rng.choice(np.array(odd, dtype=object), n)]
    deals = [f"006{int(i):012d}" for i in rng.integers(0, 12, n)]
    if seed % 3 == 0:
        deals[int(rng.integers(n))] = " 006000000000003"
    frame = pd.DataFrame(
        {
            "OpportunityId": deals,
            "CreatedDate": [f"2024-01-{1 + i % 28:02d}T10:{i % 60:02d}:00.000Z" for i in range(n)],
            "StageName": stage,
            "Amount": "100.0",
            "IsDeleted": rng.choice(["false", "true"], n, p=[0.9, 0.1]),
        }
    )
    p = tmp_path / "OpportunityHistory.csv"
    frame.to_csv(p, index=False)
    pipe = fs.Pipeline(["Prospecting", "Café"], won=["Closed Won"], lost=["Closed Lost"])
    kwargs = {"pipeline": pipe, "exported_at": "2024-03-01", "on_unknown_stage": "quarantine"}
    fast = _with_fast_path(True, lambda: fs.read_salesforce(p, **kwargs))
    slow = _with_fast_path(False, lambda: fs.read_salesforce(p, **kwargs))
    for attr in ("history", "events", "deals"):
        pd.testing.assert_frame_equal(getattr(fast, attr), getattr(slow, attr))
    for attr in ("findings", "quarantined", "repairs"):
        pd.testing.assert_frame_equal(getattr(fast.report, attr), getattr(slow.report, attr))
    assert fast.report.notes == slow.report.notes
    assert fast.report.rows_quarantined == slow.report.rows_quarantined


@pytest.mark.parametrize("chunk", [None, 7, 1000])
def test_derive_from_arrow_ids_matches_comparing_python_strings(sample, chunk):
    import pyarrow as pa

    from funnelstats.data import _derive

    h = sample.history.copy()
    # some deals' last rows without an amount: the latest amount is an earlier row's
    last = np.r_[h["deal_id"].to_numpy()[1:] != h["deal_id"].to_numpy()[:-1], True]
    h.loc[np.flatnonzero(last)[::3], "amount"] = np.nan
    h.loc[5:40, "amount"] = np.nan
    if chunk:  # deal ids in many chunks (as a large file gives them)
        ids = pa.array(h["deal_id"].tolist(), type=pa.large_string())
        pieces = [ids.slice(i, chunk) for i in range(0, len(ids), chunk)]
        h["deal_id"] = pd.arrays.ArrowStringArray(pa.chunked_array(pieces))
    assert isinstance(h["deal_id"].dtype, pd.StringDtype)
    for hist in (h, h.iloc[:0].reset_index(drop=True), h.iloc[:1], h.iloc[3:50]):
        hist = hist.reset_index(drop=True)
        a = _derive(hist, sample.pipeline, None, None)
        b = _derive(hist.astype({"deal_id": object}), sample.pipeline, None, None)
        b.deals["deal_id"] = b.deals["deal_id"].astype(a.deals["deal_id"].dtype)
        pd.testing.assert_frame_equal(a.deals, b.deals)
        np.testing.assert_array_equal(a.rows, b.rows)
        for f in ("deal", "stage", "entered", "exited", "next_stage", "amount", "kind"):
            np.testing.assert_array_equal(getattr(a.arrays, f), getattr(b.arrays, f), err_msg=f)
    # the latest amount is the last non-missing one of each deal
    d = _derive(h, sample.pipeline, None, None).deals
    want = h.dropna(subset=["amount"]).groupby("deal_id", sort=True)["amount"].last()
    got = d.set_index("deal_id")["amount"]
    pd.testing.assert_series_equal(
        got.dropna(), want.reindex(got.index).dropna(), check_names=False, check_index_type=False
    )
    assert got.isna().sum() == len(got) - len(want)


def test_byte_classes_of_decimals_by_arithmetic_match_the_table():
    every = np.tile(np.arange(256, dtype=np.uint8), 3)[5:]  # a slice: not aligned
    out = np.empty_like(every)
    _fastparse._classes(every, out)
    np.testing.assert_array_equal(out, _fastparse._DECIMAL_CLASS[every])
    assert set(out.tolist()) == {0, 1, 16}


@pytest.mark.parametrize("large", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_factorize_of_arrow_strings_matches_pandas(large, seed):
    rng = np.random.default_rng(seed)
    pool = np.array(["Prospecting", "Closed Won", "é", "", "x y", "Négociation"], dtype=object)
    for size in (1, 5, 80):
        for values in (list(rng.choice(pool, size)), list(rng.choice(pool[:2], size))):
            s = _chunked(values, seed=seed, large=large)
            codes, uniques = _fastparse.factorize(s)
            want_codes, want_uniques = pd.factorize(s, use_na_sentinel=True)
            np.testing.assert_array_equal(codes, want_codes)
            pd.testing.assert_index_equal(uniques, want_uniques)
    # missing values and empty columns: pandas' own result
    for values in (["a", None, "b", "a"], []):
        s = _chunked(values, seed=seed, large=large) if values else pd.Series([], dtype="string")
        codes, uniques = _fastparse.factorize(s)
        want_codes, want_uniques = pd.factorize(s, use_na_sentinel=True)
        np.testing.assert_array_equal(codes, want_codes)
        pd.testing.assert_index_equal(uniques, want_uniques)
