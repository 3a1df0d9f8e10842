"""Conversion estimates against independent references on the same data.

- lifelines ``AalenJohansenFitter`` on tie-free data (estimate, variance, interval) to 1e-6,
  with the stays taken straight from the tidy event table (not from funnelstats' episodes);
- statsmodels ``CumIncidenceRight`` (no jitter) on tied daily timestamps;
- the variance formula written out as a plain sum, where the last deals at risk all leave;
- statsmodels / scipy for the simple proportions and the group tests;
- a generic beta-binomial maximum-likelihood fit for the shrinkage prior.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import funnelstats as fs
from funnelstats._conversion_stats import (
    aj_fit,
    bootstrap_cif,
    bootstrap_weights,
    fit_beta_binomial,
)
from funnelstats._stays import NS_PER_DAY
from funnelstats.datasets import simulate


def _plain_stays(data: fs.FunnelData) -> pd.DataFrame:
    """Stays in open stages from the event table: days, and 1 advance / 2 lost / 0 open.

    Valid when deals never skip, move back or reopen (checked by the caller).
    """
    ev = data.events
    order = list(data.pipeline.order)
    n_open = data.pipeline.n_open
    code = ev["stage"].cat.codes.to_numpy()
    nxt = ev["next_stage"].cat.codes.to_numpy()
    keep = code < n_open
    end = ev["exited_at"].fillna(data.exported_at)
    days = (end - ev["entered_at"]).dt.total_seconds().to_numpy() / 86_400
    cause = np.where(nxt < 0, 0, np.where(nxt == order.index("Closed Lost"), 2, 1))
    return pd.DataFrame({"stage": code, "days": days, "cause": cause})[keep]


@pytest.fixture(scope="module")
def tie_free():
    sim = simulate(400, seed=11, days=90, skip_prob=0.0, layout="events")
    data = sim.funnel()
    stays = _plain_stays(data)
    for _, part in stays.groupby("stage"):
        assert not part["days"].duplicated().any()  # tie-free
    # the walk only moves forward one stage at a time, or to won/lost
    code = data.events["stage"].cat.codes.to_numpy()
    nxt = data.events["next_stage"].cat.codes.to_numpy()
    fwd = (nxt < 0) | (nxt == code + 1) | (nxt == data.pipeline.n_open + 1)
    assert fwd[code < data.pipeline.n_open].all()
    return data, stays


def _lifelines(part: pd.DataFrame):
    from lifelines import AalenJohansenFitter

    aj = AalenJohansenFitter(calculate_variance=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aj.fit(part["days"], part["cause"], event_of_interest=1)
    return aj


@pytest.mark.parametrize("horizon", [None, 20.0])
def test_equals_lifelines_aalen_johansen_tie_free(tie_free, horizon):
    """Reference: lifelines ``AalenJohansenFitter(calculate_variance=True)``
    ``.fit(days, cause, event_of_interest=1)`` on each stage's stays."""
    data, stays = tie_free
    res = fs.conversion(data, horizon=horizon).frame
    compared = 0
    for s, part in stays.groupby("stage"):
        aj = _lifelines(part)
        cif = aj.cumulative_density_.iloc[:, 0]
        var = aj.variance_
        ci = aj.confidence_interval_
        t = cif.index.to_numpy()
        at = len(t) - 1 if horizon is None else int(np.searchsorted(t, horizon, side="right")) - 1
        row = res.iloc[s]
        assert row["conversion"] == pytest.approx(cif.iloc[at], abs=1e-6)
        if np.isfinite(var.iloc[at]):
            assert row["std_error"] ** 2 == pytest.approx(var.iloc[at], abs=1e-6)
            lo, hi = sorted(ci.iloc[at].to_numpy())  # lifelines labels its columns swapped
            assert row["ci_lower"] == pytest.approx(lo, abs=1e-6)
            assert row["ci_upper"] == pytest.approx(hi, abs=1e-6)
            compared += 1
        else:
            # lifelines has no variance where the last deals at risk all leave: the plain sum
            _, v = _collett_variance(part["days"].to_numpy(), part["cause"].to_numpy(), t[at])
            assert row["std_error"] ** 2 == pytest.approx(v, abs=1e-9)
        assert row["undecided"] == pytest.approx(
            1 - cif.iloc[at] - aj_lost_cif(part, t[at]), abs=1e-6
        )
        assert row["entered"] == len(part)
    assert compared >= 2


