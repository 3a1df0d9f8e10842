"""Property tests of the analyses over generated exports (hypothesis).

Every analysis must run on any export ingest accepts: random pipelines (one open stage or
five), skipped stages, moves back, deals won or lost and reopened, ties at one instant,
open deals, a single deal, deals without amounts. On such data each one returns finite
(or NaN) figures that keep their identities and bounds (tests/_analyses.py):

- conversion and win rate within [0, 1], inside their intervals, and
  ``entered = advanced + lost + skipped_out + open`` (also per group, adding up to the total);
- Kaplan–Meier survival curves non-increasing, quantiles ordered and infinite exactly
  where a curve never falls to their level;
- Aalen–Johansen outcome probabilities adding up to 1, cumulative incidences non-decreasing;
- the snapshot at any date lists the deals open at that date;
- the flow waterfall balances over any period, in total, per deal and per stage;
- forecast quantiles ordered, expected bookings at most the open amount plus new deals';
- the weighted pipeline is amount × probability.

The profile in tests/conftest.py fixes the number of examples (CI time stays bounded);
``HYPOTHESIS_PROFILE=thorough`` explores more.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from _analyses import (
    check_all,
    check_competing,
    check_flow,
    check_rate,
    check_survival,
    no_infinities,
    ordered,
    run_all,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import funnelstats as fs

BASE = pd.Timestamp("2024-01-01", tz="UTC")
STEPS = (0, 3600, 86_400, 5 * 86_400, 30 * 86_400)  # 0: a tie at one instant


@st.composite
def funnels(draw) -> fs.FunnelData:
    """A FunnelData from a random export of valid rows."""
    n_open = draw(st.integers(1, 5))
    stages = [f"S{i}" for i in range(n_open)]
    pipe = fs.Pipeline(stages, won=["Won"], lost=["Lost"])
    names = [*stages, "Won", "Lost"]
    rows = []
    for d in range(draw(st.integers(1, 10))):
        t = draw(st.integers(0, 120)) * 86_400 + draw(st.integers(0, 23)) * 3600
        segment = draw(st.sampled_from(["a", "b"]))
        amount = draw(st.sampled_from(["", "100", "2500.5", "40000"]))
        for _ in range(draw(st.integers(1, 7))):
            # mostly forward, one stage or a skip; sometimes back, closed, or reopened
            stage = draw(st.sampled_from(names))
            rows.append((f"D{d}", stage, BASE + pd.Timedelta(seconds=t), amount, segment))
            t += draw(st.sampled_from(STEPS))
            if draw(st.integers(0, 4)) == 0:
                amount = draw(st.sampled_from(["", "150", "3000"]))
    frame = pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp", "amount", "segment"])
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    last = pd.Timestamp(frame["timestamp"].max())
    exported_at = last + pd.Timedelta(days=draw(st.sampled_from([0, 1, 30])))
    return fs.read_events(frame, pipeline=pipe, exported_at=exported_at)


def moment(data: fs.FunnelData, q: float) -> pd.Timestamp:
    """A moment between the first row and the export date."""
    first = data.history["at"].min()
    return first + (data.exported_at - first) * q


@given(funnels())
def test_conversion_and_win_rate(data):
    for by in (None, "segment"):
        conv = fs.conversion(data, by=by)
        win = fs.win_rate(data, by=by)
        for name, res, col in (("conversion", conv, "conversion"), ("win_rate", win, "win_rate")):
            no_infinities(name, res.frame)
            check_rate(name, res.frame, col)
        f = conv.frame
        split = f["advanced"] + f["lost"] + f["skipped_out"] + f["open"]
        assert (f["entered"] == split).all()
        if by:
            total = fs.conversion(data).frame.set_index("stage")["entered"]
            per_stage = f.groupby("stage", observed=False)["entered"].sum()
            assert per_stage.reindex(total.index).fillna(0).astype(int).eq(total).all()
    for method in ("resolved", "entered"):
        check_rate(method, fs.conversion(data, method=method).frame, "conversion")


@given(funnels())
def test_time_in_stage(data):
    res = fs.time_in_stage(data)
    no_infinities("time_in_stage", res.frame)
    check_survival(res)


@given(funnels())
def test_stage_outcomes_and_cycle_time(data):
    for name, res in (
        ("stage_outcomes", fs.stage_outcomes(data)),
        ("cycle_time", fs.cycle_time(data)),
    ):
        no_infinities(name, res.frame)
        check_competing(name, res)


@given(funnels(), st.floats(0, 1))
def test_snapshot_lists_the_deals_open_then(data, q):
    t = moment(data, q)
    snap = fs.snapshot(data, t)
    no_infinities("snapshot", snap.frame)
    cut = data.as_of(t).deals
    assert sorted(snap.frame["deal_id"]) == sorted(cut.loc[cut["outcome"] == "open", "deal_id"])
    assert (snap.frame["age_in_stage_days"] <= snap.frame["age_days"] + 1e-9).all()
    assert (snap.frame["entered_stage_at"] <= t).all()


@given(funnels(), st.floats(0, 1), st.floats(0, 1))
def test_flow_balances(data, q1, q2):
    start, end = sorted([moment(data, q1), moment(data, q2)])
    if start == end:
        end = start + pd.Timedelta(hours=1)
        if end > data.exported_at:
            start, end = data.exported_at - pd.Timedelta(hours=1), data.exported_at
    for by in (None, "segment"):
        res = fs.flow(data, start, end, by=by, scope="open")
        no_infinities("flow", res.frame)
        if by is None:
            check_flow(res)
            # the balances are the open pipeline as a snapshot shows it
            t = res.frame.set_index("component")
            assert t.loc["open_end", "count"] == len(fs.snapshot(data, end).frame)
            assert t.loc["open_start", "count"] == len(fs.snapshot(data, start).frame)
        else:
            change = res.frame[res.frame["role"] == "change"].groupby("group")["count"].sum()
            lv = res.frame.pivot_table(
                index="group", columns="component", values="count", aggfunc="sum"
            )
            assert (lv["open_start"] + change.reindex(lv.index).fillna(0) == lv["open_end"]).all()


@given(funnels(), st.integers(0, 2**31 - 1))
def test_forecast_bookings(data, seed):
    res = fs.forecast_bookings(data, n_sims=50, seed=seed)
    f = res.frame.set_index("component")
    no_infinities("forecast_bookings", res.frame)
    ordered("forecast quantiles", f["p10"], f["p50"], f["p90"], tol=1e-6)
    assert (f["expected"] >= 0).all() and (f["expected_wins"] <= f["n_deals"] + 1e-9).all()
    deals = res.deals
    for c in ("p_won", "p_won_eventually"):
        v = deals[c].to_numpy(dtype=float)
        assert ((v >= -1e-12) & (v <= 1 + 1e-12)).all()
    assert (deals["p_won"] <= deals["p_won_eventually"] + 1e-9).all()
    open_amount = deals["amount"].fillna(0).sum()
    assert f.loc["open_pipeline", "expected"] <= open_amount + 1e-6
    # the same seed gives the same figures
    again = fs.forecast_bookings(data, n_sims=50, seed=seed).frame
    pd.testing.assert_frame_equal(res.frame, again)


@given(funnels())
def test_weighted_pipeline(data):
    res = fs.weighted_pipeline(data)
    f = res.frame
    no_infinities("weighted_pipeline", f)
    p = f["probability"].to_numpy(dtype=float)
    assert ((p >= 0) & (p <= 1) | np.isnan(p)).all()
    np.testing.assert_allclose(f["weighted_amount"], f["amount"] * f["probability"])
    # NaN only where no closed deal reached the stage, and said so
    undefined = sorted(f.loc[np.isnan(p), "stage"].astype(str).unique())
    if undefined:
        assert any(str(undefined) in n for n in res.notes)
        closed = data.deals[data.deals["outcome"] != "open"]
        reached = closed["furthest_stage"].cat.codes.max() if len(closed) else -1
        assert all(data.pipeline.order.index(s) > reached for s in undefined)
    cut = data.deals
    assert sorted(f["deal_id"]) == sorted(cut.loc[cut["outcome"] == "open", "deal_id"])


@pytest.mark.parametrize(
    "rows",
    [
        [("A", "Won", "2024-01-01")],  # no stay in any open stage
        [("A", "S0", "2024-01-01")],  # one open deal, one row, exported at that instant
        [("A", "S0", "2024-01-01"), ("A", "Lost", "2024-01-01"), ("B", "S0", "2024-01-01")],
        [("A", "S0", "2024-01-01"), ("A", "Won", "2024-01-02"), ("A", "S0", "2024-01-03")],
    ],
    ids=["only_won", "one_row", "one_instant", "won_then_reopened"],
)
def test_smallest_exports(rows):
    """The smallest exports the strategy can reach, kept as explicit cases."""
    frame = pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp"])
    data = fs.read_events(frame, pipeline=fs.Pipeline(["S0"], won=["Won"], lost=["Lost"]))
    results = run_all(data, n_sims=20)
    check_all(data, results)
    if not len(results["time_in_stage"].frame):
        assert "nothing to estimate" in " ".join(results["time_in_stage"].notes)


def _other_analyses(data: fs.FunnelData) -> dict[str, Any]:
    """The analyses outside ``run_all``: each returns a result or raises a FunnelDataError
    (a documented, specific error such as InsufficientHistoryError) naming what is missing."""
    from funnelstats.errors import FunnelDataError

    calls = {
        "stage_hazards": lambda: fs.stage_hazards(
            data, str(data.pipeline.stages[0]), covariates=["segment"]
        ),
        "velocity": lambda: fs.velocity(data),
        "forecast_win_rate": lambda: fs.forecast_win_rate(data),
        "forecast_velocity": lambda: fs.forecast_velocity(data),
    }
    cut = data.exported_at - pd.Timedelta(days=30)
    if cut > data.history["at"].min():  # a cut-off with a full horizon after it
        calls["backtest"] = lambda: fs.backtest(
            data, cutoffs=[cut], horizon="30D", n_sims=20, n_boot=2
        )
    out: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            out[name] = call()
        except FunnelDataError as exc:
            assert str(exc), name  # the error says what is wrong
            out[name] = exc
    return out


@settings(max_examples=15, deadline=None)
@given(funnels())
def test_other_analyses_return_or_say_what_is_missing(data):
    for name, res in _other_analyses(data).items():
        if isinstance(res, Exception):
            continue
        no_infinities(name, res.frame)


@settings(max_examples=8, deadline=None)
@given(funnels())
def test_report_on_any_export(data):
    """The scheduled job never crashes on valid input: every section is built or left out
    with its reason, and the HTML renders."""
    rep = fs.make_report(data, n_sims=50)
    assert rep.titles[0] == "At a glance" and rep.titles[-1] == "Data quality"
    for label in rep.left_out:
        assert any(label in n for n in rep.sections[0].notes)
    assert rep.html().count("<h2>") == len(rep.sections)
