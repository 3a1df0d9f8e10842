"""A semi-Markov sales funnel with known true parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from .. import _columns as C

__all__ = [
    "DEFAULT_SEGMENTS",
    "DEFAULT_STAGES",
    "Segment",
    "Simulation",
    "SimulationTruth",
    "simulate",
]

DEFAULT_STAGES: tuple[str, ...] = ("Prospecting", "Qualification", "Proposal", "Negotiation")
WON_STAGE = "Closed Won"
LOST_STAGE = "Closed Lost"
_SF_PROBABILITY = (10, 20, 50, 75)
_FORECAST = ("Pipeline", "Pipeline", "Best Case", "Commit")


@dataclass(frozen=True)
class Segment:
    """Parameters of one customer segment.

    Attributes
    ----------
    name : str
    weight : float
        Share of new deals in this segment.
    p_advance : tuple of float
        Per open stage: probability that a deal leaving the stage advances (the
        rest are lost).
    advance_median_days, lost_median_days : tuple of float
        Per open stage: median time in the stage of deals that advance, and of
        deals that are lost (Weibull durations with the simulation's shape).
    amount_median : float
        Median deal amount (log-normal).
    amount_sigma : float
        Standard deviation of log amount.
    """

    name: str
    weight: float
    p_advance: tuple[float, ...]
    advance_median_days: tuple[float, ...]
    lost_median_days: tuple[float, ...]
    amount_median: float = 20_000.0
    amount_sigma: float = 0.6


DEFAULT_SEGMENTS: tuple[Segment, ...] = (
    Segment("SMB", 0.5, (0.60, 0.65, 0.75, 0.85), (7, 10, 14, 10), (14, 20, 25, 20), 8_000, 0.6),
    Segment(
        "Mid-Market", 0.3, (0.55, 0.60, 0.70, 0.80), (10, 14, 21, 14), (21, 28, 35, 28), 30_000, 0.6
    ),
    Segment(
        "Enterprise",
        0.2,
        (0.45, 0.50, 0.60, 0.70),
        (14, 21, 35, 21),
        (30, 45, 60, 40),
        120_000,
        0.7,
    ),
)


def _weibull_scale(median: float, shape: float) -> float:
    return median / math.log(2.0) ** (1.0 / shape)


@dataclass(frozen=True)
class SimulationTruth:
    """The true parameters of a simulation, and quantities derived from them.

    Attributes
    ----------
    stages : tuple of str
        Open stages in order; the won and lost stages are ``won_stage`` and
        ``lost_stage``.
    segments : tuple of Segment
    shape : float
        Weibull shape of every time-in-stage distribution.
    skip_prob : float
        Probability that an advancing deal skips the next stage.
    arrival_rate : float
        New deals per day (Poisson).
    start, exported_at : Timestamp
        First possible creation time and the export date.
    """

    stages: tuple[str, ...]
    segments: tuple[Segment, ...]
    shape: float
    skip_prob: float
    arrival_rate: float
    start: pd.Timestamp
    exported_at: pd.Timestamp
    won_stage: str = WON_STAGE
    lost_stage: str = LOST_STAGE

    # ---------------------------------------------------------- reach
    def _reach(self, seg: Segment) -> tuple[np.ndarray, np.ndarray]:
        """P(enter stage s) and P(skip over stage s), s = 0..S (S = won)."""
        s_n = len(self.stages)
        enter = np.zeros(s_n + 1)
        skipped = np.zeros(s_n + 1)
        enter[0] = 1.0
        for s in range(s_n):
            adv = enter[s] * seg.p_advance[s]
            q = self.skip_prob if s + 2 <= s_n else 0.0
            enter[s + 1] += adv * (1 - q)
            if q:
                enter[s + 2] += adv * q
                skipped[s + 1] += adv * q
        return enter, skipped

    def _weights(self, segment: str | None) -> list[tuple[Segment, float]]:
        segs = [g for g in self.segments if segment is None or g.name == segment]
        if not segs:
            raise KeyError(f"no segment {segment!r}")
        total = sum(g.weight for g in segs)
        return [(g, g.weight / total) for g in segs]

    def conversion(self, segment: str | None = None) -> pd.Series:
        """True P(passing each open stage | reached it), "reached" semantics.

        A deal that skips a stage counts as having reached and passed it.
        """
        reached = np.zeros(len(self.stages) + 1)
        for g, w in self._weights(segment):
            e, k = self._reach(g)
            reached += w * (e + k)
        return pd.Series(reached[1:] / reached[:-1], index=list(self.stages), name="conversion")

    def win_rate(self, segment: str | None = None) -> pd.Series:
        """True P(won | reached stage), per open stage."""
        reached = np.zeros(len(self.stages) + 1)
        for g, w in self._weights(segment):
            e, k = self._reach(g)
            reached += w * (e + k)
        return pd.Series(reached[-1] / reached[:-1], index=list(self.stages), name="win_rate")

    def p_advance(self, segment: str | None = None) -> pd.Series:
        """True P(advance | entered and left the stage), mixed over entrants."""
        num = np.zeros(len(self.stages))
        den = np.zeros(len(self.stages))
        for g, w in self._weights(segment):
            e, _ = self._reach(g)
            num += w * e[:-1] * np.asarray(g.p_advance)
            den += w * e[:-1]
        return pd.Series(num / den, index=list(self.stages), name="p_advance")

    # ------------------------------------------------------- durations
    def _stage_mixture(
        self, stage: str, segment: str | None
    ) -> list[tuple[float, float, float, float]]:
        """(weight, p_advance, advance scale, lost scale) over segments, by entrants."""
        s = self.stages.index(stage)
        parts = []
        for g, w in self._weights(segment):
            e, _ = self._reach(g)
            parts.append(
                (
                    w * e[s],
                    g.p_advance[s],
                    _weibull_scale(g.advance_median_days[s], self.shape),
                    _weibull_scale(g.lost_median_days[s], self.shape),
                )
            )
        total = sum(p[0] for p in parts)
        return [(w / total, p, a, b) for w, p, a, b in parts]

    def survival(self, stage: str, t: Any, segment: str | None = None) -> np.ndarray:
        """True P(still in ``stage`` after ``t`` days | entered it)."""
        t = np.asarray(t, dtype=float)
        out = np.zeros_like(t)
        for w, p, a, b in self._stage_mixture(stage, segment):
            out += w * (
                p * np.exp(-((t / a) ** self.shape)) + (1 - p) * np.exp(-((t / b) ** self.shape))
            )
        return out

    def cumulative_incidence(
        self, stage: str, t: Any, outcome: str = "advance", segment: str | None = None
    ) -> np.ndarray:
        """True P(left ``stage`` by ``t`` days with ``outcome`` ("advance"/"lost"))."""
        t = np.asarray(t, dtype=float)
        out = np.zeros_like(t)
        for w, p, a, b in self._stage_mixture(stage, segment):
            if outcome == "advance":
                out += w * p * (1 - np.exp(-((t / a) ** self.shape)))
            elif outcome == "lost":
                out += w * (1 - p) * (1 - np.exp(-((t / b) ** self.shape)))
            else:
                raise ValueError("outcome must be 'advance' or 'lost'")
        return out

    def median_time_in_stage(self, segment: str | None = None) -> pd.Series:
        """True median days in each open stage (all leavers, advance or lost)."""
        out = {}
        for st in self.stages:
            out[st] = optimize.brentq(
                lambda x, st=st: self.survival(st, x, segment) - 0.5, 1e-9, 1e5
            )
        return pd.Series(out, name="median_days")

    def mean_time_in_stage(self, segment: str | None = None) -> pd.Series:
        """True mean days in each open stage."""
        g1 = math.gamma(1 + 1 / self.shape)
        return pd.Series(
            {
                st: sum(
                    w * (p * a + (1 - p) * b) * g1
                    for w, p, a, b in self._stage_mixture(st, segment)
                )
                for st in self.stages
            },
            name="mean_days",
        )


@dataclass(frozen=True, repr=False)
class Simulation:
    """What :func:`simulate` returns.

    Attributes
    ----------
    export : DataFrame
        The stage-history export as of ``truth.exported_at``, in the layout
        asked for (Salesforce OpportunityHistory columns, or the generic long
        format ``deal_id, stage, entered_at, amount, segment``).
    opportunities : DataFrame or None
        With the Salesforce layout, the Opportunity export (one row per deal:
        ``Id, Name, StageName, Amount, CloseDate, IsClosed, IsWon, CreatedDate,
        Type, LeadSource, OwnerId, Segment``).
    outcomes : DataFrame
        The complete, uncensored story of every deal: ``deal_id, segment,
        created_at, outcome, closed_at, amount, furthest_stage`` (what really
        happens, also after the export date).
    complete : DataFrame
        Every stage entry of every deal in the generic long format, with no
        export cut (for checking forecasts against what happened).
    truth : SimulationTruth
    """

    export: pd.DataFrame
    opportunities: pd.DataFrame | None
    outcomes: pd.DataFrame
    complete: pd.DataFrame
    truth: SimulationTruth
    layout: str = "salesforce"
    _pipeline_stages: tuple[str, ...] = field(default=())

    def pipeline(self) -> Any:
        """The true :class:`~funnelstats.Pipeline` (with Salesforce probabilities)."""
        from ..pipeline import Pipeline

        return Pipeline(
            self.truth.stages,
            (self.truth.won_stage,),
            (self.truth.lost_stage,),
            probabilities=dict(
                zip(self.truth.stages, (p / 100 for p in _probabilities(len(self.truth.stages))))
            ),
        )

    def funnel(self, **kwargs: Any) -> Any:
        """The export read into :class:`~funnelstats.FunnelData` (with the true pipeline)."""
        from ..ingest import read_events, read_salesforce

        kwargs.setdefault("pipeline", self.pipeline())
        kwargs.setdefault("exported_at", self.truth.exported_at)
        if self.layout == "salesforce":
            return read_salesforce(self.export, opportunities=self.opportunities, **kwargs)
        return read_events(self.export, **kwargs)

    def __repr__(self) -> str:
        return (
            f"<Simulation: {len(self.outcomes):,} deals, {len(self.export):,} export rows "
            f"({self.layout}), exported {self.truth.exported_at:%Y-%m-%d}>"
        )


def _probabilities(n_open: int) -> tuple[int, ...]:
    if n_open == len(_SF_PROBABILITY):
        return _SF_PROBABILITY
    return tuple(int(round(10 + 80 * i / max(n_open - 1, 1))) for i in range(n_open))


def simulate(
    n_deals: int = 2_000,
    *,
    seed: int | None = None,
    start: Any = "2024-01-01",
    days: float = 365.0,
    exported_at: Any = None,
    stages: Sequence[str] = DEFAULT_STAGES,
    segments: Sequence[Segment] = DEFAULT_SEGMENTS,
    shape: float = 1.5,
    skip_prob: float = 0.05,
    amount_update_prob: float = 0.3,
    deleted_rows: float = 0.0,
    layout: str = "salesforce",
) -> Simulation:
    """Simulate a sales funnel with known true parameters.

    Deals arrive as a Poisson process over ``days`` from ``start`` (``n_deals``
    of them: the rate is ``n_deals / days``) and all start in the first stage.
    In each open stage a deal either advances (probability ``p_advance`` of its
    segment) after a Weibull time with the segment's advance median, or is lost
    after a Weibull time with the lost median; an advancing deal skips the next
    stage with probability ``skip_prob``. Advancing past the last open stage is
    winning. The export shows what had happened by ``exported_at`` (default
    ``start + days``): later deals are still open.

    Parameters
    ----------
    n_deals : int
        Number of deals created in the window.
    seed : int, optional
        Random seed (the same seed gives the same data).
    start : date-like
        Start of the arrival window (UTC).
    days : float
        Length of the arrival window in days.
    exported_at : date-like, optional
        The export date; default ``start + days``.
    stages : sequence of str
        Open stage names (the won and lost stages are "Closed Won" and
        "Closed Lost").
    segments : sequence of Segment
        Segment parameters; each needs one value per open stage.
    shape : float
        Weibull shape of the time-in-stage distributions.
    skip_prob : float
        Probability that an advancing deal skips a stage.
    amount_update_prob : float
        Probability, per stay, of one extra history row that changes the amount
        and the expected close date but not the stage.
    deleted_rows : float
        Share of extra rows with ``IsDeleted`` true (Salesforce layout only).
    layout : {"salesforce", "events"}
        Salesforce OpportunityHistory (plus an Opportunity export), or the
        generic long format.

    Returns
    -------
    Simulation

    Examples
    --------
    >>> from funnelstats.datasets import simulate
    >>> sim = simulate(500, seed=1)
    >>> sim.truth.conversion().round(3).to_dict()
    {'Prospecting': 0.555, 'Qualification': 0.63, 'Proposal': 0.728, 'Negotiation': 0.827}
    >>> d = sim.funnel()
    >>> d.n_deals
    500
    """
    if layout not in ("salesforce", "events"):
        raise ValueError("layout must be 'salesforce' or 'events'")
    stages = tuple(stages)
    segments = tuple(segments)
    s_n = len(stages)
    for g in segments:
        for attr in ("p_advance", "advance_median_days", "lost_median_days"):
            if len(getattr(g, attr)) != s_n:
                raise ValueError(f"segment {g.name!r}: {attr} needs {s_n} values, one per stage")
    if n_deals < 1:
        raise ValueError("n_deals must be at least 1")
    rng = np.random.default_rng(seed)
    start_ts = pd.Timestamp(start)
    start_ts = (
        start_ts.tz_localize("UTC") if start_ts.tzinfo is None else start_ts.tz_convert("UTC")
    )
    export_ts = (
        start_ts + pd.Timedelta(days=days) if exported_at is None else pd.Timestamp(exported_at)
    )
    if export_ts.tzinfo is None:
        export_ts = export_ts.tz_localize("UTC")
    truth = SimulationTruth(stages, segments, shape, skip_prob, n_deals / days, start_ts, export_ts)

    # ---- arrivals and segments
    n = n_deals
    weights = np.array([g.weight for g in segments], dtype=float)
    seg = rng.choice(len(segments), size=n, p=weights / weights.sum())
    created = np.sort(rng.uniform(0, days, size=n))
    p_adv = np.array([g.p_advance for g in segments])
    sc_adv = np.array([[_weibull_scale(m, shape) for m in g.advance_median_days] for g in segments])
    sc_lost = np.array([[_weibull_scale(m, shape) for m in g.lost_median_days] for g in segments])
    amount0 = np.exp(
        rng.normal(
            np.log([g.amount_median for g in segments])[seg],
            np.array([g.amount_sigma for g in segments])[seg],
        )
    )
    amount0 = np.round(amount0, -1)

    # ---- the stage walk, vectorised over deals
    deal_l, stage_l, t_l = [], [], []
    cur = np.zeros(n, dtype=np.int64)
    t = created.copy()
    active = np.arange(n)
    final = np.full(n, -1, dtype=np.int64)  # s_n = won, s_n + 1 = lost
    closed_t = np.full(n, np.nan)
    furthest = np.zeros(n, dtype=np.int64)
    while len(active):
        s = cur[active]
        g = seg[active]
        deal_l.append(active)
        stage_l.append(s)
        t_l.append(t[active])
        furthest[active] = np.maximum(furthest[active], s)
        adv = rng.random(len(active)) < p_adv[g, s]
        scale = np.where(adv, sc_adv[g, s], sc_lost[g, s])
        dur = scale * rng.weibull(shape, size=len(active))
        t_exit = t[active] + dur
        skip = adv & (s + 2 <= s_n) & (rng.random(len(active)) < skip_prob)
        nxt = np.where(adv, s + 1 + skip, s_n + 1)
        t[active] = t_exit
        cur[active] = nxt
        done = nxt >= s_n
        fin = active[done]
        final[fin] = nxt[done]
        closed_t[fin] = t_exit[done]
        deal_l.append(fin)
        stage_l.append(nxt[done])
        t_l.append(t_exit[done])
        active = active[~done]
    deal_a = np.concatenate(deal_l) if deal_l else np.zeros(0, np.int64)
    stage_a = np.concatenate(stage_l) if stage_l else np.zeros(0, np.int64)
    t_a = np.concatenate(t_l) if t_l else np.zeros(0)
    order = np.lexsort((t_a, deal_a))
    deal_a, stage_a, t_a = deal_a[order], stage_a[order], t_a[order]

    names = np.array([*stages, WON_STAGE, LOST_STAGE], dtype=object)
    ids = _deal_ids(n, layout)
    day_ns = 86_400 * 10**9

    def to_ts(days_from_start: np.ndarray) -> pd.DatetimeIndex:
        # whole seconds, as CRMs record them
        ns = start_ts.value + np.round(days_from_start * 86_400).astype(np.int64) * 10**9
        return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")

    complete = pd.DataFrame(
        {
            C.DEAL_ID: ids[deal_a],
            C.STAGE: names[stage_a],
            C.ENTERED_AT: to_ts(t_a),
            C.AMOUNT: amount0[deal_a],
            "segment": np.array([g.name for g in segments], dtype=object)[seg[deal_a]],
        }
    )
    outcome = np.where(final == s_n, C.WON, np.where(final == s_n + 1, C.LOST, C.OPEN))
    outcomes = pd.DataFrame(
        {
            C.DEAL_ID: ids,
            "segment": np.array([g.name for g in segments], dtype=object)[seg],
            C.CREATED_AT: to_ts(created),
            C.OUTCOME: outcome,
            C.CLOSED_AT: to_ts(closed_t),
            C.AMOUNT: amount0,
            C.FURTHEST_STAGE: names[np.where(final == s_n, s_n, furthest)],
        }
    )

    export_days = (export_ts.value - start_ts.value) / day_ns
    visible = t_a <= export_days
    if layout == "events":
        export = complete.loc[visible].reset_index(drop=True)
        return Simulation(export, None, outcomes, complete, truth, layout)

    # ---- Salesforce layout: stage rows plus amount / close-date update rows
    sd, ss, st = deal_a[visible], stage_a[visible], t_a[visible]
    amount0[sd].copy()
    # expected close date: created + a segment-typical cycle, pushed on updates
    exp_close = created[sd] + 45 + 15 * seg[sd]
    terminal = ss >= s_n
    exp_close[terminal] = st[terminal]
    # next visible stage-row time per row (for placing updates inside a stay)
    same_next = np.r_[sd[1:] == sd[:-1], False]
    stay_end = np.where(same_next, np.r_[st[1:], 0.0], export_days)
    upd = (~terminal) & (rng.random(len(sd)) < amount_update_prob)
    u_idx = np.flatnonzero(upd)
    u_t = st[u_idx] + rng.random(len(u_idx)) * (stay_end[u_idx] - st[u_idx])
    factor = np.exp(rng.normal(0.0, 0.2, size=len(u_idx)))
    # amounts: each update changes the deal's amount from then on
    rows_deal = np.r_[sd, sd[u_idx]]
    rows_stage = np.r_[ss, ss[u_idx]]
    rows_t = np.r_[st, u_t]
    rows_factor = np.r_[np.ones(len(sd)), factor]
    rows_push = np.r_[
        np.zeros(len(sd)), (rng.random(len(u_idx)) < 0.5) * rng.integers(7, 31, len(u_idx))
    ]
    o = np.lexsort((np.r_[np.zeros(len(sd)), np.ones(len(u_idx))], rows_t, rows_deal))
    rows_deal, rows_stage, rows_t, rows_factor, rows_push = (
        rows_deal[o],
        rows_stage[o],
        rows_t[o],
        rows_factor[o],
        rows_push[o],
    )
    new_deal = np.r_[True, rows_deal[1:] != rows_deal[:-1]]
    grp = np.cumsum(new_deal)
    cumf = pd.Series(np.log(rows_factor)).groupby(grp).cumsum().to_numpy()
    amount_rows = np.round(amount0[rows_deal] * np.exp(cumf), 2)
    push = pd.Series(rows_push).groupby(grp).cumsum().to_numpy()
    close_rows = created[rows_deal] + 45 + 15 * seg[rows_deal] + push
    is_term = rows_stage >= s_n
    close_rows[is_term] = rows_t[is_term]
    # the won deal's final amount is the last amount seen
    prob = np.array([*_probabilities(s_n), 100, 0])[rows_stage]
    forecast = np.array(
        [*(_FORECAST if s_n == 4 else ("Pipeline",) * s_n), "Closed", "Omitted"], dtype=object
    )[rows_stage]
    created_ts = to_ts(rows_t)
    stamp = created_ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    close_date = to_ts(np.floor(close_rows)).strftime("%Y-%m-%d")
    m = len(rows_deal)
    users = np.array([f"005{i:012d}AAA" for i in range(1, 13)], dtype=object)
    owner = rng.integers(0, len(users), size=n)
    export = pd.DataFrame(
        {
            "Id": _sf_ids("008", m, rng),
            "OpportunityId": ids[rows_deal],
            "CreatedById": users[owner[rows_deal]],
            "CreatedDate": stamp,
            "StageName": names[rows_stage],
            "Amount": amount_rows,
            "ExpectedRevenue": np.round(amount_rows * prob / 100.0, 2),
            "CloseDate": close_date,
            "Probability": prob,
            "ForecastCategory": forecast,
            "IsDeleted": "false",
            "SystemModstamp": stamp,
        }
    )
    if deleted_rows > 0 and m:
        k = int(round(deleted_rows * m))
        pick = rng.choice(m, size=k, replace=False)
        dele = export.iloc[pick].copy()
        dele["Id"] = _sf_ids("00D", k, rng)
        dele["IsDeleted"] = "true"
        dele["Amount"] = np.round(dele["Amount"] * 1.5, 2)
        export = pd.concat([export, dele], ignore_index=True)
        export = export.sort_values(["OpportunityId", "CreatedDate"], kind="stable").reset_index(
            drop=True
        )

    # ---- Opportunity export: state at the export date
    last = np.r_[rows_deal[1:] != rows_deal[:-1], True]
    cur_stage = np.full(n, -1)
    cur_stage[rows_deal[last]] = rows_stage[last]
    cur_amount = np.full(n, np.nan)
    cur_amount[rows_deal[last]] = amount_rows[last]
    cur_close = np.full(n, np.nan)
    cur_close[rows_deal[last]] = close_rows[last]
    seen = cur_stage >= 0
    lead_sources = np.array(
        ["Web", "Partner Referral", "Trade Show", "Phone Inquiry", "Outbound"], dtype=object
    )
    types = np.array(["New Business", "Existing Business"], dtype=object)
    opp = pd.DataFrame(
        {
            "Id": ids,
            "Name": [f"Opportunity {i + 1}" for i in range(n)],
            "StageName": names[np.maximum(cur_stage, 0)],
            "Amount": cur_amount,
            "CloseDate": to_ts(np.floor(np.nan_to_num(cur_close))).strftime("%Y-%m-%d"),
            "IsClosed": np.where(cur_stage >= s_n, "true", "false"),
            "IsWon": np.where(cur_stage == s_n, "true", "false"),
            "CreatedDate": to_ts(created).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "Type": types[rng.integers(0, 2, size=n)],
            "LeadSource": lead_sources[rng.integers(0, len(lead_sources), size=n)],
            "OwnerId": users[owner],
            "Segment": np.array([g.name for g in segments], dtype=object)[seg],
        }
    )[seen].reset_index(drop=True)
    return Simulation(export, opp, outcomes, complete, truth, layout)


_B62 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def _sf_ids(prefix: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=object)
    chars = np.ascontiguousarray(_B62[rng.integers(0, 62, size=(n, 12))])
    return np.char.add(prefix, chars.view("<U12").ravel()).astype(object)


def _deal_ids(n: int, layout: str) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=object)
    width = max(6, len(str(n)))
    if layout == "salesforce":
        return np.char.add("006", np.char.zfill(np.arange(1, n + 1).astype(str), 12)).astype(object)
    return np.char.zfill(np.arange(1, n + 1).astype(str), width).astype(object)