def aj_lost_cif(part: pd.DataFrame, t: float) -> float:
    from lifelines import AalenJohansenFitter

    aj = AalenJohansenFitter(calculate_variance=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aj.fit(part["days"], part["cause"], event_of_interest=2)
    c = aj.cumulative_density_.iloc[:, 0]
    return float(c[c.index <= t].iloc[-1])


def _collett_variance(time, cause, t_eval):
    """Collett (2015, p. 411) written as a plain sum over distinct times <= t_eval,
    with the term (F(t) - F_i)^2 d_i / (n_i (n_i - d_i)) taken as 0 when F(t) = F_i."""
    times = np.unique(time)
    s_prev, f = 1.0, 0.0
    rows = []
    for u in times:
        n = np.sum(time >= u)
        d = np.sum((time == u) & (cause > 0))
        d1 = np.sum((time == u) & (cause == 1))
        f += s_prev * d1 / n
        rows.append((u, n, d, d1, s_prev, f))
        s_prev *= 1 - d / n
    big_f = [r[5] for r in rows if r[0] <= t_eval][-1]
    v = 0.0
    for u, n, d, d1, sp, fi in rows:
        if u > t_eval:
            break
        diff = big_f - fi
        a = 0.0 if diff == 0 else diff**2 * d / (n * (n - d))
        v += a + sp**2 * d1 * (n - d1) / n**3 - 2 * diff * sp * d1 / n**2
    return big_f, v


def test_variance_where_the_last_at_risk_all_leave():
    time = np.array([1, 2, 3, 4, 5, 6, 6], dtype=np.int64)
    cause = np.array([1, 2, 0, 1, 2, 1, 1])
    fit = aj_fit(time, cause, np.zeros(7, np.int64), n_groups=1, n_causes=2, alpha=0.05)
    at = fit.at(None)
    f, v = _collett_variance(time, cause, 6)
    assert at.estimate[0] == pytest.approx(f)
    assert at.variance[0] == pytest.approx(v, rel=1e-12)
    assert np.isfinite(at.ci_lower[0]) and at.ci_lower[0] < f < at.ci_upper[0]
    # every row, by the plain sum
    for i, t in enumerate(fit.table.time):
        assert fit.variance[i] == pytest.approx(_collett_variance(time, cause, t)[1], abs=1e-15)


@pytest.fixture(scope="module")
def daily():
    """The sample with every timestamp cut to its day: many ties, same-day moves."""
    sim = simulate(600, seed=5, days=90, layout="events")
    ev = sim.export.copy()
    ev["entered_at"] = ev["entered_at"].dt.floor("D")
    return ev, sim


def test_tied_daily_timestamps_deterministic_and_equal_statsmodels(daily):
    from statsmodels.duration.survfunc import CumIncidenceRight

    ev, sim = daily
    data = fs.read_events(ev, pipeline=sim.pipeline(), exported_at=sim.truth.exported_at)
    res = fs.conversion(data).frame
    # the same figures whatever the input row order, run after run
    shuffled = ev.sample(frac=1.0, random_state=1)
    again = fs.read_events(shuffled, pipeline=sim.pipeline(), exported_at=sim.truth.exported_at)
    pd.testing.assert_frame_equal(fs.conversion(again).frame, res)

    from funnelstats._conversion_records import stage_records

    rec = stage_records(data)
    days = rec.duration_ns / NS_PER_DAY
    assert (pd.Series(days).duplicated()).mean() > 0.5  # heavily tied
    for s in range(data.pipeline.n_open):
        sel = rec.stage == s
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = CumIncidenceRight(days[sel], rec.cause[sel].astype(float))
        row = res.iloc[s]
        assert row["conversion"] == pytest.approx(ref.cinc[0][-1], abs=1e-12)
        if np.isfinite(ref.cinc_se[0][-1]):
            assert row["std_error"] == pytest.approx(ref.cinc_se[0][-1], abs=1e-12)
        else:  # statsmodels, like lifelines, has no variance where the last at risk all leave
            _, v = _collett_variance(days[sel], rec.cause[sel], days[sel].max())
            assert row["std_error"] ** 2 == pytest.approx(v, rel=1e-10)
        # and at an earlier horizon, where both are defined
        h = 10.0
        at = fs.conversion(data, horizon=h).frame.iloc[s]
        i = np.searchsorted(ref.times, h, side="right") - 1
        assert at["conversion"] == pytest.approx(ref.cinc[0][i], abs=1e-12)
        assert at["std_error"] == pytest.approx(ref.cinc_se[0][i], abs=1e-12)


def test_proportion_intervals_closed_form(hand10):
    z = stats.norm.ppf(0.975)
    f = fs.conversion(hand10, method="resolved").frame
    k = f["advanced"].to_numpy(float)
    n = (f["advanced"] + f["lost"] + f["skipped_out"]).to_numpy(float)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    np.testing.assert_allclose(f["ci_lower"], centre - half, atol=1e-12)
    np.testing.assert_allclose(f["ci_upper"], centre + half, atol=1e-12)
    j = fs.conversion(hand10, method="entered", ci_method="jeffreys", alpha=0.1).frame
    k, n = j["advanced"].to_numpy(float), j["entered"].to_numpy(float)
    np.testing.assert_allclose(j["ci_lower"], stats.beta.ppf(0.05, k + 0.5, n - k + 0.5))
    np.testing.assert_allclose(j["ci_upper"], stats.beta.ppf(0.95, k + 0.5, n - k + 0.5))


@pytest.fixture(scope="module")
def all_decided():
    """Every deal decided (export long after the last one closed): no censoring."""
    sim = simulate(900, seed=3, days=120, exported_at="2026-01-01", layout="events")
    return sim.funnel()


def test_uncensored_equals_binomial(all_decided):
    f = fs.conversion(all_decided, by="segment").frame
    assert (f["open"] == 0).all()
    p = f["advanced"] / f["entered"]
    np.testing.assert_allclose(f["conversion"], p, atol=1e-12)
    np.testing.assert_allclose(f["std_error"], np.sqrt(p * (1 - p) / f["entered"]), atol=1e-12)


def test_wald_test_equals_statsmodels_two_sample(all_decided):
    from statsmodels.stats.proportion import test_proportions_2indep

    res = fs.conversion(all_decided, by="segment")
    cmp = res.compare(pairwise=True, p_adjust="bonferroni").frame
    f = res.frame.set_index(["segment", res.frame["stage"].astype(str)])
    m = len(cmp)
    assert m == 4 * 3
    for _, row in cmp.iterrows():
        a, b = row["comparison"].split(" vs ")
        ra, rb = f.loc[(a, str(row["stage"]))], f.loc[(b, str(row["stage"]))]
        ref = test_proportions_2indep(
            ra["advanced"],
            ra["entered"],
            rb["advanced"],
            rb["entered"],
            method="wald",
            compare="diff",
            correction=False,
        )
        assert row["statistic"] == pytest.approx(ref.statistic**2, rel=1e-9)
        assert row["p_val"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert row["p_adj"] == pytest.approx(min(1.0, ref.pvalue * m), rel=1e-9)
        assert row["difference"] == pytest.approx(ra["conversion"] - rb["conversion"])


def test_pearson_chi_square_equals_scipy(sample):
    res = fs.conversion(sample, by="Segment", method="resolved")
    cmp = res.compare().frame
    for _, row in cmp.iterrows():
        part = res.frame[res.frame["stage"] == row["stage"]]
        k = part["advanced"].to_numpy()
        n = (part["advanced"] + part["lost"]).to_numpy()
        chi2, p, dof, _ = stats.chi2_contingency(np.vstack([k, n - k]), correction=False)
        assert row["statistic"] == pytest.approx(chi2, rel=1e-10)
        assert row["p_val"] == pytest.approx(p, rel=1e-9)
        assert row["df"] == dof
    # two groups: the pooled two-proportion z test, squared
    from statsmodels.stats.proportion import proportions_ztest

    two = fs.conversion(
        sample.select(sample.deals["Segment"] != "Enterprise"), by="Segment", method="resolved"
    )
    row = two.compare().frame.iloc[0]
    part = two.frame[two.frame["stage"] == row["stage"]]
    z, p = proportions_ztest(
        part["advanced"].to_numpy(), (part["advanced"] + part["lost"]).to_numpy()
    )
    assert row["statistic"] == pytest.approx(z**2, rel=1e-10)
    assert row["p_val"] == pytest.approx(p, rel=1e-9)


def test_holm_adjustment_by_hand(sample):
    cmp = fs.conversion(sample, by="Segment").compare().frame
    p = cmp["p_val"].to_numpy()
    order = np.argsort(p)
    m = len(p)
    holm = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * p[order]))
    expected = np.empty(m)
    expected[order] = holm
    np.testing.assert_allclose(cmp["p_adj"], expected)


