"""Bookings forecasts from the stage history, the weighted-pipeline baseline, and backtests.

:func:`forecast_bookings` gives every open deal its probability of being won
within the horizon from a stage-by-stage (semi-Markov) model fitted on the
history as of the cut-off — how long deals stay in each stage, and where they
go next, given how long this deal has already been there — and adds up the
deals by Monte Carlo into a distribution of total bookings. :func:`backtest`
replays past cut-offs and scores the forecast against what was really won,
beside the CRM's weighted pipeline (:func:`weighted_pipeline`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from . import _columns as C
from ._currency import mixed_currency_note
from ._forecast_history import NAT, HistoryState, history_state
from ._forecast_model import SemiMarkovFunnel, deal_origin_ns
from ._forecast_sim import SumDraws, bernoulli_sum, compound_poisson_sum
from ._result import Result, get_ax
from ._stays import NS_PER_DAY, group_codes, require_history
from .data import FunnelData, to_timestamp
from .snapshot import _open_table

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ._forecast_velocity import CohortTable

__all__ = [
    "BacktestResult",
    "BookingsForecast",
    "ReliabilityResult",
    "SeriesForecast",
    "VelocityResult",
    "WeightedPipeline",
    "backtest",
    "forecast_bookings",
    "forecast_velocity",
    "forecast_win_rate",
    "plot_backtest",
    "plot_bookings",
    "plot_reliability",
    "plot_series_forecast",
    "realised_bookings",
    "reliability",
    "velocity",
    "weighted_pipeline",
]

QUANTILES = (0.1, 0.5, 0.9)
_ARRIVAL_WINDOW = "90D"


def _days(horizon: Any, name: str = "horizon") -> float:
    try:
        td = pd.Timedelta(horizon)
    except (ValueError, TypeError):
        raise ValueError(f"{name}: cannot read {horizon!r} as a duration (e.g. '90D')") from None
    days = td.value / NS_PER_DAY
    if not days > 0:
        raise ValueError(f"{name} must be positive, got {horizon!r}")
    return days


def _cut(data: FunnelData, as_of: Any) -> tuple[FunnelData, pd.Timestamp]:
    if as_of is None:
        return data, data.exported_at
    ts = to_timestamp(as_of, name="as_of")
    return data.as_of(ts), ts


# ---------------------------------------------------------------------------
# weighted pipeline (the CRM baseline)


@dataclass(frozen=True, repr=False, kw_only=True)
class WeightedPipeline(Result):
    """Amount × stage probability per open deal (see :func:`weighted_pipeline`)."""

    as_of: pd.Timestamp
    source: str
    probabilities: Mapping[str, float]
    title: ClassVar[str] = "Weighted pipeline"

    @property
    def total(self) -> float:
        """The weighted pipeline: sum of ``weighted_amount`` over deals in the horizon."""
        f = self.frame
        return float(f.loc[f["in_horizon"], "weighted_amount"].sum())

    def summary(self) -> str:
        probs = ", ".join(f"{k} {v:.0%}" for k, v in self.probabilities.items())
        notes = "".join(f"\n- {n}" for n in self.notes)
        return (
            f"Weighted pipeline as of {self.as_of:%Y-%m-%d}: {self.total:,.0f} "
            f"({int(self.frame['in_horizon'].sum()):,} deals; {self.source} probabilities: "
            f"{probs}){notes}"
        )

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Bars of the weighted amount per stage."""
        ax = get_ax(ax)
        f = self.frame[self.frame["in_horizon"]]
        t = f.groupby(C.STAGE, observed=True)["weighted_amount"].sum()
        ax.bar(t.index.astype(str), t.to_numpy(), **kwargs)
        ax.set_ylabel("weighted amount")
        ax.set_title(f"Weighted pipeline as of {self.as_of:%Y-%m-%d}")
        return ax


def _empirical_stage_rates(cut: FunnelData) -> dict[str, float]:
    """Share won among closed deals that reached each stage (open deals left out)."""
    d = cut.deals
    closed = d[C.OUTCOME] != C.OPEN
    furthest = d[C.FURTHEST_STAGE].cat.codes.to_numpy()
    won = (d[C.OUTCOME] == C.WON).to_numpy()
    out = {}
    for s, name in enumerate(cut.pipeline.stages):
        reached = closed.to_numpy() & (furthest >= s)
        out[name] = float(won[reached].mean()) if reached.any() else float("nan")
    return out


def weighted_pipeline(
    data: FunnelData,
    as_of: Any = None,
    *,
    horizon: Any = None,
    probabilities: str | Mapping[str, float] = "auto",
) -> WeightedPipeline:
    """The CRM's forecast: each open deal's amount × its stage's win probability.

    Parameters
    ----------
    data : FunnelData
    as_of : date-like, optional
        The cut-off (default ``data.exported_at``); the data are cut there.
    horizon : duration, optional
        With expected close dates in the export: only deals expected to close
        by ``as_of + horizon`` count (overdue deals included, deals with no close
        date included), as a CRM's "this quarter" forecast does.
    probabilities : {"auto", "crm", "empirical"} or mapping
        ``"crm"``: the pipeline's stage probabilities
        (``data.pipeline.probabilities``); ``"empirical"``: per stage, the share
        won among the deals that reached it and were closed by ``as_of`` (the
        naive rate: open deals left out); ``"auto"``: the CRM's when it gives
        one for every open stage, else empirical. A mapping gives them directly.
        The result's ``source`` says which was used.

    Returns
    -------
    WeightedPipeline
        ``.frame``: one row per open deal: ``deal_id, stage, amount, probability,
        weighted_amount, close_date, in_horizon``; ``.total`` the sum over deals in
        the horizon.

    Examples
    --------
    >>> import funnelstats as fs
    >>> wp = fs.weighted_pipeline(fs.load_sample(), "2024-06-30")
    >>> wp.source
    'crm'
    >>> round(wp.total) == round((wp.frame["amount"] * wp.frame["probability"]).sum())
    True
    """
    require_history(data, "weighted_pipeline")
    cut, ts = _cut(data, as_of)
    h_days = None if horizon is None else _days(horizon)
    return _weighted_cut(cut, ts, None, h_days, probabilities)


def _weighted_cut(
    cut: FunnelData,
    ts: pd.Timestamp,
    snap: pd.DataFrame | None,
    h_days: float | None,
    probabilities: str | Mapping[str, float],
) -> WeightedPipeline:
    """:func:`weighted_pipeline` of data already cut at ``ts`` (``snap``: its open deals)."""
    stages = cut.pipeline.stages
    crm = dict(cut.pipeline.probabilities)
    if isinstance(probabilities, Mapping):
        probs = {s: float(probabilities[s]) for s in stages if s in probabilities}
        missing = [s for s in stages if s not in probs]
        if missing:
            raise ValueError(f"probabilities: no value for stage(s) {missing}")
        source = "given"
    elif probabilities == "crm" or (probabilities == "auto" and all(s in crm for s in stages)):
        missing = [s for s in stages if s not in crm]
        if missing:
            raise ValueError(
                f"the pipeline has no CRM probability for stage(s) {missing}; "
                "use probabilities='empirical' or give them"
            )
        probs = {s: crm[s] for s in stages}
        source = "crm"
    elif probabilities in ("auto", "empirical"):
        probs = _empirical_stage_rates(cut)
        source = "empirical"
    else:
        raise ValueError(
            f"probabilities must be 'auto', 'crm', 'empirical' or a mapping, got {probabilities!r}"
        )
    if snap is None:
        snap = _open_table(cut, ts)
    p = snap[C.STAGE].astype(str).map(probs).to_numpy(dtype=float)
    in_h = np.ones(len(snap), dtype=bool)
    if h_days is not None:
        limit = ts + pd.Timedelta(days=h_days)
        cd = snap[C.CLOSE_DATE]
        in_h = (cd.isna() | (cd <= limit)).to_numpy()
    frame = pd.DataFrame(
        {
            C.DEAL_ID: snap[C.DEAL_ID].to_numpy(),
            C.STAGE: snap[C.STAGE].to_numpy(),
            C.AMOUNT: snap[C.AMOUNT].to_numpy(),
            "probability": p,
            "weighted_amount": snap[C.AMOUNT].to_numpy() * p,
            C.CLOSE_DATE: snap[C.CLOSE_DATE].to_numpy(),
            "in_horizon": in_h,
        }
    )
    notes = [
        {
            "crm": "stage probabilities from the CRM (pipeline.probabilities)",
            "empirical": "stage probabilities: share won among closed deals that reached the "
            "stage (naive: open deals left out)",
            "given": "stage probabilities as given",
        }[source]
    ]
    unknown = sorted(snap.loc[np.isnan(p), C.STAGE].astype(str).unique())
    if unknown:
        notes.append(
            f"no probability for stage(s) {unknown} (no closed deal reached them): their deals' "
            "probability and weighted amount are NaN and left out of the total"
        )
    notes.extend(mixed_currency_note(cut, frame[C.DEAL_ID]))
    return WeightedPipeline(
        frame=frame, as_of=ts, source=source, probabilities=probs, notes=tuple(notes)
    )


