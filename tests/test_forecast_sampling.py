"""The scalable bookings simulation against the algorithms it replaced.

The references below are the earlier implementations, kept verbatim in substance: every
open deal drawn in every simulation (``_old_bernoulli_sum``), every future arrival drawn
with its creation time and its win (``_old_new_deals``), and every refit sorted and
counted from scratch with :func:`funnelstats._estimators.event_table`
(``_old_fit_curves``). The new code must give the same curves (to rounding) and the same
distributions (within Monte Carlo error) at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import funnelstats as fs
from funnelstats import _columns as C
from funnelstats._estimators import event_table
from funnelstats._forecast_model import SemiMarkovFunnel, StageCurves, _cif, _Layout
from funnelstats._forecast_sim import (
    _search_right,
    bernoulli_sum,
    compound_poisson_sum,
    translated_gamma,
)
from funnelstats._stays import NS_PER_DAY
from funnelstats.forecast import _new_deals, _strata

QS = (0.05, 0.1, 0.5, 0.9, 0.95)


# ------------------------------------------------------------------ the references


def _old_bernoulli_sum(amount, p, n_sims, rng):
    """Every open deal drawn in every simulation (the earlier ``_bernoulli_sum``)."""
    p = np.atleast_2d(p)
    out = np.zeros(n_sims)
    which = np.arange(n_sims) % len(p)
    live = np.flatnonzero((p.max(axis=0) > 0) & (amount != 0))
    block = max(1, 4_000_000 // n_sims)
    for lo in range(0, len(live), block):
        part = live[lo : lo + block]
        hits = rng.random((len(part), n_sims)) < p[:, part][which].T
        out += amount[part] @ hits
    return out


def _old_new_deals(cut, ts, boot_models, boot_w, gcode, n_groups, h_days, w_days, n_sims, rng):
    """Every future arrival drawn: its creation time, whether it is won in the time left,
    its amount (the simulation part of the earlier ``_new_deals``)."""
    deals = cut.deals
    created = deals[C.CREATED_AT].to_numpy(dtype="datetime64[ns]").view(np.int64)
    span = min(w_days, (ts.value - created.min()) / NS_PER_DAY)
    recent = created > ts.value - span * NS_PER_DAY
    a = cut.arrays
    first_ev = np.r_[True, a.deal[1:] != a.deal[:-1]]
    first_stage = np.full(len(deals), -1, dtype=np.int64)
    first_stage[a.deal[first_ev]] = a.stage[first_ev]
    kind = a.kind
    model = boot_models[0]
    n_open = model.n_open_
    k_steps, h = model.grid(h_days)
    amounts_all = deals[C.AMOUNT].to_numpy(dtype=float)
    n_rep = len(boot_models)
    which = np.arange(n_sims) % n_rep
    sims = np.zeros(n_sims)
    for g in range(n_groups):
        sel = recent & (gcode == g) & (first_stage >= 0)
        n_recent = int(sel.sum())
        if n_recent == 0:
            continue
        fs_ = first_stage[sel]
        fk = kind[fs_]
        dest = np.where(fk == 0, fs_, np.where(fk == 1, n_open, n_open + 1))
        amts = amounts_all[sel]
        has_amt = ~np.isnan(amts)

        def curve(m, w, g=g, dest=dest):
            mix = np.bincount(dest, weights=w, minlength=n_open + 2) / max(w.sum(), 1e-300)
            return m.win_within(h_days, g)[:, 0, :] @ mix

        wr = np.ones((1, n_recent)) if boot_w is None else boot_w[:, sel]
        q = np.vstack([curve(m, w) for m, w in zip(boot_models, wr)])
        rates = wr.sum(axis=1) / span
        cum = np.cumsum(wr * has_amt, axis=1)
        n_arr = rng.poisson(rates[which] * h_days)
        m_tot = int(n_arr.sum())
        sim_idx = np.repeat(np.arange(n_sims), n_arr)
        rep = which[sim_idx]
        left = h_days - rng.uniform(0.0, h_days, size=m_tot)
        pos = left / h
        i0 = np.minimum(pos.astype(np.int64), k_steps - 1)
        frac = pos - i0
        qq = q[rep, i0] * (1.0 - frac) + q[rep, i0 + 1] * frac
        won = rng.random(m_tot) < qq
        pick = cum[rep, -1] * rng.random(m_tot)
        j = np.empty(m_tot, dtype=np.int64)
        for r in np.unique(rep):
            at = rep == r
            j[at] = np.searchsorted(cum[r], pick[at], side="right")
        amt = amts[np.minimum(j, n_recent - 1)]
        sims += np.bincount(sim_idx[won], weights=amt[won], minlength=n_sims)
    return sims


def _old_tail(d, dest, n_dest, q, w=None):
    exits = dest >= 0
    if not exits.any():
        return 0.0, np.zeros(n_dest)
    w = np.ones(len(d)) if w is None else w
    cut = float(np.quantile(d, q))
    late = d > cut
    sel = late & exits
    if not sel.any() or w[sel].sum() <= 0:
        sel, late, cut = exits, np.ones(len(d), dtype=bool), 0.0
    rate = w[sel].sum() / max(float(np.sum(w[late] * (d[late] - cut))), 1e-12)
    mix = np.bincount(dest[sel], weights=w[sel], minlength=n_dest)
    if not mix.sum() > 0:
        return 0.0, np.zeros(n_dest)
    return float(rate), mix / mix.sum()


def _old_fit_curves(duration_ns, dest, key, n_keys, n_dest, q, weights=None):
    """Curves of every key from a fresh event table (the earlier ``_fit_curves``)."""
    table = event_table(
        duration_ns, dest + 1, groups=key, n_groups=n_keys, n_causes=n_dest, weights=weights
    )
    cif_all = _cif(table)
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(n_keys + 1))
    out = []
    for k in range(n_keys):
        r = table.rows(k)
        pick = order[bounds[k] : bounds[k + 1]]
        d = duration_ns[pick] / NS_PER_DAY
        wk = None if weights is None else weights[pick]
        live = np.ones(len(pick), dtype=bool) if wk is None else wk > 0
        rate, mix = _old_tail(d, dest[pick], n_dest, q, wk)
        t = table.time[r] / NS_PER_DAY
        n_exits = int(((dest[pick] >= 0) & live).sum())
        out.append((t, cif_all[r], rate, mix, int(live.sum()), n_exits))
    return out


# ------------------------------------------------------------------ helpers


def _same_distribution(new: np.ndarray, old: np.ndarray) -> None:
    """Mean and quantiles within Monte Carlo error (4 standard errors of the difference of
    two independent estimates), and a two-sample Kolmogorov–Smirnov test."""
    n, m = len(new), len(old)
    sd = old.std()
    assert abs(new.mean() - old.mean()) < 4 * sd * np.sqrt(1 / n + 1 / m)
    kde = stats.gaussian_kde(old)
    for q in QS:
        x = np.quantile(old, q)
        se = np.sqrt(q * (1 - q) * (1 / n + 1 / m)) / kde(x)[0]
        assert abs(np.quantile(new, q) - x) < 4 * se, q
    assert stats.ks_2samp(new, old).pvalue > 1e-3


@pytest.fixture(scope="module")
def sample_cut(sample):
    return sample.as_of("2024-08-31"), pd.Timestamp("2024-08-31", tz="UTC")


# ------------------------------------------------------------------ open pipeline


def _open_case(n=3000, n_rep=20, seed=0, skewed=False):
    """Many deals of spread-out sizes and chances, or (``skewed``) fewer long shots."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(10.0, 1.6 if skewed else 1.3, n)
    amount[rng.random(n) < 0.05] = 0.0  # deals without an amount
    base = rng.beta(0.3, 6.0, n) if skewed else rng.beta(0.6, 1.4, n)
    base[:50] = 1.0  # certain and
    base[50:100] = 0.0  # hopeless deals
    p = np.clip(base[None, :] * rng.lognormal(0.0, 0.15, (n_rep, n)), 0.0, 1.0)
    return amount, p


