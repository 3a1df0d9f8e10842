"""The report: its numbers against independent computations, reproducibility, escaping,
self-containment and safe writing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import funnelstats as fs
from funnelstats.datasets import sample_path
from funnelstats.report import report_filename
from funnelstats.report._style import fmt_count, fmt_money

DATA = Path(__file__).parent / "data"
GEN_A = pd.Timestamp("2025-01-06 07:00:00", tz="UTC")
GEN_B = pd.Timestamp("2025-01-13 07:00:00", tz="UTC")


@pytest.fixture(scope="module")
def rep(sample) -> fs.report.Report:
    return fs.make_report(sample, by="Segment", generated_at=GEN_A)


@pytest.fixture(scope="module")
def opportunities() -> pd.DataFrame:
    """The sample's Opportunity.csv read with plain pandas: the independent reference."""
    df = pd.read_csv(sample_path("opportunities"), dtype={"Id": str})
    df["CreatedDate"] = pd.to_datetime(df["CreatedDate"], utc=True)
    return df


# ------------------------------------------------------------------------ the numbers


def test_headline_numbers_match_the_opportunity_export(rep, opportunities):
    opp = opportunities
    won = opp[opp["IsWon"]]
    is_open = ~opp["IsClosed"]
    kpis = {k.label: k for k in rep.section("overview").kpis}
    assert kpis["Deals"].value == fmt_count(len(opp))
    assert kpis["Won"].value == fmt_money(won["Amount"].sum())
    assert kpis["Won"].detail.startswith(fmt_count(len(won)))
    assert kpis["Open pipeline"].value == fmt_money(opp.loc[is_open, "Amount"].sum())
    assert kpis["Open pipeline"].detail.startswith(fmt_count(int(is_open.sum())))
    n_lost = int((opp["IsClosed"] & ~opp["IsWon"]).sum())
    assert f"{fmt_count(n_lost)} lost" in rep.section("overview").lead
    fc = fs.forecast_bookings(fs.load_sample(), horizon="90D", n_sims=10_000, seed=0)
    assert kpis["Expected bookings, next 90 days"].value == fmt_money(fc.expected)


def test_monthly_chart_bars_are_the_deals_created_each_month(rep, opportunities):
    from matplotlib.figure import Figure

    fig = Figure()
    rep.section("overview").chart.draw(fig)
    (ax,) = fig.axes
    month = opportunities["CreatedDate"].dt.tz_localize(None).dt.to_period("M")
    outcome = np.where(
        opportunities["IsWon"], "won", np.where(opportunities["IsClosed"], "lost", "open")
    )
    expected = pd.crosstab(month, outcome)
    drawn = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    assert drawn["won"] == expected["won"].tolist()
    assert drawn["lost"] == expected["lost"].tolist()
    assert drawn["still open"] == expected["open"].tolist()


def test_by_group_table_matches_pandas(rep, opportunities):
    (table,) = rep.section("overview").tables
    got = table.frame.set_index("group")
    opp = opportunities
    exp = opp.groupby("Segment").agg(deals=("Id", "size"), won=("IsWon", "sum"))
    assert got.loc[exp.index, "deals"].tolist() == exp["deals"].tolist()
    assert got.loc[exp.index, "won"].tolist() == exp["won"].tolist()
    won_amount = opp[opp["IsWon"]].groupby("Segment")["Amount"].sum()
    np.testing.assert_allclose(got.loc[won_amount.index, "won_amount"], won_amount)


def test_data_quality_accounts_for_every_row(rep, sample):
    r = sample.report
    dq = rep.section("data-quality")
    assert f"All {r.rows_read:,} rows" in dq.lead
    assert f"{r.rows_quarantined:,} set aside" in dq.lead
    findings = dq.tables[0]
    assert [int(row[1].replace(",", "")) for row in findings.rows] == r.findings["rows"].tolist()
    set_aside = dq.tables[1]
    assert set_aside.title == "Rows set aside"
    assert f"{len(r.quarantined) - len(set_aside.rows)} more rows" in set_aside.note
    # reports travel: no folder of this machine appears in the notes
    folder = str(sample_path().parent)
    assert any("Opportunity.csv" in n for n in dq.notes)
    assert not any(folder in n for n in dq.notes)


