"""The best possible bookings forecast on a simulated funnel: the simulator's own parameters.

For a deal open at the cut-off the simulation knows its segment, hence the true
Weibull times and advance probabilities of every stage. Its true probability of
being won within the horizon, given its stage and the days it has spent there,
is computed by simulating its future many times from those parameters (the
current stay conditioned on having lasted that long: the chance it ends in an
advance is reweighted by the two outcomes' survival at that age, and the
remaining time is drawn from the Weibull conditioned on exceeding the age).
New deals arrive at the true rate with the true segment mix and amounts.

What this forecast misses is pure luck (which deals happen to close), so its
WAPE is the floor any method can reach on these data, and the distance of a
forecast's expected value from it measures that forecast's own error free of
that luck.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from funnelstats.datasets._simulate import SimulationTruth, _weibull_scale


def _params(truth: SimulationTruth) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    segs = truth.segments
    p = np.array([g.p_advance for g in segs])
    sa = np.array([[_weibull_scale(m, truth.shape) for m in g.advance_median_days] for g in segs])
    sl = np.array([[_weibull_scale(m, truth.shape) for m in g.lost_median_days] for g in segs])
    return p, sa, sl


def p_won_true(
    truth: SimulationTruth,
    segment: np.ndarray,
    stage: np.ndarray,
    age: np.ndarray,
    horizon: float,
    *,
    paths: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """P(won within ``horizon`` days | segment, open stage, days in it), by simulation."""
    p, sa, sl = _params(truth)
    k = truth.shape
    n_stages = len(truth.stages)
    g = np.repeat(segment, paths)
    s = np.repeat(stage, paths)
    a = np.repeat(age, paths).astype(float)
    t = np.zeros(len(g))
    won = np.zeros(len(g), dtype=bool)
    live = np.ones(len(g), dtype=bool)
    first = True
    while live.any():
        i = np.flatnonzero(live)
        gi, si, ai = g[i], s[i], a[i]
        pa = p[gi, si]
        if first:  # the current stay has lasted ai days
            surv_a = np.exp(-((ai / sa[gi, si]) ** k))
            surv_l = np.exp(-((ai / sl[gi, si]) ** k))
            pa = pa * surv_a / np.maximum(pa * surv_a + (1 - pa) * surv_l, 1e-300)
        adv = rng.random(len(i)) < pa
        lam = np.where(adv, sa[gi, si], sl[gi, si])
        end = lam * ((ai / lam) ** k + rng.exponential(size=len(i))) ** (1 / k)
        t[i] += end - ai
        skip = adv & (si + 2 <= n_stages) & (rng.random(len(i)) < truth.skip_prob)
        nxt = np.where(adv, si + 1 + skip, n_stages + 1)
        late = t[i] > horizon
        done = late | (nxt >= n_stages)
        won[i[~late & (nxt == n_stages)]] = True
        live[i[done]] = False
        keep = i[~done]
        s[keep] = nxt[~done]
        a[keep] = 0.0
        first = False
    return won.reshape(-1, paths).mean(axis=1)


@dataclass(frozen=True)
class NewDeals:
    """True bookings from deals created in the horizon: per segment, expected wins and amounts."""

    wins: np.ndarray  # expected wins per segment
    log_median: np.ndarray
    sigma: np.ndarray

    @property
    def expected(self) -> float:
        return float(np.sum(self.wins * np.exp(self.log_median + self.sigma**2 / 2)))

    def sample(self, n_sims: int, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros(n_sims)
        for w, mu, sd in zip(self.wins, self.log_median, self.sigma):
            n = rng.poisson(w, n_sims)
            idx = np.repeat(np.arange(n_sims), n)
            out += np.bincount(idx, weights=np.exp(rng.normal(mu, sd, n.sum())), minlength=n_sims)
        return out


def new_deals_true(
    truth: SimulationTruth, horizon: float, *, paths: int, rng: np.random.Generator
) -> NewDeals:
    """Deals created uniformly in the horizon, won before its end (Poisson thinning)."""
    weights = np.array([g.weight for g in truth.segments], dtype=float)
    weights /= weights.sum()
    wins = []
    for gi in range(len(truth.segments)):
        left = rng.uniform(0.0, horizon, paths)  # days left after creation
        # won within `left` days of creation, starting in the first stage at age 0
        won = _won_within(truth, gi, left, rng)
        wins.append(truth.arrival_rate * horizon * weights[gi] * won.mean())
    segs = truth.segments
    return NewDeals(
        np.array(wins),
        np.log([g.amount_median for g in segs]),
        np.array([g.amount_sigma for g in segs]),
    )


def _won_within(
    truth: SimulationTruth, segment: int, left: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    n = len(left)
    pa, sa, sl = _params(truth)
    k = truth.shape
    n_stages = len(truth.stages)
    s = np.zeros(n, dtype=np.int64)
    t = np.zeros(n)
    won = np.zeros(n, dtype=bool)
    live = np.ones(n, dtype=bool)
    while live.any():
        i = np.flatnonzero(live)
        si = s[i]
        adv = rng.random(len(i)) < pa[segment, si]
        lam = np.where(adv, sa[segment, si], sl[segment, si])
        t[i] += lam * rng.weibull(k, len(i))
        skip = adv & (si + 2 <= n_stages) & (rng.random(len(i)) < truth.skip_prob)
        nxt = np.where(adv, si + 1 + skip, n_stages + 1)
        late = t[i] > left[i]
        done = late | (nxt >= n_stages)
        won[i[~late & (nxt == n_stages)]] = True
        live[i[done]] = False
        s[i[~done]] = nxt[~done]
    return won
