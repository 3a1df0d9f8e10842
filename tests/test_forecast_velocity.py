"""velocity, forecast_win_rate, forecast_velocity: against the simulation's uncensored truth."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import funnelstats as fs
from funnelstats.datasets import simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(3000, seed=21, days=730)


def test_cohort_win_rate_against_uncensored_truth(sim):
    data = sim.funnel()
    v = fs.velocity(data)
    f = v.frame[v.frame["mature"]]
    assert len(f) >= 15
    out = sim.outcomes.copy()
    out["period"] = out["created_at"].dt.tz_localize(None).dt.to_period("M")
    days = (out["closed_at"] - out["created_at"]).dt.total_seconds() / 86_400
    out["won_by"] = (out["outcome"] == "won") & (days <= v.t_mature)
    truth = out.groupby("period")["won_by"].mean()
    inside = (f["ci_lower"].to_numpy() <= truth.loc[f["period"]].to_numpy()) & (
        truth.loc[f["period"]].to_numpy() <= f["ci_upper"].to_numpy()
    )
    assert inside.mean() >= 0.8
    # immature cohorts: the rate so far is not reported as the win rate
    young = v.frame[~v.frame["mature"]]
    assert len(young) >= 1 and young["win_rate"].isna().all() and young["velocity"].isna().all()
    assert (young["follow_up_days"] < v.t_mature).all()


def test_velocity_components(sample):
    v = fs.velocity(sample)
    f = v.frame[v.frame["mature"]]
    np.testing.assert_allclose(
        f["velocity"], f["open_deals"] * f["avg_won_amount"] * f["win_rate"] / f["cycle_days"]
    )
    # open deals at each period's end equal the snapshot there
    for _, row in v.frame.iloc[[2, 5]].iterrows():
        end = row["period"].end_time.tz_localize("UTC")
        assert row["open_deals"] == len(fs.snapshot(sample, end).frame)
    # the cycle length is a mean time to win: within the maturity horizon
    assert ((f["cycle_days"] > 0) & (f["cycle_days"] <= v.t_mature)).all()
    fig, ax = plt.subplots()
    v.plot(ax=ax)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), v.frame["velocity"].to_numpy())
    plt.close(fig)


def test_forecast_win_rate_treats_immature_as_missing(sim):
    """The nowcast and forecast equal SARIMAX fitted on the mature cohorts only."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    data = sim.funnel()
    fc = fs.forecast_win_rate(data, periods=3)
    f = fc.frame
    v = fs.velocity(data).frame
    n_mature = int(v["mature"].sum())
    assert (f["kind"] == "nowcast").sum() == len(v) - n_mature
    y = v["win_rate"].to_numpy()[:n_mature]
    z = np.log(y / (1 - y))
    res = SARIMAX(z, order=(0, 1, 1)).fit(disp=False)
    ahead = res.get_forecast(len(f) - n_mature)
    np.testing.assert_allclose(
        f["forecast"].to_numpy()[n_mature:], 1 / (1 + np.exp(-ahead.predicted_mean)), rtol=1e-4
    )
    lo = ahead.conf_int(alpha=0.05)[:, 0]
    np.testing.assert_allclose(
        f["ci_lower"].to_numpy()[n_mature:], 1 / (1 + np.exp(-lo)), rtol=1e-4
    )
    # the forecast level is near the true win rate within the maturity horizon
    assert abs(f["forecast"].iloc[-1] - np.nanmean(y)) < 0.05
    fig, ax = plt.subplots()
    fc.plot(ax=ax)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), f["forecast"].to_numpy())
    plt.close(fig)


def test_forecast_velocity_and_errors(sim, hand10):
    fc = fs.forecast_velocity(sim.funnel(), periods=2, freq="Q")
    f = fc.frame
    assert f["kind"].tolist()[-2:] == ["forecast", "forecast"]
    ok = f.dropna(subset=["forecast"])
    assert ((ok["ci_lower"] <= ok["forecast"]) & (ok["forecast"] <= ok["ci_upper"])).all()
    assert isinstance(f["period"].dtype, pd.PeriodDtype)
    with pytest.raises(fs.InsufficientHistoryError, match="mature periods"):
        fs.forecast_win_rate(hand10)
    with pytest.raises(ValueError, match="periods"):
        fs.forecast_velocity(sim.funnel(), periods=0)


