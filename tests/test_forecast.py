"""Bookings forecast, weighted pipeline, backtest: hand cases, brute force, no peeking, truth."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import funnelstats as fs
from funnelstats._forecast_model import SemiMarkovFunnel
from funnelstats.datasets import simulate
from funnelstats.forecast import plot_backtest, plot_bookings, plot_reliability

DATA = Path(__file__).parent / "data"


def _t(s) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC") if pd.Timestamp(s).tzinfo is None else pd.Timestamp(s)


@pytest.fixture(scope="module")
def sim_events():
    """Two years of simulated deals in the generic long layout."""
    return simulate(1500, seed=3, days=540, layout="events")


# ----------------------------------------------------------- weighted pipeline


def test_weighted_pipeline_empirical_by_hand(hand10):
    wp = fs.weighted_pipeline(hand10)  # the hand pipeline has no CRM probabilities
    assert wp.source == "empirical"
    # closed deals that reached each stage ("reached": skipped stages count), share won:
    # Lead: D01 D02 D05 D07 D09 D10 -> 3/6; Qualified: D01 D02 D07 D09 D10 -> 3/5;
    # Proposal: D01 D07 D09 D10 -> 3/4; Negotiation: D01 D07 D10 -> 3/3
    assert dict(wp.probabilities) == {
        "Lead": 0.5,
        "Qualified": 0.6,
        "Proposal": 0.75,
        "Negotiation": 1.0,
    }
    # open: D03 Negotiation 2500, D04 Lead (no amount), D06 Proposal 9500, D08 Qualified 4000
    assert wp.total == pytest.approx(2500 * 1.0 + 9500 * 0.75 + 4000 * 0.6)


def test_weighted_pipeline_crm_and_horizon(sample):
    wp = fs.weighted_pipeline(sample, "2024-06-30", horizon="30D")
    assert wp.source == "crm"
    snap = fs.snapshot(sample, "2024-06-30").frame
    probs = {"Prospecting": 0.1, "Qualification": 0.2, "Proposal": 0.5, "Negotiation": 0.75}
    limit = _t("2024-07-30")
    keep = snap["close_date"].isna() | (snap["close_date"] <= limit)
    expected = (snap["amount"] * snap["stage"].astype(str).map(probs))[keep].sum()
    assert wp.total == pytest.approx(expected)
    given = fs.weighted_pipeline(sample, "2024-06-30", probabilities=dict.fromkeys(probs, 1.0))
    assert given.total == pytest.approx(snap["amount"].sum())
    with pytest.raises(ValueError, match="no value for stage"):
        fs.weighted_pipeline(sample, "2024-06-30", probabilities={"Proposal": 0.5})


def test_realised_bookings_by_hand(hand10):
    won = fs.realised_bookings(hand10, "2024-01-20", "2024-02-10")
    assert won["deal_id"].tolist() == ["D01", "D07", "D10"]
    assert won["amount"].tolist() == [1100.0, 3000.0, 6500.0]


# ------------------------------------------------------------- the model


@pytest.mark.parametrize("age_classes", [1, 3])
def test_recursion_matches_brute_force_simulation(age_classes):
    """Exact grid recursion against paths simulated from the same fitted curves.

    With entry-age bands the paths carry the deal's age: each stage's curves are
    those of the band holding the age at which the path enters it.
    """
    sim = simulate(800, seed=5, days=200, layout="events")
    data = sim.funnel()
    model = SemiMarkovFunnel(age_classes=age_classes).fit(data)
    if age_classes > 1:
        assert all(len(c) == 2 for c in model.cuts_[1:])  # stage 0: everyone enters at age 0
    rng = np.random.default_rng(0)
    horizon = 60.0
    u = np.linspace(0.0, 400.0, 8001)
    n_open = model.n_open_

    def draw(stage: int, band: int, age: float, n: int) -> tuple[np.ndarray, np.ndarray]:
        cond = model.curves_[0][stage][band].conditional(np.array([age]), u)[0]  # (g, K)
        cum = cond.sum(axis=1)
        r = rng.random(n)
        i = np.searchsorted(cum, r, side="left")
        stuck = i >= len(u)
        i = np.minimum(i, len(u) - 1)
        inc = np.diff(np.vstack([np.zeros((1, cond.shape[1])), cond]), axis=0)[i]
        inc = inc / np.maximum(inc.sum(axis=1, keepdims=True), 1e-300)
        dest = (rng.random(n)[:, None] > np.cumsum(inc, axis=1)).sum(axis=1)
        return np.where(stuck, np.inf, u[i]), np.where(stuck, -1, dest)

    # (stage, age in stage, deal age at stage entry)
    cases = [(0, 0.0, 0.0), (1, 5.0, 3.0), (1, 2.0, 20.0), (2, 30.0, 10.0), (3, 2.0, 60.0)]
    stages = np.array([s for s, _, _ in cases])
    ages = np.array([a for _, a, _ in cases])
    entry = np.array([e for _, _, e in cases])
    exact, _ = model.p_won(stages, ages, horizon, entry_age_days=entry)
    n = 20_000
    for (s0, a0, e0), p in zip(cases, exact):
        t = np.zeros(n)
        stage = np.full(n, s0)
        age = np.full(n, a0)
        band = model.band(stage, np.full(n, e0))
        won = np.zeros(n, dtype=bool)
        live = np.ones(n, dtype=bool)
        while live.any():
            for s in np.unique(stage[live]):
                for b in np.unique(band[live & (stage == s)]):
                    idx = np.flatnonzero(live & (stage == s) & (band == b))
                    for a in np.unique(age[idx]):
                        j = idx[age[idx] == a]
                        dt, dest = draw(int(s), int(b), float(a), len(j))
                        t[j] += dt
                        stage[j] = dest
                        age[j] = 0.0
                        # the next stage is entered at the deal's age then
                        band[j] = model.band(np.maximum(dest, 0), e0 + a0 + t[j])
            over = live & (t > horizon)
            live &= ~over
            won |= live & (stage == n_open)
            live &= (stage >= 0) & (stage < n_open)
        se = np.sqrt(p * (1 - p) / n)
        assert abs(won.mean() - p) < 4 * se + 0.004, (s0, a0, e0, won.mean(), p)


def test_entry_age_bands_change_the_forecast_only_through_the_bands():
    """One band is the plain chain; bands make slow deals (old at entry) less likely to win."""
    data = simulate(3000, seed=8, days=400, layout="events").funnel()
    plain = SemiMarkovFunnel(age_classes=1).fit(data)
    banded = SemiMarkovFunnel(age_classes=3).fit(data)
    stage = np.array([1, 1, 2, 2])
    age = np.array([3.0, 3.0, 5.0, 5.0])
    entry = np.array([2.0, 40.0, 10.0, 90.0])
    p1, e1 = plain.p_won(stage, age, 90.0, entry_age_days=entry)
    assert p1[0] == p1[1] and p1[2] == p1[3]  # the plain chain ignores the entry age
    p3, e3 = banded.p_won(stage, age, 90.0, entry_age_days=entry)
    assert p3[0] > p3[1] and p3[2] > p3[3]  # deals that were slow so far are slower to win
    assert (p3 <= e3 + 1e-12).all() and (p1 <= e1 + 1e-12).all()


def _one_stage(*, n: int, days: int, mean_stay: float, p_won: float, seed: int) -> fs.FunnelData:
    """Deals created uniformly over ``days`` into one open stage, exponential stays of mean
    ``mean_stay`` days, each won with probability ``p_won`` (else lost); exported at the end."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    created = start + pd.to_timedelta(rng.uniform(0, days, n), unit="D")
    stay = pd.to_timedelta(rng.exponential(mean_stay, n), unit="D")
    outcome = np.where(rng.random(n) < p_won, "Won", "Lost")
    ev = pd.DataFrame(
        {
            "deal_id": np.repeat(np.arange(n), 2).astype(str),
            "stage": np.column_stack([np.full(n, "Open"), outcome]).ravel(),
            "entered_at": np.column_stack([created, created + stay]).ravel(),
        }
    )
    export = start + pd.Timedelta(days=days)
    ev = ev[ev["entered_at"] <= export]
    return fs.FunnelData.from_events(
        ev, pipeline=fs.Pipeline(["Open"], won=["Won"], lost=["Lost"]), exported_at=export
    )


