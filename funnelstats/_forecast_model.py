"""The stage-by-stage (semi-Markov) model behind the bookings forecast.

For each open stage (and group), the time in the stage and where the deal goes
next are estimated jointly and non-parametrically: the Aalen–Johansen
cumulative incidence ``F_j(t)`` of leaving the stage for destination ``j``
(every other open stage — forward or back —, won, lost) by ``t`` days after
entering it, with stays still open censored at the cut-off. Beyond the longest
stay seen (``tau``) the curves continue with a constant hazard and the
destination mix of the late stays (the exponential tail, see :class:`StageCurves`).

Two clocks
----------
A pure semi-Markov chain forgets everything but the current stage and the time
in it: a deal that needed twice the usual time to reach Proposal is forecast
like any other deal entering Proposal. Deals differ persistently (segment,
complexity, buyer), and a slow deal tends to stay slow, so the chain mixes
fast and slow deals afresh at every stage, which overstates the chance of a
quick run through several stages (the convolution of mixtures is wider than
the mixture of convolutions). The model therefore keeps a second clock, the
deal's age when it entered the stage (days since it was created): each
stage's curves are estimated separately for ``age_classes`` bands of entry
age (quantiles among the stage's stays, so every band is equally populated),
and the chain carries the deal's age forward, entering the next stage at the
age the deal will then have. With one band this is the plain semi-Markov model.

The recursion
-------------
The probability of being won within ``u`` days of entering stage ``s`` at deal
age ``e``, ``w_s(u, e)``, solves the renewal system

    w_s(u, e) = sum_j  integral_0^u  dF_sj(t | e) w_j(u - t, e + t),   w_won = 1, w_lost = 0,

where ``F_s(. | e)`` are the curves of the entry-age band holding ``e``. It is
computed exactly on a time grid of step ``h = horizon / ceil(horizon in days)``
(at most a day) for ``u`` and for ``e`` up to the last band edge ``E`` (beyond
it every stage is in its last band, so ``e`` no longer matters): exits in
``((m - 1/2) h, (m + 1/2) h]`` leave ``u - m h`` days to go and an entry age of
``e + m h``, and same-instant moves (``m = 0``) are solved as a linear system
at each grid point. A deal in stage ``s`` with age ``a`` in it, which entered
it at deal age ``e``, then wins within the horizon ``H`` with probability

    sum_j sum_m [F_sj(a + u_{m+1} | e) - F_sj(a + u_m | e)] / S_s(a | e) w_j(H - m h, e + a + m h),

the conditioning on having stayed ``a`` days being exact (no grid in ``a``).
The eventual win probability ``v_s(e)`` solves the same system without the
time limit, backwards in ``e`` from ``E`` (where it is the plain chain of the
last bands). Both are deterministic: per-deal probabilities carry no Monte
Carlo noise, and the cost is independent of the number of deals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from . import _columns as C
from ._estimators import EventTable
from ._stays import NS_PER_DAY, stays
from .data import FunnelData

__all__ = ["SemiMarkovFunnel", "StageCurves", "deal_origin_ns"]

_TINY = 1e-12
_NAT = np.iinfo(np.int64).min


@dataclass(frozen=True)
class StageCurves:
    """Cumulative incidence of each destination of one stage, with its tail.

    Attributes
    ----------
    time : ndarray (m,)
        Distinct stay durations in days.
    cif : ndarray (m, K)
        Aalen–Johansen ``F_j`` just after each time, per destination ``j``
        (open stage codes ``0..S-1``, then won ``S``, then lost ``S+1``).
    tau : float
        Longest stay seen (days).
    tail_rate : float
        Hazard of leaving (per day) assumed beyond ``tau``: exits per day at
        risk among the stays longer than their 80th percentile (all stays when
        none of those exited; 0 when the stage has no exit at all).
    tail_mix : ndarray (K,)
        Destination shares assumed beyond ``tau`` (those of the same late exits).
    n_stays, n_exits : int
    origin : tuple
        Which stays the curve was estimated from (empty when unknown): refits of a model
        with other weights share ``time`` when they share ``origin``.
    """

    time: np.ndarray
    cif: np.ndarray
    tau: float
    tail_rate: float
    tail_mix: np.ndarray
    n_stays: int
    n_exits: int
    origin: tuple = ()

    @property
    def n_dest(self) -> int:
        return self.cif.shape[1]

    def _at(self, x: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        if idx is None:
            idx = np.searchsorted(self.time, x, side="right") - 1
        out = np.where((idx >= 0)[..., None], self.cif[np.maximum(idx, 0)], 0.0)
        return out

    def cdf(self, x: np.ndarray, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``F_j(x)`` (shape ``x.shape + (K,)``) and ``S(x)``, with the tail beyond ``tau``
        (``idx``: :meth:`index` of ``x`` when already known)."""
        x = np.asarray(x, dtype=float)
        if len(self.time) == 0:
            f = np.zeros((*x.shape, self.n_dest))
            return f, np.ones(x.shape)
        inside = self._at(np.minimum(x, self.tau), idx)
        s_in = 1.0 - inside.sum(axis=-1)
        over = np.maximum(x - self.tau, 0.0)
        s_tau = max(1.0 - float(self.cif[-1].sum()), 0.0)
        decay = np.exp(-self.tail_rate * over)
        f = inside + (s_tau * (1.0 - decay))[..., None] * self.tail_mix
        s = np.where(x > self.tau, s_tau * decay, np.maximum(s_in, 0.0))
        return f, s

    def index(self, x: np.ndarray) -> np.ndarray:
        """Row of :attr:`time` holding ``min(x, tau)`` (-1 before the first time), int32."""
        x = np.minimum(np.asarray(x, dtype=float), self.tau)
        return (np.searchsorted(self.time, x, side="right") - 1).astype(np.int32)

    def cdf_dot(self, x: np.ndarray, coef: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """``sum_m sum_j F_j(x[i, m]) coef[m, j]`` for ``x`` of shape ``(n, M)``, increasing
        along its rows: :meth:`cdf` contracted with ``coef`` (``(M, K)``); ``idx``:
        :meth:`index` of ``x`` when already known."""
        x = np.asarray(x, dtype=float)
        if len(self.time) == 0:
            return np.zeros(len(x))
        if idx is None:
            idx = self.index(x)
        before = idx < 0
        if before.any():
            idx = np.where(before, 0, idx)
        out = np.einsum("nmk,mk->n", np.take(self.cif, idx, axis=0), coef)
        if before.any():
            out -= before.astype(float) @ (coef @ self.cif[0])
        beyond = np.flatnonzero(x[:, -1] > self.tau)
        if len(beyond) and self.tail_rate > 0 and self.tail_mix.any():
            s_tau = max(1.0 - float(self.cif[-1].sum()), 0.0)
            grow = -np.expm1(-self.tail_rate * np.maximum(x[beyond] - self.tau, 0.0))
            out[beyond] += s_tau * (grow @ (coef @ self.tail_mix))
        return out

    def conditional(self, age: np.ndarray, u: np.ndarray) -> np.ndarray:
        """P(left for ``j`` within ``u`` days | still in the stage at ``age``).

        ``age`` has shape ``(n,)``, ``u`` shape ``(g,)``; returns ``(n, g, K)``.
        Where nothing is left at ``age`` (the curve reached 0), the tail hazard
        applies from ``age`` on.
        """
        age = np.asarray(age, dtype=float)
        f_a, s_a = self.cdf(age)
        f_x, _ = self.cdf(age[:, None] + u[None, :])
        alive = s_a > _TINY
        with np.errstate(divide="ignore", invalid="ignore"):
            cond = (f_x - f_a[:, None, :]) / s_a[:, None, None]
        tail = (1.0 - np.exp(-self.tail_rate * u))[:, None] * self.tail_mix
        cond = np.where(alive[:, None, None], cond, tail[None, :, :])
        return np.clip(cond, 0.0, 1.0)

    def remaining(self, age: np.ndarray) -> np.ndarray:
        """P(ever leaving for ``j`` | still in the stage at ``age``), shape ``(n, K)``."""
        f_a, s_a = self.cdf(np.asarray(age, dtype=float))
        with np.errstate(divide="ignore", invalid="ignore"):
            rest = (self.total()[None, :] - f_a) / s_a[:, None]
        tail = self.tail_mix if self.tail_rate > 0 else np.zeros(self.n_dest)
        rest = np.where((s_a > _TINY)[:, None], rest, tail[None, :])
        return np.clip(rest, 0.0, 1.0)

    def total(self) -> np.ndarray:
        """``F_j(infinity)``: where the stage's stays end up, tail included."""
        s_tau = max(1.0 - float(self.cif[-1].sum()), 0.0) if len(self.time) else 1.0
        base = self.cif[-1] if len(self.time) else np.zeros(self.n_dest)
        return base + (s_tau * self.tail_mix if self.tail_rate > 0 else 0.0)


def deal_origin_ns(data: FunnelData) -> np.ndarray:
    """Per deal (row of ``data.deals``): when its clock starts, ns since the epoch.

    The earlier of its created date and its first stage entry (either may be
    missing or late in a real export); ``NaT`` as ``int64`` min when neither exists.
    """
    n = data.n_deals
    created = data.deals[C.CREATED_AT].to_numpy(dtype="datetime64[ns]").view(np.int64)
    created = np.where(created == _NAT, np.iinfo(np.int64).max, created)
    a = data.arrays
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    if len(a.deal):
        start = np.r_[True, a.deal[1:] != a.deal[:-1]]
        first[a.deal[start]] = a.entered[start]
    out = np.minimum(created, first)
    return np.where(out == np.iinfo(np.int64).max, _NAT, out)


@dataclass
class SemiMarkovFunnel:
    """Stage-by-stage model of the open pipeline: time in stage × next stage × deal age.

    Parameters
    ----------
    min_exits : int
        A group's stage (or entry-age band) with fewer exits than this uses the
        group's stage curves over all bands, or failing that the pooled (all
        groups) curves of the stage and band.
    tail_quantile : float
        The late stays that set the tail hazard are those longer than this
        quantile of the stage's stay durations.
    age_classes : int
        Bands of the deal's age at stage entry (the second clock); 1 gives the
        plain semi-Markov chain.

    Attributes
    ----------
    curves_ : list of list of list of StageCurves
        ``curves_[g][s][c]``: group ``g``, open stage ``s``, entry-age band ``c``.
    pooled_ : list of StageCurves
        All groups and bands together, per stage.
    cuts_ : list of ndarray
        Per open stage, the entry-age band edges (days); band ``c`` holds ages
        in ``[cuts[c - 1], cuts[c])``.
    fallback_ : list of tuple
        ``(group, stage)`` pairs that use the pooled curves.
    stage_exits_ : list of int
        Per open stage, the stays that ended (with a positive weight), all groups.
    n_open_ : int
    """

    min_exits: int = 20
    tail_quantile: float = 0.8
    age_classes: int = 3
    curves_: list[list[list[StageCurves]]] = field(default_factory=list, init=False)
    pooled_: list[StageCurves] = field(default_factory=list, init=False)
    cuts_: list[np.ndarray] = field(default_factory=list, init=False)
    fallback_: list[tuple[int, int]] = field(default_factory=list, init=False)
    stage_exits_: list[int] = field(default_factory=list, init=False)
    n_open_: int = field(default=0, init=False)
    _prep: dict = field(default_factory=dict, init=False, repr=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def fit(
        self,
        data: FunnelData,
        *,
        groups: np.ndarray | None = None,
        n_groups: int = 1,
        weights: np.ndarray | None = None,
        pooled: bool = True,
    ) -> SemiMarkovFunnel:
        """Fit the curves on ``data`` (stays still open are censored at its export date).

        ``groups`` gives each deal's (row of ``data.deals``) group code;
        ``weights`` each deal's weight in the estimates (default 1; the
        ``min_exits`` rule counts stays, not weights). ``pooled=False``: with groups,
        the pooled curves (:attr:`pooled_`) only when some group's stage falls short of
        ``min_exits`` and needs them, as in the refits (the same group curves, less
        work and memory); :attr:`stage_exits_` counts the exits either way.
        """
        if self.age_classes < 1:
            raise ValueError("age_classes must be at least 1")
        st = stays(data)
        kind = data.arrays.kind
        n_open = data.pipeline.n_open
        nxt = st.next_stage
        nk = np.where(nxt >= 0, kind[np.maximum(nxt, 0)], -1)
        dest = np.where(nk == 0, nxt, np.where(nk == 1, n_open, np.where(nk == 2, n_open + 1, -1)))
        dest = dest.astype(np.int16 if n_open + 2 < 2**15 else np.int64)
        if groups is None:
            n_groups = 1
            g_of = np.zeros(len(st), dtype=np.int32)
        else:
            g_of = np.asarray(groups, dtype=np.int64)[st.deal]
            g_of = g_of.astype(np.int32) if n_groups < 2**31 // max(n_open, 1) else g_of
        origin = deal_origin_ns(data)[st.deal]
        entry_age = np.where(origin == _NAT, 0.0, (st.start - origin) / NS_PER_DAY)
        entry_age = np.maximum(entry_age, 0.0)
        self.n_open_ = n_open
        self.cuts_ = []
        band = np.zeros(len(st), dtype=np.int16 if self.age_classes < 2**15 else np.int64)
        for s in range(n_open):
            sel = st.stage == s
            e = entry_age[sel]
            if self.age_classes > 1 and len(e):
                q = np.quantile(e, np.arange(1, self.age_classes) / self.age_classes)
                cuts = np.unique(q[q > e.min()])
            else:
                cuts = np.zeros(0)
            self.cuts_.append(cuts)
            band[sel] = np.searchsorted(cuts, e, side="right")
        self._prep = {
            "duration_ns": st.duration_ns,
            "dest": dest,
            "stage": st.stage,
            "band": band,
            "group": g_of,
            "deal": st.deal,
            "n_groups": n_groups,
            "grouped": groups is not None,
        }
        live = dest >= 0
        if weights is not None:
            live &= np.asarray(weights, dtype=float)[st.deal] > 0
        self.stage_exits_ = np.bincount(st.stage[live], minlength=n_open)[:n_open].tolist()
        return self._estimate(weights, lean=not pooled)

    def reweighted(self, weights: np.ndarray) -> SemiMarkovFunnel:
        """The model refitted with other deal weights (same stays, groups and age bands).

        Used for the bootstrap of the fit: Poisson(1) weights per deal resample
        whole deal histories.
        """
        m = SemiMarkovFunnel(self.min_exits, self.tail_quantile, self.age_classes)
        m.cuts_, m.n_open_, m._prep = self.cuts_, self.n_open_, self._prep
        return m._estimate(weights, lean=True)

    def _estimate(self, weights: np.ndarray | None, lean: bool = False) -> SemiMarkovFunnel:
        """Fit the curves; ``lean``: the pooled curves only where a fallback needs them."""
        pr = self._prep
        n_open = self.n_open_
        n_dest = n_open + 2
        n_groups = pr["n_groups"]
        stage, band, g_of, dest = pr["stage"], pr["band"], pr["group"], pr["dest"]
        n_band = max(len(c) for c in self.cuts_) + 1 if n_open else 1
        w_deal = None if weights is None else np.asarray(weights, dtype=float)

        i64 = np.int64
        keys = {
            "stage": (lambda: stage, n_open),
            "group_stage": (lambda: g_of.astype(i64) * n_open + stage, n_groups * n_open),
            "stage_band": (lambda: stage.astype(i64) * n_band + band, n_open * n_band),
            "group_stage_band": (
                lambda: (g_of.astype(i64) * n_open + stage) * n_band + band,
                n_groups * n_open * n_band,
            ),
        }
        layouts = pr.setdefault("layouts", {})

        def curves(name: str) -> list[StageCurves]:
            lay = layouts.get(name)
            if lay is None:
                make, n_keys = keys[name]
                if "by_time" not in pr:
                    pr["by_time"] = _argsort_index(pr["duration_ns"])
                lay = _Layout.build(
                    pr["duration_ns"],
                    dest,
                    pr["deal"],
                    make(),
                    n_keys,
                    n_dest,
                    self.tail_quantile,
                    by_time=pr["by_time"],
                )
                layouts[name] = lay
            return lay.curves(w_deal)

        if pr["grouped"]:
            group_s = curves("group_stage")
            short = any(c.n_exits < self.min_exits for c in group_s)
            pooled_s = curves("stage") if short or not lean else []
        else:
            pooled_s = group_s = curves("stage")
        if n_band > 1:
            pooled_sc = curves("stage_band")
            group_sc = curves("group_stage_band")
            if not len(pooled_s):
                pooled_s = curves("stage")
        else:
            pooled_sc, group_sc = pooled_s, group_s
        self.pooled_ = pooled_s
        self._cache = {}
        self.fallback_ = []
        self.curves_ = []
        for g in range(n_groups):
            cg = []
            for s in range(n_open):
                gs = group_s[g * n_open + s]
                if pr["grouped"] and gs.n_exits < self.min_exits:
                    self.fallback_.append((g, s))
                bands = []
                for c in range(len(self.cuts_[s]) + 1):
                    cand = group_sc[(g * n_open + s) * n_band + c]
                    if cand.n_exits < self.min_exits:
                        cand = gs if gs.n_exits >= self.min_exits else None
                    if cand is None:
                        cand = pooled_sc[s * n_band + c]
                        if cand.n_exits < self.min_exits:
                            cand = pooled_s[s]
                    bands.append(cand)
                cg.append(bands)
            self.curves_.append(cg)
        return self

    # ------------------------------------------------------------ predict
    def grid(self, horizon_days: float) -> tuple[int, float]:
        """Number of grid steps and step (days) used for ``horizon_days``."""
        k = max(int(np.ceil(horizon_days - 1e-9)), 1)
        return k, horizon_days / k

    def band(self, stage: np.ndarray, entry_age_days: np.ndarray) -> np.ndarray:
        """Entry-age band of deals in ``stage`` that entered it at ``entry_age_days``."""
        stage = np.asarray(stage, dtype=np.int64)
        e = np.asarray(entry_age_days, dtype=float)
        out = np.zeros(len(stage), dtype=np.int64)
        for s in range(self.n_open_):
            sel = stage == s
            out[sel] = np.searchsorted(self.cuts_[s], e[sel], side="right")
        return out

    def _age_grid(self, h: float) -> tuple[int, np.ndarray]:
        """Entry-age grid: last index ``E`` and the band of every stage at ``e = 0..E``."""
        last = max((float(c[-1]) for c in self.cuts_ if len(c)), default=0.0)
        n_e = int(np.ceil(last / h - 1e-9)) if last > 0 else 0
        ages = np.arange(n_e + 1) * h
        bands = np.vstack(
            [np.searchsorted(self.cuts_[s], ages, side="right") for s in range(self.n_open_)]
        )
        return n_e, bands

    def _masses(
        self, group: int, n_bins: int, h: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per stage and band: bin masses ``p[s, c, m, j]`` (``m = 0..n_bins``), the half
        bins ending at ``m h``, the mass at 0 and the totals (padded to the most bands)."""
        curves = self.curves_[group]
        n_open = self.n_open_
        n_dest = n_open + 2
        n_band = max(len(b) for b in curves)
        mids = (np.arange(n_bins + 1) + 0.5) * h
        ends = np.arange(n_bins + 1) * h
        p = np.zeros((n_open, n_band, n_bins + 1, n_dest))
        half = np.zeros_like(p)
        zero = np.zeros((n_open, n_band, n_dest))
        tot = np.zeros((n_open, n_band, n_dest))
        for s, bands in enumerate(curves):
            for c in range(n_band):
                cv = bands[min(c, len(bands) - 1)]
                f_mid, _ = cv.cdf(mids)
                f_end, _ = cv.cdf(ends)
                f_prev = np.vstack([np.zeros((1, n_dest)), f_mid[:-1]])
                p[s, c] = f_mid - f_prev
                half[s, c] = f_end - f_prev
                zero[s, c] = f_end[0]
                tot[s, c] = cv.total()
        return p, half, zero, tot

    def win_within(self, horizon_days: float, group: int = 0) -> np.ndarray:
        """``W[k, e, j]``: P(won within ``k h`` days of entering ``j`` at deal age ``e h``).

        ``k = 0..K``, ``e = 0..E`` (the last row stands for every age from ``E h`` on);
        columns are the destinations (open stages, won = 1, lost = 0).
        """
        return self._win_within_all(horizon_days)[group]

    def _win_within_all(self, horizon_days: float) -> np.ndarray:
        """:meth:`win_within` for every group at once, ``(G, K+1, E+1, D)`` (cached)."""
        key = ("within", float(horizon_days))
        if key in self._cache:
            return self._cache[key]
        n_open = self.n_open_
        n_dest = n_open + 2
        n_groups = len(self.curves_)
        k_steps, h = self.grid(horizon_days)
        n_e, bands = self._age_grid(h)
        masses = [self._masses(g, k_steps, h) for g in range(n_groups)]
        s_idx = np.arange(n_open)[:, None]
        pe = np.stack([m[0][s_idx, bands] for m in masses])  # (G, S, E+1, K+1, D)
        he = np.stack([m[1][s_idx, bands] for m in masses])
        ze = np.stack([m[2][s_idx, bands] for m in masses])  # (G, S, E+1, D)
        e_idx = np.arange(n_e + 1)
        w = np.zeros((n_groups, k_steps + 1, n_e + 1, n_dest))
        w[..., n_open] = 1.0
        eye = np.eye(n_open)
        # k = 0: only same-instant moves
        a0 = np.transpose(ze[..., :n_open], (0, 2, 1, 3))  # (G, E+1, S, S)
        w[:, 0, :, :n_open] = _solve(eye - a0, np.transpose(ze[..., n_open], (0, 2, 1)))
        lhs = eye - np.transpose(pe[:, :, :, 0, :n_open], (0, 2, 1, 3))
        for k in range(1, k_steps + 1):
            rhs = pe[:, :, :, 0, n_open].copy()  # (G, S, E+1)
            if k > 1:
                m = np.arange(1, k)
                shifted = w[:, k - m[:, None], np.minimum(e_idx[None, :] + m[:, None], n_e)]
                rhs += np.einsum("gsemd,gmed->gse", pe[:, :, :, 1:k, :], shifted)
            end = w[:, 0, np.minimum(e_idx + k, n_e)]  # (G, E+1, D)
            rhs += np.einsum("gsed,ged->gse", he[:, :, :, k, :], end)
            w[:, k, :, :n_open] = _solve(lhs, np.transpose(rhs, (0, 2, 1)))
        w.flags.writeable = False
        self._cache[key] = w
        return w

    def win_eventually(self, group: int = 0, h: float = 1.0) -> np.ndarray:
        """``V[e, j]``: P(ever won | entering ``j`` at deal age ``e h``), tail included."""
        n_open = self.n_open_
        n_dest = n_open + 2
        n_e, bands = self._age_grid(h)
        p, _, _, tot = self._masses(group, max(n_e, 1), h)
        s_idx = np.arange(n_open)
        eye = np.eye(n_open)
        v = np.zeros((n_e + 1, n_dest))
        v[:, n_open] = 1.0
        t_last = tot[s_idx, bands[:, n_e]]  # (S, D)
        v[n_e, :n_open] = _solve(eye - t_last[:, :n_open], t_last[:, n_open])
        for e in range(n_e - 1, -1, -1):
            r = n_e - e
            pe = p[s_idx, bands[:, e]]  # (S, M+1, D)
            rest = tot[s_idx, bands[:, e]] - pe[:, :r].sum(axis=1)
            rhs = pe[:, 0, n_open] + rest @ v[n_e]
            if r > 1:
                rhs += np.einsum("smd,md->s", pe[:, 1:r], v[e + 1 : e + r])
            v[e, :n_open] = _solve(eye - pe[:, 0, :n_open], rhs)
        return v

    def p_won(
        self,
        stage: np.ndarray,
        age_days: np.ndarray,
        horizon_days: float,
        *,
        entry_age_days: np.ndarray | None = None,
        group: np.ndarray | None = None,
        eventually: bool = True,
        chunk: int = 2048,
        cache: dict | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """P(won within the horizon) and P(ever won) for deals in ``stage`` at ``age_days``.

        ``entry_age_days``: the deal's age (days since created) when it entered
        the stage (default 0: created in it). With ``eventually=False`` the
        second array is NaN (not computed). ``cache``: a dict kept between calls
        for the same deals and horizon on refits of one model (:meth:`reweighted`):
        where the deals' times fall on the curves is looked up once.
        """
        stage = np.asarray(stage, dtype=np.int64)
        age = np.asarray(age_days, dtype=float)
        n = len(stage)
        group = np.zeros(n, dtype=np.int64) if group is None else np.asarray(group)
        e0 = np.zeros(n) if entry_age_days is None else np.asarray(entry_age_days, dtype=float)
        e0 = np.maximum(np.nan_to_num(e0), 0.0)
        band = self.band(stage, e0)
        k_steps, h = self.grid(horizon_days)
        n_e, _ = self._age_grid(h)
        edges = np.r_[0.0, (np.arange(k_steps) + 0.5) * h, k_steps * h]
        edges_e = np.r_[0.0, (np.arange(n_e) + 0.5) * h]
        steps = np.arange(k_steps + 1)
        out = np.zeros(n)
        ever = np.zeros(n)
        for g in np.unique(group):
            w = self.win_within(horizon_days, int(g))
            v = self.win_eventually(int(g), h) if eventually else None
            for s in range(self.n_open_):
                for c in range(len(self.cuts_[s]) + 1):
                    idx = np.flatnonzero((group == g) & (stage == s) & (band == c))
                    cv = self.curves_[int(g)][s][c]
                    if n_e == 0 and len(idx):
                        # no entry-age clock: the same weights for every deal of the curve
                        key = (cv.origin, int(g), s, c, k_steps, h)
                        if cache is not None and cv.origin and key in cache:
                            idx, rows, at = cache[key]
                        else:
                            idx = idx[np.argsort(age[idx], kind="stable")]
                            rows = cv.index(age[idx, None] + edges[None, 1:])
                            at = cv.index(age[idx])
                            if cache is not None and cv.origin:
                                cache[key] = idx, rows, at
                        wr = w[k_steps - steps, 0]
                        out[idx] = _within_flat(cv, age[idx], wr, edges, rows, at)
                        if v is None:
                            continue
                    for lo in range(0, len(idx), chunk):
                        part = idx[lo : lo + chunk]
                        # grid index of the deal age at the cut-off
                        x = np.rint((e0[part] + age[part]) / h).astype(np.int64)
                        if n_e:
                            mass = np.diff(cv.conditional(age[part], edges), axis=1)
                            pos = np.minimum(x[:, None] + steps[None, :], n_e)
                            wp = w[k_steps - steps[None, :], pos]
                            out[part] = np.einsum("nmd,nmd->n", mass, wp)
                        if v is None:
                            continue
                        rem = cv.remaining(age[part])
                        if n_e:
                            cm = np.diff(cv.conditional(age[part], edges_e), axis=1)
                            pe = np.minimum(x[:, None] + np.arange(n_e)[None, :], n_e)
                            ever[part] = np.einsum("nmd,nmd->n", cm, v[pe])
                            rem = rem - cm.sum(axis=1)
                        ever[part] += np.clip(rem, 0.0, 1.0) @ v[n_e]
        if not eventually:
            ever[:] = np.nan
        return np.clip(out, 0.0, 1.0), np.clip(ever, 0.0, 1.0)


@dataclass(frozen=True)
class _Layout:
    """The stays behind one set of curves (one curve per key), arranged once for refits.

    Stays are sorted by key then duration, and each is given its row of the event table
    (its key's distinct duration). Refitting with other deal weights is then a few weighted
    counts and the Aalen–Johansen sums over contiguous runs, with no sorting: the same
    event table as :func:`funnelstats._estimators.event_table` on the same stays (to the
    rounding of the sums). The tail's late stays (longer than the key's ``tail_quantile``
    of durations, all stays counted whatever their weight) are fixed too; see
    :class:`StageCurves`.
    """

    n_keys: int
    n_dest: int
    time: np.ndarray  # per row: distinct duration of its key, days
    offsets: np.ndarray  # rows of key k: offsets[k]:offsets[k + 1]
    stay_offsets: np.ndarray  # stays of key k: stay_offsets[k]:stay_offsets[k + 1]
    exit_offsets: np.ndarray  # exits of key k: exit_offsets[k]:exit_offsets[k + 1]
    deal: np.ndarray  # per stay (sorted): the deal it belongs to
    run: np.ndarray | None  # per stay: its row (None: one stay per row, row = stay)
    exits: np.ndarray  # positions of the stays that ended (not censored)
    cell: np.ndarray  # per exit: row * n_dest + destination
    run_exit: np.ndarray  # per exit: its row (cell // n_dest)
    late_exit: np.ndarray  # exits longer than their key's cut (positions among the exits)
    late_cell: np.ndarray  # per late exit: key * n_dest + destination
    long_stay: np.ndarray  # stays longer than their key's cut
    long_over: np.ndarray  # per long stay: duration - cut
    long_key: np.ndarray  # per long stay: its key
    use_late: np.ndarray  # per key: some exit is late
    any_exit: np.ndarray  # per key
    token: object = field(default_factory=object)  # identifies the layout in curve origins

    @staticmethod
    def build(
        duration_ns: np.ndarray,
        dest: np.ndarray,
        deal: np.ndarray,
        key: np.ndarray,
        n_keys: int,
        n_dest: int,
        tail_quantile: float,
        by_time: np.ndarray | None = None,
    ) -> _Layout:
        """``by_time``: ``argsort(duration_ns, kind="stable")`` when already known (layouts
        of other keys over the same stays share it)."""
        if by_time is None:
            by_time = np.argsort(duration_ns, kind="stable")
        small = np.int16 if n_keys < 2**15 else np.int64  # 16-bit keys: a radix sort
        order = by_time[np.argsort(np.asarray(key)[by_time].astype(small), kind="stable")]
        k = np.asarray(key, dtype=np.int64)[order]
        t = duration_ns[order]
        n = len(order)
        new = np.r_[True, (k[1:] != k[:-1]) | (t[1:] != t[:-1])] if n else np.zeros(0, bool)
        starts = np.flatnonzero(new)
        one_per_row = len(starts) == n
        run = np.arange(n) if one_per_row else np.cumsum(new) - 1
        del new
        row_key = k[starts]
        offsets = np.searchsorted(row_key, np.arange(n_keys + 1), side="left").astype(np.int64)
        time = t[starts].astype(float) / NS_PER_DAY
        del t, starts
        d = time[run]
        dest_s = dest[order]
        exits = np.flatnonzero(dest_s >= 0)
        bounds = np.searchsorted(k, np.arange(n_keys + 1))
        cut = np.zeros(n_keys)
        for j in range(n_keys):
            if bounds[j + 1] > bounds[j]:
                cut[j] = float(np.quantile(d[bounds[j] : bounds[j + 1]], tail_quantile))
        longer = d > cut[k]
        late = longer[exits]
        k_exit = k[exits]
        dest_exit = dest_s[exits].astype(np.int64)
        idx = np.int32 if max(n, len(time) * n_dest) < 2**31 else np.int64
        run_exit = run[exits]
        long_stay = np.flatnonzero(longer)
        late_exit = np.flatnonzero(late)
        return _Layout(
            n_keys=n_keys,
            n_dest=n_dest,
            time=time,
            offsets=offsets,
            stay_offsets=bounds.astype(np.int64),
            exit_offsets=np.searchsorted(k_exit, np.arange(n_keys + 1)).astype(np.int64),
            deal=np.asarray(deal)[order].astype(idx),
            run=None if one_per_row else run.astype(idx),
            exits=exits.astype(idx),
            cell=(run_exit * n_dest + dest_exit).astype(idx),
            run_exit=run_exit.astype(idx),
            late_exit=late_exit.astype(idx),
            late_cell=(k_exit[late_exit] * n_dest + dest_exit[late_exit]).astype(idx),
            long_stay=long_stay.astype(idx),
            long_over=(d - cut[k])[long_stay],
            long_key=k[long_stay].astype(idx),
            use_late=np.bincount(k_exit[late], minlength=n_keys) > 0,
            any_exit=np.bincount(k_exit, minlength=n_keys) > 0,
        )

    def tails(self, w: np.ndarray, w_exit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per key, the tail hazard and destination mix (see :class:`StageCurves`), with
        weights ``w`` per stay and ``w_exit`` per exit."""
        nk, nd = self.n_keys, self.n_dest
        we = w_exit[self.late_exit]
        m1 = _wsum(self.late_cell, weights=we, minlength=nk * nd).reshape(nk, nd)
        e1 = m1.sum(axis=1)
        x1 = _wsum(self.long_key, weights=w[self.long_stay] * self.long_over, minlength=nk)
        use = self.use_late & (e1 > 0)
        if not use.all():  # keys whose late stays carry no weight: every stay, cut at 0
            key = np.repeat(np.arange(nk), np.diff(self.stay_offsets))
            key_exit = key[self.exits]
            e2 = _wsum(key_exit, weights=w_exit, minlength=nk)
            d = self.time if self.run is None else self.time[self.run]
            x2 = _wsum(key, weights=w * d, minlength=nk)
            m2 = _wsum(key_exit * nd + self.cell % nd, weights=w_exit, minlength=nk * nd)
            e1, x1 = np.where(use, e1, e2), np.where(use, x1, x2)
            m1 = np.where(use[:, None], m1, m2.reshape(nk, nd))
        rate = e1 / np.maximum(x1, _TINY)
        tot = m1.sum(axis=1)
        ok = self.any_exit & (tot > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mix = np.where(ok[:, None], m1 / tot[:, None], 0.0)
        return np.where(ok, rate, 0.0), mix

    def curves(self, weights: np.ndarray | None) -> list[StageCurves]:
        """The curves of every key with deal ``weights`` (default 1)."""
        n_rows, nd = len(self.time), self.n_dest
        if weights is None:
            w = np.ones(len(self.deal))
        else:
            w = np.asarray(weights, dtype=float)[self.deal]
        w_exit = w[self.exits]
        run_exit = self.run_exit
        rate, mix = self.tails(w, w_exit)
        so, eo = self.stay_offsets, self.exit_offsets
        n_stays = [int(np.count_nonzero(w[so[k] : so[k + 1]] > 0)) for k in range(self.n_keys)]
        n_exits = [int(np.count_nonzero(w_exit[eo[k] : eo[k + 1]] > 0)) for k in range(self.n_keys)]
        # per row: weight leaving (ended or censored) and weight ending; the temporaries go
        # as soon as they are read (a refit at 1M deals holds ~100 MB less at its peak)
        if self.run is None:
            removed = w
            d = np.zeros(n_rows)
            d[self.exits] = w_exit
        else:
            removed = _wsum(self.run, weights=w, minlength=n_rows)
            d = _wsum(run_exit, weights=w_exit, minlength=n_rows)
        del w
        bounds = [(int(a), int(b)) for a, b in pairwise(self.offsets) if b > a]
        # at risk: the weight of the key's rows from this one on (a reversed running sum)
        at_risk = np.empty(n_rows)
        for a, b in bounds:
            np.cumsum(removed[a:b][::-1], out=at_risk[a:b][::-1])
        del removed
        factor = _aj_factor(at_risk, d, bounds)
        del d, at_risk
        inc = factor[run_exit]
        del factor
        inc *= w_exit
        del w_exit
        inc = _wsum(self.cell, weights=inc, minlength=n_rows * nd).reshape(n_rows, nd)
        for a, b in bounds:
            _cumsum_rows(inc[a:b])
        cif_all = np.clip(inc, 0.0, 1.0, out=inc)
        out = []
        for k in range(self.n_keys):
            r = slice(int(self.offsets[k]), int(self.offsets[k + 1]))
            t = self.time[r]
            out.append(
                StageCurves(
                    time=t,
                    cif=cif_all[r],
                    tau=float(t[-1]) if len(t) else 0.0,
                    tail_rate=float(rate[k]),
                    tail_mix=mix[k],
                    n_stays=n_stays[k],
                    n_exits=n_exits[k],
                    origin=(self.token, k),
                )
            )
        return out


def _aj_factor(n: np.ndarray, d: np.ndarray, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Per row, ``S(t_{i-1}) / n_i``: the Kaplan–Meier survival just before the row over the
    weight at risk (0 where nothing is at risk), from the at-risk weights ``n`` and ending
    weights ``d`` (both overwritten: the result is ``n``'s buffer); ``bounds`` the (start,
    stop) rows of each key."""
    at_risk = n > 0
    # d <= n, so d = 0 where nothing is at risk: the ratio is 0 there
    ratio = np.divide(d, n, out=d, where=at_risk)
    gone = ratio >= 1.0
    log_s = np.log1p(np.negative(ratio, out=ratio), out=ratio, where=~gone)
    log_s[gone] = 0.0
    for a, b in bounds:
        np.cumsum(log_s[a:b], out=log_s[a:b])
    surv = np.exp(log_s, out=log_s)
    for a, b in bounds:
        g = gone[a:b]
        if g.any():  # everything at risk left: nothing survives from here on
            surv[a + int(g.argmax()) : b] = 0.0
    starts = np.array([a for a, _ in bounds], dtype=np.int64)
    first = np.divide(1.0, n[starts], out=np.zeros(len(starts)), where=at_risk[starts])
    factor = n
    np.divide(surv[:-1], n[1:], out=factor[1:], where=at_risk[1:])
    factor[~at_risk] = 0.0
    factor[starts] = first
    return factor


def _cumsum_rows(x: np.ndarray, block: int = 4096) -> None:
    """``np.cumsum(x, axis=0, out=x)`` for a C-ordered 2-D ``x``, block by block of rows so
    that the column-by-column passes run in cache (the same sums, in the same order)."""
    n = len(x)
    for lo in range(0, n, block):
        part = x[lo : lo + block]
        if lo:
            part[0] += x[lo - 1]
        np.cumsum(part, axis=0, out=part)


def _within_flat(
    cv: StageCurves,
    age: np.ndarray,
    w_rev: np.ndarray,
    edges: np.ndarray,
    rows: np.ndarray,
    at: np.ndarray | None = None,
    block: int = 50_000,
) -> np.ndarray:
    """P(won within the horizon) of deals at ``age`` in a stage whose continuation weights do
    not depend on the deal (no entry-age clock).

    With ``c(u) = (F(age + u) - F(age)) / S(age)`` at the grid edges ``u_0 = 0 < ... <
    u_{K+1}`` and ``w_rev[m]`` the chance of being won from destination ``j`` with ``K - m``
    steps left, the forecast ``sum_m [c(u_{m+1}) - c(u_m)] . w_rev[m]`` is summed by parts,
    ``sum_{m >= 1} c(u_m) . (w_rev[m - 1] - w_rev[m])`` (``w_rev[K + 1] = 0``), so the
    cumulative incidence is read once per edge and contracted at once. ``rows``: the
    curve's :meth:`StageCurves.index` of ``age + edges[1:]``, ``at`` that of ``age``.
    """
    coef = w_rev - np.vstack([w_rev[1:], np.zeros((1, w_rev.shape[1]))])
    f_a, s_a = cv.cdf(age, at)
    alive = s_a > _TINY
    base = f_a @ coef.sum(axis=0)
    n = len(age)
    num = np.zeros(n)
    if len(cv.time) and n:
        # ages ascend, and so do the rows: the deals reading before the first time (the
        # youngest) lead, those whose window passes the longest stay (the oldest) trail
        young = int(np.searchsorted(rows[:, 0], 0, side="left"))
        if young:
            x = age[:young, None] + edges[None, 1:]
            num[:young] = cv.cdf_dot(x, coef, rows[:young])
        step = max(1, block // (len(edges) * max(cv.n_dest, 1)))
        for lo in range(young, n, step):
            hi = min(lo + step, n)
            np.einsum("nmk,mk->n", np.take(cv.cif, rows[lo:hi], axis=0), coef, out=num[lo:hi])
        beyond = np.flatnonzero(age + edges[-1] > cv.tau)
        beyond = beyond[beyond >= young]
        if len(beyond) and cv.tail_rate > 0 and cv.tail_mix.any():
            s_tau = max(1.0 - float(cv.cif[-1].sum()), 0.0)
            grow = -np.expm1(
                -cv.tail_rate * np.maximum(age[beyond, None] + edges[None, 1:] - cv.tau, 0.0)
            )
            num[beyond] += s_tau * (grow @ (coef @ cv.tail_mix))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (num - base) / s_a
    if not alive.all():
        tail = (-np.expm1(-cv.tail_rate * edges[1:]))[:, None] * cv.tail_mix
        out = np.where(alive, out, float(np.sum(tail * coef)))
    return out


def _wsum(index: np.ndarray, *, weights: np.ndarray, minlength: int) -> np.ndarray:
    """``np.bincount`` with weights, always float (numpy gives int64 for empty input)."""
    return np.bincount(index, weights=weights, minlength=minlength).astype(float, copy=False)


def _cif(table: EventTable) -> np.ndarray:
    """Aalen–Johansen cumulative incidence of every cause at each row (no variance).

    The same estimate as :func:`funnelstats._estimators.aalen_johansen`
    (``F_k(t) = sum_{t_i <= t} S(t_{i-1}) d_ki / n_i``), vectorised over groups.
    """
    return _aalen_johansen(
        table.at_risk,
        table.observed,
        table.offsets,
        lambda f: table.events * f[:, None],
        table.n_causes,
    )


def _aalen_johansen(
    n: np.ndarray,
    d: np.ndarray,
    offsets: np.ndarray,
    increments: Callable[[np.ndarray], np.ndarray],
    n_causes: int,
) -> np.ndarray:
    """:func:`_cif` from the at-risk numbers ``n``, the exits ``d`` and
    ``increments(f)``, the exits of each cause times ``f`` per row (a new array)."""
    rows = len(n)
    if not rows:
        return np.zeros((0, n_causes))
    ratio = np.divide(d, n, out=np.zeros(rows), where=n > 0)
    gone = ratio >= 1.0
    log_f = np.log1p(-np.minimum(ratio, 1.0), out=np.zeros(rows), where=~gone)
    factor = np.zeros(rows)  # S(t_{i-1}) / n_i
    bounds = [(int(a), int(b)) for a, b in pairwise(offsets) if b > a]
    for a, b in bounds:
        surv = np.exp(np.cumsum(log_f[a:b]))
        surv[np.cumsum(gone[a:b]) > 0] = 0.0
        s_prev = np.r_[1.0, surv[:-1]]
        np.divide(s_prev, n[a:b], out=factor[a:b], where=n[a:b] > 0)
    inc = increments(factor)
    for a, b in bounds:
        np.cumsum(inc[a:b], axis=0, out=inc[a:b])
    return np.clip(inc, 0.0, 1.0, out=inc)


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``a x = b`` (``a`` (..., S, S), ``b`` (..., S)); least squares where singular."""
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return (np.linalg.pinv(a) @ b[..., None])[..., 0]


def _argsort_index(x: np.ndarray) -> np.ndarray:
    """``np.argsort(x, kind="stable")`` as int32 where it fits (half the memory kept)."""
    order = np.argsort(x, kind="stable")
    return order.astype(np.int32) if len(x) < 2**31 else order