def test_beta_binomial_fit_equals_generic_mle():
    rng = np.random.default_rng(4)
    n = rng.integers(5, 80, size=25)
    p = rng.beta(6, 4, size=25)
    k = rng.binomial(n, p)

    def nll(x):
        a, b = np.exp(x)
        return -stats.betabinom.logpmf(k, n, a, b).sum()

    ref = optimize.minimize(
        nll,
        x0=np.log([2.0, 2.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20_000},
    )
    a, b = np.exp(ref.x)
    mu, kappa = fit_beta_binomial(k, n)
    assert mu == pytest.approx(a / (a + b), rel=1e-4)
    assert kappa == pytest.approx(a + b, rel=1e-3)


@pytest.mark.parametrize("horizon", [None, 15.0])
def test_bootstrap_replicates_equal_weighted_aalen_johansen(daily, horizon):
    """Each bootstrap replicate equals the weighted Aalen–Johansen of ``_estimators``."""
    from funnelstats._conversion_records import stage_records

    ev, sim = daily
    data = fs.read_events(ev, pipeline=sim.pipeline(), exported_at=sim.truth.exported_at)
    rec = stage_records(data)
    strata = (data.deals["segment"] == "SMB").to_numpy().astype(np.int64)
    cell = strata[rec.deal] * 4 + rec.stage
    w = bootstrap_weights(strata, 5, np.random.default_rng(0))
    # stratified: every replicate keeps the strata sizes
    for g in (0, 1):
        assert (w[:, strata == g].sum(axis=1) == (strata == g).sum()).all()
    h = None if horizon is None else horizon * NS_PER_DAY
    got = bootstrap_cif(
        rec.duration_ns, rec.cause, cell, n_groups=8, horizon=h, weights=w[:, rec.deal]
    )
    for b in range(5):
        ww = w[b, rec.deal]
        keep = ww > 0
        ref = aj_fit(
            rec.duration_ns[keep],
            rec.cause[keep],
            cell[keep],
            n_groups=8,
            n_causes=2,
            alpha=0.05,
            weights=ww[keep],
        ).at(h)
        np.testing.assert_allclose(got[b], ref.estimate, rtol=1e-12, atol=1e-14)