# ---------------------------------------------------------------------------
# realised bookings


def realised_bookings(data: FunnelData, start: Any, end: Any) -> pd.DataFrame:
    """Deals won in ``(start, end]``, at the amount they were won at.

    A deal counts once, at its first entry into a won stage in the period.

    Returns
    -------
    DataFrame
        ``deal_id, won_at, amount``.

    Examples
    --------
    >>> import funnelstats as fs
    >>> won = realised_bookings(fs.load_sample(), "2024-03-31", "2024-06-30")
    >>> bool(won["won_at"].between(pd.Timestamp("2024-03-31", tz="UTC"),
    ...                            pd.Timestamp("2024-06-30", tz="UTC")).all())
    True
    """
    t0 = to_timestamp(start, name="start").value
    t1 = to_timestamp(end, name="end").value
    return _realised(data, history_state(data), t0, t1)


def _realised(data: FunnelData, hs: HistoryState, t0: int, t1: int) -> pd.DataFrame:
    """:func:`realised_bookings` between ``t0`` and ``t1`` (ns) from the data's history state."""
    prev_won = np.r_[False, hs.kind[:-1] == 1] & ~hs.first
    enter = (hs.kind == 1) & ~prev_won & (hs.at > t0) & (hs.at <= t1)
    idx = np.flatnonzero(enter)
    first = np.r_[True, hs.deal[idx][1:] != hs.deal[idx][:-1]] if len(idx) else idx.astype(bool)
    idx = idx[first]
    return pd.DataFrame(
        {
            C.DEAL_ID: data.deals[C.DEAL_ID].to_numpy()[hs.deal[idx]],
            "won_at": pd.DatetimeIndex(hs.at[idx].view("datetime64[ns]")).tz_localize("UTC"),
            C.AMOUNT: hs.amount[idx],
        }
    )


# ---------------------------------------------------------------------------
# bookings forecast


@dataclass(frozen=True, repr=False, kw_only=True)
class BookingsForecast(Result):
    """The bookings forecast (see :func:`forecast_bookings`).

    Attributes
    ----------
    frame : DataFrame
        ``component`` (``open_pipeline``, ``new_deals``, ``total``), ``n_deals``,
        ``expected_wins``, ``expected``, ``p10``, ``p50``, ``p90``.
    deals : DataFrame
        One row per open deal, sorted by ``expected_amount``.
    simulations : ndarray
        Simulated total bookings (``n_sims``); ``open_simulations`` and
        ``new_simulations`` are its two parts.
    """

    deals: pd.DataFrame
    simulations: np.ndarray
    open_simulations: np.ndarray
    new_simulations: np.ndarray
    as_of: pd.Timestamp
    horizon_days: float
    title: ClassVar[str] = "Bookings forecast"

    @property
    def expected(self) -> float:
        """Expected total bookings in the horizon."""
        return float(self.frame.set_index("component").loc["total", "expected"])

    def quantile(self, q: float | Iterable[float]) -> np.ndarray:
        """Quantiles of the simulated total bookings."""
        return np.quantile(self.simulations, q)

    def summary(self) -> str:
        head = (
            f"Bookings forecast: {self.as_of:%Y-%m-%d} + {self.horizon_days:g} days "
            f"({len(self.simulations):,} simulations)"
        )
        with pd.option_context("display.width", 120, "display.float_format", "{:,.0f}".format):
            body = self.frame.to_string(index=False)
        notes = "".join(f"\n- {n}" for n in self.notes)
        return f"{head}\n{body}{notes}"

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """The distribution of total bookings (see :func:`plot_bookings`)."""
        return plot_bookings(self, ax=ax, **kwargs)


def forecast_bookings(
    data: FunnelData,
    *,
    as_of: Any = None,
    horizon: Any = "90D",
    n_sims: int = 10_000,
    seed: int | None = None,
    include_new: bool = True,
    by: str | None = None,
    amount_bands: int = 5,
    age_classes: int = 1,
    n_boot: int = 20,
    arrival_window: Any = _ARRIVAL_WINDOW,
) -> BookingsForecast:
    """Forecast bookings in ``(as_of, as_of + horizon]`` from the stage history.

    For every deal open at ``as_of``: P(won within the horizon | its stage and
    the days it has spent in it), from a semi-Markov model fitted on the data
    as of ``as_of`` (for each open stage and stratum, the Aalen–Johansen
    cumulative incidence of leaving it for every other stage, won or lost,
    stays still open censored at ``as_of``), chained through the later
    stages. Deals are independent given the model: the total is simulated as
    a sum of amount × Bernoulli(p) over deals, plus, with ``include_new``, the
    deals not yet created (Poisson arrivals at the rate of the last
    ``arrival_window``, each starting in a stage drawn from recent creations,
    won within the time left with the model's probability, with an amount
    drawn from recent creations).

    Two probabilities are estimated per deal. ``p_won`` is the chance that
    *this deal* is won (the model fitted with every deal counting once: what
    a reliability table checks). Amounts are forecast with ``p_won_value``,
    the same model fitted with every deal weighted by its amount: within a
    stratum big deals are won less often and more slowly than small ones, so
    ``sum(amount × p_won)`` overstates bookings, while the value-weighted
    incidences estimate ``E[amount × won] / E[amount]`` directly (the
    "win rate by value" of sales reports, here for every transition).

    Parameters
    ----------
    data : FunnelData
    as_of : date-like, optional
        The cut-off (default ``data.exported_at``). The model sees only what
        was recorded by then.
    horizon : duration
        Length of the forecast window (``"90D"``, ``pd.Timedelta``).
    n_sims : int
        Monte Carlo draws of the total.
    seed : int, optional
        Random seed of the draws and of the bootstrap (per-deal probabilities
        are exact, not drawn).
    include_new : bool
        Add the deals created after ``as_of`` that close within the horizon.
    by : str, optional
        A deal attribute: fit the model per group (a group's stage with fewer
        than 20 exits uses the pooled curves; the notes say which), and draw new
        deals per group.
    amount_bands : int
        Strata of the deal amount (quantile bands, within each ``by`` group).
    age_classes : int
        Bands of the deal's age when it entered its stage: a second clock that
        lets slow deals stay slow in later stages (see
        ``funnelstats/_forecast_model.py``); 1 (default) is the plain
        semi-Markov chain.
    n_boot : int
        Bootstrap refits of the model for the interval (0: none). Each refit
        weights every deal's whole history by a Poisson(1) count; simulation
        ``k`` uses refit ``k mod n_boot`` for the open deals' probabilities and
        for the new deals' rate, amounts and curve, so the interval includes
        the uncertainty of the fit. The expected values use the full fit.
    arrival_window : duration
        Window before ``as_of`` that sets the arrival rate, the first-stage mix
        and the amounts of new deals.

    Returns
    -------
    BookingsForecast
        ``.frame``: ``component, n_deals, expected_wins, expected, p10, p50,
        p90`` for ``open_pipeline``, ``new_deals`` and ``total``
        (``expected_wins`` from ``p_won``, ``expected`` from ``p_won_value``).
        ``.deals``: one row per open deal: ``deal_id, stage, age_in_stage_days,
        age_days, amount, close_date, p_won, p_won_eventually, p_won_value,
        expected_amount`` (``amount × p_won_value``; then ``group`` with
        ``by=``), sorted by ``expected_amount`` (largest first).

    Notes
    -----
    Beyond the longest stay seen in a stage the model assumes a constant hazard
    of leaving, with the destination mix of the stays longer than the stage's
    80th percentile (see ``funnelstats/_forecast_model.py``): old deals are
    neither frozen nor certain to close. The interval reflects which deals
    close given the model and, with ``n_boot``, the uncertainty of the fitted
    model; it leaves out shocks common to all deals that the history has not
    seen (a market turning), so :func:`backtest` measures its coverage.

    Examples
    --------
    >>> import funnelstats as fs
    >>> fc = fs.forecast_bookings(fs.load_sample(), as_of="2024-09-30", n_sims=2000, seed=1)
    >>> t = fc.frame.set_index("component")
    >>> bool(t.loc["total", "p10"] <= t.loc["total", "p50"] <= t.loc["total", "p90"])
    True
    >>> bool(fc.deals["p_won"].between(0, 1).all())
    True
    """
    require_history(data, "forecast_bookings")
    _check_settings(horizon, arrival_window, n_sims, n_boot)
    cut, ts = _cut(data, as_of)
    return _bookings_of_cut(
        cut,
        ts,
        None,
        horizon=horizon,
        n_sims=n_sims,
        seed=seed,
        include_new=include_new,
        by=by,
        amount_bands=amount_bands,
        age_classes=age_classes,
        n_boot=n_boot,
        arrival_window=arrival_window,
    )