def test_open_pipeline_on_the_hand_example(hand10):
    """Open deals on 10 Feb 2024, worked out by hand from tests/data/hand10.csv."""
    rep = fs.make_report(hand10, generated_at=GEN_A)
    section = rep.section("open-pipeline")
    frame = section.tables[0].frame
    # D06 Proposal since 22 Jan (19 days, created 6 Jan: 35 days), D08 Qualified since 28 Jan,
    # D03 Negotiation since 18 Jan, D04 Lead since 4 Jan with no amount (last)
    assert frame["deal_id"].tolist() == ["D06", "D08", "D03", "D04"]
    assert frame["stage"].astype(str).tolist() == ["Proposal", "Qualified", "Negotiation", "Lead"]
    np.testing.assert_allclose(frame["age_in_stage_days"], [19, 13, 23, 37])
    np.testing.assert_allclose(frame["age_days"], [35, 33, 38, 37])
    assert section.lead.startswith("4 deals worth 16k were open on 10 Feb 2024")
    # the chart draws one bar per open stage with the number of open deals in it
    from matplotlib.figure import Figure

    fig = Figure()
    section.chart.draw(fig)
    counts = [p.get_height() for p in fig.axes[0].containers[0]]
    assert counts == [1, 1, 1, 1]  # Lead D04, Qualified D08, Proposal D06, Negotiation D03
    amounts = [p.get_height() for p in fig.axes[1].containers[0]]
    assert amounts == [0, 4000, 9500, 2500]


def test_pipeline_flow_balances(rep, sample):
    section = rep.section("pipeline-flow")
    f = section.tables[0].frame.set_index("component")
    change = f.loc[f["role"] == "change", ["count", "amount"]].sum()
    assert f.loc["open_start", "count"] + change["count"] == f.loc["open_end", "count"]
    np.testing.assert_allclose(
        f.loc["open_start", "amount"] + change["amount"], f.loc["open_end", "amount"]
    )
    # the pipeline at the end of the flow is the open pipeline of the report
    open_deals = rep.section("open-pipeline").tables[0].frame
    assert f.loc["open_end", "count"] == len(open_deals)
    from matplotlib.figure import Figure

    fig = Figure()
    section.chart.draw(fig)
    drawn = len(fig.axes[0].patches)
    shown = (f["role"] == "level") | ((f["role"] == "change") & (f["amount"] != 0))
    assert drawn == int(shown.sum())


def test_report_as_of_never_peeks_past_its_date(sample):
    """A report as of c is the same when every row after c is deleted from the input."""
    cut = "2024-09-30"
    full = fs.make_report(sample, as_of=cut)
    trimmed = fs.make_report(sample.as_of(cut))

    def content(r):
        return [
            (s.title, s.lead, s.kpis, s.paragraphs, [t.rows for t in s.tables]) for s in r.sections
        ]

    assert content(full) == content(trimmed)


def test_backtest_cutoffs_leave_a_full_horizon(rep):
    from funnelstats.report._sections import Context
    from funnelstats.report._sections_forecast import backtest_cutoffs

    ctx = Context(data=fs.load_sample(), as_of=rep.header.as_of, by=None, seed=0, horizon="90D")
    cuts = backtest_cutoffs(ctx)
    assert len(cuts) == 6
    assert all(c + pd.Timedelta(days=90) <= rep.header.as_of for c in cuts)
    table = rep.section("bookings-forecast").tables[0]
    assert table.title == "Backtest at 6 past month ends"


def test_large_data_get_a_lighter_backtest_that_the_report_states(sample, monkeypatch):
    """Past the size threshold the backtest replays fewer month ends with fewer simulations
    and refits, and the section says so; the headline forecast keeps its settings."""
    from funnelstats.report import _sections_forecast as sf
    from funnelstats.report import build_sections
    from funnelstats.report._sections import Context

    calls = []
    real = fs.backtest

    def spy(data, **kw):
        calls.append(kw)
        return real(data, **kw)

    monkeypatch.setattr(sf, "LARGE_DATA_DEALS", 1_000)
    monkeypatch.setattr(fs.forecast, "backtest", spy)
    ctx = Context(data=sample, as_of=sample.exported_at, by=None, seed=0, horizon="90D")
    (section,), _ = build_sections(ctx, only=["bookings forecast"])
    (kw,) = calls
    assert (len(kw["cutoffs"]), kw["n_sims"], kw["n_boot"]) == sf.LARGE_BACKTEST
    assert section.tables[0].title == "Backtest at 3 past month ends"
    (note,) = [n for n in section.notes if "backtest is lighter" in n]
    assert "3,000 deals" in note and "3 past month ends (not 6)" in note
    assert len(ctx.bookings.simulations) == 10_000  # the headline forecast: full settings
    assert any("20 bootstrap refits" in n for n in ctx.bookings.notes)


