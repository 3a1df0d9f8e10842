"""The stage-by-stage (semi-Markov) model behind the bookings forecast.

For each open stage (and group), the time in the stage and where the deal goes
next are estimated jointly and non-parametrically: the Aalen–Johansen
cumulative incidence ``F_j(t)`` of leaving the stage for destination ``j``
(every other open stage — forward or back —, won, lost) by ``t`` days after
entering it, with stays still open censored at the cut-off. Beyond the longest
stay seen (``tau``) the curves continue with a constant hazard and the
destination mix of the late stays (the exponential tail, see :class:`StageCurves`).

The probability of being won within ``u`` days of entering stage ``s``,
``w_s(u)``, solves the renewal system

    w_s(u) = sum_j  integral_0^u  dF_sj(t) w_j(u - t),   w_won = 1, w_lost = 0,

computed exactly on a time grid of step ``h = horizon / ceil(horizon in days)``
(at most a day): exits in ``((m - 1/2) h, (m + 1/2) h]`` leave ``u - m h`` days
to go, and same-instant moves (``m = 0``) are solved as a linear system at
each grid point. A deal in stage ``s`` with age ``a`` in it then wins within
the horizon ``H`` with probability

    sum_j  sum_m  [F_sj(a + u_{m+1}) - F_sj(a + u_m)] / S_s(a)  w_j(H - m h),

the conditioning on having stayed ``a`` days being exact (no grid in ``a``).
The recursion is deterministic, so per-deal probabilities carry no Monte Carlo
noise, and it costs O(K^2) small matrix products for a K-point grid,
independent of the number of deals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._estimators import aalen_johansen, event_table
from ._stays import NS_PER_DAY, stays
from .data import FunnelData

__all__ = ["SemiMarkovFunnel", "StageCurves"]

_TINY = 1e-12


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

    def total(self) -> np.ndarray:
        """``F_j(infinity)``: where the stage's stays end up, tail included."""
        s_tau = max(1.0 - float(self.cif[-1].sum()), 0.0) if len(self.time) else 1.0
        base = self.cif[-1] if len(self.time) else np.zeros(self.n_dest)
        return base + (s_tau * self.tail_mix if self.tail_rate > 0 else 0.0)


def _tail(d: np.ndarray, dest: np.ndarray, n_dest: int, q: float) -> tuple[float, np.ndarray]:
    """Constant hazard and destination mix of the late stays (see StageCurves)."""
    exits = dest >= 0
    if not exits.any():
        return 0.0, np.zeros(n_dest)
    cut = float(np.quantile(d, q))
    late = d > cut
    if (late & exits).any():
        rate = (late & exits).sum() / max(float(np.sum(d[late] - cut)), _TINY)
        mix = np.bincount(dest[late & exits], minlength=n_dest).astype(float)
    else:
        rate = exits.sum() / max(float(d.sum()), _TINY)
        mix = np.bincount(dest[exits], minlength=n_dest).astype(float)
    return float(rate), mix / mix.sum()