@pytest.mark.parametrize(
    ("max_draws", "skewed"),
    [(10**9, False), (10**5, False), (0, False), (0, True)],
    ids=["exact", "split", "smallest", "skewed"],
)
def test_open_pipeline_draws_match_every_deal_drawn(max_draws, skewed):
    amount, p = _open_case(n=600 if skewed else 3000, skewed=skewed)
    n_sims = 20_000
    old = _old_bernoulli_sum(amount, p, n_sims, np.random.default_rng(1))
    new = bernoulli_sum(amount, p, n_sims, np.random.default_rng(2), max_draws=max_draws)
    live = int(((p.max(axis=0) > 0) & (amount != 0)).sum())
    assert new.n_terms == live
    if max_draws == 10**9:
        assert new.n_exact == live
    else:
        assert new.approximated > 0  # the approximation was used
    _same_distribution(new.simulations, old)


def test_a_dominant_deal_is_always_drawn_exactly():
    amount = np.r_[1e9, np.full(5000, 1e3)]
    p = np.r_[0.5, np.full(5000, 0.3)]
    new = bernoulli_sum(amount, p, 10_000, np.random.default_rng(0), max_draws=0)
    # the big deal is exact: the total is bimodal, nothing in between
    sims = new.simulations
    assert new.n_exact >= 1
    assert np.mean(sims > 5e8) == pytest.approx(0.5, abs=0.02)
    assert not np.any((sims > 2e6) & (sims < 9e8))


