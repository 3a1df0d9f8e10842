"""Kaplan–Meier and Aalen–Johansen from sufficient statistics, for many groups at once.

The counting (:func:`event_table`: at-risk numbers, exits per cause and
censorings at each distinct duration, per group) is one vectorised pass over
sorted arrays and is kept apart from the estimation, so the counting could run
elsewhere (a SQL engine) without touching the estimators. The estimators match
lifelines' ``KaplanMeierFitter`` (exponential Greenwood intervals) and
``AalenJohansenFitter`` (its variance, log(-log) intervals), without
lifelines' random jitter of tied times: tied exits are handled by the
estimator's definition, deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "EventTable",
    "aalen_johansen",
    "event_table",
    "kaplan_meier",
    "quantile_time",
    "restricted_mean",
]


@dataclass(frozen=True)
class EventTable:
    """Counts at each distinct duration, per group.

    Rows are sorted by group then time; group ``g`` occupies rows
    ``offsets[g]:offsets[g + 1]``.

    Attributes
    ----------
    group : ndarray of int64
    time : ndarray of float64
        Distinct durations (same unit as given).
    at_risk : ndarray of float64
        Number at risk just before ``time``.
    events : ndarray of float64, shape (rows, n_causes)
        Exits by each cause (cause 1 is column 0).
    censored : ndarray of float64
    offsets : ndarray of int64, length n_groups + 1
    totals : ndarray of float64
        Subjects per group.
    """

    group: np.ndarray
    time: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray
    censored: np.ndarray
    offsets: np.ndarray
    totals: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_causes(self) -> int:
        return self.events.shape[1]

    @property
    def observed(self) -> np.ndarray:
        """Exits of any cause."""
        if self.events.shape[1] == 0:
            return self.events.sum(axis=1)
        out = self.events[:, 0].copy()
        for j in range(1, self.events.shape[1]):  # column by column: as sum(axis=1), faster
            out += self.events[:, j]
        return out

    def rows(self, g: int) -> slice:
        return slice(int(self.offsets[g]), int(self.offsets[g + 1]))


def event_table(
    durations: np.ndarray,
    causes: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_groups: int | None = None,
    n_causes: int | None = None,
    weights: np.ndarray | None = None,
) -> EventTable:
    """Count exits per cause and censorings at each distinct duration, per group.

    Parameters
    ----------
    durations : array of float or int
        Time observed (ties are exact equality: pass integer nanoseconds to
        keep them exact).
    causes : array of int
        0 = censored (still open), 1..K = the cause of exit.
    groups : array of int, optional
        Group index 0..n_groups-1 of each subject.
    n_groups, n_causes : int, optional
        Defaults: the largest index seen + 1.
    weights : array of float, optional
        Case weights (default 1).

    Returns
    -------
    EventTable

    Examples
    --------
    >>> t = event_table(np.array([2, 3, 3, 5]), np.array([1, 2, 0, 1]))
    >>> t.time, t.at_risk, t.censored
    (array([2., 3., 5.]), array([4., 3., 1.]), array([0., 1., 0.]))
    >>> t.events
    array([[1., 0.],
           [0., 1.],
           [1., 0.]])
    """
    durations = np.asarray(durations)
    causes = np.asarray(causes, dtype=np.int64)
    n = len(durations)
    if groups is None:
        groups = np.zeros(n, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    if n_groups is None:
        n_groups = int(groups.max()) + 1 if n else 1
    if n_causes is None:
        n_causes = max(int(causes.max()) if n else 0, 1)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if n and (np.any(causes < 0) or np.any(causes > n_causes)):
        raise ValueError("causes must be within 0..n_causes")
    packed = None
    if weights is None:
        packed = _packed_counts(durations, groups, causes, n_groups, n_causes)
    if packed is not None:
        row_group, time, ev, cens, removed = packed
    else:
        order = np.lexsort((durations, groups))
        g = groups[order]
        t = durations[order]
        c = causes[order]
        w = w[order]
        if n:
            new = np.r_[True, (g[1:] != g[:-1]) | (t[1:] != t[:-1])]
        else:
            new = np.zeros(0, dtype=bool)
        run = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        m = len(starts)
        ev = np.zeros((m, n_causes))
        for k in range(1, n_causes + 1):
            sel = c == k
            if sel.any():
                ev[:, k - 1] = np.bincount(run[sel], weights=w[sel], minlength=m)
        cens = np.bincount(run[c == 0], weights=w[c == 0], minlength=m) if m else np.zeros(0)
        removed = ev.sum(axis=1) + cens
        row_group = g[starts]
        time = t[starts].astype(float)
        groups = g  # the weighted totals below add in the same order as before
    m = len(row_group)
    totals = np.bincount(groups, weights=w, minlength=n_groups).astype(float)
    offsets = np.searchsorted(row_group, np.arange(n_groups + 1), side="left").astype(np.int64)
    # at risk just before t: group total minus everything removed earlier in the group
    before = np.cumsum(removed)
    before -= removed
    at_risk = np.empty(m)
    for gi in range(n_groups):
        lo, hi = int(offsets[gi]), int(offsets[gi + 1])
        if hi > lo:
            at_risk[lo:hi] = totals[gi] - (before[lo:hi] - before[lo])
    return EventTable(
        group=row_group.astype(np.int64),
        time=time,
        at_risk=at_risk,
        events=ev,
        censored=cens,
        offsets=offsets,
        totals=totals,
    )


def _packed_counts(
    durations: np.ndarray, groups: np.ndarray, causes: np.ndarray, n_groups: int, n_causes: int
) -> tuple[np.ndarray, ...] | None:
    """The counts of :func:`event_table` for unit weights and integer durations, or None.

    Group, duration and cause are packed into one int64 key per subject and
    the keys sorted: one sort of plain integers. Runs of equal keys are the
    exits (or censorings) of one cause at one duration in one group, so every
    count is a difference of positions; no gathers over all subjects. None
    when the values do not fit in 63 bits.
    """
    n = len(durations)
    if not n or durations.dtype.kind not in "iu":
        return None
    t_min, t_max = int(durations.min()), int(durations.max())
    g_min, g_max = int(groups.min()), int(groups.max())
    if t_min < 0 or g_min < 0 or g_max >= n_groups:
        return None
    n_c, span = n_causes + 1, t_max + 1
    if n_groups * span * n_c >= 2**63:
        return None
    key = groups.astype(np.int64) * span
    key += durations
    key *= n_c
    key += causes
    key.sort()
    rest = key // n_c  # group * span + duration
    seg_new = np.ones(n, dtype=bool)
    np.not_equal(key[1:], key[:-1], out=seg_new[1:])
    seg = np.flatnonzero(seg_new)  # runs of one (group, duration, cause)
    seg_len = np.diff(np.r_[seg, n]).astype(float)
    seg_rest = rest[seg]
    run_new = np.ones(len(seg), dtype=bool)
    np.not_equal(seg_rest[1:], seg_rest[:-1], out=run_new[1:])
    run_of_seg = np.cumsum(run_new) - 1
    run_rest = seg_rest[run_new]
    m = len(run_rest)
    seg_cause = key[seg] % n_c
    ev = np.zeros((m, n_causes))
    cens = np.zeros(m)
    exit_ = seg_cause > 0
    ev[run_of_seg[exit_], seg_cause[exit_] - 1] = seg_len[exit_]
    cens[run_of_seg[~exit_]] = seg_len[~exit_]
    removed = np.bincount(run_of_seg, weights=seg_len, minlength=m)
    return run_rest // span, (run_rest % span).astype(float), ev, cens, removed


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


@dataclass(frozen=True)
class KMResult:
    """Kaplan–Meier per row of an :class:`EventTable`."""

    survival: np.ndarray
    greenwood: np.ndarray  # cumulative sum of d / (n (n - d))
    ci_lower: np.ndarray
    ci_upper: np.ndarray


def kaplan_meier(table: EventTable, *, alpha: float = 0.05) -> KMResult:
    """Kaplan–Meier survival at each row of ``table`` (exits of any cause).

    Confidence intervals are the exponential Greenwood (log(-log)) intervals
    of lifelines' ``KaplanMeierFitter``.
    """
    d = table.observed
    n = table.at_risk
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = 1.0 - d / n
        gw_term = d / (n * (n - d))
    surv = np.empty(len(d))
    gw = np.empty(len(d))
    for gi in range(table.n_groups):
        r = table.rows(gi)
        surv[r] = np.cumprod(factor[r])
        gw[r] = np.cumsum(gw_term[r])
    z = _z(alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(surv)
        lower = np.exp(-np.exp(np.log(-v) - z * np.sqrt(gw) / v))
        upper = np.exp(-np.exp(np.log(-v) + z * np.sqrt(gw) / v))
    lower = np.where(np.isnan(lower), 1.0, lower)
    upper = np.where(np.isnan(upper), 1.0, upper)
    # where S = 0 the interval collapses to 0 (lifelines fills NaN with 1; 0 is what it means)
    zero = surv == 0
    lower[zero] = 0.0
    upper[zero] = 0.0
    return KMResult(surv, gw, lower, upper)


@dataclass(frozen=True)
class AJResult:
    """Aalen–Johansen cumulative incidence per cause at each row."""

    cif: np.ndarray  # (rows, n_causes)
    variance: np.ndarray  # (rows, n_causes)
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    survival: np.ndarray  # overall KM (probability of not having exited)


def aalen_johansen(table: EventTable, *, alpha: float = 0.05) -> AJResult:
    """Aalen–Johansen cumulative incidence of every cause, per group.

    ``CIF_k(t) = sum_{t_i <= t} S(t_{i-1}) d_ki / n_i`` with ``S`` the
    Kaplan–Meier of exit by any cause. The variance is the delta-method
    formula of Collett (2015, p. 411) that lifelines' ``AalenJohansenFitter``
    uses; intervals are on the log(-log) scale as there. Tied exit times are
    used as they are (no jitter), so results are deterministic.
    At every row, ``survival + sum_k CIF_k == 1``.
    """
    km = kaplan_meier(table, alpha=alpha)
    d_all = table.observed
    n = table.at_risk
    rows, k = table.events.shape
    cif = np.empty((rows, k))
    var = np.empty((rows, k))
    with np.errstate(divide="ignore", invalid="ignore"):
        # where everyone left (n == d, a group's last row) the term is multiplied by
        # F(t) - F_i = 0: count it as 0 rather than 0 * inf
        a = np.where(n > d_all, d_all / (n * (n - d_all)), 0.0)
    for gi in range(table.n_groups):
        r = table.rows(gi)
        s_prev = np.r_[1.0, km.survival[r][:-1]]
        nn = n[r]
        aa = a[r]
        # the same for every cause: computed once per group
        A = np.cumsum(aa)
        s_prev2, nn2, nn3 = s_prev**2, nn**2, nn**3
        for j in range(k):
            dk = table.events[r, j]
            f = np.cumsum(s_prev * dk / nn)
            cif[r, j] = f
            with np.errstate(divide="ignore", invalid="ignore"):
                b = s_prev2 * dk * (nn - dk) / nn3
                c = s_prev * dk / nn2
                # sum_i (F - F_i)^2 a_i + b_i - 2 (F - F_i) c_i, expanded into running sums
                af = aa * f
                AF, AF2 = np.cumsum(af), np.cumsum(af * f)
                B, Cs, CF = np.cumsum(b), np.cumsum(c), np.cumsum(c * f)
                v = f * f * A - 2 * f * AF + AF2 + B - 2 * (f * Cs - CF)
            var[r, j] = np.maximum(v, 0.0) if np.all(np.isfinite(v)) else np.where(v < 0, 0.0, v)
    z = _z(alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_cif = np.log(cif)
        lf = np.log(-log_cif)
        se = np.sqrt(var) / (cif * np.abs(log_cif))
        upper = np.exp(-np.exp(lf - z * se))
        lower = np.exp(-np.exp(lf + z * se))
    return AJResult(cif, var, lower, upper, km.survival)


def quantile_time(time: np.ndarray, curve: np.ndarray, q: float) -> float:
    """First time at which a non-increasing ``curve`` is at or below ``q``.

    ``inf`` when it never gets there (lifelines' ``qth_survival_time``). The
    curve is the value *after* each ``time``; before the first time it is 1.
    """
    hit = np.flatnonzero(curve <= q)
    if not len(hit):
        return float("inf")
    return float(time[hit[0]])


def restricted_mean(
    time: np.ndarray,
    survival: np.ndarray,
    tau: float,
    *,
    events: np.ndarray | None = None,
    at_risk: np.ndarray | None = None,
) -> tuple[float, float]:
    """Restricted mean survival time up to ``tau`` and its variance.

    The area under the Kaplan–Meier step function from 0 to ``tau``; the
    variance is ``sum_j A_j^2 d_j / (n_j (n_j - d_j))`` with ``A_j`` the area
    from ``t_j`` to ``tau`` (Klein & Moeschberger, 2003, eq. 4.5.1). Returns NaN
    for the variance when ``events``/``at_risk`` are not given.
    """
    keep = time <= tau
    t = np.r_[0.0, time[keep], tau]
    s = np.r_[1.0, survival[keep]]
    widths = np.diff(t)
    area = float(np.sum(s * widths))
    if events is None or at_risk is None:
        return area, float("nan")
    # area from each t_j (j over event rows <= tau) to tau
    seg = s[1:] * widths[1:]  # area of each step after t_j
    tail = np.cumsum(seg[::-1])[::-1]  # area from t_j to tau
    d = events[keep]
    nn = at_risk[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        # the area after the last exit is 0 where everyone left (n == d): no 0 * inf
        term = np.where((d > 0) & (nn > d), tail**2 * d / (nn * (nn - d)), 0.0)
    return area, float(np.sum(term))
