"""The survival analyses on simulated funnels against the simulator's known truth.

Tolerance: the estimator's own 99.9% confidence interval (alpha = 0.001) must
cover the true value. Per segment the simulator's truth is exactly what the
estimator targets (time in stage depends on the segment only). Pooled over
segments, the export window holds fewer slow-segment deals in later stages
than the simulator's steady-state mixture (a deal must get through the
earlier stages before the export date), so the pooled check is against the
median of the complete (uncensored) stays that began before the export date,
and against the steady-state truth within 3%.
``benchmarks/survival_accuracy.py`` measures the intervals' coverage over
repeated simulations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate

import funnelstats as fs
from funnelstats.datasets import simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(20_000, seed=11, layout="events")


@pytest.fixture(scope="module")
def data(sim):
    return sim.funnel()


def test_median_and_restricted_mean_per_segment_cover_truth(sim, data):
    r = fs.time_in_stage(data, by="segment", alpha=0.001)
    f = r.frame
    assert len(f) == 12
    for _, row in f.iterrows():
        stage, seg = str(row["stage"]), str(row["group"])
        truth = sim.truth.median_time_in_stage(seg)[stage]
        assert row["median_ci_lower"] <= truth <= row["median_ci_upper"], (stage, seg)
        # the interval is informative: narrower than half the median
        assert row["median_ci_upper"] - row["median_ci_lower"] < 0.5 * truth
        true_rmst = integrate.quad(
            lambda x, s=stage, g=seg: sim.truth.survival(s, x, g), 0, row["tau"]
        )[0]
        assert row["restricted_mean_ci_lower"] <= true_rmst <= row["restricted_mean_ci_upper"], (
            stage,
            seg,
        )


def _complete_stays(sim) -> pd.DataFrame:
    """Every stay in an open stage that began by the export date, with its full length."""
    c = sim.complete
    ent = pd.DatetimeIndex(c["entered_at"]).asi8
    deal = c["deal_id"].to_numpy()
    has_next = np.r_[deal[1:] == deal[:-1], False]
    dur = (np.r_[ent[1:], 0] - ent) / 86_400e9
    keep = has_next & (ent <= sim.truth.exported_at.value)
    return pd.DataFrame({"stage": c["stage"].to_numpy()[keep], "days": dur[keep]})


def test_pooled_median_covers_the_window_median(sim, data):
    r = fs.time_in_stage(data, alpha=0.001).frame.set_index("stage")
    complete = _complete_stays(sim).groupby("stage")["days"].median()
    steady = sim.truth.median_time_in_stage()
    for stage in sim.truth.stages:
        row = r.loc[stage]
        assert row["median_ci_lower"] <= complete[stage] <= row["median_ci_upper"], stage
        assert row["median"] == pytest.approx(steady[stage], rel=0.03)


def test_stage_outcomes_cover_true_cumulative_incidence(sim, data):
    r = fs.stage_outcomes(data, by="segment", alpha=0.001)
    a = r.at([5.0, 10.0, 20.0, 40.0])
    checked = 0
    for _, row in a.iterrows():
        name = str(row["outcome"])
        if name not in ("advanced", "lost"):
            continue
        truth = sim.truth.cumulative_incidence(
            str(row["stage"]),
            row["t"],
            "advance" if name == "advanced" else "lost",
            str(row["group"]),
        ).item()
        assert row["ci_lower"] <= truth <= row["ci_upper"], tuple(row)
        checked += 1
    assert checked == 4 * 3 * 4 * 2


def test_every_curve_adds_up_to_one(data, sample, hand10):
    for d, by in ((data, "segment"), (sample, "Segment"), (hand10, None)):
        c = fs.stage_outcomes(d, by=by).curves
        total = c.groupby(["stage", "group", "t"], observed=True)["probability"].sum()
        np.testing.assert_allclose(total.to_numpy(), 1.0, atol=1e-12)
        # each cumulative incidence never decreases; the still-open share never increases
        for (_, _, o), p in c.groupby(["stage", "group", "outcome"], observed=True)["probability"]:
            step = np.diff(p.to_numpy())
            assert (step >= -1e-12).all() if o != "in stage" else (step <= 1e-12).all()


def test_cycle_time_median_among_winners(sim, data):
    r = fs.cycle_time(data, by="segment").frame
    won = r[r["outcome"] == "won"].set_index("group")
    out = sim.outcomes
    out = out[(out["created_at"] <= sim.truth.exported_at) & (out["outcome"] == "won")]
    days = (out["closed_at"] - out["created_at"]).dt.total_seconds() / 86_400
    rng = np.random.default_rng(0)
    for seg, x in days.groupby(out["segment"]):
        x = x.to_numpy()
        truth = np.median(x)
        # sampling spread of a median of this many winners (bootstrap of the complete data)
        boot = np.median(rng.choice(x, size=(300, len(x))), axis=1)
        tol = 4 * boot.std()
        assert abs(won.loc[seg, "median"] - truth) < tol, (seg, won.loc[seg, "median"], truth)
        # the plain median of closed winners is short: long cycles are still open
        assert won.loc[seg, "naive_median"] < won.loc[seg, "median"]


def test_probability_won_by_day_covers_complete_data(sim, data):
    r = fs.cycle_time(data, alpha=0.001)
    at = r.at([30.0, 60.0, 120.0])
    won = at[at["outcome"] == "won"].set_index("t")
    out = sim.outcomes
    out = out[out["created_at"] <= sim.truth.exported_at]
    days = (out["closed_at"] - out["created_at"]).dt.total_seconds() / 86_400
    is_won = (out["outcome"] == "won").to_numpy()
    for t in (30.0, 60.0, 120.0):
        truth = float(np.mean(is_won & (days.to_numpy() <= t)))
        assert won.loc[t, "ci_lower"] <= truth <= won.loc[t, "ci_upper"], t


def test_cox_recovers_a_known_hazard_ratio():
    # two tiers; advancing hazard of "fast" = 2 x "slow" (exponential, so proportional),
    # losing at a constant hazard; the export cuts stays open
    rng = np.random.default_rng(3)
    n = 4000
    fast = rng.random(n) < 0.5
    entered = rng.uniform(0, 200, n)
    t_adv = rng.exponential(20 / np.where(fast, 2.0, 1.0))
    t_lost = rng.exponential(40, n)
    leave = entered + np.minimum(t_adv, t_lost)
    nxt = np.where(t_adv < t_lost, "B", "Lost")
    export = 250.0
    base = pd.Timestamp("2024-01-01", tz="UTC")

    def ts(days):
        return base + pd.to_timedelta(np.round(days * 86_400), unit="s")

    ids = np.array([f"d{i:05d}" for i in range(n)])
    left = leave <= export
    ev = pd.concat(
        [
            pd.DataFrame({"deal_id": ids, "stage": "A", "entered_at": ts(entered)}),
            pd.DataFrame({"deal_id": ids[left], "stage": nxt[left], "entered_at": ts(leave[left])}),
        ]
    )
    ev["tier"] = np.where(np.r_[fast, fast[left]], "fast", "slow")
    ev = ev.sort_values(["deal_id", "entered_at"]).reset_index(drop=True)
    p = fs.Pipeline(["A", "B"], won=["Won"], lost=["Lost"])
    d = fs.FunnelData.from_events(ev, pipeline=p, exported_at=ts(np.array([export]))[0])
    r = fs.stage_hazards(d, "A", covariates=["tier"], reference={"tier": "slow"}, alpha=0.001)
    row = r.frame.iloc[0]
    assert row["term"] == "tier[fast]" and row["reference"] == "slow"
    assert row["ci_lower"] <= 2.0 <= row["ci_upper"]
    assert not r.ph_test["violated"].any()