def test_deal_level_export_leaves_out_what_needs_history():
    maven = fs.load_maven_crm()
    rep = fs.make_report(maven)
    assert rep.titles == ("At a glance", "Data quality")
    assert set(rep.left_out) >= {"bookings forecast", "open pipeline", "pipeline flow"}
    assert any("stage history" in n for n in rep.sections[0].notes)
    assert "have no amount recorded" in " ".join(rep.sections[0].paragraphs)


def test_as_of_cuts_the_data(sample, opportunities):
    rep = fs.make_report(sample, as_of="2024-06-30", generated_at=GEN_A)
    assert rep.header.as_of == pd.Timestamp("2024-06-30", tz="UTC")
    assert rep.filename("html") == "funnelstats-report-2024-06-30.html"
    created = opportunities["CreatedDate"] <= pd.Timestamp("2024-06-30", tz="UTC")
    kpis = {k.label: k.value for k in rep.section("overview").kpis}
    assert kpis["Deals"] == fmt_count(int(created.sum()))
    with pytest.raises(ValueError, match="after the export date"):
        fs.make_report(sample, as_of="2025-06-30")


def test_unknown_by_names_the_attributes(sample):
    with pytest.raises(fs.FunnelDataError, match="Segment"):
        fs.make_report(sample, by="Region")


def test_bad_horizon_is_refused(sample):
    with pytest.raises(ValueError, match="horizon"):
        fs.make_report(sample, horizon="soon")


# ------------------------------------------------------------------- reproducibility


def test_same_input_and_seed_give_the_same_report(sample, rep):
    """Only the generation time differs between two runs; the figures are the same bytes."""
    import dataclasses

    again = fs.make_report(sample, by="Segment", generated_at=GEN_B)
    a, b = rep.html(), again.html()
    assert a != b
    assert a.replace("2025-01-06 07:00:00 UTC", "T") == b.replace("2025-01-13 07:00:00 UTC", "T")
    # the PDF of the second run, given the first run's header, is the first run's PDF
    assert rep.pdf() == dataclasses.replace(again, header=rep.header).pdf()


def test_generation_time_is_never_read_from_the_clock(hand10):
    rep = fs.make_report(hand10)
    assert rep.header.generated_at is None
    assert "Generated</dt><dd>not recorded" in rep.html()


def test_header_names_inputs_with_checksums(hand10):
    import hashlib

    files = [sample_path("history"), sample_path("opportunities")]
    rep = fs.make_report(hand10, inputs=files, generated_at=GEN_A)
    html = rep.html()
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        assert digest in html
        assert f.name in html
    assert str(files[0].parent) not in html  # file names only, no folders
    assert f"funnelstats</dt><dd>{fs.__version__}" in html
    assert "2025-01-06 07:00:00 UTC" in html
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        fs.make_report(hand10, inputs=["nope.csv"])


def test_in_memory_data_gets_a_checksum_of_its_history(hand10):
    ev = hand10.events
    data = fs.FunnelData.from_events(ev, pipeline=hand10.pipeline, exported_at="2024-02-10")
    (f,) = fs.make_report(data).header.inputs
    assert "in memory" in f.name and len(f.sha256) == 64


# ------------------------------------------------------------ escaping, self-containment

XSS = "<script>alert(1)</script>"


def _xss_data() -> fs.FunnelData:
    ev = pd.DataFrame(
        {
            "deal_id": [XSS, XSS, "D2", "D2"],
            "stage": ["Lead", "<b>Demo</b>", "Lead", "Closed Won"],
            "entered_at": ["2024-01-01", "2024-01-05", "2024-01-02", "2024-01-09"],
            "amount": [5000.0, 5000.0, 100.0, 100.0],
            "owner": ['"><img src=x onerror=alert(3)>', "a", "b & c", "b & c"],
        }
    )
    pipe = fs.Pipeline(["Lead", "<b>Demo</b>"], won=["Closed Won"], lost=["Closed Lost"])
    return fs.FunnelData.from_events(ev, pipeline=pipe, exported_at="2024-02-01")