# ------------------------------------------------------------------ new deals


@pytest.mark.parametrize("max_draws", [10**9, 10**4], ids=["exact", "split"])
def test_new_deal_winners_match_every_arrival_drawn(sample_cut, max_draws):
    """Thinned winners (only deals won in the window drawn) against every arrival drawn, on
    the sample with bootstrap refits, five amount bands and a 90-day window."""
    cut, ts = sample_cut
    h_days = w_days = 90.0
    gcode, labels = _strata(cut, None, 5)
    model = SemiMarkovFunnel().fit(cut, groups=gcode, n_groups=len(labels))
    amt = cut.deals[C.AMOUNT].to_numpy(dtype=float)
    value_w = np.where(np.isnan(amt), np.nanmedian(amt), amt)
    rng = np.random.default_rng(3)
    boot_w = rng.poisson(1.0, size=(5, cut.n_deals)).astype(float)
    boot_models = [model.reweighted(value_w * w) for w in boot_w]

    n_sims = 8_000
    old = _old_new_deals(
        cut,
        ts,
        boot_models,
        boot_w,
        gcode,
        len(labels),
        h_days,
        w_days,
        n_sims,
        np.random.default_rng(4),
    )
    new_deals, _ = _new_deals(cut, ts, model, boot_models[0], gcode, len(labels), h_days, w_days)
    lam = np.vstack([new_deals.rates(m, w) for m, w in zip(boot_models, boot_w)])
    new = compound_poisson_sum(
        new_deals.amounts, lam, n_sims, np.random.default_rng(5), max_draws=max_draws
    )
    if max_draws < 10**9:
        assert new.approximated > 0
    _same_distribution(new.simulations, old)


def test_new_deal_rates_are_the_thinned_arrival_rate(sample_cut):
    """Expected winners per term: rate x integral of P(won by the time left), by replicate."""
    cut, ts = sample_cut
    gcode, _ = _strata(cut, None, 1)
    model = SemiMarkovFunnel().fit(cut, groups=gcode, n_groups=1)
    new, _ = _new_deals(cut, ts, model, model, gcode, 1, 60.0, 90.0)
    lam = new.rates(model, np.ones(cut.n_deals))
    # with unit weights: winners in the window = the expected wins of the full fit
    assert lam.sum() == pytest.approx(new.wins, rel=1e-12)
    # and the amounts' expectation is the full fit's (model = value model here)
    assert lam @ new.amounts == pytest.approx(new.expected, rel=1e-9)


# ------------------------------------------------------------------ the approximation


def test_translated_gamma_has_the_three_cumulants():
    rng = np.random.default_rng(0)
    for k1, k2, k3 in [(10.0, 4.0, 6.0), (-3.0, 2.0, -1.5), (5.0, 1.0, 0.0)]:
        x = translated_gamma(k1, k2, k3, 400_000, rng)
        assert x.mean() == pytest.approx(k1, abs=4 * np.sqrt(k2 / len(x)))
        assert x.var() == pytest.approx(k2, rel=0.02)
        assert stats.skew(x) == pytest.approx(k3 / k2**1.5, abs=0.03)
    assert np.all(translated_gamma(2.0, 0.0, 0.0, 5, rng) == 2.0)


# ------------------------------------------------------------------ the model


def _prep_model(age_classes=3):
    sim = fs.datasets.simulate(1200, seed=8, days=400, layout="events")
    data = sim.funnel()
    gcode, labels = _strata(data, None, 3)
    model = SemiMarkovFunnel(age_classes=age_classes, min_exits=40).fit(
        data, groups=gcode, n_groups=len(labels)
    )
    return data, model


