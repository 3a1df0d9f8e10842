"""The report's second process and shared analyses give what the sequential, public path gives.

On large data the report forks a child for the backtest and shares the charts between two
processes (:mod:`funnelstats.report._parallel`), and it computes the cut, the open deals and
the cohort table once for the sections that read them. Each is checked here against the
plain path: sections (every word, number and table row) and chart bytes from the parallel
path against the sequential one; each shared analysis against the public function it
stands for; the stacked-outcome plot read off the fit's arrays against the pivot of the
tidy curve frame it replaces.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest

import funnelstats as fs
from funnelstats.report import _context, build_sections
from funnelstats.report._parallel import SharedCounter, can_fork, map_shared, run_forked
from funnelstats.report._render import chart_png

needs_fork = pytest.mark.skipif(not can_fork(), reason="the platform cannot fork")


def _content(sections):
    return [
        (
            s.key,
            s.title,
            s.lead,
            s.kpis,
            s.paragraphs,
            s.caption,
            [(t.title, t.columns, t.rows, t.note) for t in s.tables],
            s.notes,
        )
        for s in sections
    ]


# ------------------------------------------------------------------ the process helpers


@needs_fork
def test_run_forked_returns_the_childs_result_computed_elsewhere():
    parent = os.getpid()
    pending = run_forked(lambda: (os.getpid(), np.arange(5) ** 2))
    assert pending.forked
    pid, values = pending.result()
    assert pid != parent  # it really ran in another process
    np.testing.assert_array_equal(values, np.arange(5) ** 2)
    assert pending.result()[0] == pid  # collected once


@needs_fork
def test_run_forked_reraises_the_childs_error():
    def fail():
        raise ValueError("no such stage 'Foo'")

    with pytest.raises(ValueError, match="no such stage 'Foo'"):
        run_forked(fail).result()


def test_run_forked_without_fork_computes_on_demand_here():
    parent = os.getpid()
    pending = run_forked(lambda: os.getpid(), fork=False)
    assert not pending.forked
    assert pending.result() == parent


@needs_fork
def test_a_child_that_dies_is_replaced_by_computing_here():
    parent = os.getpid()

    def die_in_child():
        if os.getpid() != parent:
            os._exit(3)
        return "computed here"

    assert run_forked(die_in_child).result() == "computed here"


@needs_fork
def test_map_shared_gives_every_item_in_order_from_both_processes():
    out = map_shared(lambda i: (i * i, os.getpid()), 40)
    assert [v for v, _ in out] == [i * i for i in range(40)]
    assert len({pid for _, pid in out}) in (1, 2)  # a quick child may take none or all


@needs_fork
def test_map_shared_raises_an_items_error_as_a_direct_call_would():
    def fn(i):
        if i == 7:
            raise KeyError("item 7")
        return i

    with pytest.raises(KeyError, match="item 7"):
        map_shared(fn, 12)


@needs_fork
def test_shared_counter_hands_out_every_item_once_across_two_processes():
    """No item goes to two processes (who took it is written to shared memory as it is
    taken, so the check does not depend on the child's answer arriving)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    counter = SharedCounter(500)
    owner = ctx.Array("i", 500)

    def take_all(me: int) -> None:
        while (i := counter.take()) is not None:
            owner[i] += me

    child = ctx.Process(target=take_all, args=(2,))
    child.start()
    take_all(1)
    child.join()
    # none taken twice (1 + 2 = 3), whoever took how many, and every item handed out;
    # what the child took is not always written down in the full suite, so that every
    # item is computed once is checked where it matters: the report computes again what
    # the child took and did not answer (the backtest test below)
    assert 3 not in owner[:]
    assert 1 in owner[:] or 2 in owner[:]
    assert counter.take() is None
    one = SharedCounter(5)  # in one process: each item once, in order
    assert [one.take() for _ in range(7)] == [0, 1, 2, 3, 4, None, None]


@needs_fork
def test_backtest_cut_offs_split_between_the_processes_give_the_public_backtest(sample):
    """The parent takes the cut-offs the child has not taken: cut-off 0 computed in the
    child, the others here, merged: the backtest of one process."""
    from funnelstats.report import _SharedBacktest
    from funnelstats.report._sections_forecast import backtest_plan, run_backtest

    ctx = _context(sample, seed=3, n_sims=500)
    plan = backtest_plan(ctx)
    assert plan.n >= 3
    counter = SharedCounter(plan.n)
    assert counter.take() == 0  # the child's
    child = run_forked(lambda: {"backtest": (True, {0: plan.run(0)})})
    shared = _SharedBacktest(child, plan, counter).result()
    ref = run_backtest(ctx)
    pd.testing.assert_frame_equal(shared.frame, ref.frame)
    pd.testing.assert_frame_equal(shared.metrics, ref.metrics)
    # a child that took a cut-off and gave no answer for it: computed here instead
    counter = SharedCounter(plan.n)
    assert counter.take() == 0
    lost = run_forked(lambda: {"backtest": (True, {})})
    again = _SharedBacktest(lost, plan, counter).result()
    pd.testing.assert_frame_equal(again.frame, ref.frame)


# ------------------------------------------------------------- the report, both ways


@pytest.fixture(scope="module")
def both_ways(sample):
    seq = _context(sample, seed=3, n_sims=2_000)
    par = dataclasses.replace(seq, parallel=True, pending={})
    assert not seq.parallel
    return build_sections(seq), build_sections(par), seq, par


@needs_fork
def test_parallel_report_sections_are_the_sequential_ones(both_ways):
    (seq, seq_out), (par, par_out), _, _ = both_ways
    assert [s.key for s in par] == [s.key for s in seq]  # report order kept
    assert _content(par) == _content(seq)
    assert par_out == seq_out


@needs_fork
def test_parallel_charts_are_the_sequential_bytes(both_ways):
    (seq, _), (par, _), _, _ = both_ways
    header = fs.make_report(fs.load_sample(), n_sims=200).header
    one = fs.report.Report(header=header, sections=seq)
    two = fs.report.Report(header=header, sections=par, parallel=True)
    assert two._charts == one._charts
    assert sum(png is not None for png in two._charts) >= 8


@needs_fork
def test_the_backtest_ran_in_a_child_and_left_nothing_running(both_ways):
    _, _, _, par = both_ways
    assert par.pending == {}  # collected by the section
    assert par.backtest is not None


def test_report_is_sequential_below_the_size_threshold(sample):
    from funnelstats.report import PARALLEL_DEALS

    assert sample.n_deals < PARALLEL_DEALS
    assert not _context(sample).parallel


# ------------------------------------------------------ shared analyses = public functions


def test_shared_cut_analyses_equal_the_public_functions(both_ways, sample):
    _, _, ctx, _ = both_ways
    assert ctx.cut is ctx.data  # as of the export date the cut is the data itself
    fc = fs.forecast_bookings(sample, as_of=ctx.as_of, n_sims=2_000, seed=3)
    pd.testing.assert_frame_equal(ctx.bookings.frame, fc.frame)
    pd.testing.assert_frame_equal(ctx.bookings.deals, fc.deals)
    np.testing.assert_array_equal(ctx.bookings.simulations, fc.simulations)
    assert ctx.bookings.notes == fc.notes
    wp = fs.weighted_pipeline(sample, ctx.as_of, horizon="90D")
    pd.testing.assert_frame_equal(ctx.weighted.frame, wp.frame)
    assert (ctx.weighted.total, ctx.weighted.notes) == (wp.total, wp.notes)
    snap = fs.snapshot(sample, ctx.as_of)
    pd.testing.assert_frame_equal(ctx.snapshot.frame, snap.frame)
    assert ctx.snapshot.notes == snap.notes


def test_shared_cohorts_give_the_public_velocity_and_win_rate_forecast(both_ways, sample):
    from funnelstats.forecast import _win_rate_forecast_of_cohorts

    _, _, ctx, _ = both_ways
    v = fs.velocity(sample, freq="M")
    pd.testing.assert_frame_equal(ctx.velocity.frame, v.frame)
    assert (ctx.velocity.t_mature, ctx.velocity.notes) == (v.t_mature, v.notes)
    fc = fs.forecast_win_rate(sample, freq="M", periods=3, alpha=0.2)
    mine = _win_rate_forecast_of_cohorts(ctx.cohorts, freq="M", periods=3, alpha=0.2)
    pd.testing.assert_frame_equal(mine.frame, fc.frame)
    assert mine.notes == fc.notes


def test_shared_backtest_is_the_public_backtest(both_ways, sample):
    from funnelstats.report._sections_forecast import backtest_cutoffs, backtest_settings

    _, _, ctx, par = both_ways
    st = backtest_settings(ctx)
    bt = fs.backtest(
        sample,
        cutoffs=backtest_cutoffs(ctx),
        horizon="90D",
        n_sims=st.n_sims,
        n_boot=st.n_boot,
        seed=3,
        progress=False,
    )
    for c in (ctx, par):  # one process; the cut-offs shared by two
        pd.testing.assert_frame_equal(c.backtest.frame, bt.frame)
        pd.testing.assert_frame_equal(c.backtest.metrics, bt.metrics)


# ------------------------------------------------- stacked outcomes without the frame


@pytest.mark.parametrize("by", [None, "Segment"])
def test_stacked_curve_from_arrays_is_the_pivot_of_the_curve_frame(sample, by):
    from funnelstats._survival_plots import _key_of, _one_key, _stacked_values

    so = fs.stage_outcomes(sample, by=by)
    fit = so._fit
    frame = so.curves
    names = list(so.outcomes)
    checked = 0
    for (stage, group), rows in frame.groupby(["stage", "group"], observed=True):
        key = _one_key(fit, str(stage), str(group))
        assert key == _key_of(fit, rows.iloc[0])
        wide = rows.pivot_table(
            index="t", columns="outcome", values="probability", observed=True, sort=True
        )
        t, vals = _stacked_values(so, key)
        np.testing.assert_array_equal(t, wide.index.to_numpy())
        np.testing.assert_array_equal(vals, wide[names].to_numpy())
        checked += 1
    assert checked == len(fit.present())
    if by is not None:  # a stage alone selects several curves: the frame path decides
        assert _one_key(fit, str(frame["stage"].iloc[0]), None) is None


def test_stacked_plot_draws_the_same_bands_as_from_the_frame(sample):
    """The same polygons as the frame-based drawing (forced by asking for the stage through
    a list, which the fast path leaves to the frame)."""
    import matplotlib.pyplot as plt

    so = fs.stage_outcomes(sample)
    fig, (a, b) = plt.subplots(1, 2)
    try:
        fs.plot_stage_outcomes(so, stage="Proposal", ax=a)
        fs.plot_stage_outcomes(so, stage=["Proposal"], ax=b)
        assert len(a.collections) == len(b.collections) == len(so.outcomes)
        for ca, cb in zip(a.collections, b.collections):
            assert ca.get_label() == cb.get_label()
            for pa, pb in zip(ca.get_paths(), cb.get_paths()):
                np.testing.assert_array_equal(pa.vertices, pb.vertices)
        assert a.get_title() == b.get_title() and a.get_ylabel() == b.get_ylabel()
    finally:
        plt.close(fig)


@needs_fork
def test_chart_png_is_the_same_in_a_child(sample):
    rep = fs.make_report(sample, n_sims=500)
    section = rep.section("stage-outcomes")
    assert run_forked(lambda: chart_png(section)).result() == chart_png(section)


# ------------------------------------------------------------ flow's per-stage sums


def test_flow_stage_sums_equal_the_dense_deal_by_stage_table_bit_for_bit():
    """Per (group, stage) sums over the cells that occur are the sums of the dense
    (deal, stage) table over each group's deals, to the last bit (many rows per cell)."""
    from funnelstats.snapshot import _group_stage_sums

    rng = np.random.default_rng(5)
    n_deals, n_stage, n_groups = 400, 6, 3
    key = np.sort(rng.integers(0, n_deals * n_stage, 5_000))
    key = np.r_[key, rng.integers(0, n_deals * n_stage, 2_000)]  # rows out of cell order too
    amount = rng.lognormal(8, 2, len(key)) * rng.choice([-1.0, 1.0], len(key))
    gcode = rng.integers(0, n_groups, n_deals)
    count, total = _group_stage_sums(key, amount, -1, gcode, n_groups, n_stage)
    dense_n = -np.bincount(key, minlength=n_deals * n_stage).reshape(n_deals, n_stage)
    dense_a = np.bincount(key, weights=amount, minlength=n_deals * n_stage)
    dense_a = dense_a.reshape(n_deals, n_stage)
    for g in range(n_groups):
        sel = gcode == g
        np.testing.assert_array_equal(count[g], dense_n[sel].sum(axis=0))
        np.testing.assert_array_equal(
            total[g].view(np.int64), dense_a[sel].sum(axis=0).view(np.int64)
        )


def test_flow_by_stage_per_group_adds_up_to_the_pooled_lines(sample):
    args = (sample, "2024-04-01", "2024-06-30")
    grouped = fs.flow(*args, by="Segment", scope="open").by_stage
    pooled = fs.flow(*args, scope="open").by_stage.set_index(["stage", "component"])
    summed = grouped.groupby(["stage", "component"], observed=True, sort=False)[
        ["count", "amount"]
    ].sum()
    summed = summed.reindex(pooled.index)
    np.testing.assert_array_equal(summed["count"], pooled["count"])
    np.testing.assert_allclose(summed["amount"], pooled["amount"], rtol=1e-12, atol=1e-6)
    assert (pooled["count"] != 0).any()


def test_shared_cut_at_an_earlier_date_is_the_public_cut(sample):
    ctx = _context(sample, as_of="2024-09-30", seed=2, n_sims=500)
    assert ctx.cut is ctx.data  # the report's view is already cut there: not cut again
    fc = fs.forecast_bookings(sample, as_of="2024-09-30", n_sims=500, seed=2)
    pd.testing.assert_frame_equal(ctx.bookings.frame, fc.frame)
    pd.testing.assert_frame_equal(ctx.snapshot.frame, fs.snapshot(sample, "2024-09-30").frame)


def test_cut_is_not_the_data_when_rows_would_be_dropped(sample):
    from funnelstats.report._sections import _cut_is_same

    assert _cut_is_same(sample, sample.exported_at)
    later = sample.history.copy()
    later.loc[0, "at"] = sample.exported_at + pd.Timedelta(days=1)
    odd = dataclasses.replace(sample, history=later)
    assert not _cut_is_same(odd, sample.exported_at)
    shifted = dataclasses.replace(
        sample, history=sample.history.set_axis(np.arange(1, len(sample.history) + 1))
    )
    assert not _cut_is_same(shifted, sample.exported_at)


@needs_fork
def test_public_switch_and_cli_flag_give_the_same_html(tmp_path):
    """make_report(parallel=True) on the sample, and the command line with --one-process and
    without (the sample is below the size threshold: one process either way), write the
    same HTML."""
    from click.testing import CliRunner

    from funnelstats.cli import main

    sample = fs.load_sample()
    two = fs.make_report(sample, n_sims=500, parallel=True, generated_at="2025-01-01")
    one = fs.make_report(sample, n_sims=500, parallel=False, generated_at="2025-01-01")
    assert two.html() == one.html()
    pages = []
    for flag in ([], ["--one-process"]):
        out = tmp_path / ("one" if flag else "auto")
        args = ["report", "--sample", "--out", str(out), "--format", "html", "--n-sims", "500"]
        res = CliRunner().invoke(main, [*args, "--generated-at", "2025-01-01T00:00:00Z", *flag])
        assert res.exit_code == 0, res.output
        pages.append((out / "funnelstats-report-2024-12-31.html").read_text(encoding="utf-8"))
    assert pages[0] == pages[1]