def test_single_stage_exponential_closed_form():
    """One stage, exponential stays, half won: P(won within H | any age) = (1 - e^{-H/m}) / 2."""
    data = _one_stage(n=20_000, days=100, mean_stay=10.0, p_won=0.5, seed=1)
    model = SemiMarkovFunnel().fit(data)
    p, ever = model.p_won(np.zeros(3, dtype=int), np.array([0.0, 5.0, 20.0]), 15.0)
    np.testing.assert_allclose(p, 0.5 * (1 - np.exp(-1.5)), atol=0.02)
    np.testing.assert_allclose(ever, 0.5, atol=0.02)


def test_model_incidence_is_the_aalen_johansen_estimate():
    """The lean incidence the model uses equals the estimator core's (weighted, many groups)."""
    from funnelstats._estimators import aalen_johansen, event_table
    from funnelstats._forecast_model import _cif

    rng = np.random.default_rng(4)
    n = 3000
    table = event_table(
        rng.integers(0, 60, n),
        rng.integers(0, 4, n),
        groups=rng.integers(0, 6, n),
        n_groups=8,  # two empty groups
        n_causes=3,
        weights=rng.poisson(1.0, n) * rng.lognormal(0, 1, n),
    )
    with np.errstate(all="ignore"):
        ref = aalen_johansen(table).cif
    np.testing.assert_allclose(_cif(table), np.nan_to_num(ref), atol=1e-12)