def test_refits_equal_a_fit_from_scratch():
    """Counting over the stays arranged once gives the curves a fresh event table gives,
    for every set of keys (stage, group x stage, with entry-age bands) and any weights."""
    data, model = _prep_model()
    pr = model._prep
    n_open = model.n_open_
    n_band = max(len(c) for c in model.cuts_) + 1
    rng = np.random.default_rng(1)
    w = rng.poisson(1.0, data.n_deals) * rng.lognormal(0.0, 1.0, data.n_deals)
    w[:200] = 0.0
    model.reweighted(w)  # builds every layout the refits use
    keys = {
        "stage": (pr["stage"], n_open),
        "group_stage": (pr["group"] * n_open + pr["stage"], pr["n_groups"] * n_open),
        "stage_band": (pr["stage"] * n_band + pr["band"], n_open * n_band),
        "group_stage_band": (
            (pr["group"] * n_open + pr["stage"]) * n_band + pr["band"],
            pr["n_groups"] * n_open * n_band,
        ),
    }
    assert set(pr["layouts"]) == set(keys)
    for name, (key, n_keys) in keys.items():
        for weights in (None, w):
            ref = _old_fit_curves(
                pr["duration_ns"],
                pr["dest"],
                key,
                n_keys,
                n_open + 2,
                model.tail_quantile,
                None if weights is None else weights[pr["deal"]],
            )
            got = pr["layouts"][name].curves(weights)
            for (t, cif, rate, mix, n_stays, n_exits), cv in zip(ref, got):
                np.testing.assert_array_equal(cv.time, t)
                np.testing.assert_allclose(cv.cif, cif, atol=1e-12)
                assert cv.tail_rate == pytest.approx(rate, rel=1e-12, abs=1e-15)
                np.testing.assert_allclose(cv.tail_mix, mix, atol=1e-12)
                assert (cv.n_stays, cv.n_exits) == (n_stays, n_exits)


@pytest.mark.parametrize("ties", [False, True])
def test_layout_curves_equal_a_fresh_event_table_with_and_without_tied_durations(ties):
    """The refit's sums run per row of distinct durations: one stay per row (continuous
    durations) or several (durations in whole days, as many exports record them), with
    zero and fractional weights, give the curves of a fresh event table."""
    data, model = _prep_model(age_classes=1)
    pr = model._prep
    dur = pr["duration_ns"]
    if ties:
        dur = np.round(dur / NS_PER_DAY) * NS_PER_DAY
        dur = dur.astype(np.int64)
    n_open = model.n_open_
    key = pr["group"] * n_open + pr["stage"]
    n_keys = pr["n_groups"] * n_open
    lay = _Layout.build(dur, pr["dest"], pr["deal"], key, n_keys, n_open + 2, 0.8)
    assert (lay.run is not None) == ties  # the per-row sums are exercised when rows tie
    rng = np.random.default_rng(5)
    w = rng.poisson(1.0, data.n_deals) * rng.lognormal(0.0, 1.0, data.n_deals)
    w[:100] = 0.0
    for weights in (None, w):
        ref = _old_fit_curves(
            dur,
            pr["dest"],
            key,
            n_keys,
            n_open + 2,
            0.8,
            None if weights is None else weights[pr["deal"]],
        )
        for (t, cif, rate, mix, n_stays, n_exits), cv in zip(ref, lay.curves(weights)):
            np.testing.assert_array_equal(cv.time, t)
            np.testing.assert_allclose(cv.cif, cif, atol=1e-12)
            assert cv.tail_rate == pytest.approx(rate, rel=1e-12, abs=1e-15)
            np.testing.assert_allclose(cv.tail_mix, mix, atol=1e-12)
            assert (cv.n_stays, cv.n_exits) == (n_stays, n_exits)


@settings(max_examples=200, deadline=None)
@given(
    lam=st.lists(st.one_of(st.just(0.0), st.floats(1e-9, 1e6)), min_size=1, max_size=300).filter(
        lambda x: sum(x) > 0
    ),
    u=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=200),
    seed=st.integers(0, 2**32 - 1),
)
def test_guided_search_is_searchsorted(lam, u, seed):
    """The compound Poisson draws pick their terms with the guided search: the indices of
    ``np.searchsorted(..., side="right")``, ties (runs of zero rates) and sums hit exactly
    included."""
    cum = np.cumsum(np.asarray(lam))
    rng = np.random.default_rng(seed)
    q = np.r_[np.asarray(u) * cum[-1], cum[rng.integers(0, len(cum), 5)], 0.0]
    q = q[q < cum[-1]]
    np.testing.assert_array_equal(_search_right(cum, q), np.searchsorted(cum, q, side="right"))