def _check_settings(
    horizon: Any, arrival_window: Any, n_sims: int, n_boot: int
) -> tuple[float, float]:
    """The horizon and arrival window in days, after checking the simulation settings."""
    h_days = _days(horizon)
    w_days = _days(arrival_window, "arrival_window")
    if n_sims < 1:
        raise ValueError("n_sims must be at least 1")
    if n_boot < 0 or n_boot == 1:
        raise ValueError(f"n_boot must be 0 (no bootstrap) or at least 2, got {n_boot!r}")
    return h_days, w_days


def _bookings_of_cut(
    cut: FunnelData,
    ts: pd.Timestamp,
    snap: pd.DataFrame | None,
    *,
    horizon: Any = "90D",
    n_sims: int = 10_000,
    seed: int | None = None,
    include_new: bool = True,
    by: str | None = None,
    amount_bands: int = 5,
    age_classes: int = 1,
    n_boot: int = 20,
    arrival_window: Any = _ARRIVAL_WINDOW,
) -> BookingsForecast:
    """:func:`forecast_bookings` (same defaults) of data already cut at ``ts``; ``snap``: its
    open deals (:func:`funnelstats.snapshot._open_table`) when already made."""
    h_days, w_days = _check_settings(horizon, arrival_window, n_sims, n_boot)
    return _forecast_cut(
        cut,
        ts,
        snap,
        h_days=h_days,
        w_days=w_days,
        n_sims=n_sims,
        seed=seed,
        include_new=include_new,
        by=by,
        amount_bands=amount_bands,
        age_classes=age_classes,
        n_boot=n_boot,
    )