def test_bootstrap_refits_spread_like_the_binomial_standard_error():
    """Poisson-bootstrap refits: the spread of the eventual win rate is its binomial SE."""
    data = _one_stage(n=4000, days=300, mean_stay=5.0, p_won=0.3, seed=3)
    model = SemiMarkovFunnel().fit(data)
    _, ever = model.p_won(np.zeros(1, dtype=int), np.zeros(1), 10.0)
    rng = np.random.default_rng(4)  # the bootstrap weights
    reps = np.array(
        [
            model.reweighted(rng.poisson(1.0, data.n_deals).astype(float)).p_won(
                np.zeros(1, dtype=int), np.zeros(1), 10.0
            )[1][0]
            for _ in range(300)
        ]
    )
    closed = int((data.deals["outcome"] != "open").sum())
    se = np.sqrt(ever[0] * (1 - ever[0]) / closed)
    assert reps.mean() == pytest.approx(ever[0], abs=se / 2)
    assert reps.std(ddof=1) == pytest.approx(se, rel=0.2)


def test_bootstrap_widens_the_interval_not_the_expectation(sample):
    a = fs.forecast_bookings(sample, as_of="2024-08-31", n_sims=4000, seed=2, n_boot=0)
    b = fs.forecast_bookings(sample, as_of="2024-08-31", n_sims=4000, seed=2, n_boot=40)
    ta, tb = a.frame.set_index("component"), b.frame.set_index("component")
    assert ta["expected"].tolist() == tb["expected"].tolist()
    for comp in ("open_pipeline", "new_deals", "total"):
        assert tb.loc[comp, "p90"] - tb.loc[comp, "p10"] > ta.loc[comp, "p90"] - ta.loc[comp, "p10"]
    assert any("bootstrap" in n for n in b.notes) and not any("bootstrap" in n for n in a.notes)
    with pytest.raises(ValueError, match="n_boot"):
        fs.forecast_bookings(sample, n_boot=1)