def test_names_from_the_data_are_escaped():
    html = fs.make_report(_xss_data(), by="owner").html()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;Demo&lt;/b&gt;" in html and "<b>Demo" not in html
    assert "<img src=x" not in html
    assert "b &amp; c" in html


def test_html_is_self_contained(rep):
    html = rep.html()
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:|//|ftp:)""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:|//)", html, re.I)
    assert "@import" not in html and "<script" not in html and "<link" not in html
    assert "default-src 'none'" in html  # the CSP forbids fetches even if something slipped
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_report_does_not_touch_pyplot(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys, funnelstats as fs
        fs.build_report(fs.load_sample(), out_dir={str(tmp_path)!r})
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


# ---------------------------------------------------------------------- safe writing


def test_files_are_named_by_the_as_of_date(hand10, tmp_path):
    paths = fs.build_report(hand10, out_dir=tmp_path / "new", as_of="2024-01-31")
    assert sorted(p.name for p in paths.values()) == [
        "funnelstats-report-2024-01-31.html",
        "funnelstats-report-2024-01-31.pdf",
    ]
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(
        p.name for p in paths.values()
    )  # no temporary file left behind
    assert report_filename("2024-09-30T23:00:00Z", "pdf") == "funnelstats-report-2024-09-30.pdf"
    with pytest.raises(ValueError, match="format"):
        fs.build_report(hand10, out_dir=tmp_path, formats=["docx"])


def test_a_failure_while_writing_keeps_the_previous_report(hand10, tmp_path, monkeypatch):
    from funnelstats import _safe_io

    old = fs.build_report(hand10, out_dir=tmp_path, formats=["html"], generated_at=GEN_A)
    before = old["html"].read_bytes()

    def broken(fh, data, chunk=1 << 20):
        fh.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_safe_io, "_write_all", broken)
    with pytest.raises(OSError, match="No space"):
        fs.build_report(hand10, out_dir=tmp_path, formats=["html"], generated_at=GEN_B)
    assert old["html"].read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [old["html"].name]  # temp file removed


