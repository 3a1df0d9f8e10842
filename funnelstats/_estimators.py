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

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import stats

__all__ = [
    "EventTable",
    "aalen_johansen",
    "any_cause",
    "event_table",
    "kaplan_meier",
    "loglog_bounds",
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

    @cached_property
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


def any_cause(table: EventTable) -> EventTable:
    """``table`` with its causes merged into one: exits of any cause.

    Examples
    --------
    >>> t = any_cause(event_table(np.array([2, 3, 3, 5]), np.array([1, 2, 0, 1])))
    >>> t.events.ravel()
    array([1., 1., 1.])
    """
    return EventTable(
        group=table.group,
        time=table.time,
        at_risk=table.at_risk,
        events=table.observed[:, None],
        censored=table.censored,
        offsets=table.offsets,
        totals=table.totals,
    )


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
    w = None if weights is None else np.asarray(weights, dtype=float)
    if n and (int(causes.min()) < 0 or int(causes.max()) > n_causes):
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
        w = np.ones(n) if w is None else w[order]
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
    if w is None:
        totals = np.bincount(groups, minlength=n_groups).astype(float)
    else:
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

    Group, duration and cause are packed into one int64 key per subject (the
    cause in the low bits) and the keys sorted: one sort of plain integers.
    Runs of equal (group, duration) are the rows of the table; the exits of
    each cause and the censorings in every row are one ``bincount`` of
    (row, cause) cells. None when the values do not fit in 63 bits.
    """
    n = len(durations)
    if not n or durations.dtype.kind not in "iu":
        return None
    t_min, t_max = int(durations.min()), int(durations.max())
    g_min, g_max = int(groups.min()), int(groups.max())
    if t_min < 0 or g_min < 0 or g_max >= n_groups:
        return None
    bits = int(n_causes).bit_length()
    span = t_max + 1
    if n_groups * span * (1 << bits) >= 2**63:
        return None
    key = np.multiply(groups, span, dtype=np.int64)
    key += durations
    key <<= bits
    key |= causes
    key.sort()
    rest = key >> bits  # group * span + duration
    key &= (1 << bits) - 1  # the cause
    run_new = np.empty(n, dtype=bool)  # runs of one (group, duration)
    run_new[0] = True
    np.not_equal(rest[1:], rest[:-1], out=run_new[1:])
    run_rest = rest[run_new]
    del rest
    m = len(run_rest)
    removed = np.diff(np.r_[np.flatnonzero(run_new), n]).astype(float)
    # cell (run, cause) of each subject, counted in one pass
    cell = np.cumsum(run_new)
    del run_new
    cell -= 1
    cell *= n_causes + 1
    cell += key
    del key
    counts = np.bincount(cell, minlength=m * (n_causes + 1)).reshape(m, n_causes + 1)
    del cell
    ev = counts[:, 1:].astype(float)
    cens = counts[:, 0].astype(float)
    del counts
    group = run_rest // span
    run_rest -= group * span
    return group, run_rest.astype(float), ev, cens, removed


#: :meth:`AJResult.variance_at` sums up to the requested rows when they are fewer than
#: this fraction of all rows (1 / factor), and reads the full running sums otherwise.
_SPARSE_FACTOR = 16


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


class _Bounds:
    """``ci_lower`` / ``ci_upper`` at every row, computed by ``interval()`` when first read."""

    def interval(self, rows: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    @cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.interval()

    @property
    def ci_lower(self) -> np.ndarray:
        return self._bounds[0]

    @property
    def ci_upper(self) -> np.ndarray:
        return self._bounds[1]


def loglog_bounds(
    p: np.ndarray, variance: np.ndarray, z: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log(-log) bounds of probabilities ``p`` with ``variance``, and the standard error on
    the log(-log) scale (raw: NaN, 0 or 1 where ``p`` is 0 or 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.log(p)
        lf = np.log(-lp)
        se = np.sqrt(variance) / (p * np.abs(lp))
        upper = np.exp(-np.exp(lf - z * se))
        lower = np.exp(-np.exp(lf + z * se))
    return lower, upper, se


class KMResult(_Bounds):
    """Kaplan–Meier per row of an :class:`EventTable`.

    ``survival`` and ``greenwood`` (the running sum of ``d / (n (n - d))``)
    are computed at once; the interval bounds of every row only when first
    read (:meth:`interval` gives them at chosen rows without the rest).
    """

    def __init__(self, survival: np.ndarray, greenwood: np.ndarray, alpha: float) -> None:
        self.survival = survival
        self.greenwood = greenwood
        self.alpha = alpha

    def interval(self, rows: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exponential Greenwood (log(-log)) bounds at ``rows`` (default: every row)."""
        return self._side(rows, lower=True), self._side(rows, lower=False)

    def _side(self, rows: np.ndarray | slice | None, *, lower: bool) -> np.ndarray:
        sel = slice(None) if rows is None else rows
        surv = np.asarray(self.survival[sel], dtype=float)
        gw = np.asarray(self.greenwood[sel], dtype=float)
        z = _z(self.alpha)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.log(surv)
            half = z * np.sqrt(gw) / v
            lv = np.log(-v)
            out = np.exp(-np.exp(lv - half if lower else lv + half))
        out = np.where(np.isnan(out), 1.0, out)
        # where S = 0 the interval collapses to 0 (lifelines fills NaN with 1; 0 is what it means)
        out[surv == 0] = 0.0
        return out

    def bound_quantiles(
        self, rows: slice, time: np.ndarray, qs: Sequence[float]
    ) -> list[tuple[float, float]]:
        """:func:`quantile_time` of the lower and upper bound curves over ``rows``, per ``q``.

        Equal to reading the whole bound curves, but each is computed only
        where the answer can be: the lower bound is at most ``S`` and the
        upper at least ``S`` (``S`` in [0, 1]), so the lower curve reaches
        ``q`` no later than ``S`` does, and the upper one no earlier.
        """
        surv = self.survival[rows]
        n = len(surv)
        # S is non-increasing: the first row at or below q by binary search on -S
        first = {q: int(np.searchsorted(-surv, -q, side="left")) for q in qs}
        lo_end = n if any(i >= n for i in first.values()) else max(first.values()) + 1
        lo = self._side(slice(rows.start, rows.start + lo_end), lower=True)
        out = []
        for q in qs:
            hit = np.flatnonzero(lo <= q)
            q_lo = float(time[hit[0]]) if len(hit) else float("inf")
            q_hi = float("inf")
            i, step = first[q], 4096
            while i < n:  # the upper curve, chunk by chunk from where S reaches q
                stop = min(n, i + step)
                up = self._side(slice(rows.start + i, rows.start + stop), lower=False)
                hit = np.flatnonzero(up <= q)
                if len(hit):
                    q_hi = float(time[i + hit[0]])
                    break
                i, step = stop, step * 4
            out.append((q_lo, q_hi))
        return out


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
        np.cumprod(factor[r], out=surv[r])
        np.cumsum(gw_term[r], out=gw[r])
    return KMResult(surv, gw, alpha)


class AJResult(_Bounds):
    """Aalen–Johansen cumulative incidence per cause at each row.

    ``survival`` (the overall Kaplan–Meier probability of not having exited)
    is computed at once; the incidence ``cif`` (rows × causes) and the
    delta-method variance of a cause and the interval bounds when first read,
    one cause at a time (:meth:`cif_of`, :meth:`variance_of`), and
    :meth:`interval` gives the bounds at chosen rows without the rest.
    """

    def __init__(self, table: EventTable, km: KMResult, alpha: float) -> None:
        self.table = table
        self.alpha = alpha
        self.survival = km.survival
        rows = len(table.time)
        self._s_prev = np.empty(rows)
        for gi in range(table.n_groups):
            r = table.rows(gi)
            if r.stop > r.start:
                self._s_prev[r.start] = 1.0
                self._s_prev[r.start + 1 : r.stop] = km.survival[r.start : r.stop - 1]
        self._cif: dict[int, np.ndarray] = {}
        self._var: dict[int, np.ndarray] = {}

    def cif_of(self, j: int) -> np.ndarray:
        """Cumulative incidence of cause ``j`` (column ``j`` of :attr:`cif`) at every row."""
        if j not in self._cif:
            table = self.table
            with np.errstate(divide="ignore", invalid="ignore"):
                inc = self._s_prev * table.events[:, j]
                inc /= table.at_risk
            for gi in range(table.n_groups):
                r = table.rows(gi)
                np.cumsum(inc[r], out=inc[r])
            self._cif[j] = inc
        return self._cif[j]

    @cached_property
    def cif(self) -> np.ndarray:
        """Cumulative incidence of every cause (rows × causes)."""
        k = self.table.events.shape[1]
        out = np.empty((len(self.table.time), k))
        for j in range(k):
            out[:, j] = self.cif_of(j)
        return out

    def variance_of(self, j: int) -> np.ndarray:
        """Delta-method variance of cause ``j``'s incidence (column ``j``) at every row."""
        if j not in self._var:
            self._var[j] = self._variance(j)
        return self._var[j]

    @cached_property
    def _a(self) -> np.ndarray:
        n = self.table.at_risk
        d_all = self.table.observed
        with np.errstate(divide="ignore", invalid="ignore"):
            # where everyone left (n == d, a group's last row) the term is multiplied by
            # F(t) - F_i = 0: count it as 0 rather than 0 * inf
            return np.where(n > d_all, d_all / (n * (n - d_all)), 0.0)

    @cached_property
    def _w(self) -> np.ndarray:
        return self._s_prev / self.table.at_risk  # S(t-) / n

    @cached_property
    def _w2(self) -> np.ndarray:
        return self._w / self.table.at_risk  # S(t-) / n^2

    def _terms(self, j: int) -> list[np.ndarray]:
        """Per row, the terms whose running sums give the variance of cause ``j``:
        ``a, a F, a F^2, b, c, c F`` with ``c = S(t-) d_j / n^2`` and
        ``b = c S(t-) (n - d_j) / n``."""
        n = self.table.at_risk
        dk = self.table.events[:, j]
        f = self.cif_of(j)
        a = self._a
        c = self._w2 * dk
        b = n - dk
        b *= self._w
        b *= c
        af = a * f
        return [a, af, af * f, b, c, c * f]

    @staticmethod
    def _combine(f: np.ndarray, sums: Sequence[np.ndarray]) -> np.ndarray:
        A, AF, AF2, B, Cs, CF = sums
        with np.errstate(divide="ignore", invalid="ignore"):
            # sum_i (F - F_i)^2 a_i + b_i - 2 (F - F_i) c_i, expanded into running sums
            v = f * (f * A - 2 * AF - 2 * Cs) + AF2 + B + 2 * CF
        if np.all(np.isfinite(v)):
            return np.maximum(v, 0.0)
        return np.where(v < 0, 0.0, v)

    def _variance(self, j: int) -> np.ndarray:
        table = self.table
        sums = self._terms(j)
        sums[0] = sums[0].copy()  # the shared term is summed in place
        for gi in range(table.n_groups):
            r = table.rows(gi)
            for x in sums:
                np.cumsum(x[r], out=x[r])
        return self._combine(self.cif_of(j), sums)

    def variance_at(self, rows: np.ndarray, j: int) -> np.ndarray:
        """The variance of cause ``j`` at ``rows`` only.

        The running sums are summed up to each requested row (one reduction
        per term) instead of kept at every row: for a few rows, such as the
        end of each group, this is a fraction of :meth:`variance_of`.
        """
        rows = np.asarray(rows, dtype=np.int64)
        m = len(self.table.time)
        if j in self._var or not len(rows) or len(rows) * _SPARSE_FACTOR > m:
            return self.variance_of(j)[rows]
        table = self.table
        uniq, inv = np.unique(rows, return_inverse=True)
        starts = table.offsets[:-1][np.diff(table.offsets) > 0]
        bounds = np.union1d(starts, uniq + 1)
        bounds = bounds[bounds < m]
        seg = np.stack([np.add.reduceat(x, bounds) for x in self._terms(j)])
        # segment k covers rows bounds[k]:bounds[k + 1]; a requested row ends its segment
        seg_of_row = np.searchsorted(bounds, uniq, side="right") - 1
        csum = np.empty_like(seg)
        is_start = np.zeros(len(bounds), dtype=bool)
        is_start[np.searchsorted(bounds, starts)] = True
        first = np.flatnonzero(is_start)
        ends = np.r_[first[1:], len(bounds)]
        for lo, hi in zip(first, ends, strict=True):  # per group: running sums of segments
            np.cumsum(seg[:, lo:hi], axis=1, out=csum[:, lo:hi])
        sums = list(csum[:, seg_of_row])
        return self._combine(self.cif_of(j)[uniq], sums)[inv]

    @cached_property
    def variance(self) -> np.ndarray:
        """Variance of every cause (rows × causes)."""
        k = self.table.n_causes
        out = np.empty((len(self.table.time), k))
        for j in range(k):
            out[:, j] = self.variance_of(j)
        return out

    def interval(
        self, rows: np.ndarray | slice | None = None, j: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Log(-log) bounds at ``rows`` (default every row) of cause ``j`` (default all)."""
        if rows is None:
            cif = self.cif if j is None else self.cif_of(j)
            var = self.variance if j is None else self.variance_of(j)
        else:
            idx = np.arange(len(self.table.time))[rows] if isinstance(rows, slice) else rows
            idx = np.asarray(idx, dtype=np.int64)
            causes = range(self.table.n_causes) if j is None else [j]
            var = np.stack([self.variance_at(idx, c) for c in causes], axis=-1)
            cif = np.stack([self.cif_of(c)[idx] for c in causes], axis=-1)
            if j is not None:
                var, cif = var[:, 0], cif[:, 0]
        lower, upper, _ = loglog_bounds(cif, var, _z(self.alpha))
        return lower, upper


def aalen_johansen(table: EventTable, *, alpha: float = 0.05) -> AJResult:
    """Aalen–Johansen cumulative incidence of every cause, per group.

    ``CIF_k(t) = sum_{t_i <= t} S(t_{i-1}) d_ki / n_i`` with ``S`` the
    Kaplan–Meier of exit by any cause. The variance is the delta-method
    formula of Collett (2015, p. 411) that lifelines' ``AalenJohansenFitter``
    uses; intervals are on the log(-log) scale as there. Tied exit times are
    used as they are (no jitter), so results are deterministic.
    At every row, ``survival + sum_k CIF_k == 1``.
    """
    return AJResult(table, kaplan_meier(table, alpha=alpha), alpha)


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
