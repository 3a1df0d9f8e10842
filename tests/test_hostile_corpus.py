"""The hostile-input corpus: every file in tests/data/hostile through fs.read.

What each file must do is written next to it, in tests/data/hostile/EXPECTED.toml (one
[[case]] per call; the keys are explained at the top of that file). Row counts there were
counted by hand from the files, so a row the reader loses, or a rule that fires where it
should not, fails the case. Checks the manifest cannot express are the EXTRA functions below.

Every file that reads is then given to every analysis (tests/_analyses.py), which must
return finite (or NaN) figures that pass their identities.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from _analyses import check_all, run_all
from _corpus import CASES, HOSTILE, READABLE, kwargs, source

import funnelstats as fs
from funnelstats import FunnelDataError

# ------------------------------------------------------------------------ extras


def _deal_attr(d: fs.FunnelData, column: str) -> dict:
    return dict(zip(d.deals["deal_id"], d.deals[column].astype(object)))


def _history_attr(d: fs.FunnelData, column: str) -> dict:
    return dict(zip(d.history["source_row"], d.history[column].astype(object)))


def extra_duplicate_headers(d: fs.FunnelData) -> None:
    # the real "owner.1" column keeps its name; the repeated "owner" takes the next free one
    row = d.deals.iloc[0]
    assert (row["owner"], row["owner.2"], row["owner.1"]) == ("Ann", "Bob", "Cy")


def extra_windows1252(d: fs.FunnelData) -> None:
    assert _deal_attr(d, "account") == {"A1": "Société Générale – 5 €", "B2": "Müller & Söhne"}


def extra_quoted_newlines(d: fs.FunnelData) -> None:
    notes = _history_attr(d, "notes")
    assert notes[2] == "first line\r\nsecond line, with a comma"
    assert notes[3] == 'she said "no"\nthen yes'
    assert notes[5] == "\r\n\r\n"


def extra_huge_cell(d: fs.FunnelData) -> None:
    big = "x" * 99_990 + "<end>" + "y" * 5
    desc = _history_attr(d, "description")
    assert desc[2] == big and desc[4] == big and len(big) == 100_000


def extra_formula_cells(d: fs.FunnelData) -> None:
    # ingest keeps text as it is: neutralising formulas is the writers' job (tests of _safe_io)
    col = "=cmd|' /C calc'!A0"
    assert col in d.deals.columns
    assert _deal_attr(d, "account")["=1+1"] == "\r=2"
    assert _deal_attr(d, "account")["@SUM(1+1)"] == "-2+3"
    assert d.events["amount"].isna().sum() == 3


def extra_html_names(d: fs.FunnelData) -> None:
    assert _deal_attr(d, "account")["<script>alert(1)</script>"] == "Q&A \"Ltd\" 'x'"
    for html in (d._repr_html_(), d.report._repr_html_()):
        assert "<script>" not in html and "<b>Lead</b>" not in html
    assert "&lt;script&gt;" in d.report._repr_html_()


def extra_xlsx_formulas(d: fs.FunnelData) -> None:
    # a formula cell is read as the value Excel stored for it (none here: empty), never run
    account = _history_attr(d, "account")
    assert pd.isna(account[2]) and pd.isna(account[3])
    assert account[4] == "@SUM(A1)" and account[5] == "plain"


EXTRA = {
    "duplicate_headers": extra_duplicate_headers,
    "windows1252": extra_windows1252,
    "quoted_newlines": extra_quoted_newlines,
    "huge_cell": extra_huge_cell,
    "formula_cells": extra_formula_cells,
    "html_names": extra_html_names,
    "xlsx_formulas": extra_xlsx_formulas,
}


# ------------------------------------------------------------------------- tests


def test_corpus_is_complete():
    """At least 30 files, each named by a case, and every case's file exists."""
    files = {
        p.name
        for p in HOSTILE.iterdir()
        if p.name not in ("EXPECTED.toml", "make_corpus.py") and not p.name.startswith(".")
    }
    files.discard("pipeline.toml")
    named = {c["file"] for c in CASES if "file" in c}
    assert len(files) + len({c["generate"] for c in CASES if "generate" in c}) >= 30
    assert files == named, f"files without a case: {files - named}; missing: {named - files}"
    assert len({c["id"] for c in CASES}) == len(CASES)
    assert all(c.get("covers") for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_corpus_case(case, tmp_path):
    path = source(case, tmp_path)
    kw = kwargs(case)
    if "error" in case:
        with pytest.raises(FunnelDataError) as info:
            fs.read(path, **kw)
        err, msg = info.value, str(info.value)
        assert err.rule == case["error"], msg
        assert Path(err.file).name == path.name and msg.startswith(str(err.file))
        for fragment in case["message"]:
            assert fragment in msg, (fragment, msg)
        if "row" in case:
            assert err.row == case["row"] and f"row {case['row']}," in msg, msg
        if "column" in case:
            assert err.column == case["column"] and f"column {case['column']!r}" in msg, msg
        return

    d = fs.read(path, **kw)
    r = d.report
    assert [r.rows_read, r.rows_kept, r.rows_repaired, r.rows_quarantined] == case["rows"]
    assert r.rows_read == r.rows_kept + r.rows_repaired + r.rows_quarantined
    # every quarantined row is listed with its reason; the others are in the history
    assert len(r.quarantined) == r.rows_quarantined
    assert r.quarantined["reason"].map(lambda s: isinstance(s, str) and s != "").all()
    assert len(d.history) == r.rows_read - r.rows_quarantined - r.count("duplicate_row")
    assert r.rows_repaired <= len(r.repairs)
    fired = {k: n for k, n in r.counts.items() if fs.RULES[k].kind in ("repair", "quarantine")}
    assert fired == case.get("rules", {})
    for rule, n in case.get("note_rules", {}).items():
        assert r.count(rule) == n, (rule, r.count(rule))
    for fragment in case.get("notes", []):
        assert any(fragment in n for n in r.notes), (fragment, r.notes)
    if "quarantined_rows" in case:
        assert r.quarantined["row"].tolist() == case["quarantined_rows"]
    for fragment in case.get("reasons", []):
        assert r.quarantined["reason"].str.contains(fragment, regex=False).any(), fragment
    if "layout" in case:
        assert r.layout == case["layout"]
    if "deals" in case:
        assert sorted(d.deals["deal_id"]) == case["deals"]
    if "outcomes" in case:
        got = _deal_attr(d, "outcome")
        assert {k: got[k] for k in case["outcomes"]} == case["outcomes"]
    if "stages" in case:
        assert list(d.pipeline.order) == case["stages"]
    if "entered_at" in case:
        assert [t.isoformat() for t in d.events["entered_at"]] == case["entered_at"]
    if "amounts" in case:
        got = _deal_attr(d, "amount")
        for deal, want in case["amounts"].items():
            want = math.nan if want == "nan" else want
            assert got[deal] == pytest.approx(want, nan_ok=True), (deal, got[deal])
    if "exported_at" in case:
        assert d.exported_at == pd.Timestamp(case["exported_at"])
    if "extra" in case:
        EXTRA[case["extra"]](d)


@pytest.mark.parametrize("case", READABLE, ids=[c["id"] for c in READABLE])
def test_every_analysis_on_corpus(case, tmp_path):
    """Whatever the input, the analyses return finite or NaN figures that pass their checks."""
    d = fs.read(source(case, tmp_path), **kwargs(case))
    check_all(d, run_all(d, n_sims=50))
