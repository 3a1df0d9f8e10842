"""Outputs that cannot hurt their reader, whatever the export holds.

- No code runs on input: the package never calls eval, exec or pickle (checked on its AST).
- HTML (notebook reprs of every result, the data and the ingest report; the HTML report
  when present) escapes every name: fuzzed deal ids, stage names and attribute values made
  of markup and script never come out as markup.
- CSV / XLSX written through ``funnelstats._safe_io`` hold no formula: cells starting with
  ``=``, ``+``, ``-``, ``@``, a tab or a carriage return get a leading apostrophe (OWASP
  "CSV Injection"), fuzzed and on every table of the hostile corpus.
- The command line writes only inside ``--out``, and answers every hostile file with an exit
  code rather than a traceback.
"""

from __future__ import annotations

import ast
import csv
import re
import string
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _analyses import run_all
from _corpus import CASES, HOSTILE, READABLE, kwargs, source
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import funnelstats as fs

PACKAGE = Path(fs.__file__).parent
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# ------------------------------------------------------------------ no code on input

#: Calls that run code or unpickle objects; ast.literal_eval (literals only) is not one.
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile", "input"}
FORBIDDEN_ATTRS = {"read_pickle", "to_pickle", "query", "eval", "loads", "load", "system"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "subprocess", "yaml"}
#: ``load``/``loads`` are allowed from these modules (they parse data, run nothing).
SAFE_LOADERS = {"json", "tomllib", "tomli"}


def forbidden_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            for m in [mod, *names]:
                if m and m.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: import {m}")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
                found.append(f"line {node.lineno}: {f.id}()")
            elif isinstance(f, ast.Attribute) and f.attr in FORBIDDEN_ATTRS:
                owner = f.value.id if isinstance(f.value, ast.Name) else ""
                if not (f.attr in ("load", "loads") and owner in SAFE_LOADERS):
                    found.append(f"line {node.lineno}: {owner}.{f.attr}()")
    return found


def test_the_scan_finds_what_it_looks_for():
    code = "import pickle\nx = eval('1')\npd.read_pickle(p)\ndf.query(s)\njson.loads(t)\n"
    assert len(forbidden_uses(ast.parse(code))) == 4


def test_no_eval_exec_or_pickle_in_the_package():
    found = {
        str(p.relative_to(PACKAGE)): hits
        for p in sorted(PACKAGE.rglob("*.py"))
        if (hits := forbidden_uses(ast.parse(p.read_text(encoding="utf-8"))))
    }
    assert not found, found


