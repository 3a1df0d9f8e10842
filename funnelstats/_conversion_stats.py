"""Estimation helpers of :mod:`funnelstats.conversion`: Aalen–Johansen at a horizon for many
groups at once, the deal bootstrap, simple-proportion intervals, beta-binomial shrinkage and
the tests of difference between groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from ._estimators import AJResult, EventTable, aalen_johansen, event_table, loglog_bounds

__all__ = [
    "AJAt",
    "AJFit",
    "aj_at",
    "aj_fit",
    "bootstrap_cif",
    "bootstrap_weights",
    "fit_beta_binomial",
    "loglog_interval",
    "proportion_interval",
    "shrink_beta_binomial",
    "wald_homogeneity",
]


@dataclass(frozen=True)
class AJAt:
    """Cumulative incidence of cause 1 at a horizon, per group.

    Attributes
    ----------
    estimate, variance, ci_lower, ci_upper : ndarray
        CIF of cause 1 where it holds; its delta-method variance and
        log(-log) interval (NaN where undefined: estimate 0 or 1, or no data).
    undecided : ndarray
        Kaplan–Meier probability of no exit of any cause yet.
    holds_at : ndarray
        The duration at which the values hold (same unit as the durations):
        the horizon, or the end of follow-up when that comes first or when no
        horizon is given. NaN for empty groups.
    follow_up : ndarray
        Largest duration observed in the group.
    exits : ndarray
        Exits of any cause up to ``holds_at``.
    n : ndarray
        Subjects per group.
    """

    estimate: np.ndarray
    variance: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    undecided: np.ndarray
    holds_at: np.ndarray
    follow_up: np.ndarray
    exits: np.ndarray
    n: np.ndarray


@dataclass(frozen=True)
class AJFit:
    """Aalen–Johansen of cause 1 for many groups: the curves, and their values at a horizon.

    Attributes
    ----------
    table : EventTable
    cif, variance, survival : ndarray
        Per row of ``table``: CIF of cause 1, its delta-method variance
        (Collett's formula, as lifelines; where the last subjects at risk all
        leave, lifelines' ``0 * inf`` term is its value 0 since ``F`` cannot
        move after that row), Kaplan–Meier probability of no exit yet.
    alpha : float
    """

    table: EventTable
    cif: np.ndarray
    survival: np.ndarray
    alpha: float
    aj: AJResult

    @property
    def variance(self) -> np.ndarray:
        return self.aj.variance_of(0) if len(self.cif) else np.zeros(0)

    def at(self, horizon: float | None) -> AJAt:
        """Values at ``horizon`` (None: at the end of follow-up), one per group.

        The value at ``horizon`` is the step function's value at the largest
        distinct duration not after it (0, with nothing decided, before the
        first one).
        """
        table = self.table
        n_groups = table.n_groups
        off = table.offsets
        empty = np.diff(off) == 0
        last_row = off[1:] - 1
        follow_up = np.full(n_groups, np.nan)
        follow_up[~empty] = table.time[last_row[~empty]]
        if horizon is None:
            j = last_row
        else:
            cnt = np.bincount(table.group[table.time <= horizon], minlength=n_groups)
            j = off[:-1] + cnt - 1
        before = (j < off[:-1]) & ~empty
        ok = (~empty) & ~before
        jj = np.where(ok, j, 0)
        est = np.full(n_groups, np.nan)
        var = np.full(n_groups, np.nan)
        und = np.full(n_groups, np.nan)
        exits = np.zeros(n_groups)
        if len(table.time):
            est[ok] = self.cif[jj[ok]]
            var[ok] = self.aj.variance_at(jj[ok], 0)
            und[ok] = self.survival[jj[ok]]
            cum_exits = np.cumsum(table.observed)
            base = np.r_[0.0, cum_exits][off[:-1]]
            exits[ok] = cum_exits[jj[ok]] - base[ok]
        est[before] = 0.0
        var[before] = 0.0
        und[before] = 1.0
        lo, hi = loglog_interval(est, var, self.alpha)
        holds = np.full(n_groups, np.nan)
        holds[~empty] = (
            follow_up[~empty] if horizon is None else np.minimum(horizon, follow_up[~empty])
        )
        return AJAt(est, var, lo, hi, und, holds, follow_up, exits, table.totals)


def aj_fit(
    durations: np.ndarray,
    causes: np.ndarray,
    groups: np.ndarray,
    *,
    n_groups: int,
    n_causes: int,
    alpha: float,
    weights: np.ndarray | None = None,
) -> AJFit:
    """Aalen–Johansen CIF of cause 1 per group, from one :func:`event_table` pass."""
    table = event_table(
        durations, causes, groups=groups, n_groups=n_groups, n_causes=n_causes, weights=weights
    )
    aj = aalen_johansen(table, alpha=alpha)
    rows = len(table.time)
    cif = aj.cif_of(0) if rows else np.zeros(0)
    return AJFit(table, cif, aj.survival, alpha, aj)


def aj_at(
    durations: np.ndarray,
    causes: np.ndarray,
    groups: np.ndarray,
    *,
    n_groups: int,
    n_causes: int,
    horizon: float | None,
    alpha: float,
    weights: np.ndarray | None = None,
) -> AJAt:
    """Aalen–Johansen CIF of cause 1 at ``horizon`` (None: end of follow-up), per group."""
    fit = aj_fit(
        durations,
        causes,
        groups,
        n_groups=n_groups,
        n_causes=n_causes,
        alpha=alpha,
        weights=weights,
    )
    return fit.at(horizon)


def loglog_interval(
    estimate: np.ndarray, variance: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Log(-log) interval of a probability from its variance (NaN at 0 and 1)."""
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = np.asarray(estimate, dtype=float)
    lower, upper, se = loglog_bounds(p, np.asarray(variance, dtype=float), z)
    bad = ~((p > 0) & (p < 1)) | ~np.isfinite(se)
    return np.where(bad, np.nan, lower), np.where(bad, np.nan, upper)


