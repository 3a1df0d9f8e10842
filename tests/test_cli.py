"""The ``funnelstats`` command line: every subcommand and exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import funnelstats as fs
from funnelstats.cli import main

DATA = Path(__file__).parent / "data"

CLEAN = """deal_id,stage,timestamp,amount,segment
A1,Lead,2024-01-01,100,SMB
A1,Closed Won,2024-01-10,100,SMB
A2,Lead,2024-01-02,200,Enterprise
A2,Closed Lost,2024-01-12,200,Enterprise
A3,Lead,2024-01-05,300,SMB
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


# ---------------------------------------------------------------------------- validate


def test_validate_clean_input_exits_0(runner, tmp_path):
    res = runner.invoke(main, ["validate", str(_write(tmp_path, "clean.csv", CLEAN))])
    assert res.exit_code == 0, res.output
    assert "rows read                 5" in res.output


def test_validate_repaired_input_exits_1(runner, tmp_path):
    text = CLEAN.replace("A3,Lead,", "A3,Lead  ,")  # a stage name with trailing spaces
    res = runner.invoke(main, ["validate", str(_write(tmp_path, "repaired.csv", text))])
    assert res.exit_code == 1, res.output
    assert "stage_whitespace" in res.output


def test_validate_quarantined_rows_exit_2(runner, tmp_path):
    text = CLEAN + "A4,Lead,,50,SMB\n"  # no timestamp: quarantined
    out = tmp_path / "quarantined.csv"
    res = runner.invoke(
        main, ["validate", str(_write(tmp_path, "q.csv", text)), "--quarantined", str(out)]
    )
    assert res.exit_code == 2, res.output
    assert "missing_timestamp" in res.output
    q = pd.read_csv(out)
    assert q["row"].tolist() == [7]


def test_validate_unusable_input_exits_2(runner, tmp_path):
    res = runner.invoke(main, ["validate", str(_write(tmp_path, "empty.csv", ""))])
    assert res.exit_code == 2
    assert "error:" in res.output


def test_validate_the_sample(runner):
    res = runner.invoke(main, ["validate", "--sample"])
    # the sample has rows the CRM marks as deleted: quarantined, so exit 2
    assert res.exit_code == 2
    assert "deleted" in res.output


def test_exit_codes_are_documented(runner):
    res = runner.invoke(main, ["validate", "--help"])
    assert res.exit_code == 0
    for line in ("0  clean", "1  rows were repaired", "2  rows were quarantined"):
        assert line in res.output
    assert "Exit codes" in runner.invoke(main, ["--help"]).output


def test_missing_input_is_a_usage_error(runner, tmp_path):
    assert runner.invoke(main, ["validate"]).exit_code == 2
    res = runner.invoke(main, ["summary", str(tmp_path / "nope.csv")])
    assert res.exit_code == 2 and "is not a file" in res.output
    clean = _write(tmp_path, "clean.csv", CLEAN)
    assert runner.invoke(main, ["summary", str(clean), "--sample"]).exit_code == 2


def test_unknown_source_layout_is_a_usage_error(runner, tmp_path):
    clean = _write(tmp_path, "clean.csv", CLEAN)
    res = runner.invoke(main, ["validate", str(clean), "--source", "nosuchcrm"])
    assert res.exit_code == 2
    assert "nosuchcrm" in res.output


def test_pipeline_file_is_used(runner):
    res = runner.invoke(
        main,
        ["validate", str(DATA / "hand10.csv"), "--pipeline", str(DATA / "hand10.toml")],
    )
    assert res.exit_code in (0, 1), res.output
    assert "hand10.csv" in res.output


# ----------------------------------------------------------------------------- summary


def test_summary_prints_the_headline_tables(runner, tmp_path):
    res = runner.invoke(main, ["summary", str(_write(tmp_path, "c.csv", CLEAN)), "--by", "segment"])
    assert res.exit_code == 0, res.output
    assert "<FunnelData: 3 deals (1 won, 1 lost, 1 open)" in res.output
    assert "At a glance" in res.output and "BY SEGMENT" in res.output


def test_summary_of_the_sample_as_of(runner):
    res = runner.invoke(main, ["summary", "--sample", "--as-of", "2024-06-30"])
    assert res.exit_code == 0, res.output
    assert "exported 2024-06-30" in res.output