# ---------------------------------------------------------------------- HTML escaping

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "\"'><svg onload=alert(1)>",
    "</td></tr></table><iframe src=javascript:alert(1)>",
    "&amp;&lt;",
    "{{ 7*7 }}",
    "<!--",
]
TAGS = {"b", "div", "li", "p", "table", "tbody", "td", "th", "thead", "tr", "ul", "span"}
TAGS |= {"h1", "h2", "h3", "h4", "small", "caption", "style", "br", "em", "strong", "code"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [f"{a}={v}" for a, v in attrs]

    def handle_data(self, data):
        self.text.append(data)


def assert_safe_html(html: str, names: list[str]) -> None:
    low = html.lower()
    for bad in ("<script", "<img", "<svg", "<iframe", "<!--"):
        assert bad not in low, bad
    parser = _Tags()
    parser.feed(html)
    parser.close()
    assert set(parser.tags) <= TAGS, set(parser.tags) - TAGS
    assert not [a for a in parser.attrs if a.lower().startswith("on") or "javascript:" in a]
    text = "".join(parser.text)
    for name in names:  # shown, as text
        assert name in text, name


def hostile_names(n: int):
    """``n`` distinct names, each a payload with some markup-ish text after it."""
    tail = st.text(alphabet="<>&\"'/= " + string.ascii_letters, max_size=6)
    return st.lists(st.tuples(st.sampled_from(PAYLOADS), tail), min_size=n, max_size=n).map(
        lambda parts: [f"{p}{t}{i}" for i, (p, t) in enumerate(parts)]
    )


@given(hostile_names(5), st.sampled_from(PAYLOADS))
def test_html_escapes_fuzzed_names(names, segment):
    stages, won, lost = names[:3], names[3], names[4]
    pipe = fs.Pipeline(stages, won=[won], lost=[lost])
    rows = [
        (names[0], stages[0], "2024-01-01", "100", segment),
        (names[0], stages[1], "2024-01-05", "100", segment),
        (names[0], won, "2024-01-20", "100", segment),
        (names[1], stages[0], "2024-01-02", "50", "plain"),
        (names[1], stages[2], "2024-01-09", "50", "plain"),
        (names[1], lost, "2024-01-12", "50", "plain"),
        (names[2], stages[0], "2024-01-03", "70", segment),
        (names[2], stages[1], "2024-01-15", "70", segment),
    ]
    frame = pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp", "amount", "segment"])
    data = fs.read_events(frame, pipeline=pipe)
    assert sorted(data.deals["deal_id"]) == sorted(names[:3])  # kept as data, unchanged
    assert_safe_html(data._repr_html_(), stages)
    assert_safe_html(data.report._repr_html_(), [])
    for res in run_all(data, n_sims=20).values():
        assert_safe_html(res._repr_html_(), [])
        assert isinstance(res.summary(), str)
    for res in (fs.conversion(data, by="segment"), fs.time_in_stage(data, by="segment")):
        assert_safe_html(res._repr_html_(), [segment])


#: What the HTML report may hold: its own layout, charts as PNG data, links to its sections.
REPORT_TAGS = TAGS | {
    "html",
    "head",
    "meta",
    "title",
    "body",
    "header",
    "footer",
    "main",
    "nav",
    "section",
    "figure",
    "figcaption",
    "img",
    "a",
    "dl",
    "dt",
    "dd",
    "ol",
}


def assert_safe_report_html(html: str, names: list[str]) -> None:
    """The HTML report: no script, no handler, images only inline PNG, links only inside."""
    low = html.lower()
    for bad in ("<script", "<svg", "<iframe", "<object", "<embed", "<form", "<base"):
        assert bad not in low, bad
    parser = _Tags()
    parser.feed(html)
    parser.close()
    assert set(parser.tags) <= REPORT_TAGS, set(parser.tags) - REPORT_TAGS
    for attr in parser.attrs:
        key, _, value = attr.partition("=")
        assert not key.lower().startswith("on"), attr
        if key == "src":
            assert value.startswith("data:image/png;base64,"), attr[:60]
        if key == "href":
            assert value.startswith("#"), attr
    text = "".join(parser.text)
    for name in names:
        assert name in text, name


@settings(max_examples=6)  # each example draws a whole report with its charts (~2 s)
@given(hostile_names(5), st.sampled_from(PAYLOADS), st.sampled_from(PAYLOADS))
def test_html_report_escapes_fuzzed_names(names, segment, owner):
    stages, won, lost = names[:3], names[3], names[4]
    rows = [
        (names[0], stages[0], "2024-01-01", "100", segment, owner),
        (names[0], stages[1], "2024-01-05", "100", segment, owner),
        (names[0], won, "2024-01-20", "100", segment, owner),
        (names[1], stages[0], "2024-01-02", "50", "plain", "x"),
        (names[1], stages[2], "2024-01-09", "50", "plain", "x"),
        (names[1], lost, "2024-01-12", "50", "plain", "x"),
        (names[2], stages[0], "2024-01-03", "70", segment, owner),
        (names[2], stages[1], "2024-01-15", "70", segment, owner),
    ]
    cols = ["deal_id", "stage", "timestamp", "amount", "segment", "owner"]
    data = fs.read_events(
        pd.DataFrame(rows, columns=cols), pipeline=fs.Pipeline(stages, won=[won], lost=[lost])
    )
    rep = fs.make_report(data, by="segment", n_sims=50, generated_at="2024-03-01")
    assert_safe_report_html(rep.html(), [*stages, segment])
    assert_safe_html(rep._repr_html_(), [])


def test_html_check_can_fail():
    with pytest.raises(AssertionError):
        assert_safe_html("<div><img src=x onerror=alert(1)></div>", [])
    with pytest.raises(AssertionError):
        assert_safe_report_html('<figure><img src="http://x/y.png"></figure>', [])
    with pytest.raises(AssertionError):
        assert_safe_report_html('<a href="javascript:alert(1)">x</a>', [])
    with pytest.raises(AssertionError):
        assert_safe_html("<div>&lt;b&gt;</div>", ["<b>x"])


# ------------------------------------------------------------- CSV / XLSX without formulas


@pytest.fixture(scope="module")
def safe_io():
    return pytest.importorskip(
        "funnelstats._safe_io", reason="the safe writers arrive with the report (_safe_io.py)"
    )


cells = st.one_of(
    st.text(max_size=12),
    st.builds(lambda p, t: p + t, st.sampled_from(FORMULA_PREFIXES), st.text(max_size=10)),
    st.sampled_from([*PAYLOADS, '=HYPERLINK("http://evil","x")', "+cmd|' /C calc'!A0"]),
)


@given(cells)
def test_neutralise_cell(safe_io, value):
    out = safe_io.neutralise_cell(value)
    if value.startswith(FORMULA_PREFIXES):
        assert out == "'" + value
    else:
        assert out == value
    assert not out.startswith(FORMULA_PREFIXES)


def read_back_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def read_back_xlsx(path: Path):
    import openpyxl

    ws = openpyxl.load_workbook(path).active
    return [[c for c in row] for row in ws.iter_rows()]


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def assert_no_formulas_csv(path: Path) -> None:
    """No cell a spreadsheet would evaluate (a plain number such as -2 is a value)."""
    for row in read_back_csv(path):
        for cell in row:
            assert not cell.startswith(FORMULA_PREFIXES) or NUMBER.fullmatch(cell), cell


def assert_no_formulas_xlsx(path: Path) -> None:
    for row in read_back_xlsx(path):
        for c in row:
            assert c.data_type != "f", c.value
            if isinstance(c.value, str):
                assert not c.value.startswith(FORMULA_PREFIXES), c.value


@given(st.lists(cells, min_size=1, max_size=6), cells)
def test_write_table_csv_round_trips_without_formulas(tmp_path_factory, safe_io, values, header):
    frame = pd.DataFrame({"deal": values, header or "h": np.arange(len(values)) - 2})
    path = safe_io.write_table(frame, tmp_path_factory.mktemp("csv") / "t.csv")
    rows = read_back_csv(path)
    assert_no_formulas_csv(path)
    assert [r[0] for r in rows[1:]] == [safe_io.neutralise_cell(v) for v in values]
    # numbers stay numbers: -2 is written as -2 (a number, not a formula)
    assert [r[1] for r in rows[1:]] == [str(v) for v in np.arange(len(values)) - 2]


@given(st.lists(cells, min_size=1, max_size=6))
def test_write_table_xlsx_holds_no_formulas(tmp_path_factory, safe_io, values):
    pytest.importorskip("openpyxl")
    frame = pd.DataFrame({"deal": values})
    path = tmp_path_factory.mktemp("xlsx") / "t.xlsx"
    safe_io.write_table(frame, path)
    assert_no_formulas_xlsx(path)


@pytest.mark.parametrize("case", READABLE, ids=lambda c: c["id"])
def test_corpus_tables_written_safely(tmp_path, safe_io, case):
    """The tables a user exports from a hostile file (deals, quarantine, repairs)."""
    data = fs.read(source(case, tmp_path), **kwargs(case))
    r = data.report
    for name, table in (("deals", data.deals), ("q", r.quarantined), ("r", r.repairs)):
        for suffix, check in ((".csv", assert_no_formulas_csv), (".xlsx", assert_no_formulas_xlsx)):
            check(safe_io.write_table(table, tmp_path / f"{name}{suffix}"))


def test_formula_corpus_written_safely(tmp_path, safe_io):
    data = fs.read(HOSTILE / "formula_cells.csv", pipeline=HOSTILE / "pipeline.toml")
    path = safe_io.write_table(data.deals, tmp_path / "deals.csv")
    text = path.read_text(encoding="utf-8")
    assert "'=HYPERLINK" in text and "'@SUM(1+1)" in text and "'=cmd|" in text
    assert_no_formulas_csv(path)
    assert_no_formulas_xlsx(safe_io.write_table(data.deals, tmp_path / "deals.xlsx"))


@given(st.text(max_size=20))
def test_safe_join_stays_inside(tmp_path_factory, safe_io, name):
    folder = tmp_path_factory.mktemp("out")
    try:
        path = safe_io.safe_join(folder, name)
    except ValueError:
        return
    assert path.resolve().parent == folder.resolve()


# ------------------------------------------------------------------------ command line


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_cli_validate_answers_every_hostile_file(tmp_path, case):
    """An exit code (0 clean, 1 repaired, 2 quarantined or unusable) and no traceback."""
    from funnelstats.cli import main

    given = case.get("kwargs", {})
    pipe = given.get("pipeline", "pipeline.toml")
    options = {"tz": "--tz", "exported_at": "--exported-at"}
    if "generate" in case or set(given) - {"pipeline", *options} or not isinstance(pipe, str):
        pytest.skip("not an option of the command line (dayfirst=, strict=, ...)")
    path = source(case, tmp_path)
    args = ["validate", str(path)]
    if pipe != "infer":
        args += ["--pipeline", str(HOSTILE / pipe)]
    for key, flag in options.items():
        if key in given:
            args += [flag, given[key]]
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if "error" in case:
        assert result.exit_code == 2
    else:
        r = case["rows"]
        assert result.exit_code == (2 if r[3] else 1 if r[2] else 0)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_cli_quarantined_rows_file_holds_no_formulas(tmp_path, suffix):
    from funnelstats.cli import main

    export = tmp_path / "export.csv"
    export.write_text(
        "deal_id,stage,timestamp,amount\n"
        "A1,Lead,2024-01-02,1\n"
        '"=HYPERLINK(""http://evil"",""x"")",Lead,not a date,@SUM(A1)\n'
        "+cmd|' /C calc'!A0,Lead,,-2+3\n",
        encoding="utf-8",
    )
    out = tmp_path / f"quarantined{suffix}"
    args = ["validate", str(export), "--pipeline", str(HOSTILE / "pipeline.toml")]
    result = CliRunner().invoke(main, [*args, "--quarantined", str(out)])
    assert result.exit_code == 2, result.output
    if suffix == ".csv":
        assert_no_formulas_csv(out)
        text = out.read_text(encoding="utf-8")
        assert "'=HYPERLINK" in text and "'+cmd" in text and "'@SUM(A1)" in text
    else:
        assert_no_formulas_xlsx(out)


FAST = ["--format", "html", "--n-sims", "50", "--generated-at", "2024-03-01"]


@pytest.mark.parametrize("name", ["html_names.csv", "formula_cells.csv"])
def test_cli_report_writes_only_inside_out(tmp_path, name):
    from funnelstats.cli import main

    work = tmp_path / "work"
    work.mkdir()
    before = files_under(tmp_path)
    out = work / "out"
    result = CliRunner().invoke(main, ["report", str(HOSTILE / name), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    written = files_under(tmp_path) - before
    assert written and all(out.resolve() in p.resolve().parents for p in written)
    for p in written:
        if p.suffix == ".html":
            assert_safe_report_html(p.read_text(encoding="utf-8"), [])


def test_cli_report_out_is_created_not_escaped(tmp_path, monkeypatch):
    """A relative --out with '..' is the folder the user named, nothing else is written."""
    from funnelstats.cli import main

    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    before = files_under(tmp_path)
    export = str(HOSTILE / "utf8_bom.csv")
    result = CliRunner().invoke(main, ["report", export, "--out", "x/../reports", *FAST])
    assert result.exit_code == 0, result.output
    target = (tmp_path / "a" / "reports").resolve()
    written = files_under(tmp_path) - before
    assert written and all(target in p.resolve().parents for p in written)