def _direct_p_won(model, stage, age, horizon):
    """P(won within the horizon) by the plain formula: the stage's conditional exit mass
    in each grid bin times the chance of being won from there in the time left."""
    k_steps, h = model.grid(horizon)
    edges = np.r_[0.0, (np.arange(k_steps) + 0.5) * h, k_steps * h]
    w = model.win_within(horizon)[:, 0, :]
    out = np.zeros(len(stage))
    for i, (s, a) in enumerate(zip(stage, age)):
        cv = model.curves_[0][s][0]
        mass = np.diff(cv.conditional(np.array([a]), edges), axis=1)[0]
        out[i] = np.sum(mass * w[k_steps - np.arange(k_steps + 1)])
    return out


def test_win_within_summed_by_parts_is_the_direct_formula():
    """Without the age clock the forecast is summed by parts: same numbers, also for deals
    older than any stay seen (the tail) and deals younger than the shortest stay."""
    data, model = _prep_model(age_classes=1)
    rng = np.random.default_rng(2)
    n = 300
    stage = rng.integers(0, model.n_open_, n)
    taus = np.array([model.curves_[0][s][0].tau for s in range(model.n_open_)])
    age = rng.uniform(0, 1.3, n) * taus[stage]
    age[:10] = 0.0
    age[10:20] = taus[stage[10:20]] + rng.uniform(0, 30, 10)  # beyond the longest stay
    age[20:30] = taus[stage[20:30]] - rng.uniform(0, 30, 10)  # the window crosses it
    ref = _direct_p_won(model, stage, age, 45.0)
    cache: dict = {}
    p, _ = model.p_won(stage, age, 45.0, eventually=False, cache=cache)
    np.testing.assert_allclose(p, ref, atol=1e-12)
    assert cache  # the rows were kept for the refits
    # a refit read through the cache: the same as without it
    refit = model.reweighted(rng.poisson(1.0, data.n_deals).astype(float))
    a, _ = refit.p_won(stage, age, 45.0, eventually=False, cache=cache)
    b, _ = refit.p_won(stage, age, 45.0, eventually=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(b, _direct_p_won(refit, stage, age, 45.0), atol=1e-12)


def test_curves_without_origin_are_not_cached():
    cv = StageCurves(
        time=np.array([1.0, 2.0]),
        cif=np.array([[0.5, 0.0], [0.5, 0.5]]),
        tau=2.0,
        tail_rate=0.0,
        tail_mix=np.zeros(2),
        n_stays=2,
        n_exits=2,
    )
    assert cv.origin == ()
    x = np.array([[0.5, 1.5, 2.5]])
    coef = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # F(0.5) = 0, F(1.5) = (0.5, 0), F(2.5) = (0.5, 0.5)
    assert cv.cdf_dot(x, coef)[0] == pytest.approx(0.0 + 0.5 + 0.5)


def test_fit_without_pooled_curves_gives_the_same_group_curves():
    """The forecast fits without the pooled curves when no group needs them: the same
    group curves, fallbacks and per-stage exit counts as the full fit."""
    data, full = _prep_model(age_classes=1)
    pr = full._prep
    gcode = np.zeros(data.n_deals, dtype=np.int64)
    gcode[pr["deal"]] = pr["group"]
    lean = SemiMarkovFunnel(age_classes=1, min_exits=40).fit(
        data, groups=gcode, n_groups=pr["n_groups"], pooled=False
    )
    assert lean.fallback_ == full.fallback_
    assert lean.stage_exits_ == [c.n_exits for c in full.pooled_]
    for cg_full, cg_lean in zip(full.curves_, lean.curves_):
        for bands_full, bands_lean in zip(cg_full, cg_lean):
            for a, b in zip(bands_full, bands_lean):
                np.testing.assert_array_equal(a.cif, b.cif)
                assert (a.tail_rate, a.n_exits) == (b.tail_rate, b.n_exits)
    if not full.fallback_:
        assert lean.pooled_ == [] and "stage" not in lean._prep["layouts"]
