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

from dataclasses import dataclass, field

import numpy as np

from . import _columns as C
from ._estimators import EventTable, event_table
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
    """

    time: np.ndarray
    cif: np.ndarray
    tau: float
    tail_rate: float
    tail_mix: np.ndarray
    n_stays: int
    n_exits: int

    @property
    def n_dest(self) -> int:
        return self.cif.shape[1]

    def _at(self, x: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.time, x, side="right") - 1
        out = np.where((idx >= 0)[..., None], self.cif[np.maximum(idx, 0)], 0.0)
        return out

    def cdf(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``F_j(x)`` (shape ``x.shape + (K,)``) and ``S(x)``, with the tail beyond ``tau``."""
        x = np.asarray(x, dtype=float)
        if len(self.time) == 0:
            f = np.zeros((*x.shape, self.n_dest))
            return f, np.ones(x.shape)
        inside = self._at(np.minimum(x, self.tau))
        s_in = 1.0 - inside.sum(axis=-1)
        over = np.maximum(x - self.tau, 0.0)
        s_tau = max(1.0 - float(self.cif[-1].sum()), 0.0)
        decay = np.exp(-self.tail_rate * over)
        f = inside + (s_tau * (1.0 - decay))[..., None] * self.tail_mix
        s = np.where(x > self.tau, s_tau * decay, np.maximum(s_in, 0.0))
        return f, s

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