def test_velocity_parts_are_the_public_estimates(sim):
    """One definition of each number: win_rate(cohort=) at the maturity horizon, which is
    the Kaplan-Meier 90%-closed time (lifelines), and the cycle against uncensored truth."""
    from lifelines import KaplanMeierFitter

    data = sim.funnel()
    v = fs.velocity(data)
    d = data.deals
    end = d["closed_at"].where(d["outcome"] != "open", data.exported_at)
    dur = (end - d["created_at"]).dt.total_seconds() / 86_400
    km = KaplanMeierFitter().fit(dur, event_observed=d["outcome"] != "open")
    with warnings.catch_warnings():  # lifelines reads the quantile off the step function
        warnings.simplefilter("ignore")
        q90 = km.percentile(0.1)
    assert v.t_mature == pytest.approx(q90, abs=1e-6)
    wr = fs.win_rate(data, cohort="M", from_stage="Prospecting", horizon=v.t_mature)
    f = v.frame[v.frame["mature"]].set_index("period")
    w = wr.frame.set_index("cohort").loc[f.index]
    np.testing.assert_allclose(f["win_rate"], w["win_rate"])
    np.testing.assert_allclose(f["ci_lower"], w["ci_lower"])
    # the cycle: mean days from creation to win among deals won within the horizon
    out = sim.outcomes
    days = (out["closed_at"] - out["created_at"]).dt.total_seconds() / 86_400
    won = (out["outcome"] == "won") & (days <= v.t_mature)
    period = out["created_at"].dt.tz_localize(None).dt.to_period("M")
    g = days[won].groupby(period[won])
    truth, se = g.mean().loc[f.index], (g.std() / np.sqrt(g.size())).loc[f.index]
    z = (f["cycle_days"] - truth) / se
    assert (np.abs(z) < 4).all(), z
    assert abs(z.mean()) < 3 / np.sqrt(len(z))


def test_velocity_is_undefined_where_won_deals_closed_at_creation():
    """A cycle of 0 days gives no rate per day: NaN with a note, never infinity."""
    import pandas as pd

    frame = pd.DataFrame(
        [
            ("A", "S0", "2024-01-01"),
            ("A", "Won", "2024-01-01"),
            ("B", "S0", "2024-01-03"),
            ("B", "Lost", "2024-01-04"),
        ],
        columns=["deal_id", "stage", "timestamp"],
    )
    frame["amount"] = "100"
    pipe = fs.Pipeline(["S0"], won=["Won"], lost=["Lost"])
    data = fs.read_events(frame, pipeline=pipe, exported_at="2024-12-31")
    v = fs.velocity(data)
    assert not np.isinf(v.frame["velocity"].to_numpy(dtype=float)).any()
    zero = v.frame["cycle_days"].to_numpy(dtype=float) <= 0
    assert zero.any() and v.frame.loc[zero, "velocity"].isna().all()
    assert any("velocity not defined" in n for n in v.notes)


@pytest.mark.parametrize("name", ["sample", "hand10"])
def test_open_deals_at_many_times_equal_one_state_per_time(name, request):
    """The cohort table counts the deals open at each period end from the rows' intervals
    at once: the counts of reading every deal's state at each time."""
    from funnelstats._forecast_history import history_state, last_row_at
    from funnelstats._forecast_velocity import _open_at

    data = request.getfixturevalue(name)
    hs = history_state(data)
    at = hs.at[hs.at > np.iinfo(np.int64).min]
    times = np.r_[at.min() - 1, np.quantile(at, np.linspace(0, 1, 40)).astype(np.int64), at]
    times = np.unique(np.r_[times, at.max() + 10**12])
    ref = [
        np.count_nonzero((s >= 0) & (hs.kind[np.maximum(s, 0)] == 0))
        for s in (last_row_at(hs, int(t)) for t in times)
    ]
    np.testing.assert_array_equal(_open_at(hs, times), ref)