def test_value_weighted_probabilities_forecast_amounts_without_the_size_bias():
    """Big deals win less often: amount x P(count) overstates bookings, the value-weighted
    probabilities do not (open deals at several cut-offs against their uncensored fate)."""
    sim = simulate(6000, seed=13, days=720, layout="events")
    data = sim.funnel()
    truth = sim.outcomes.set_index("deal_id")
    value = count = real = 0.0
    for c in pd.date_range("2024-07-01", "2025-09-01", freq="60D", tz="UTC"):
        fc = fs.forecast_bookings(
            data, as_of=c, n_sims=1, include_new=False, amount_bands=1, n_boot=0
        )
        d = fc.deals
        t = truth.loc[d["deal_id"]]
        won = ((t["outcome"] == "won") & (t["closed_at"] <= c + pd.Timedelta("90D"))).to_numpy()
        real += float((d["amount"].to_numpy() * won).sum())
        value += float(d["expected_amount"].sum())
        count += float((d["amount"] * d["p_won"]).sum())
        np.testing.assert_allclose(d["expected_amount"], d["amount"] * d["p_won_value"])
    assert abs(value / real - 1) < 0.12
    assert count / real - 1 > 0.15


# ------------------------------------------------------------- no peeking


def _raw_hand10_until(cut: str) -> fs.FunnelData:
    raw = pd.read_csv(DATA / "hand10.csv")
    keep = pd.to_datetime(raw["timestamp"], format="ISO8601") <= pd.Timestamp(cut)
    return fs.read_events(
        raw[keep].reset_index(drop=True),
        deal="deal_id",
        stage="stage",
        at="timestamp",
        amount="amount",
        attributes=["segment"],
        pipeline=DATA / "hand10.toml",
        exported_at=cut,
    )


def _assert_same_forecast(a: fs.forecast.BookingsForecast, b: fs.forecast.BookingsForecast):
    pd.testing.assert_frame_equal(a.frame, b.frame)
    pd.testing.assert_frame_equal(a.deals, b.deals)
    np.testing.assert_array_equal(a.simulations, b.simulations)


@pytest.mark.parametrize("cut", ["2024-01-12", "2024-01-20", "2024-01-28 12:00"])
def test_no_peeking_hand10(hand10, cut):
    trunc = _raw_hand10_until(cut)
    full = fs.forecast_bookings(hand10, as_of=cut, horizon="10D", n_sims=300, seed=2)
    alone = fs.forecast_bookings(trunc, horizon="10D", n_sims=300, seed=2)
    _assert_same_forecast(full, alone)
    pd.testing.assert_frame_equal(fs.snapshot(hand10, cut).frame, fs.snapshot(trunc).frame)
    assert fs.weighted_pipeline(hand10, cut).total == fs.weighted_pipeline(trunc).total


def test_no_peeking_simulated(sim_events):
    full = sim_events.funnel()
    raw = sim_events.export
    cutoffs = ["2024-05-15", "2024-09-01", "2025-01-10"]
    bt = fs.backtest(full, cutoffs=cutoffs, horizon="60D", n_sims=400, seed=5, progress=False)
    for i, c in enumerate(cutoffs):
        ts = _t(c)
        trunc = fs.read_events(
            raw[raw["entered_at"] <= ts].reset_index(drop=True),
            pipeline=sim_events.pipeline(),
            exported_at=ts,
        )
        for by in (None, "segment"):
            a = fs.forecast_bookings(full, as_of=c, horizon="60D", n_sims=400, seed=1, by=by)
            b = fs.forecast_bookings(trunc, horizon="60D", n_sims=400, seed=1, by=by)
            _assert_same_forecast(a, b)
        # the backtest's forecast at c is the truncated data's forecast
        alone = fs.forecast_bookings(trunc, horizon="60D", n_sims=400, seed=5 + i)
        row = bt.frame.iloc[i]
        t = alone.frame.set_index("component").loc["total"]
        assert row["expected"] == t["expected"] and row["p10"] == t["p10"]
        assert row["baseline"] == fs.weighted_pipeline(trunc, horizon="60D").total


# --------------------------------------------------------- against the truth