def _tail(
    d: np.ndarray, dest: np.ndarray, n_dest: int, q: float, w: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Constant hazard and destination mix of the late stays (see StageCurves)."""
    exits = dest >= 0
    if not exits.any():
        return 0.0, np.zeros(n_dest)
    w = np.ones(len(d)) if w is None else w
    cut = float(np.quantile(d, q))
    late = d > cut
    sel = late & exits
    if not sel.any() or w[sel].sum() <= 0:
        sel, late, cut = exits, np.ones(len(d), dtype=bool), 0.0
    rate = w[sel].sum() / max(float(np.sum(w[late] * (d[late] - cut))), _TINY)
    mix = np.bincount(dest[sel], weights=w[sel], minlength=n_dest)
    if not mix.sum() > 0:  # a resample without any exit
        return 0.0, np.zeros(n_dest)
    return float(rate), mix / mix.sum()


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
    n_open_ : int
    """

    min_exits: int = 20
    tail_quantile: float = 0.8
    age_classes: int = 3
    curves_: list[list[list[StageCurves]]] = field(default_factory=list, init=False)
    pooled_: list[StageCurves] = field(default_factory=list, init=False)
    cuts_: list[np.ndarray] = field(default_factory=list, init=False)
    fallback_: list[tuple[int, int]] = field(default_factory=list, init=False)
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
    ) -> SemiMarkovFunnel:
        """Fit the curves on ``data`` (stays still open are censored at its export date).

        ``groups`` gives each deal's (row of ``data.deals``) group code;
        ``weights`` each deal's weight in the estimates (default 1; the
        ``min_exits`` rule counts stays, not weights).
        """
        if self.age_classes < 1:
            raise ValueError("age_classes must be at least 1")
        st = stays(data)
        kind = data.arrays.kind
        n_open = data.pipeline.n_open
        nxt = st.next_stage
        nk = np.where(nxt >= 0, kind[np.maximum(nxt, 0)], -1)
        dest = np.where(nk == 0, nxt, np.where(nk == 1, n_open, np.where(nk == 2, n_open + 1, -1)))
        if groups is None:
            n_groups = 1
            g_of = np.zeros(len(st), dtype=np.int64)
        else:
            g_of = np.asarray(groups, dtype=np.int64)[st.deal]
        origin = deal_origin_ns(data)[st.deal]
        entry_age = np.where(origin == _NAT, 0.0, (st.start - origin) / NS_PER_DAY)
        entry_age = np.maximum(entry_age, 0.0)
        self.n_open_ = n_open
        self.cuts_ = []
        band = np.zeros(len(st), dtype=np.int64)
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
        return self._estimate(weights)

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
        w_st = None if weights is None else np.asarray(weights, dtype=float)[pr["deal"]]

        def curves(key: np.ndarray, n_keys: int) -> list[StageCurves]:
            return self._fit_curves(pr["duration_ns"], dest, key, n_keys, n_dest, w_st)

        if pr["grouped"]:
            group_s = curves(g_of * n_open + stage, n_groups * n_open)
            short = any(c.n_exits < self.min_exits for c in group_s)
            pooled_s = curves(stage, n_open) if short or not lean else []
        else:
            pooled_s = group_s = curves(stage, n_open)
        if n_band > 1:
            pooled_sc = curves(stage * n_band + band, n_open * n_band)
            group_sc = curves((g_of * n_open + stage) * n_band + band, n_groups * n_open * n_band)
            if not len(pooled_s):
                pooled_s = curves(stage, n_open)
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

    def _fit_curves(
        self,
        duration_ns: np.ndarray,
        dest: np.ndarray,
        key: np.ndarray,
        n_keys: int,
        n_dest: int,
        weights: np.ndarray | None = None,
    ) -> list[StageCurves]:
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
            rate, mix = _tail(d, dest[pick], n_dest, self.tail_quantile, wk)
            t = table.time[r] / NS_PER_DAY
            out.append(
                StageCurves(
                    time=t,
                    cif=cif_all[r],
                    tau=float(t[-1]) if len(t) else 0.0,
                    tail_rate=rate,
                    tail_mix=mix,
                    n_stays=int(live.sum()),
                    n_exits=int(np.count_nonzero((dest[pick] >= 0) & live)),
                )
            )
        return out

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
    ) -> tuple[np.ndarray, np.ndarray]:
        """P(won within the horizon) and P(ever won) for deals in ``stage`` at ``age_days``.

        ``entry_age_days``: the deal's age (days since created) when it entered
        the stage (default 0: created in it). With ``eventually=False`` the
        second array is NaN (not computed).
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
                    for lo in range(0, len(idx), chunk):
                        part = idx[lo : lo + chunk]
                        # grid index of the deal age at the cut-off
                        x = np.rint((e0[part] + age[part]) / h).astype(np.int64)
                        mass = np.diff(cv.conditional(age[part], edges), axis=1)
                        pos = np.minimum(x[:, None] + steps[None, :], n_e)
                        out[part] = np.einsum("nmd,nmd->n", mass, w[k_steps - steps[None, :], pos])
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


def _cif(table: EventTable) -> np.ndarray:
    """Aalen–Johansen cumulative incidence of every cause at each row (no variance).

    The same estimate as :func:`funnelstats._estimators.aalen_johansen`
    (``F_k(t) = sum_{t_i <= t} S(t_{i-1}) d_ki / n_i``), vectorised over groups.
    """
    n = table.at_risk
    d = table.observed
    rows = len(n)
    if not rows:
        return np.zeros((0, table.n_causes))
    start = np.zeros(rows, dtype=bool)
    start[table.offsets[:-1][table.offsets[:-1] < rows]] = True
    gid = np.cumsum(start) - 1

    def within(x: np.ndarray) -> np.ndarray:
        c = np.cumsum(x, axis=0)
        base = np.concatenate([np.zeros((1, *x.shape[1:])), c[:-1]])[start]
        return c - base[gid]

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(n > 0, d / n, 0.0)
    gone = ratio >= 1.0
    log_f = np.zeros(rows)
    log_f[~gone] = np.log1p(-ratio[~gone])
    surv = np.where(within(gone.astype(float)) > 0, 0.0, np.exp(within(log_f)))
    s_prev = np.where(start, 1.0, np.r_[1.0, surv[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        inc = np.where(n[:, None] > 0, s_prev[:, None] * table.events / n[:, None], 0.0)
    return np.clip(within(inc), 0.0, 1.0)


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``a x = b`` (``a`` (..., S, S), ``b`` (..., S)); least squares where singular."""
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return (np.linalg.pinv(a) @ b[..., None])[..., 0]