def test_killed_while_writing_keeps_the_previous_report(tmp_path):
    """A process killed (SIGKILL) in the middle of writing leaves the old report whole."""
    target = tmp_path / report_filename("2024-12-31", "html")
    fs.build_report(fs.load_sample(), out_dir=tmp_path, formats=["html"], generated_at=GEN_A)
    before = target.read_bytes()
    code = textwrap.dedent(
        f"""
        import sys, time
        import funnelstats as fs
        from funnelstats import _safe_io

        def slow(fh, data, chunk=1 << 20):
            fh.write(data[: len(data) // 2])
            fh.flush()
            print("half written", flush=True)
            time.sleep(120)

        _safe_io._write_all = slow
        fs.build_report(fs.load_sample(), out_dir={str(tmp_path)!r}, formats=["html"],
                        generated_at="2025-01-13")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half written"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == before
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{target.name}.")
    assert 0 < leftovers[0].stat().st_size < len(before)  # the half-written temporary file


def test_time_in_stage_and_outcomes_sections(rep, sample):
    tis = fs.time_in_stage(sample)
    section = rep.section("time-in-stage")
    table = section.tables[0]
    assert [r[0] for r in table.rows] == list(sample.pipeline.stages)
    medians = [float(r[3].split(" ")[0]) for r in table.rows]
    np.testing.assert_allclose(medians, tis.frame["median"].round(0))
    assert section.tables[1].title == "Median days in stage by Segment"
    outcomes = rep.section("stage-outcomes").tables[0]
    for row in outcomes.rows:  # moved on + lost + moved back + still in stage = 100%
        shares = [float(c.rstrip("%")) for c in row[1:5]]
        assert abs(sum(shares) - 100) <= 2  # each share rounded to a whole percent
    from matplotlib.figure import Figure

    fig = Figure()
    section.chart.draw(fig)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == list(sample.pipeline.stages)


def test_headline_win_rate_is_censoring_aware(rep, sample):
    kpis = {k.label: k.value for k in rep.section("overview").kpis}
    won = fs.win_rate(sample, seed=0).frame["win_rate"].iloc[0]
    assert kpis["Win rate"] == f"{won * 100:.0f}%"
    naive = (sample.deals["outcome"] == "won").mean()  # open deals counted as not won
    assert won > naive
    # the direct estimate (time to won, lost competing) agrees within a point
    direct = fs.cycle_time(sample).frame.set_index("outcome").loc["won", "probability"]
    assert abs(direct - won) < 0.01


def _small_cases():
    from funnelstats.datasets import simulate

    pipe = fs.Pipeline(["Lead"], won=["Closed Won"], lost=["Closed Lost"])
    one_won = pd.DataFrame(
        {
            "deal_id": ["a", "a", "b"],
            "stage": ["Lead", "Closed Won", "Lead"],
            "entered_at": ["2024-01-01", "2024-01-05", "2024-01-02"],
        }
    )
    all_open = one_won.iloc[[0, 2]]
    born_closed = pd.DataFrame(
        {
            "deal_id": ["a", "b", "c", "d"],
            "stage": ["Closed Won", "Closed Lost", "Closed Won", "Closed Lost"],
            "entered_at": ["2024-01-05", "2024-01-06", "2024-02-01", "2024-03-01"],
        }
    )
    return {
        "every deal created won or lost": fs.FunnelData.from_events(
            born_closed, pipeline=pipe, exported_at="2024-03-31"
        ),
        "one won, one open": fs.FunnelData.from_events(
            one_won, pipeline=pipe, exported_at="2024-02-01"
        ),
        "nothing closed yet": fs.FunnelData.from_events(
            all_open, pipeline=pipe, exported_at="2024-02-01"
        ),
        "12 simulated deals": simulate(12, seed=1, days=60).funnel(),
        "deal-level export": fs.load_maven_crm().select(
            fs.load_maven_crm().deals["deal_id"].iloc[:300]
        ),
    }


@pytest.mark.parametrize("name", list(_small_cases()))
def test_small_and_odd_data_give_a_report(name):
    """A scheduled job on a young or tiny export still gets a report, never a crash."""
    data = _small_cases()[name]
    rep = fs.make_report(data, generated_at=GEN_A)
    assert rep.titles[0] == "At a glance" and rep.titles[-1] == "Data quality"
    assert all(s.lead for s in rep.sections)
    html = rep.html()
    assert html.count("<h2>") == len(rep.sections)
    assert rep.pdf().startswith(b"%PDF")
    for label in rep.left_out:
        assert any(label in n for n in rep.sections[0].notes)
    if name == "every deal created won or lost":  # nothing ever sat in an open stage
        assert {"funnel and conversion", "stage outcomes", "time in stage"} <= set(rep.left_out)
        assert any("created already won or lost" in n for n in rep.sections[0].notes)


def test_funnel_section(rep, sample):
    section = rep.section("funnel")
    table = section.tables[0]
    conv = fs.conversion(sample, seed=0).frame
    assert [r[0] for r in table.rows] == [str(s) for s in conv["stage"]]
    for row, rec in zip(table.rows, conv.to_dict("records")):
        advanced, lost = (int(c.replace(",", "")) for c in row[2:4])
        assert (advanced, lost) == (rec["advanced"], rec["lost"])
        # the CRM formula column is won / (won + lost) of closed stays, from the counts
        assert row[6] == f"{advanced / (advanced + lost) * 100:.0f}%"
        assert row[5].startswith(f"{rec['conversion'] * 100:.0f}%")
    wr = fs.win_rate(sample, seed=0).frame.iloc[0]
    assert section.lead.startswith(f"{wr['win_rate'] * 100:.0f}% of the deals")
    kpis = {k.label: k.value for k in rep.section("overview").kpis}
    assert kpis["Win rate"] == f"{wr['win_rate'] * 100:.0f}%"
    by = section.tables[1]
    assert by.title == "Conversion by Segment"
    assert by.columns[1:4] == ("SMB", "Mid-Market", "Enterprise") or set(by.columns[1:4]) == {
        "SMB",
        "Mid-Market",
        "Enterprise",
    }
    from matplotlib.figure import Figure

    fig = Figure()
    section.chart.draw(fig)
    widths = list(fig.axes[0].containers[0].datavalues)
    np.testing.assert_allclose(widths, np.r_[1.0, np.cumprod(conv["conversion"])])


def test_the_sections_the_report_promises(rep):
    """Every section a scheduled report must carry, in this order."""
    assert rep.titles == (
        "At a glance",
        "Bookings forecast",
        "Funnel and conversion",
        "Open pipeline",
        "Pipeline flow",
        "Win-rate trend and forecast",
        "Time in stage",
        "How stays in each stage end",
        "Sales velocity",
        "Data quality",
    )


def test_win_rate_trend_section_shows_the_cohort_win_rates(rep, sample):
    """The table's rows are velocity()'s cohorts: counts, final rates only for mature months,
    the share won so far for the others; the lead quotes the last mature month and the
    forecast of forecast_win_rate."""
    section = rep.section("win-rate-trend")
    v = fs.velocity(sample, freq="M").frame.tail(8)
    table = section.tables[0]
    assert [r[0] for r in table.rows] == [p.strftime("%b %Y") for p in v["period"]]
    for row, rec in zip(table.rows, v.to_dict("records")):
        assert row[1] == f"{rec['n_created']:,}"
        assert row[3] == f"{rec['win_rate_to_date'] * 100:.0f}%"
        if rec["mature"]:
            assert row[2].startswith(f"{rec['win_rate'] * 100:.0f}%") and row[4] == "final"
        else:
            assert row[2] == "–" and row[4].startswith("still closing")
    last = v[v["mature"]].iloc[-1]
    assert last["period"].strftime("%B %Y") in section.lead
    fc = fs.forecast_win_rate(sample, freq="M", periods=3, alpha=0.2).frame
    nxt = fc[fc["kind"] == "forecast"].iloc[0]
    assert f"about {nxt['forecast'] * 100:.0f}%" in section.lead


def test_velocity_section_is_the_product_of_its_parts(rep, sample):
    """Each row: open deals × average won amount × win rate ÷ days to win, as velocity()."""
    from funnelstats.report._style import fmt_money

    section = rep.section("velocity")
    v = fs.velocity(sample, freq="M").frame
    v = v.set_index(v["period"].dt.strftime("%b %Y"))
    for row in section.tables[0].rows:
        rec = v.loc[row[0]]
        assert row[1] == f"{rec['open_deals']:,}"
        assert row[3] == f"{rec['win_rate'] * 100:.0f}%"
        assert row[4] == f"{rec['cycle_days']:.0f}"
        expected = rec["open_deals"] * rec["avg_won_amount"] * rec["win_rate"] / rec["cycle_days"]
        assert rec["velocity"] == pytest.approx(expected)
        assert row[5] == fmt_money(expected) and row[2] == fmt_money(rec["avg_won_amount"])


def test_open_deals_table_explains_expected_against_chance_times_amount(rep, sample):
    """Expected uses the value-weighted chance; where it differs from amount × the chance
    shown, the section says why."""
    section = rep.section("bookings-forecast")
    deals = fs.forecast_bookings(sample, seed=0).deals.head(8)
    differs = (
        (deals["expected_amount"] - deals["amount"] * deals["p_won"]).abs()
        > 0.005 * deals["amount"] * deals["p_won"]
    ).any()
    assert differs == any("weighted by deal value" in n for n in section.notes)


@pytest.mark.parametrize("scale", [1.0, 0.05])
def test_win_rate_trend_axis_has_distinct_labels(rep, scale):
    """At least three different percent labels, also when the band is narrow (a large
    export): the step shrinks and a decimal appears instead of one lone label."""
    import dataclasses

    import matplotlib.pyplot as plt

    from funnelstats.report import _sections_forecast as sf

    assert rep.section("win-rate-trend").chart is not None
    fc = fs.forecast_win_rate(fs.load_sample(), freq="M", periods=3, alpha=0.2)
    f = fc.frame.copy()
    cols = ["observed", "forecast", "ci_lower", "ci_upper"]
    f[cols] = 0.18 + (f[cols] - 0.18) * scale  # the same curves squeezed around 18%
    fig = plt.figure()
    try:
        sf._draw_series(fig, dataclasses.replace(fc, frame=f), pct=True)
        ax = fig.axes[0]
        fig.canvas.draw()
        lo, hi = ax.get_ylim()
        labels = {t.get_text() for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi}
        assert len(labels) >= 3, labels
    finally:
        plt.close(fig)