def test_calibration_against_simulated_truth(sim_events):
    """Per-deal P(won within 60 days) against what really happened (held-back outcomes)."""
    data = sim_events.funnel()
    truth = sim_events.outcomes.set_index("deal_id")
    preds, obs = [], []
    for c in pd.date_range("2024-07-01", "2025-05-01", freq="60D", tz="UTC"):
        fc = fs.forecast_bookings(data, as_of=c, horizon="60D", n_sims=1, include_new=False)
        t = truth.loc[fc.deals["deal_id"]]
        preds.append(fc.deals["p_won"].to_numpy())
        obs.append(
            ((t["outcome"] == "won") & (t["closed_at"] <= c + pd.Timedelta("60D"))).to_numpy()
        )
    p, y = np.concatenate(preds), np.concatenate(obs)
    rel = fs.reliability(p, y, bins=5)
    f = rel.frame
    # every quintile's observed rate within its 99% Wilson interval band of the prediction
    se = np.sqrt(f["predicted"] * (1 - f["predicted"]) / f["n"])
    assert (np.abs(f["observed"] - f["predicted"]) < 3 * se + 0.02).all(), f
    # total expected wins against realised wins
    assert abs(p.sum() - y.sum()) < 3 * np.sqrt(np.sum(p * (1 - p))) + 0.03 * y.sum()


def test_backtest_coverage_and_baseline_on_simulation():
    """A smaller version of benchmarks/forecast_backtest.py."""
    sim = simulate(4000, seed=7, days=730)
    data = sim.funnel()
    cutoffs = pd.date_range("2024-12-31", "2025-09-30", freq="30D", tz="UTC")
    bt = fs.backtest(data, cutoffs=cutoffs, horizon="90D", n_sims=1000, seed=1, progress=False)
    m = bt.metrics.set_index("method")
    assert len(cutoffs) >= 9
    assert 0.5 <= m.loc["funnelstats", "coverage_80"] <= 1.0
    assert m.loc["funnelstats", "wape"] < 0.3
    assert m.loc["funnelstats", "pinball"] < m.loc["weighted_pipeline", "pinball"]


def test_backtest_metrics_by_hand(sample):
    bt = fs.backtest(sample, cutoffs=["2024-06-30", "2024-08-31"], n_sims=300, progress=False)
    f = bt.frame
    y = f["actual"].to_numpy()
    m = bt.metrics.set_index("method")
    assert m.loc["funnelstats", "wape"] == pytest.approx(np.abs(y - f["expected"]).sum() / y.sum())
    assert m.loc["weighted_pipeline", "bias"] == pytest.approx((f["baseline"] - y).sum() / y.sum())
    assert m.loc["funnelstats", "coverage_80"] == f["covered"].mean()
    # the actual is what the deals table says was won in the window (no deal reopened there)
    d = sample.deals
    for _, row in f.iterrows():
        c = row["cutoff"]
        won = d[(d["outcome"] == "won") & (d["closed_at"] > c)]
        won = won[won["closed_at"] <= c + pd.Timedelta("90D")]
        assert row["actual"] == pytest.approx(won["amount"].sum())
    assert np.isnan(m.loc["weighted_pipeline", "coverage_80"])


def test_backtest_refuses_cutoff_without_full_horizon(sample):
    with pytest.raises(ValueError, match="runs past the export date"):
        fs.backtest(sample, cutoffs=["2024-11-30"], progress=False)
    with pytest.raises(ValueError, match="at least one"):
        fs.backtest(sample, cutoffs=[], progress=False)


# --------------------------------------------------------------- the result