def proportion_interval(
    count: np.ndarray, nobs: np.ndarray, *, alpha: float, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """statsmodels ``proportion_confint`` over arrays; NaN where ``nobs`` is 0.

    Counts may be non-integer (effective counts); ``wilson`` and ``jeffreys``
    are defined for them.
    """
    from statsmodels.stats.proportion import proportion_confint

    count = np.asarray(count, dtype=float)
    nobs = np.asarray(nobs, dtype=float)
    lo = np.full(count.shape, np.nan)
    hi = np.full(count.shape, np.nan)
    ok = nobs > 0
    if ok.any():
        lo_ok, hi_ok = proportion_confint(count[ok], nobs[ok], alpha=alpha, method=method)
        lo[ok] = lo_ok
        hi[ok] = hi_ok
    return lo, hi


def bootstrap_cif(
    durations: np.ndarray,
    causes: np.ndarray,
    groups: np.ndarray,
    *,
    n_groups: int,
    horizon: float | None,
    weights: np.ndarray,
    presorted: bool = False,
) -> np.ndarray:
    """Aalen–Johansen CIF of cause 1 at ``horizon`` for many weightings of the same subjects.

    ``weights`` has one row per replicate (bootstrap multiplicities). The
    subjects are sorted and their distinct times found once; each replicate
    only re-weights the counts, so a replicate costs a few array passes
    rather than a sort. The value at ``horizon`` (None: end of follow-up) is
    the same step-function reading as :meth:`AJFit.at`; a group with no weight
    in a replicate is NaN there. ``presorted=True`` says the subjects are
    already sorted by group then duration (the sort is then skipped).

    Returns
    -------
    ndarray, shape (replicates, n_groups)
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    n_rep = weights.shape[0]
    out = np.full((n_rep, n_groups), np.nan)
    if not len(durations):
        return out
    if presorted:
        g, t, c, w = np.asarray(groups), np.asarray(durations), np.asarray(causes), weights
    else:
        order = np.lexsort((durations, groups))
        g = np.asarray(groups)[order]
        t = np.asarray(durations)[order]
        c = np.asarray(causes)[order]
        w = weights[:, order]
    new = np.r_[True, (g[1:] != g[:-1]) | (t[1:] != t[:-1])]
    starts = np.flatnonzero(new)
    run_group = g[starts]
    run_time = t[starts].astype(float)
    d1 = np.add.reduceat(w * (c == 1), starts, axis=1)
    d_all = np.add.reduceat(w * (c > 0), starts, axis=1)
    removed = np.add.reduceat(w, starts, axis=1)
    off = np.searchsorted(run_group, np.arange(n_groups + 1), side="left")
    for k in range(n_groups):
        a, b = int(off[k]), int(off[k + 1])
        if a == b:
            continue
        rem = removed[:, a:b]
        total = rem.sum(axis=1)
        at_risk = total[:, None] - (np.cumsum(rem, axis=1) - rem)
        with np.errstate(divide="ignore", invalid="ignore"):
            h_all = np.where(at_risk > 0, d_all[:, a:b] / at_risk, 0.0)
            h1 = np.where(at_risk > 0, d1[:, a:b] / at_risk, 0.0)
        surv = np.cumprod(1.0 - h_all, axis=1)
        s_prev = np.hstack([np.ones((n_rep, 1)), surv[:, :-1]])
        cif = np.cumsum(s_prev * h1, axis=1)
        if horizon is None:
            j = b - a - 1
        else:
            j = int(np.sum(run_time[a:b] <= horizon)) - 1
        out[:, k] = cif[:, j] if j >= 0 else 0.0
        out[total <= 0, k] = np.nan
    return out


def bootstrap_weights(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicities of a stratified nonparametric bootstrap, shape ``(n_boot, len(strata))``.

    Within each stratum, as many units as it has are drawn with replacement,
    so every replicate keeps the strata sizes.
    """
    strata = np.asarray(strata, dtype=np.int64)
    n = len(strata)
    order = np.argsort(strata, kind="stable")
    sorted_strata = strata[order]
    k = int(sorted_strata[-1]) + 1 if n else 0
    starts = np.searchsorted(sorted_strata, np.arange(k), side="left")
    sizes = np.bincount(sorted_strata, minlength=k)
    out = np.zeros((n_boot, n), dtype=np.float64)
    if not n:
        return out
    base = starts[sorted_strata]
    width = sizes[sorted_strata]
    for b in range(n_boot):
        draw = base + np.floor(rng.random(n) * width).astype(np.int64)
        out[b] = np.bincount(order[draw], minlength=n)
    return out


def fit_beta_binomial(
    k: np.ndarray, n: np.ndarray, *, max_concentration: float | None = None
) -> tuple[float, float]:
    """Marginal maximum-likelihood beta prior (mean, concentration) for counts ``k`` of ``n``.

    Maximises ``sum_g log B(k_g + a, n_g - k_g + b) - log B(a, b)`` (the
    beta-binomial likelihood without its constant) over ``a = mu * kappa``,
    ``b = (1 - mu) * kappa``; counts may be non-integer. ``kappa`` is bounded
    by ``max_concentration``, by default the total count ``sum n_g``: when the
    groups show no spread the prior is worth at most as much as all the
    groups' data together (the pooled estimate), not an unbounded amount that
    would make every interval collapse.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    keep = n > 0
    k, n = k[keep], n[keep]
    if not len(k):
        return float("nan"), float("nan")
    pooled = float(np.clip(k.sum() / n.sum(), 1e-6, 1 - 1e-6))
    if max_concentration is None:
        max_concentration = float(max(n.sum(), 1.0))
    lo_kappa = min(np.log(1e-3), np.log(max_concentration))

    def nll(x: np.ndarray) -> float:
        mu = special.expit(x[0])
        kappa = np.exp(x[1])
        a, b = mu * kappa, (1 - mu) * kappa
        return -float(np.sum(special.betaln(k + a, n - k + b) - special.betaln(a, b)))

    best = optimize.OptimizeResult(fun=np.inf, x=np.array([special.logit(pooled), 0.0]))
    hi_kappa = np.log(max_concentration)
    for log_kappa in (np.log(2.0), np.log(50.0), hi_kappa):
        res = optimize.minimize(
            nll,
            x0=np.array([special.logit(pooled), min(log_kappa, hi_kappa)]),
            method="L-BFGS-B",
            bounds=[(-20, 20), (lo_kappa, hi_kappa)],
        )
        if res.fun < best.fun:
            best = res
    return float(special.expit(best.x[0])), float(np.exp(best.x[1]))


def shrink_beta_binomial(
    k: np.ndarray, n: np.ndarray, *, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Empirical-Bayes posterior mean and equal-tailed interval of each group's rate.

    Returns the shrunk estimates, their lower and upper bounds, and the prior's
    mean and concentration.
    """
    mu, kappa = fit_beta_binomial(k, n)
    k = np.nan_to_num(np.asarray(k, dtype=float))
    n = np.nan_to_num(np.asarray(n, dtype=float))
    a = mu * kappa + k
    b = (1 - mu) * kappa + (n - k)
    mean = a / (a + b)
    lo = stats.beta.ppf(alpha / 2, a, b)
    hi = stats.beta.ppf(1 - alpha / 2, a, b)
    return mean, lo, hi, mu, kappa


def wald_homogeneity(estimate: Sequence[float], variance: Sequence[float]) -> tuple[float, int]:
    """Wald chi-square statistic that all estimates are equal, and its degrees of freedom.

    ``X = sum_g w_g (theta_g - theta_w)^2`` with ``w_g = 1 / var_g`` and
    ``theta_w`` the ``w``-weighted mean; with two groups this is
    ``(theta_1 - theta_2)^2 / (var_1 + var_2)``, the unpooled two-sample z test squared.
    """
    est = np.asarray(estimate, dtype=float)
    var = np.asarray(variance, dtype=float)
    w = 1.0 / var
    mean = np.sum(w * est) / np.sum(w)
    return float(np.sum(w * (est - mean) ** 2)), len(est) - 1