def test_summary_bad_by_exits_2(runner):
    res = runner.invoke(main, ["summary", "--sample", "--by", "Region"])
    assert res.exit_code == 2
    assert "Segment" in res.output  # the message lists the attributes there are


# ------------------------------------------------------------------------------ report


def test_report_writes_html_and_pdf_named_by_as_of(runner, tmp_path):
    out = tmp_path / "reports"
    res = runner.invoke(
        main,
        [
            "report",
            "--sample",
            "--out",
            str(out),
            "--as-of",
            "2024-09-30",
            "--by",
            "Segment",
            "--generated-at",
            "2025-01-06T07:00:00Z",
        ],
    )
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["funnelstats-report-2024-09-30.html", "funnelstats-report-2024-09-30.pdf"]
    html = (out / names[0]).read_text(encoding="utf-8")
    assert "2025-01-06 07:00:00 UTC" in html
    for f in ("OpportunityHistory.csv", "Opportunity.csv", "pipeline.toml"):
        assert f in html
    assert f"wrote {out / names[0]}" in res.output


def test_report_html_only_and_bad_format(runner, tmp_path):
    clean = _write(tmp_path, "c.csv", CLEAN)
    res = runner.invoke(
        main, ["report", str(clean), "--out", str(tmp_path / "o"), "--format", "html"]
    )
    assert res.exit_code == 0, res.output
    assert [p.suffix for p in (tmp_path / "o").iterdir()] == [".html"]
    res = runner.invoke(
        main, ["report", str(clean), "--out", str(tmp_path / "o"), "--format", "html,docx"]
    )
    assert res.exit_code == 2 and "docx" in res.output


def test_report_as_of_after_export_exits_2(runner, tmp_path):
    res = runner.invoke(
        main, ["report", "--sample", "--out", str(tmp_path), "--as-of", "2030-01-01"]
    )
    assert res.exit_code == 2
    assert "after the export date" in res.output


def test_report_generation_time_defaults_to_source_date_epoch(runner, tmp_path):
    res = runner.invoke(
        main,
        ["report", "--sample", "--out", str(tmp_path), "--format", "html"],
        env={"SOURCE_DATE_EPOCH": "1736146800"},
    )
    assert res.exit_code == 0, res.output
    html = next(tmp_path.glob("*.html")).read_text(encoding="utf-8")
    assert "2025-01-06 07:00:00 UTC" in html


def test_report_twice_gives_the_same_numbers(runner, tmp_path):
    for stamp, folder in (("2025-01-06T07:00:00Z", "a"), ("2025-01-13T07:00:00Z", "b")):
        res = runner.invoke(
            main,
            [
                "report",
                "--sample",
                "--out",
                str(tmp_path / folder),
                "--format",
                "html",
                "--generated-at",
                stamp,
            ],
        )
        assert res.exit_code == 0, res.output
    a = next((tmp_path / "a").glob("*.html")).read_text(encoding="utf-8")
    b = next((tmp_path / "b").glob("*.html")).read_text(encoding="utf-8")
    assert a.replace("2025-01-06 07", "X") == b.replace("2025-01-13 07", "X")


# ----------------------------------------------------------------- logging and progress