@dataclass
class SemiMarkovFunnel:
    """Stage-by-stage model of the open pipeline: time in stage × next stage.

    Parameters
    ----------
    min_exits : int
        A group's stage with fewer exits than this uses the pooled (all groups)
        curves of the stage.
    tail_quantile : float
        The late stays that set the tail hazard are those longer than this
        quantile of the stage's stay durations.

    Attributes
    ----------
    curves_ : list of list of StageCurves
        ``curves_[g][s]``: group ``g``, open stage ``s``.
    pooled_ : list of StageCurves
        All groups together.
    fallback_ : list of tuple
        ``(group, stage)`` pairs that use the pooled curves.
    n_open_ : int
    """

    min_exits: int = 20
    tail_quantile: float = 0.8
    curves_: list[list[StageCurves]] = field(default_factory=list, init=False)
    pooled_: list[StageCurves] = field(default_factory=list, init=False)
    fallback_: list[tuple[int, int]] = field(default_factory=list, init=False)
    n_open_: int = field(default=0, init=False)

    def fit(
        self, data: FunnelData, *, groups: np.ndarray | None = None, n_groups: int = 1
    ) -> SemiMarkovFunnel:
        """Fit the curves on ``data`` (stays still open are censored at its export date).

        ``groups`` gives each deal's (row of ``data.deals``) group code.
        """
        st = stays(data)
        kind = data.arrays.kind
        n_open = data.pipeline.n_open
        n_dest = n_open + 2
        nxt = st.next_stage
        nk = np.where(nxt >= 0, kind[np.maximum(nxt, 0)], -1)
        dest = np.where(nk == 0, nxt, np.where(nk == 1, n_open, np.where(nk == 2, n_open + 1, -1)))
        if groups is None:
            g_of = np.zeros(len(st), dtype=np.int64)
            n_groups = 1
        else:
            g_of = np.asarray(groups, dtype=np.int64)[st.deal]
        self.n_open_ = n_open
        self.pooled_ = self._fit_curves(st.duration_ns, dest, st.stage, n_open, n_dest)
        self.curves_ = []
        self.fallback_ = []
        if n_groups == 1 and groups is None:
            self.curves_ = [self.pooled_]
            return self
        for g in range(n_groups):
            sel = g_of == g
            cg = self._fit_curves(st.duration_ns[sel], dest[sel], st.stage[sel], n_open, n_dest)
            for s in range(n_open):
                if cg[s].n_exits < self.min_exits:
                    cg[s] = self.pooled_[s]
                    self.fallback_.append((g, s))
            self.curves_.append(cg)
        return self

    def _fit_curves(
        self,
        duration_ns: np.ndarray,
        dest: np.ndarray,
        stage: np.ndarray,
        n_open: int,
        n_dest: int,
    ) -> list[StageCurves]:
        table = event_table(duration_ns, dest + 1, groups=stage, n_groups=n_open, n_causes=n_dest)
        aj = aalen_johansen(table)
        out = []
        for s in range(n_open):
            r = table.rows(s)
            sel = stage == s
            d = duration_ns[sel] / NS_PER_DAY
            rate, mix = _tail(d, dest[sel], n_dest, self.tail_quantile)
            t = table.time[r] / NS_PER_DAY
            out.append(
                StageCurves(
                    time=t,
                    cif=np.clip(np.nan_to_num(aj.cif[r]), 0.0, 1.0),
                    tau=float(t[-1]) if len(t) else 0.0,
                    tail_rate=rate,
                    tail_mix=mix,
                    n_stays=int(sel.sum()),
                    n_exits=int((dest[sel] >= 0).sum()),
                )
            )
        return out

    # ------------------------------------------------------------ predict
    def grid(self, horizon_days: float) -> tuple[int, float]:
        """Number of grid steps and step (days) used for ``horizon_days``."""
        k = max(int(np.ceil(horizon_days - 1e-9)), 1)
        return k, horizon_days / k

    def win_within(self, horizon_days: float, group: int = 0) -> np.ndarray:
        """``W[k, j]``: P(won within ``k h`` days of entering ``j``), ``k = 0..K``.

        Columns are the destinations (open stages, won = 1, lost = 0).
        """
        curves = self.curves_[group]
        n_open = self.n_open_
        n_dest = n_open + 2
        k_steps, h = self.grid(horizon_days)
        # bin masses p[s, m, j] (m = 0..K), half bins at k h, and the mass at 0
        mids = (np.arange(k_steps + 1) + 0.5) * h
        ends = np.arange(k_steps + 1) * h
        p = np.empty((n_open, k_steps + 1, n_dest))
        half = np.empty((n_open, k_steps + 1, n_dest))
        zero = np.empty((n_open, n_dest))
        for s, c in enumerate(curves):
            f_mid, _ = c.cdf(mids)
            f_end, _ = c.cdf(ends)
            f_prev_mid = np.vstack([np.zeros((1, n_dest)), f_mid[:-1]])
            p[s] = f_mid - f_prev_mid
            half[s] = f_end - f_prev_mid
            zero[s] = f_end[0]
        w = np.zeros((k_steps + 1, n_dest))
        w[:, n_open] = 1.0
        eye = np.eye(n_open)
        # k = 0: only same-instant moves
        a0 = zero[:, :n_open]
        w[0, :n_open] = _solve(eye - a0, zero[:, n_open])
        p0 = p[:, 0, :n_open]
        lhs = eye - p0
        for k in range(1, k_steps + 1):
            rhs = p[:, 0, n_open].copy()
            if k > 1:
                # sum over m = 1..k-1 of p[s, m, j] w[k - m, j]
                rhs += np.einsum("smj,mj->s", p[:, 1:k, :], w[k - 1 : 0 : -1, :])
            rhs += half[:, k, :] @ w[0]
            w[k, :n_open] = _solve(lhs, rhs)
        return w

    def win_eventually(self, group: int = 0) -> np.ndarray:
        """P(ever won | entering each destination), tail included."""
        curves = self.curves_[group]
        n_open = self.n_open_
        tot = np.vstack([c.total() for c in curves])
        out = np.zeros(n_open + 2)
        out[n_open] = 1.0
        out[:n_open] = _solve(np.eye(n_open) - tot[:, :n_open], tot[:, n_open])
        return out

    def p_won(
        self,
        stage: np.ndarray,
        age_days: np.ndarray,
        horizon_days: float,
        *,
        group: np.ndarray | None = None,
        chunk: int = 4096,
    ) -> tuple[np.ndarray, np.ndarray]:
        """P(won within the horizon) and P(ever won) for deals in ``stage`` at ``age_days``."""
        stage = np.asarray(stage, dtype=np.int64)
        age = np.asarray(age_days, dtype=float)
        group = np.zeros(len(stage), dtype=np.int64) if group is None else np.asarray(group)
        k_steps, h = self.grid(horizon_days)
        edges = np.r_[0.0, (np.arange(k_steps) + 0.5) * h, k_steps * h]
        out = np.zeros(len(stage))
        ever = np.zeros(len(stage))
        for g in np.unique(group):
            w = self.win_within(horizon_days, int(g))
            w_rev = w[::-1]  # bin m leaves K - m steps
            w_inf = self.win_eventually(int(g))
            for s in range(self.n_open_):
                idx = np.flatnonzero((group == g) & (stage == s))
                c = self.curves_[int(g)][s]
                for lo in range(0, len(idx), chunk):
                    part = idx[lo : lo + chunk]
                    cond = c.conditional(age[part], edges)
                    mass = np.diff(cond, axis=1)
                    out[part] = np.einsum("nmj,mj->n", mass, w_rev)
                    f_a, s_a = c.cdf(age[part])
                    tot = c.total()
                    with np.errstate(divide="ignore", invalid="ignore"):
                        rest = (tot[None, :] - f_a) / s_a[:, None]
                    tail = c.tail_mix if c.tail_rate > 0 else np.zeros(c.n_dest)
                    rest = np.where((s_a > _TINY)[:, None], rest, tail[None, :])
                    ever[part] = np.clip(rest, 0.0, 1.0) @ w_inf
        return np.clip(out, 0.0, 1.0), np.clip(ever, 0.0, 1.0)


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, b, rcond=None)[0]
