"""Reading files: formats, compression, encodings, delimiters."""

from __future__ import annotations

import bz2
import gzip
import io
import zipfile

import pandas as pd
import pytest

import funnelstats as fs
from funnelstats import FunnelDataError, Pipeline

PIPE = Pipeline(["Lead", "Demo"], won=["Won"], lost=["Lost"])
CSV = (
    "deal_id,stage,timestamp,amount\n"
    "A,Lead,2024-01-01,10\nA,Won,2024-01-05,10\nB,Lead,2024-01-02,5\n"
)


def check(d):
    assert d.n_deals == 2 and len(d.events) == 3
    r = d.report
    assert r.rows_read == 3 == r.rows_kept + r.rows_repaired + r.rows_quarantined


@pytest.mark.parametrize("delim", [",", ";", "\t", "|"])
def test_delimiters(tmp_path, delim):
    p = tmp_path / "x.csv"
    p.write_text(CSV.replace(",", delim))
    check(fs.read_events(p, pipeline=PIPE))


def test_gzip_bz2_zip(tmp_path):
    (tmp_path / "x.csv.gz").write_bytes(gzip.compress(CSV.encode()))
    (tmp_path / "x.csv.bz2").write_bytes(bz2.compress(CSV.encode()))
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        zf.writestr("export.csv", CSV)
    for name in ("x.csv.gz", "x.csv.bz2", "x.zip"):
        d = fs.read_events(tmp_path / name, pipeline=PIPE)
        check(d)
    assert any("zip" in n for n in fs.read_events(tmp_path / "x.zip", pipeline=PIPE).report.notes)


def test_zip_with_two_files_and_unsupported_compression(tmp_path):
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as zf:
        zf.writestr("a.csv", CSV)
        zf.writestr("b.csv", CSV)
    with pytest.raises(FunnelDataError, match="exactly one file") as e:
        fs.read_events(tmp_path / "two.zip")
    assert e.value.rule == "unsupported_input"
    (tmp_path / "x.csv.7z").write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\0" * 30)
    with pytest.raises(FunnelDataError, match="7z compression is not supported"):
        fs.read_events(tmp_path / "x.csv.7z")


def test_windows_1252_and_bom(tmp_path):
    text = CSV.replace("Lead", "Léad")
    pipe = Pipeline(["Léad", "Demo"], won=["Won"], lost=["Lost"])
    (tmp_path / "w.csv").write_bytes(text.encode("cp1252"))
    d = fs.read_events(tmp_path / "w.csv", pipeline=pipe)
    check(d)
    assert any("Windows-1252" in n for n in d.report.notes)
    (tmp_path / "b.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    check(fs.read_events(tmp_path / "b.csv", pipeline=pipe))
    d = fs.read_events(tmp_path / "w.csv", pipeline=pipe, encoding="cp1252")
    assert not any("Windows-1252" in n for n in d.report.notes)


def test_parquet_and_xlsx(tmp_path):
    df = pd.read_csv(io.StringIO(CSV), dtype=str)
    df.to_parquet(tmp_path / "x.parquet")
    check(fs.read_events(tmp_path / "x.parquet", pipeline=PIPE))
    df.to_excel(tmp_path / "x.xlsx", index=False)
    check(fs.read_events(tmp_path / "x.xlsx", pipeline=PIPE))


def test_dataframe_positions_in_errors():
    df = pd.DataFrame(
        {"deal_id": ["A", "A"], "stage": ["Lead", "Demo"], "timestamp": ["2024-01-01", "bad"]}
    )
    with pytest.raises(FunnelDataError) as e:
        fs.read_events(df, pipeline=PIPE, strict=True)
    assert "<DataFrame>, position 1, column 'timestamp'" in str(e.value)


def test_caller_frame_not_mutated():
    df = pd.DataFrame(
        {
            "deal_id": [" A", "A"],
            "stage": ["Lead ", "Demo"],
            "timestamp": ["2024-01-01", "2024-01-02"],
            "amount": ["$5", "7"],
        }
    )
    before = df.copy()
    fs.read_events(df, pipeline=PIPE)
    pd.testing.assert_frame_equal(df, before)


def test_duplicate_header_names_renamed(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("deal_id,stage,timestamp,owner,owner\nA,Lead,2024-01-01,x,y\n")
    d = fs.read_events(p, pipeline=PIPE)
    assert {"owner", "owner.1"} <= set(d.deals.columns)
    assert any("duplicate column names" in n for n in d.report.notes)


def test_numeric_timestamps_epoch_ms(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("deal_id,stage,timestamp\nA,Lead,1704067200000\nA,Demo,1704153600000\n")
    d = fs.read_events(p, pipeline=PIPE)
    assert d.events["entered_at"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert any("epoch milliseconds" in n for n in d.report.notes)


def test_read_detects_layout_or_lists_known(tmp_path):
    p = tmp_path / "u.csv"
    p.write_text("foo,bar\n1,2\n")
    with pytest.raises(fs.UnknownLayoutError) as e:
        fs.read(p)
    msg = str(e.value)
    assert "salesforce" in msg and "generic" in msg and "['bar', 'foo']" in msg
    assert e.value.rule == "unknown_layout"
    p2 = tmp_path / "g.csv"
    p2.write_text(CSV)
    assert fs.read(p2, pipeline=PIPE).report.layout == "generic"