def test_forecast_result_pieces_add_up(sample):
    fc = fs.forecast_bookings(sample, as_of="2024-08-31", n_sims=3000, seed=4)
    t = fc.frame.set_index("component")
    assert t.loc["total", "expected"] == pytest.approx(
        t.loc["open_pipeline", "expected"] + t.loc["new_deals", "expected"]
    )
    np.testing.assert_allclose(fc.simulations, fc.open_simulations + fc.new_simulations)
    # Monte Carlo mean agrees with the exact expectation: within Monte Carlo error without the
    # bootstrap; with it, the simulations' centre is the mean of 20 refits, which moves by
    # the refits' spread / sqrt(20) (their variance is what the bootstrap adds)
    plain = fs.forecast_bookings(sample, as_of="2024-08-31", n_sims=3000, seed=4, n_boot=0)
    for comp, boot, sims in (
        ("open_pipeline", fc.open_simulations, plain.open_simulations),
        ("new_deals", fc.new_simulations, plain.new_simulations),
    ):
        mc_se = sims.std() / np.sqrt(len(sims))
        assert abs(sims.mean() - t.loc[comp, "expected"]) < 4 * mc_se
        between = max(boot.var() - sims.var(), 0.0)
        se = np.sqrt(between / 20 + boot.var() / len(boot))
        assert abs(boot.mean() - t.loc[comp, "expected"]) < 4 * se
    d = fc.deals
    assert d["expected_amount"].is_monotonic_decreasing
    assert (d["p_won"] <= d["p_won_eventually"] + 1e-9).all()
    assert len(d) == len(fs.snapshot(sample, "2024-08-31").frame)
    same = fs.forecast_bookings(sample, as_of="2024-08-31", n_sims=3000, seed=4)
    np.testing.assert_array_equal(same.simulations, fc.simulations)
    none_new = fs.forecast_bookings(sample, as_of="2024-08-31", n_sims=500, include_new=False)
    assert none_new.frame["component"].tolist() == ["open_pipeline", "total"]


def test_longer_horizon_more_bookings(sample):
    short = fs.forecast_bookings(sample, as_of="2024-08-31", horizon="30D", n_sims=10)
    long = fs.forecast_bookings(sample, as_of="2024-08-31", horizon="120D", n_sims=10)
    a = short.deals.set_index("deal_id")["p_won"]
    b = long.deals.set_index("deal_id")["p_won"].reindex(a.index)
    assert (b >= a - 1e-9).all()


def test_forecast_input_errors(sample):
    with pytest.raises(ValueError, match="horizon"):
        fs.forecast_bookings(sample, horizon="soon")
    with pytest.raises(ValueError, match="n_sims"):
        fs.forecast_bookings(sample, n_sims=0)
    with pytest.raises(ValueError, match="export date"):
        fs.forecast_bookings(sample, as_of="2025-06-30")


def test_plots_draw_the_numbers(sample):
    fc = fs.forecast_bookings(sample, as_of="2024-08-31", n_sims=500, seed=4)
    fig, ax = plt.subplots()
    plot_bookings(fc, ax=ax)
    q = fc.quantile([0.1, 0.5, 0.9])
    drawn = [line.get_xdata()[0] for line in ax.lines]
    np.testing.assert_allclose(drawn, [*q, fc.expected])
    ax.clear()
    bt = fs.backtest(sample, cutoffs=["2024-06-30", "2024-08-31"], n_sims=200, progress=False)
    plot_backtest(bt, ax=ax)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), bt.frame["expected"])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), bt.frame["baseline"])
    np.testing.assert_allclose(ax.lines[2].get_ydata(), bt.frame["actual"])
    ax.clear()
    rel = fs.reliability(fc.deals["p_won"], fc.deals["p_won"] > 0.3)
    plot_reliability(rel, ax=ax)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), rel.frame["observed"])
    plt.close(fig)


def test_reliability_table_against_direct_computation():
    rng = np.random.default_rng(2)
    p = rng.uniform(size=1000)
    y = rng.uniform(size=1000) < p
    rel = fs.reliability(p, y, bins=4)
    order = np.argsort(p)
    for b, idx in enumerate(np.array_split(order, 4)):
        row = rel.frame.iloc[b]
        assert row["n"] == len(idx)
        assert row["predicted"] == pytest.approx(p[idx].mean())
        assert row["observed"] == pytest.approx(y[idx].mean())
    assert rel.brier == pytest.approx(np.mean((p - y) ** 2))


def test_backtest_progress_bar_only_when_asked_or_on_a_terminal(sample, capsys):
    fs.backtest(sample, cutoffs=["2024-06-30"], n_sims=50)  # stderr is not a terminal here
    assert "backtest" not in capsys.readouterr().err
    fs.backtest(sample, cutoffs=["2024-06-30"], n_sims=50, progress=True)
    assert "backtest" in capsys.readouterr().err
