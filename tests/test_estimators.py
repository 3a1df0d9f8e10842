"""The estimator core against lifelines on the same data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from lifelines import AalenJohansenFitter, KaplanMeierFitter
from lifelines.utils import median_survival_times, restricted_mean_survival_time

from funnelstats._estimators import (
    aalen_johansen,
    event_table,
    kaplan_meier,
    quantile_time,
    restricted_mean,
)


def _data(seed, n=400, ties=False):
    rng = np.random.default_rng(seed)
    t = rng.weibull(1.4, n) * 20
    if ties:
        t = np.ceil(t)  # daily data: many ties
    e = rng.integers(0, 3, n)
    return t, e


@pytest.mark.parametrize("ties", [False, True])
def test_kaplan_meier_matches_lifelines(ties):
    t, e = _data(1, ties=ties)
    tab = event_table(t, e, n_causes=2)
    km = kaplan_meier(tab)
    ref = KaplanMeierFitter().fit(t, e > 0)
    sf = ref.survival_function_.iloc[1:, 0].to_numpy()  # lifelines adds a row at t=0
    np.testing.assert_allclose(tab.time, ref.survival_function_.index[1:])
    np.testing.assert_allclose(km.survival, sf, atol=1e-12)
    ci = ref.confidence_interval_.iloc[1:].to_numpy()
    ok = km.survival > 0
    np.testing.assert_allclose(km.ci_lower[ok], ci[ok, 0], atol=1e-12)
    np.testing.assert_allclose(km.ci_upper[ok], ci[ok, 1], atol=1e-12)
    np.testing.assert_allclose(tab.at_risk, ref.event_table["at_risk"].iloc[1:].to_numpy())
    assert quantile_time(tab.time, km.survival, 0.5) == ref.median_survival_time_
    med_ci = median_survival_times(ref.confidence_interval_)
    assert quantile_time(tab.time, km.ci_lower, 0.5) == med_ci.iloc[0, 0]
    assert quantile_time(tab.time, km.ci_upper, 0.5) == med_ci.iloc[0, 1]


def test_groups_are_independent():
    t, e = _data(2)
    g = np.random.default_rng(3).integers(0, 3, len(t))
    tab = event_table(t, e, groups=g, n_causes=2)
    km = kaplan_meier(tab)
    for gi in range(3):
        sel = g == gi
        ref = KaplanMeierFitter().fit(t[sel], e[sel] > 0)
        np.testing.assert_allclose(
            km.survival[tab.rows(gi)], ref.survival_function_.iloc[1:, 0], atol=1e-12
        )
        assert tab.totals[gi] == sel.sum()


def test_aalen_johansen_matches_lifelines_tie_free():
    t, e = _data(4)
    tab = event_table(t, e, n_causes=2)
    aj = aalen_johansen(tab)
    for cause in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = AalenJohansenFitter(calculate_variance=True).fit(t, e, event_of_interest=cause)
        np.testing.assert_allclose(
            aj.cif[:, cause - 1], ref.cumulative_density_.iloc[1:, 0], atol=1e-6
        )
        # lifelines' variance is NaN (0 * inf) at the last row when everyone left; ours is finite
        ref_var = ref.variance_.iloc[1:].to_numpy()
        fin = np.isfinite(ref_var)
        assert np.isfinite(aj.variance[:, cause - 1]).all()
        np.testing.assert_allclose(aj.variance[fin, cause - 1], ref_var[fin], atol=1e-6)
        # lifelines labels its interval columns the wrong way round ("upper" holds the lower
        # bound); compare by value
        ci = np.sort(ref.confidence_interval_.iloc[1:].to_numpy(), axis=1)
        ok = np.isfinite(ci).all(axis=1) & (aj.cif[:, cause - 1] > 0)
        np.testing.assert_allclose(aj.ci_lower[ok, cause - 1], ci[ok, 0], atol=1e-6)
        np.testing.assert_allclose(aj.ci_upper[ok, cause - 1], ci[ok, 1], atol=1e-6)


def test_aalen_johansen_ties_deterministic_and_sum_to_one():
    t, e = _data(5, ties=True)
    a = aalen_johansen(event_table(t, e, n_causes=2))
    b = aalen_johansen(event_table(t[::-1], e[::-1], n_causes=2))
    np.testing.assert_array_equal(a.cif, b.cif)
    np.testing.assert_allclose(a.survival + a.cif.sum(axis=1), 1.0, atol=1e-12)


def test_aalen_johansen_tiny_case_by_hand():
    # times 1 (cause 1), 2 (cause 2), 2 (censored), 3 (cause 1); n = 4
    tab = event_table(np.array([1, 2, 2, 3]), np.array([1, 2, 0, 1]), n_causes=2)
    aj = aalen_johansen(tab)
    # S: 3/4 after t=1, 3/4 * 2/3 = 1/2 after t=2, 0 after t=3
    np.testing.assert_allclose(aj.survival, [0.75, 0.5, 0.0])
    # CIF1: 1/4, 1/4, 1/4 + S(2) * 1/1 = 3/4 ; CIF2: 0, S(1) * 1/3 = 1/4, 1/4
    np.testing.assert_allclose(aj.cif[:, 0], [0.25, 0.25, 0.75])
    np.testing.assert_allclose(aj.cif[:, 1], [0.0, 0.25, 0.25])


def test_restricted_mean_area_and_variance():
    t, e = _data(6)
    tab = event_table(t, e > 0)
    km = kaplan_meier(tab)
    area, _var = restricted_mean(
        tab.time, km.survival, 15.0, events=tab.observed, at_risk=tab.at_risk
    )
    ref = KaplanMeierFitter().fit(t, e > 0)
    assert area == pytest.approx(restricted_mean_survival_time(ref, t=15.0), rel=1e-9)
    # the variance formula against the spread of the estimate over repeated samples
    rng = np.random.default_rng(0)
    est, vars_ = [], []
    for _ in range(300):
        tt = rng.weibull(1.4, 400) * 20
        cc = rng.uniform(0, 40, 400)
        obs = np.minimum(tt, cc)
        tb = event_table(obs, (tt <= cc).astype(int))
        k = kaplan_meier(tb)
        a, v = restricted_mean(tb.time, k.survival, 15.0, events=tb.observed, at_risk=tb.at_risk)
        est.append(a)
        vars_.append(v)
    assert np.std(est) == pytest.approx(np.sqrt(np.mean(vars_)), rel=0.15)


def _direct_variance(table, j):
    """Collett's variance of cause ``j`` written as its sum, row by row (no running sums)."""
    out = np.empty(len(table.time))
    for g in range(table.n_groups):
        r = table.rows(g)
        n = table.at_risk[r]
        d = table.observed[r]
        dk = table.events[r, j]
        s = np.cumprod(1 - d / n)
        s_prev = np.r_[1.0, s[:-1]]
        f = np.cumsum(s_prev * dk / n)
        for i in range(len(n)):
            k = slice(0, i + 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                a = np.where(n[k] > d[k], d[k] / (n[k] * (n[k] - d[k])), 0.0)
            b = s_prev[k] ** 2 * dk[k] * (n[k] - dk[k]) / n[k] ** 3
            c = s_prev[k] * dk[k] / n[k] ** 2
            diff = f[i] - f[k]
            out[r.start + i] = max(float(np.sum(diff**2 * a + b - 2 * diff * c)), 0.0)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_variance_at_chosen_rows_equals_the_full_variance(seed, monkeypatch):
    """The variance summed up to a few rows equals the running-sum variance at every row and
    the sum written out term by term; so do the interval bounds read at those rows."""
    import funnelstats._estimators as est

    rng = np.random.default_rng(seed)
    n, n_groups = int(rng.integers(5, 120)), int(rng.integers(1, 4))
    t = rng.integers(0, int(rng.choice([4, 30, 10**6])), n)
    e = rng.integers(0, 4, n)
    g = rng.integers(0, n_groups, n)
    tab = event_table(t, e, groups=g, n_groups=n_groups + 1, n_causes=3)  # one empty group
    full = aalen_johansen(tab)
    m = len(tab.time)
    ends = tab.offsets[1:][np.diff(tab.offsets) > 0] - 1
    picks = [ends, rng.choice(m, size=int(rng.integers(1, m + 1))), np.arange(m)]
    monkeypatch.setattr(est, "_SPARSE_FACTOR", 0)  # always the summed-up path
    for j in range(3):
        direct = _direct_variance(tab, j)
        np.testing.assert_allclose(full.variance_of(j), direct, rtol=1e-9, atol=1e-15)
        for rows in picks:
            fresh = aalen_johansen(tab)
            np.testing.assert_allclose(
                fresh.variance_at(rows, j), direct[rows], rtol=1e-9, atol=1e-15
            )
    lo, hi = aalen_johansen(tab).interval(ends)
    np.testing.assert_allclose(lo, full.ci_lower[ends], rtol=1e-9)
    np.testing.assert_allclose(hi, full.ci_upper[ends], rtol=1e-9)
    km = kaplan_meier(tab)
    klo, khi = km.interval(ends)
    np.testing.assert_array_equal(klo, km.ci_lower[ends])
    np.testing.assert_array_equal(khi, km.ci_upper[ends])


def test_packed_and_sorted_counting_agree():
    """Integer durations take the packed-key count, floats the lexsort one: same table."""
    rng = np.random.default_rng(7)
    t = rng.integers(0, 50, 3000)
    e = rng.integers(0, 4, 3000)
    g = rng.integers(0, 5, 3000)
    a = event_table(t, e, groups=g, n_groups=6, n_causes=3)
    b = event_table(t.astype(float), e, groups=g, n_groups=6, n_causes=3)
    for f in ("group", "time", "at_risk", "events", "censored", "offsets", "totals"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


@pytest.mark.parametrize("seed", range(5))
def test_bound_quantiles_equal_reading_the_whole_bound_curves(seed):
    """Quantiles of the interval curves, computed only where they can be, equal
    quantile_time on the full lower and upper curves (long groups, censored
    groups whose curve never reaches 25%, tiny groups)."""
    rng = np.random.default_rng(seed)
    parts = []
    for g, (n, censor) in enumerate([(20_000, 0.2), (3_000, 0.9), (7, 0.3), (400, 0.0)]):
        t = rng.integers(0, 10**7, n)
        e = (rng.random(n) > censor).astype(np.int64)
        parts.append((t, e, np.full(n, g)))
    t, e, g = (np.concatenate(x) for x in zip(*parts, strict=True))
    tab = event_table(t, e, groups=g, n_groups=4, n_causes=1)
    km = kaplan_meier(tab)
    for gi in range(4):
        r = tab.rows(gi)
        qs = (0.5, 0.75, 0.25)
        got = km.bound_quantiles(r, tab.time[r], qs)
        want = [
            (
                quantile_time(tab.time[r], km.ci_lower[r], q),
                quantile_time(tab.time[r], km.ci_upper[r], q),
            )
            for q in qs
        ]
        assert got == want
    # the heavily censored group never reaches 25%: its upper bound neither
    assert km.bound_quantiles(tab.rows(1), tab.time[tab.rows(1)], (0.25,))[0][1] == np.inf