def test_quiet_and_verbose_logging_go_to_stderr(tmp_path):
    exe = [sys.executable, "-m", "funnelstats.cli"]
    loud = subprocess.run(
        [*exe, "-v", "report", "--sample", "--out", str(tmp_path), "--format", "html"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loud.returncode == 0, loud.stderr
    assert "INFO funnelstats" in loud.stderr and "INFO" not in loud.stdout
    assert "wrote" in loud.stdout
    # not a terminal: no progress bar drawn
    assert "[#" not in loud.stderr and "\r" not in loud.stderr
    quiet = subprocess.run(
        [*exe, "-q", "report", "--sample", "--out", str(tmp_path), "--format", "html"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_progress_bar_draws_only_on_a_terminal(monkeypatch, capsys):
    from funnelstats import cli

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = cli._Progress(enabled=True)
    bar(1, 4, "data quality")
    bar.close()
    assert "data quality" in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    bar = cli._Progress(enabled=True)
    bar(1, 4, "data quality")
    bar.close()
    assert capsys.readouterr().err == ""


def test_version(runner):
    res = runner.invoke(main, ["--version"])
    assert res.exit_code == 0 and fs.__version__ in res.output


def test_companion_files_and_export_date(runner):
    crm = DATA / "crm" / "salesforce"
    res = runner.invoke(
        main,
        [
            "summary",
            str(crm / "OpportunityHistory.csv"),
            "--with",
            f"opportunities={crm / 'Opportunity.csv'}",
            "--exported-at",
            "2024-12-31",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "exported 2024-12-31" in res.output
    bad = runner.invoke(main, ["summary", str(crm / "OpportunityHistory.csv"), "--with", "x=y"])
    assert bad.exit_code == 2 and "NAME=FILE" in bad.output


# ---------------------------------------------------------------------------- forecast


def test_forecast_prints_and_writes_a_formula_safe_table(runner, tmp_path):
    rows = ["deal_id,stage,timestamp,amount,name"]
    for i in range(40):  # closed deals the model learns from
        end = "Closed Won" if i % 3 == 0 else "Closed Lost"
        rows += [
            f"C{i},Lead,2024-01-{1 + i % 28:02d},1000,Deal {i}",
            f"C{i},{end},2024-02-{1 + i % 28:02d},1000,Deal {i}",
        ]
    rows += [
        'O1,Lead,2024-03-01,5000,"=HYPERLINK(""http://evil.example"",""x"")"',
        "O2,Lead,2024-03-02,7000,@SUM(A1)",
    ]
    export = _write(tmp_path, "export.csv", "\n".join(rows) + "\n")
    out = tmp_path / "forecast.csv"
    res = runner.invoke(
        main,
        [
            "forecast",
            str(export),
            "--horizon",
            "60D",
            "--n-sims",
            "500",
            "--exported-at",
            "2024-03-10",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Bookings forecast: 2024-03-10 + 60 days" in res.output
    assert "Weighted pipeline" in res.output
    table = pd.read_csv(out, dtype=str)
    assert set(table["deal_id"]) == {"O1", "O2"}
    names = dict(zip(table["deal_id"], table["deal_name"]))
    assert names["O1"].startswith("'=HYPERLINK")
    assert names["O2"] == "'@SUM(A1)"
    probs = table["p_won"].astype(float)
    assert probs.between(0, 1).all()


def test_forecast_of_the_sample_is_reproducible(runner, tmp_path):
    args = ["forecast", "--sample", "--n-sims", "1000", "--seed", "3"]
    a = runner.invoke(main, [*args, "--out", str(tmp_path / "a.csv")])
    b = runner.invoke(main, [*args, "--out", str(tmp_path / "b.xlsx")])
    assert a.exit_code == 0 and b.exit_code == 0
    assert a.output.splitlines()[:5] == b.output.splitlines()[:5]
    xa = pd.read_csv(tmp_path / "a.csv")
    xb = pd.read_excel(tmp_path / "b.xlsx")
    assert xa["expected_amount"].round(6).tolist() == xb["expected_amount"].round(6).tolist()


def test_forecast_bad_horizon_and_deal_level_data_exit_2(runner, tmp_path):
    res = runner.invoke(main, ["forecast", "--sample", "--horizon", "soon"])
    assert res.exit_code == 2 and "error:" in res.output
    deals = _write(
        tmp_path,
        "deals.csv",
        "deal_id,deal_stage,created_at,close_date,close_value\n"
        "1,Won,2024-01-01,2024-02-01,100\n2,Engaging,2024-01-05,,\n",
    )
    res = runner.invoke(main, ["forecast", str(deals), "--source", "deals"])
    assert res.exit_code == 2
    assert "stage history" in res.output


def test_report_n_sims_is_passed_on(runner, tmp_path):
    res = runner.invoke(
        main,
        [
            "report",
            "--sample",
            "--out",
            str(tmp_path),
            "--format",
            "html",
            "--n-sims",
            "500",
            "--generated-at",
            "2025-01-06T07:00:00Z",
        ],
    )
    assert res.exit_code == 0, res.output
    fc = fs.forecast_bookings(fs.load_sample(), horizon="90D", n_sims=500, seed=0)
    html = next(tmp_path.glob("*.html")).read_text(encoding="utf-8")
    from funnelstats.report._style import fmt_money

    assert f"80% range {fmt_money(fc.quantile(0.1))}" in html
    bad = runner.invoke(main, ["report", "--sample", "--out", str(tmp_path), "--n-sims", "0"])
    assert bad.exit_code == 2