def _forecast_cut(
    cut: FunnelData,
    ts: pd.Timestamp,
    snap: pd.DataFrame | None,
    *,
    h_days: float,
    w_days: float,
    n_sims: int,
    seed: int | None,
    include_new: bool,
    by: str | None,
    amount_bands: int,
    age_classes: int,
    n_boot: int,
) -> BookingsForecast:
    """:func:`forecast_bookings` of data already cut at ``ts`` (``snap``: its open deals,
    :func:`funnelstats.snapshot._open_table`, when already made)."""
    rng = np.random.default_rng(seed)
    gcode, labels = _strata(cut, by, amount_bands)
    n_groups = len(labels)
    amt_all = cut.deals[C.AMOUNT].to_numpy(dtype=float)
    known = ~np.isnan(amt_all)
    value_w = np.where(known, amt_all, np.nanmedian(amt_all) if known.any() else 1.0)
    value_w = np.maximum(value_w, 0.0)
    if snap is None:  # before the fit: its temporaries and the model's are not held at once
        snap = _open_table(cut, ts)
    # the pooled curves only where a group needs them, as in the refits (at 1M deals, the
    # stays arranged a second time and their curves: ~200 MB)
    model = SemiMarkovFunnel(age_classes=age_classes).fit(
        cut, groups=gcode, n_groups=n_groups, pooled=False
    )
    fallback = list(model.fallback_)
    stage_exits = list(model.stage_exits_)
    value_model = model.reweighted(value_w)
    deal_row = _open_rows(cut, snap)
    g_open = gcode[deal_row]
    stage = snap[C.STAGE].cat.codes.to_numpy().astype(np.int64)
    age = snap["age_in_stage_days"].to_numpy(dtype=float)
    origin = deal_origin_ns(cut)[deal_row]
    entered = snap["entered_stage_at"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    entry_age = np.where(origin == NAT, 0.0, (entered - origin) / NS_PER_DAY)
    # the cache: where the open deals fall on the curves, shared by the model's refits
    state = {
        "stage": stage,
        "age_days": age,
        "entry_age_days": entry_age,
        "group": g_open,
        "cache": {},
    }
    p, p_ever = model.p_won(**state, horizon_days=h_days)
    p_value, _ = value_model.p_won(**state, horizon_days=h_days, eventually=False)
    amount = snap[C.AMOUNT].to_numpy(dtype=float)
    amt0 = np.nan_to_num(amount)

    notes: list[str] = []
    new = _NewDeals.empty()
    if include_new:
        new, new_notes = _new_deals(cut, ts, model, value_model, gcode, n_groups, h_days, w_days)
        notes += new_notes

    # the bootstrap of the fit: Poisson(1) weights per deal, the value model refitted. One
    # refit at a time: only what the simulation needs is kept (the open deals' probabilities,
    # the new deals' rates).
    p_boot = p_value[None, :]
    lam = new.rates(value_model, np.ones(cut.n_deals))[None, :]
    # the fits' curves are not needed past here (refits share only their arranged stays):
    # let them go before the refits make theirs (at 1M deals, a few hundred MB)
    model.curves_, model.pooled_, model._cache = [], [], {}
    del value_model
    if n_boot:
        p_boot = np.empty((n_boot, len(p_value)))
        lam = np.empty((n_boot, lam.shape[1]))
        for b in range(n_boot):
            w = rng.poisson(1.0, size=cut.n_deals).astype(float)
            m = model.reweighted(value_w * w)
            p_boot[b] = m.p_won(**state, horizon_days=h_days, eventually=False)[0]
            lam[b] = new.rates(m, w)
            del m
    open_draws = bernoulli_sum(amt0, p_boot, n_sims, rng)
    open_sims = open_draws.simulations
    notes += _approximation_notes("open pipeline", "open deals", open_draws)
    new_sims = np.zeros(n_sims)
    if include_new:
        new_draws = compound_poisson_sum(new.amounts, lam, n_sims, rng)
        new_sims = new_draws.simulations
        notes += _approximation_notes("new deals", "recent deals' amounts", new_draws)
    total = open_sims + new_sims
    open_expected = float(np.sum(amt0 * p_value))

    def row(name: str, n: float, wins: float, exp: float, sims: np.ndarray) -> dict:
        q = np.quantile(sims, QUANTILES)
        return {
            "component": name,
            "n_deals": n,
            "expected_wins": wins,
            "expected": exp,
            "p10": q[0],
            "p50": q[1],
            "p90": q[2],
        }

    frame = pd.DataFrame(
        [
            row("open_pipeline", len(snap), float(p.sum()), open_expected, open_sims),
            row("new_deals", new.n_deals, new.wins, new.expected, new_sims),
            row(
                "total",
                len(snap) + new.n_deals,
                float(p.sum()) + new.wins,
                open_expected + new.expected,
                total,
            ),
        ]
    )
    if not include_new:
        frame = frame[frame["component"] != "new_deals"].reset_index(drop=True)
    deals = pd.DataFrame(
        {
            C.DEAL_ID: snap[C.DEAL_ID].to_numpy(),
            C.STAGE: snap[C.STAGE].to_numpy(),
            "age_in_stage_days": age,
            "age_days": snap["age_days"].to_numpy(),
            C.AMOUNT: amount,
            C.CLOSE_DATE: snap[C.CLOSE_DATE].to_numpy(),
            "p_won": p,
            "p_won_eventually": p_ever,
            "p_won_value": p_value,
            "expected_amount": amount * p_value,
        }
    )
    if by is not None:
        deals["group"] = np.asarray(labels, dtype=object)[g_open]
    deals = deals.sort_values(
        ["expected_amount", C.DEAL_ID], ascending=[False, True], na_position="last", kind="stable"
    ).reset_index(drop=True)
    missing = int(np.isnan(amount).sum())
    if missing:
        notes.append(f"{missing} open deal(s) without an amount are left out of the totals")
    for g, s in fallback:
        notes.append(
            f"group {labels[g]!r}, stage {cut.pipeline.stages[s]!r}: fewer than "
            f"{model.min_exits} exits, pooled curves used"
        )
    for s, n_exits in enumerate(stage_exits):
        if n_exits == 0 and (stage == s).any():
            notes.append(
                f"stage {cut.pipeline.stages[s]!r} has no exit recorded by the cut-off: its deals "
                "are forecast never to leave it"
            )
    if n_boot:
        notes.append(
            f"interval includes the uncertainty of the fitted model ({n_boot} bootstrap refits)"
        )
    return BookingsForecast(
        frame=frame,
        deals=deals,
        simulations=total,
        open_simulations=open_sims,
        new_simulations=new_sims,
        as_of=ts,
        horizon_days=h_days,
        notes=(*notes, *mixed_currency_note(cut)),
    )


def _open_rows(cut: FunnelData, snap: pd.DataFrame) -> np.ndarray:
    """Row of ``cut.deals`` of each deal in the open table (which lists them in that order)."""
    deals = cut.deals
    rows = np.flatnonzero((deals[C.OUTCOME] == C.OPEN).to_numpy())
    ids = snap[C.DEAL_ID].to_numpy(dtype=object)
    # the ids of the open rows only (not every deal's id as a Python object)
    if len(rows) == len(ids) and np.array_equal(
        deals[C.DEAL_ID].iloc[rows].to_numpy(dtype=object), ids
    ):
        return rows
    return pd.Index(deals[C.DEAL_ID]).get_indexer(snap[C.DEAL_ID])


def _strata(cut: FunnelData, by: str | None, amount_bands: int) -> tuple[np.ndarray, list[str]]:
    """Per deal, its stratum (group of ``by`` × amount band) and the strata labels."""
    if amount_bands < 1:
        raise ValueError("amount_bands must be at least 1")
    gcode, labels = group_codes(cut, by)
    if amount_bands == 1:
        return gcode, labels
    amt = cut.deals[C.AMOUNT].to_numpy(dtype=float)
    known = ~np.isnan(amt)
    if not known.any():
        return gcode, labels
    edges = np.quantile(amt[known], np.linspace(0, 1, amount_bands + 1)[1:-1])
    band = np.searchsorted(edges, np.where(known, amt, np.median(amt[known])), side="right")
    names = [f"amount band {b + 1}/{amount_bands}" for b in range(amount_bands)]
    code = gcode * amount_bands + band
    out = [f"{g}, {n}" if by is not None else n for g in labels for n in names]
    return code.astype(np.int64), out


def _approximation_notes(part: str, what: str, draws: SumDraws) -> list[str]:
    if not draws.approximated:
        return []
    return [
        f"{part}: the {draws.n_exact:,} {what} that shape the range are simulated one by one; "
        f"the sum of the other {draws.approximated:,} (each too small to matter alone) is drawn "
        "from a translated gamma distribution with its exact mean, variance and skewness"
    ]


@dataclass(frozen=True)
class _NewDeals:
    """Deals created after the cut-off: expected counts and the terms of their simulation.

    Winners arrive as a thinned Poisson process: in group ``g`` with arrival rate ``r``
    and ``q(u)`` the chance of being won within ``u`` days of creation, their number is
    Poisson with mean ``r * integral_0^H q(u) du`` (trapezoid on the model's grid: exact
    for the linear interpolation of ``q``), each with an amount drawn from the group's
    recent deals. Recent deal ``j`` is therefore drawn ``Poisson(lambda_j)`` times, with
    ``lambda_j`` that mean times its share of the recent deals with an amount
    (:meth:`rates`).
    """

    n_deals: float
    wins: float
    expected: float
    amounts: np.ndarray
    groups: tuple[tuple[int, np.ndarray, np.ndarray, np.ndarray], ...] = ()
    span: float = 1.0
    h_days: float = 0.0

    @staticmethod
    def empty() -> _NewDeals:
        return _NewDeals(0.0, 0.0, 0.0, np.zeros(0))

    def rates(self, model: SemiMarkovFunnel, weights: np.ndarray) -> np.ndarray:
        """``lambda_j`` of every term (recent deal with an amount) under ``model``, with the
        deals weighted by ``weights`` (bootstrap counts: the rate, the first-stage mix and
        the amounts' distribution of a replicate)."""
        out = np.zeros(len(self.amounts))
        if not self.groups:
            return out
        k_steps, h = model.grid(self.h_days)
        grid_t = np.arange(k_steps + 1) * h
        lo = 0
        for g, sel, dest, has_amt in self.groups:
            n_terms = int(has_amt.sum())
            w = weights[sel]
            q = _new_deal_curve(model, g, self.h_days, dest, w)
            winners = w.sum() / self.span * float(np.trapezoid(q, grid_t))
            wa = w[has_amt]
            if wa.sum() > 0:
                out[lo : lo + n_terms] = winners * wa / wa.sum()
            lo += n_terms
        return out


def _new_deal_curve(
    model: SemiMarkovFunnel, g: int, h_days: float, dest: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """``q[k]``: P(won within ``k h`` days of creation) for a new deal of group ``g``, its
    first stage drawn from ``dest`` weighted by ``w`` (entering at deal age 0)."""
    n_dest = model.n_open_ + 2
    mix = np.bincount(dest, weights=w, minlength=n_dest) / max(float(w.sum()), 1e-300)
    return model.win_within(h_days, g)[:, 0, :] @ mix


def _new_deals(
    cut: FunnelData,
    ts: pd.Timestamp,
    model: SemiMarkovFunnel,
    value_model: SemiMarkovFunnel,
    gcode: np.ndarray,
    n_groups: int,
    h_days: float,
    w_days: float,
) -> tuple[_NewDeals, list[str]]:
    """Deals created after the cut-off (compound Poisson): expected values from the full fit
    and the recent deals that set each group's rate, first-stage mix and amounts."""
    deals = cut.deals
    created = deals[C.CREATED_AT].to_numpy(dtype="datetime64[ns]").view(np.int64)
    first_created = created.min() if len(created) else ts.value
    span = min(w_days, (ts.value - first_created) / NS_PER_DAY)
    notes = []
    if span <= 0:
        return _NewDeals.empty(), ["no history before the cut-off to set the arrival rate"]
    if span < w_days:
        notes.append(f"arrival rate from the {span:.0f} days of history available")
    recent = created > ts.value - span * NS_PER_DAY
    # first stage of each deal (its first event)
    a = cut.arrays
    first_ev = np.r_[True, a.deal[1:] != a.deal[:-1]] if len(a.deal) else np.zeros(0, bool)
    first_stage = np.full(len(deals), -1, dtype=np.int64)
    first_stage[a.deal[first_ev]] = a.stage[first_ev]
    kind = a.kind
    n_open = model.n_open_
    k_steps, h = model.grid(h_days)
    grid_t = np.arange(k_steps + 1) * h
    amounts_all = deals[C.AMOUNT].to_numpy(dtype=float)
    expected = wins = count = 0.0
    groups = []
    amounts = []
    for g in range(n_groups):
        sel = np.flatnonzero(recent & (gcode == g) & (first_stage >= 0))
        n_recent = len(sel)
        if n_recent == 0:
            continue
        fs_ = first_stage[sel]
        fk = kind[fs_]
        dest = np.where(fk == 0, fs_, np.where(fk == 1, n_open, n_open + 1))
        amts = amounts_all[sel]
        has_amt = ~np.isnan(amts)
        if not has_amt.any():
            notes.append(f"group {g}: no amounts among recent deals; new deals left out")
            continue
        ones = np.ones(n_recent)
        rate = n_recent / span
        mean_amt = float(amts[has_amt].mean())
        # expected: rate * integral_0^H q(H - t) dt (trapezoid on the grid); amounts by the
        # value-weighted curve, counts by the plain one
        wins += rate * float(np.trapezoid(_new_deal_curve(model, g, h_days, dest, ones), grid_t))
        q_value = _new_deal_curve(value_model, g, h_days, dest, ones)
        expected += rate * mean_amt * float(np.trapezoid(q_value, grid_t))
        count += rate * h_days
        groups.append((g, sel, dest, has_amt))
        amounts.append(amts[has_amt])
    new = _NewDeals(
        n_deals=count,
        wins=wins,
        expected=expected,
        amounts=np.concatenate(amounts) if amounts else np.zeros(0),
        groups=tuple(groups),
        span=span,
        h_days=h_days,
    )
    return new, notes


# ---------------------------------------------------------------------------
# backtest


@dataclass(frozen=True, repr=False, kw_only=True)
class BacktestResult(Result):
    """Forecasts at past cut-offs against what was won (see :func:`backtest`).

    Attributes
    ----------
    frame : DataFrame
        One row per cut-off.
    metrics : DataFrame
        One row per method: ``method, wape, bias, coverage_80, pinball``.
    """

    metrics: pd.DataFrame
    horizon_days: float
    title: ClassVar[str] = "Backtest"

    def summary(self) -> str:
        with pd.option_context("display.width", 120, "display.float_format", "{:,.3f}".format):
            m = self.metrics.to_string(index=False)
        with pd.option_context("display.width", 140, "display.float_format", "{:,.0f}".format):
            body = self.frame.to_string(index=False)
        notes = "".join(f"\n- {n}" for n in self.notes)
        return (
            f"Backtest: {len(self.frame)} cut-offs, horizon {self.horizon_days:g} days\n"
            f"{m}\n\n{body}{notes}"
        )

    def _repr_html_(self) -> str:
        return (
            f"<div><p><b>Backtest ({len(self.frame)} cut-offs, horizon "
            f"{self.horizon_days:g} days)</b></p>"
            + self.metrics.to_html(index=False, float_format="{:,.3f}".format, border=0)
            + self.frame.to_html(index=False, float_format="{:,.0f}".format, border=0)
            + "</div>"
        )

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Forecast band, forecast, baseline and actual per cut-off (see :func:`plot_backtest`)."""
        return plot_backtest(self, ax=ax, **kwargs)


def _pinball(y: np.ndarray, qhat: np.ndarray, q: float) -> np.ndarray:
    d = y - qhat
    return np.maximum(q * d, (q - 1) * d)


def backtest(
    data: FunnelData,
    *,
    cutoffs: Iterable[Any],
    horizon: Any = "90D",
    n_sims: int = 2_000,
    seed: int | None = 0,
    include_new: bool = True,
    by: str | None = None,
    amount_bands: int = 5,
    age_classes: int = 1,
    n_boot: int = 20,
    probabilities: str | Mapping[str, float] = "auto",
    progress: bool | None = None,
) -> BacktestResult:
    """Replay past cut-offs: forecast with what was known then, score against what happened.

    For each cut-off ``c``: ``data.as_of(c)`` is forecast with
    :func:`forecast_bookings` and with :func:`weighted_pipeline` (deals
    expected to close within the horizon), and both are compared with the
    bookings really won in ``(c, c + horizon]`` in the full data
    (:func:`realised_bookings`).

    Parameters
    ----------
    data : FunnelData
    cutoffs : iterable of date-like
        Each must leave a full horizon before ``data.exported_at``.
    horizon : duration
    n_sims, seed, include_new, by, amount_bands, age_classes, n_boot
        Passed to :func:`forecast_bookings` (the seed of cut-off ``i`` is
        ``seed + i``).
    probabilities
        Passed to :func:`weighted_pipeline`.
    progress : bool, optional
        Show a progress bar (tqdm); default: only when standard error is a
        terminal.

    Returns
    -------
    BacktestResult
        ``.frame``: one row per cut-off: ``cutoff, actual, n_won, expected, p10,
        p50, p90, covered, baseline``. ``.metrics``: ``method`` (``funnelstats``,
        ``weighted_pipeline``), ``wape`` (sum |actual - point| / sum actual, point
        = expected value), ``bias`` (sum (point - actual) / sum actual),
        ``coverage_80`` (share of cut-offs with P10 <= actual <= P90; NaN for the
        baseline, which has no interval), ``pinball`` (mean pinball loss over the
        0.1, 0.5, 0.9 quantiles, divided by the mean actual; the baseline's point
        stands for all three quantiles).

    Examples
    --------
    >>> import funnelstats as fs
    >>> bt = fs.backtest(fs.load_sample(), cutoffs=["2024-06-30", "2024-08-31"],
    ...                  n_sims=500, progress=False)
    >>> bt.metrics["method"].tolist()
    ['funnelstats', 'weighted_pipeline']
    """
    from tqdm.auto import tqdm

    plan = _backtest_plan(
        data,
        cutoffs=cutoffs,
        horizon=horizon,
        n_sims=n_sims,
        seed=seed,
        include_new=include_new,
        by=by,
        amount_bands=amount_bands,
        age_classes=age_classes,
        n_boot=n_boot,
        probabilities=probabilities,
    )
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    done = [
        plan.run(i)
        for i in tqdm(range(plan.n), disable=not progress, desc="backtest", unit="cut-off")
    ]
    return plan.result(done)


@dataclass
class _BacktestPlan:
    """A checked :func:`backtest`, one cut-off at a time: :meth:`run` forecasts cut-off
    ``i`` (independent of the others: its own cut, seed and draws), :meth:`result` scores
    them all. The report runs the cut-offs in two processes this way."""

    data: FunnelData
    cuts: list[pd.Timestamp]
    h_days: float
    settings: dict[str, Any]
    probabilities: str | Mapping[str, float]
    seed: int | None
    _hs: HistoryState | None = None

    @property
    def n(self) -> int:
        return len(self.cuts)

    def run(self, i: int) -> tuple[dict[str, Any], dict[float, float]]:
        """Cut-off ``i``: its row of :attr:`BacktestResult.frame` and the quantiles of its
        simulated total."""
        if self._hs is None:
            self._hs = history_state(self.data)
        data, c, h_days = self.data, self.cuts[i], self.h_days
        # one cut and one table of its open deals for the forecast and the baseline
        cut = data.as_of(c)
        snap = _open_table(cut, c)
        fc = _forecast_cut(
            cut,
            c,
            snap,
            h_days=h_days,
            w_days=_days(_ARRIVAL_WINDOW),
            seed=None if self.seed is None else self.seed + i,
            **self.settings,
        )
        wp = _weighted_cut(cut, c, snap, h_days, self.probabilities)
        won = _realised(data, self._hs, c.value, (c + pd.Timedelta(days=h_days)).value)
        actual = float(np.nansum(won[C.AMOUNT].to_numpy()))
        t = fc.frame.set_index("component").loc["total"]
        row = {
            "cutoff": c,
            "actual": actual,
            "n_won": len(won),
            "expected": float(t["expected"]),
            "p10": float(t["p10"]),
            "p50": float(t["p50"]),
            "p90": float(t["p90"]),
            "covered": bool(t["p10"] <= actual <= t["p90"]),
            "baseline": wp.total,
        }
        return row, {q: float(np.quantile(fc.simulations, q)) for q in QUANTILES}

    def result(self, done: list[tuple[dict[str, Any], dict[float, float]]]) -> BacktestResult:
        """The :class:`BacktestResult` of every cut-off's :meth:`run`, in order."""
        frame = pd.DataFrame([row for row, _ in done])
        quant = {q: [qs[q] for _, qs in done] for q in QUANTILES}
        return _score_backtest(frame, quant, self.h_days)


def _backtest_plan(
    data: FunnelData,
    *,
    cutoffs: Iterable[Any],
    horizon: Any,
    n_sims: int,
    seed: int | None,
    include_new: bool,
    by: str | None,
    amount_bands: int,
    age_classes: int,
    n_boot: int,
    probabilities: str | Mapping[str, float],
) -> _BacktestPlan:
    """The settings of :func:`backtest`, checked."""
    require_history(data, "backtest")
    h_days = _days(horizon)
    cuts = [to_timestamp(c, name="cutoffs") for c in cutoffs]
    if not cuts:
        raise ValueError("cutoffs: give at least one cut-off")
    for c in cuts:
        if c + pd.Timedelta(days=h_days) > data.exported_at:
            raise ValueError(
                f"cut-off {c:%Y-%m-%d} + horizon {h_days:g} days runs past the export date "
                f"{data.exported_at:%Y-%m-%d}: what was won then is not known yet"
            )
    if n_sims < 1:
        raise ValueError("n_sims must be at least 1")
    if n_boot < 0 or n_boot == 1:
        raise ValueError(f"n_boot must be 0 (no bootstrap) or at least 2, got {n_boot!r}")
    settings = {
        "n_sims": n_sims,
        "include_new": include_new,
        "by": by,
        "amount_bands": amount_bands,
        "age_classes": age_classes,
        "n_boot": n_boot,
    }
    return _BacktestPlan(data, cuts, h_days, settings, probabilities, seed)


def _score_backtest(
    frame: pd.DataFrame, quant: dict[float, list[float]], h_days: float
) -> BacktestResult:
    """Scores of the forecasts (rows of ``frame``, quantiles ``quant``) and the baseline."""
    y = frame["actual"].to_numpy()
    denom = max(float(np.abs(y).sum()), 1e-12)
    scale = max(float(np.abs(y).mean()), 1e-12)

    def scores(point: np.ndarray, qs: dict[float, np.ndarray] | None, name: str) -> dict:
        pin = np.mean(
            [_pinball(y, (qs[q] if qs is not None else point), q).mean() for q in QUANTILES]
        )
        cov = float(np.mean((qs[0.1] <= y) & (y <= qs[0.9]))) if qs is not None else float("nan")
        return {
            "method": name,
            "wape": float(np.abs(y - point).sum() / denom),
            "bias": float((point - y).sum() / denom),
            "coverage_80": cov,
            "pinball": float(pin / scale),
        }

    metrics = pd.DataFrame(
        [
            scores(
                frame["expected"].to_numpy(),
                {q: np.asarray(v) for q, v in quant.items()},
                "funnelstats",
            ),
            scores(frame["baseline"].to_numpy(), None, "weighted_pipeline"),
        ]
    )
    return BacktestResult(frame=frame, metrics=metrics, horizon_days=h_days)


# ---------------------------------------------------------------------------
# calibration


@dataclass(frozen=True, repr=False, kw_only=True)
class ReliabilityResult(Result):
    """Predicted against observed frequencies (see :func:`reliability`)."""

    brier: float
    title: ClassVar[str] = "Reliability"

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """The reliability diagram (see :func:`plot_reliability`)."""
        return plot_reliability(self, ax=ax, **kwargs)


def reliability(
    predicted: Any, observed: Any, *, bins: int = 10, alpha: float = 0.05
) -> ReliabilityResult:
    """Reliability table of probabilities against outcomes, by quantile bins of the prediction.

    Parameters
    ----------
    predicted : array of float
        Predicted probabilities (e.g. ``forecast.deals["p_won"]``).
    observed : array of bool
        What happened (e.g. won within the horizon).
    bins : int
        Number of bins (deciles by default; ties in ``predicted`` stay together).
    alpha : float
        Wilson interval level of each bin's observed rate (statsmodels
        ``proportion_confint``).

    Returns
    -------
    ReliabilityResult
        ``.frame``: ``bin, n, predicted, observed, ci_lower, ci_upper``;
        ``.brier``: the Brier score.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(size=5000)
    >>> r = reliability(p, rng.uniform(size=5000) < p)
    >>> bool(np.abs(r.frame["predicted"] - r.frame["observed"]).max() < 0.06)
    True
    """
    from statsmodels.stats.proportion import proportion_confint

    p = np.asarray(predicted, dtype=float)
    y = np.asarray(observed, dtype=bool)
    if p.shape != y.shape:
        raise ValueError("predicted and observed must have the same length")
    ok = ~np.isnan(p)
    p, y = p[ok], y[ok]
    if not len(p):
        raise ValueError("no predictions to check")
    ranks = pd.Series(p).rank(method="min").to_numpy()
    b = np.minimum(((ranks - 1) * bins // len(p)).astype(int), bins - 1)
    frame = (
        pd.DataFrame({"bin": b, "p": p, "y": y})
        .groupby("bin")
        .agg(n=("y", "size"), predicted=("p", "mean"), successes=("y", "sum"))
        .reset_index()
    )
    frame["observed"] = frame["successes"] / frame["n"]
    lo, hi = proportion_confint(frame["successes"], frame["n"], alpha=alpha, method="wilson")
    frame["ci_lower"] = np.asarray(lo)
    frame["ci_upper"] = np.asarray(hi)
    frame = frame[["bin", "n", "predicted", "observed", "ci_lower", "ci_upper"]]
    return ReliabilityResult(frame=frame, brier=float(np.mean((p - y) ** 2)))


# ---------------------------------------------------------------------------
# plots


def plot_bookings(result: BookingsForecast, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Histogram of simulated total bookings with the P10, P50, P90 and expected lines.

    Examples
    --------
    >>> import funnelstats as fs
    >>> fc = fs.forecast_bookings(fs.load_sample(), as_of="2024-09-30", n_sims=500, seed=1)
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = plot_bookings(fc, ax=ax)
    >>> [round(x) for x in ax.lines[0].get_xdata()] == [round(fc.quantile(0.1))] * 2
    True
    """
    ax = get_ax(ax)
    kwargs.setdefault("bins", 50)
    kwargs.setdefault("color", "#8da0cb")
    ax.hist(result.simulations, **kwargs)
    q = result.quantile(QUANTILES)
    for v, name, style in zip(q, ("P10", "P50", "P90"), ("--", "-", "--")):
        ax.axvline(v, color="#333333", linestyle=style, label=f"{name} {v:,.0f}")
    ax.axvline(result.expected, color="#d62728", label=f"expected {result.expected:,.0f}")
    ax.set_xlabel(f"bookings in {result.horizon_days:g} days after {result.as_of:%Y-%m-%d}")
    ax.set_ylabel("simulations")
    ax.legend(frameon=False)
    return ax


def plot_backtest(result: BacktestResult, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Per cut-off: the P10–P90 band, the forecast, the weighted pipeline and the actual.

    Lines in order: forecast (expected), baseline, actual; the band is a
    ``fill_between`` collection.
    """
    ax = get_ax(ax)
    f = result.frame
    x = pd.DatetimeIndex(f["cutoff"]).tz_localize(None)
    ax.fill_between(x, f["p10"], f["p90"], alpha=0.25, color="#4c72b0", label="P10–P90")
    ax.plot(x, f["expected"], color="#4c72b0", marker="o", label="funnelstats", **kwargs)
    ax.plot(x, f["baseline"], color="#dd8452", marker="s", label="weighted pipeline")
    ax.plot(x, f["actual"], color="black", marker="x", linestyle="none", label="actual")
    ax.set_xlabel("cut-off")
    ax.set_ylabel(f"bookings in the next {result.horizon_days:g} days")
    ax.legend(frameon=False)
    return ax


def plot_reliability(result: ReliabilityResult, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Observed rate against mean predicted probability per bin, with Wilson intervals.

    The first line is the diagonal, the second the bins.
    """
    ax = get_ax(ax)
    f = result.frame
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", label="perfect")
    kwargs.setdefault("marker", "o")
    ax.plot(f["predicted"], f["observed"], label="observed", **kwargs)
    ax.vlines(f["predicted"], f["ci_lower"], f["ci_upper"], color="#4c72b0", alpha=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"Reliability (Brier {result.brier:.3f})")
    ax.legend(frameon=False)
    return ax


# ---------------------------------------------------------------------------
# velocity and its forecasts


@dataclass(frozen=True, repr=False, kw_only=True)
class VelocityResult(Result):
    """Sales velocity per creation period (see :func:`velocity`)."""

    t_mature: float
    trend_per_period: float
    title: ClassVar[str] = "Sales velocity"

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Velocity per period (mature cohorts) and its linear trend."""
        ax = get_ax(ax)
        f = self.frame
        x = f["period"].dt.to_timestamp()
        ax.plot(x, f["velocity"], marker="o", label="velocity", **kwargs)
        ax.plot(x, f["trend"], linestyle="--", color="#999999", label="trend")
        ax.set_ylabel("velocity (amount per day)")
        ax.legend(frameon=False)
        return ax


def velocity(data: FunnelData, *, freq: str = "M", alpha: float = 0.05) -> VelocityResult:
    """Sales velocity per period: open deals × average won amount × win rate / cycle length.

    Each component is shown. The cohort of a period is the deals created in
    it; its win rate is :func:`~funnelstats.win_rate` with ``cohort=freq`` from
    the first open stage at ``horizon`` = the maturity horizon (the time by
    which 90% of deals have closed: the Kaplan–Meier probability of still
    being open in :func:`~funnelstats.cycle_time` reaching 10%), i.e. the
    Aalen–Johansen probability of being won within that horizon, lost
    competing and open deals censored; its cycle length is the restricted mean
    time to win among its winners over the same horizon, read off the same
    win-rate curve; the average won amount is over its winners. Open deals are
    those open at the period's end. Cohorts whose every deal has not yet been
    followed for the maturity horizon are *immature* (stricter than
    ``win_rate``'s ``mature``, which needs only the longest follow-up to reach
    the horizon): their win rate so far (``win_rate``'s figure at its
    ``horizon_days``) is shown as ``win_rate_to_date`` and their velocity is
    left empty, not reported as final.

    Parameters
    ----------
    data : FunnelData
    freq : str
        Pandas period frequency of the cohorts (``"M"``, ``"Q"``, ``"W"``).
    alpha : float
        Level of the win rate's interval (Aalen–Johansen variance, log-log).

    Returns
    -------
    VelocityResult
        ``.frame``: ``period, n_created, open_deals, win_rate, ci_lower, ci_upper,
        win_rate_to_date, avg_won_amount, cycle_days, velocity, trend, mature,
        follow_up_days``; ``velocity`` is amount per day; ``trend`` the least-squares
        line through the mature periods' velocity (``.trend_per_period`` its slope).

    Examples
    --------
    >>> import funnelstats as fs
    >>> v = fs.velocity(fs.load_sample())
    >>> f = v.frame[v.frame["mature"]]
    >>> bool(np.allclose(f["velocity"], f["open_deals"] * f["avg_won_amount"]
    ...                  * f["win_rate"] / f["cycle_days"]))
    True
    >>> bool(v.frame["mature"].iloc[-1])
    False
    """
    from ._forecast_velocity import cohort_table

    require_history(data, "velocity")
    return _velocity_of_cohorts(data, cohort_table(data, freq=freq, alpha=alpha))


def _velocity_of_cohorts(data: FunnelData, ct: CohortTable) -> VelocityResult:
    """:func:`velocity` of ``data`` from its cohort table
    (:func:`._forecast_velocity.cohort_table`)."""
    f = ct.frame.copy()
    cycle = f["cycle_days"].to_numpy(dtype=float)
    instant = cycle <= 0  # won at creation: a rate per day is not defined
    with np.errstate(divide="ignore", invalid="ignore"):
        f["velocity"] = np.where(
            instant, np.nan, (f["open_deals"] * f["avg_won_amount"] * f["win_rate"]) / cycle
        )
    mature = f["mature"].to_numpy() & np.isfinite(f["velocity"].to_numpy())
    x = np.arange(len(f), dtype=float)
    slope = float("nan")
    f["trend"] = np.nan
    if mature.sum() >= 2:
        slope, icpt = np.polyfit(x[mature], f["velocity"].to_numpy()[mature], 1)
        f.loc[mature, "trend"] = icpt + slope * x[mature]
    cols = [
        "period",
        "n_created",
        "open_deals",
        "win_rate",
        "ci_lower",
        "ci_upper",
        "win_rate_to_date",
        "avg_won_amount",
        "cycle_days",
        "velocity",
        "trend",
        "mature",
        "follow_up_days",
    ]
    notes = (
        f"maturity horizon {ct.t_mature:.0f} days (90% of deals closed by then); "
        f"{int((~f['mature']).sum())} recent period(s) immature",
    )
    notes += mixed_currency_note(data)
    if instant.any():
        notes += (
            f"{int(instant.sum())} period(s) whose won deals closed the moment they were created "
            "(cycle 0 days): velocity not defined there (NaN)",
        )
    return VelocityResult(
        frame=f[cols], t_mature=ct.t_mature, trend_per_period=float(slope), notes=notes
    )


@dataclass(frozen=True, repr=False, kw_only=True)
class SeriesForecast(Result):
    """A per-period series and its forecast (see :func:`forecast_win_rate`)."""

    model: str
    title: ClassVar[str] = "Forecast"

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Observed values, the forecast and its prediction interval."""
        return plot_series_forecast(self, ax=ax, **kwargs)


def _sarimax_forecast(
    y: pd.Series, *, periods: int, alpha: float, transform: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """SARIMAX(0,1,1) (simple exponential smoothing in state-space form) on ``y``.

    Missing values (immature periods) are skipped by the Kalman filter and
    predicted with the rest. Returns mean, lower, upper over the whole series
    (in-sample one-step predictions, then ``periods`` ahead), back-transformed.
    """
    import warnings

    from statsmodels.tsa.statespace.sarimax import SARIMAX

    eps = 1e-4
    if transform == "logit":
        v = np.clip(y.to_numpy(dtype=float), eps, 1 - eps)
        z = np.log(v / (1 - v))

        def back(a):
            with np.errstate(over="ignore"):
                return 1 / (1 + np.exp(-a))
    else:
        z = np.log(np.maximum(y.to_numpy(dtype=float), eps))

        def back(a):
            with np.errstate(over="ignore"):
                return np.exp(a)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = SARIMAX(z, order=(0, 1, 1)).fit(disp=False)
        pred = res.get_prediction(start=0, end=len(z) + periods - 1)
        mean = pred.predicted_mean
        ci = pred.conf_int(alpha=alpha)
    desc = f"SARIMAX(0,1,1) on the {transform} scale, theta={res.params[0]:.2f}"
    return back(mean), back(ci[:, 0]), back(ci[:, 1]), desc


def _series_forecast(
    frame: pd.DataFrame, column: str, *, freq: str, periods: int, alpha: float, transform: str
) -> SeriesForecast:
    if periods < 1:
        raise ValueError("periods must be at least 1")
    obs = frame[column].where(frame["mature"])
    n_obs = int(obs.notna().sum())
    if n_obs < 4:
        from .errors import InsufficientHistoryError

        raise InsufficientHistoryError(
            f"forecasting {column} needs at least 4 mature periods; the data have {n_obs} "
            "(a longer history or a shorter freq helps)"
        )
    mean, lo, hi, desc = _sarimax_forecast(obs, periods=periods, alpha=alpha, transform=transform)
    last = frame["period"].iloc[-1]
    future = pd.period_range(last + 1, periods=periods, freq=freq)
    allp = pd.PeriodIndex(list(frame["period"]) + list(future), freq=freq)
    kind = np.array(
        ["observed" if m else "nowcast" for m in frame["mature"]] + ["forecast"] * periods
    )
    observed = np.r_[obs.to_numpy(dtype=float), np.full(periods, np.nan)]
    out = pd.DataFrame(
        {
            "period": allp,
            "kind": kind,
            "observed": observed,
            "forecast": mean,
            "ci_lower": lo,
            "ci_upper": hi,
        }
    )
    # the first in-sample prediction of an integrated model has no information
    out.loc[0, ["forecast", "ci_lower", "ci_upper"]] = np.nan
    return SeriesForecast(
        frame=out,
        model=desc,
        notes=(
            desc,
            "immature periods are missing values to the model (predicted, not fitted)",
        ),
    )


def forecast_win_rate(
    data: FunnelData, *, freq: str = "M", periods: int = 3, alpha: float = 0.05
) -> SeriesForecast:
    """Forecast the cohort win rate, with prediction intervals.

    The series is the censoring-aware win rate of each creation cohort (see
    :func:`velocity`). Only mature cohorts are observations: the recent,
    immature ones are missing values, so they are *nowcast* by the model instead
    of being taken as final (their win rate to date would understate them).

    The model is statsmodels ``SARIMAX`` with order (0, 1, 1) on the logit of
    the rate: the state-space form of simple exponential smoothing (ETS(A,N,N)),
    chosen over ``ETSModel`` because its Kalman filter handles the missing
    immature periods natively and gives prediction intervals through them;
    a level that drifts slowly is what a few dozen monthly cohorts support (no
    trend or seasonality is identifiable from that little), and the logit keeps
    the intervals inside (0, 1).

    Parameters
    ----------
    data : FunnelData
    freq : str
        Cohort period frequency.
    periods : int
        Periods to forecast after the last cohort.
    alpha : float
        1 - level of the prediction intervals.

    Returns
    -------
    SeriesForecast
        ``.frame``: ``period, kind`` (``observed``, ``nowcast`` for immature
        cohorts, ``forecast``), ``observed, forecast, ci_lower, ci_upper``
        (one-step-ahead in-sample predictions on observed rows).

    Examples
    --------
    >>> import funnelstats as fs
    >>> fc = fs.forecast_win_rate(fs.simulate(3000, seed=1, days=730).funnel(), periods=2)
    >>> fc.frame["kind"].iloc[-2:].tolist()
    ['forecast', 'forecast']
    >>> f = fc.frame.dropna()
    >>> bool(((f["ci_lower"] <= f["forecast"]) & (f["forecast"] <= f["ci_upper"])).all())
    True
    """
    from ._forecast_velocity import cohort_table

    require_history(data, "forecast_win_rate")
    return _win_rate_forecast_of_cohorts(
        cohort_table(data, freq=freq), freq=freq, periods=periods, alpha=alpha
    )


def _win_rate_forecast_of_cohorts(
    ct: CohortTable, *, freq: str, periods: int, alpha: float
) -> SeriesForecast:
    """:func:`forecast_win_rate` from its cohort table (the default ``alpha`` of its rates)."""
    out = _series_forecast(
        ct.frame, "win_rate", freq=freq, periods=periods, alpha=alpha, transform="logit"
    )
    return SeriesForecast(frame=out.frame, model=out.model, notes=out.notes)


def forecast_velocity(
    data: FunnelData, *, freq: str = "M", periods: int = 3, alpha: float = 0.05
) -> SeriesForecast:
    """Forecast sales velocity (see :func:`velocity`), with prediction intervals.

    Same model and treatment of immature periods as :func:`forecast_win_rate`,
    on the log scale (velocity is positive and its changes multiplicative).

    Returns
    -------
    SeriesForecast
        ``.frame``: ``period, kind, observed, forecast, ci_lower, ci_upper``.

    Examples
    --------
    >>> import funnelstats as fs
    >>> fc = fs.forecast_velocity(fs.simulate(3000, seed=1, days=730).funnel(), periods=2)
    >>> bool((fc.frame["forecast"].dropna() > 0).all())
    True
    """
    v = velocity(data, freq=freq)
    return _series_forecast(
        v.frame, "velocity", freq=freq, periods=periods, alpha=alpha, transform="log"
    )


def plot_series_forecast(result: SeriesForecast, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Observed points (first line), forecast line (second) and the interval band."""
    ax = get_ax(ax)
    f = result.frame
    x = f["period"].dt.to_timestamp()
    ax.plot(x, f["observed"], marker="o", linestyle="none", color="black", label="observed")
    ax.plot(x, f["forecast"], color="#4c72b0", label="forecast", **kwargs)
    ax.fill_between(x, f["ci_lower"], f["ci_upper"], color="#4c72b0", alpha=0.2, label="interval")
    ax.legend(frameon=False)
    return ax
