"""The multi-group log-rank test from sufficient statistics (one vectorised pass)."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["logrank"]


def logrank(
    durations: np.ndarray, observed: np.ndarray, groups: np.ndarray, n_groups: int
) -> tuple[float, int, float]:
    """Log-rank test of equal hazards across groups.

    The statistic is ``(O - E)' V^- (O - E)`` over the groups, with ``O`` the
    observed exits per group, ``E`` the exits expected under a common hazard
    and ``V`` the hypergeometric covariance summed over distinct exit times;
    it is chi-squared with (number of non-empty groups - 1) degrees of freedom.
    This is the statistic of lifelines' ``multivariate_logrank_test`` and of
    ``statsmodels.duration.survfunc.survdiff`` (unweighted).

    Parameters
    ----------
    durations : array
        Durations (ties are exact equality: integer ns keep them exact).
    observed : array of bool
        True where the exit was observed (False: censored).
    groups : array of int
        Group index of each subject, ``0 .. n_groups - 1``.
    n_groups : int

    Returns
    -------
    (statistic, df, p_value)
        NaN statistic and p-value, and df 0, when fewer than two groups have
        subjects or no exit was observed.

    Examples
    --------
    >>> t = np.array([1, 2, 3, 4, 5, 6])
    >>> stat, df, p = logrank(t, np.ones(6, bool), np.array([0, 0, 0, 1, 1, 1]), 2)
    >>> df, round(stat, 3)
    (1, 5.052)
    """
    durations = np.asarray(durations)
    observed = np.asarray(observed, dtype=bool)
    groups = np.asarray(groups, dtype=np.int64)
    present = np.flatnonzero(np.bincount(groups, minlength=n_groups) > 0)
    if len(present) < 2 or not observed.any():
        return float("nan"), 0, float("nan")
    g = np.searchsorted(present, groups)
    k = len(present)
    ut, inv = np.unique(durations, return_inverse=True)
    m = len(ut)
    removed = np.bincount(inv * k + g, minlength=m * k).reshape(m, k).astype(float)
    exits = np.bincount(inv[observed] * k + g[observed], minlength=m * k).reshape(m, k)
    at_risk = np.cumsum(removed[::-1], axis=0)[::-1]  # still there just before each time
    d = exits.sum(axis=1).astype(float)
    n = at_risk.sum(axis=1)
    rows = d > 0
    d, n, at_risk, exits = d[rows], n[rows], at_risk[rows], exits[rows]
    share = at_risk / n[:, None]
    o_minus_e = (exits - share * d[:, None]).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(n > 1, d * (n - d) / (n - 1), 0.0)
    cov = np.diag((w[:, None] * share).sum(axis=0)) - (share * w[:, None]).T @ share
    # drop one group: the covariance of all k has rank k - 1
    u = o_minus_e[:-1]
    v = cov[:-1, :-1]
    stat = float(u @ np.linalg.pinv(v) @ u)
    df = int(np.linalg.matrix_rank(v))
    if df == 0:
        return float("nan"), 0, float("nan")
    return stat, df, float(stats.chi2.sf(stat, df))
