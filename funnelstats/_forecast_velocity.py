"""Per-cohort, censoring-aware win rate, won amount and cycle length (velocity's parts).

A cohort is the deals created in one period. Its numbers are those of the
public estimators, so the library has one definition of each:

- the maturity horizon ``t_mature`` is the time by which 90% of deals have
  closed: the Kaplan–Meier probability of still being open in
  :func:`funnelstats.cycle_time` (clock from creation) first at or below 10%;
- the win rate and its interval are :func:`funnelstats.win_rate` with
  ``cohort=freq``, from the first open stage, at ``horizon=t_mature``: the
  Aalen–Johansen probability of being won within ``t_mature`` days of
  reaching the first stage (which every deal reaches, "reached" semantics),
  losing competing, open deals censored;
- the cycle length is the restricted mean time to win among winners within
  the horizon, read off the same win-rate curve (``win_rate(...).curves``):
  ``integral_0^tau (1 - F(t) / F(tau)) dt``.

Maturity is stricter here than in :func:`funnelstats.win_rate`: there a
cohort's figure is ``mature`` once its *longest* follow-up reaches the
horizon (the estimate is then defined, possibly from a few early deals); a
velocity cohort is mature only once *every* deal created in the period has
been followed ``t_mature`` days (the period's end is that long before the
export), so a forecast series never takes a half-observed cohort as final.
Younger cohorts keep their estimate to date (``win_rate_to_date``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import _columns as C
from ._forecast_history import HistoryState, history_state, last_row_at
from ._stays import NS_PER_DAY
from .data import FunnelData

__all__ = ["CohortTable", "cohort_table", "maturity_horizon"]


@dataclass(frozen=True)
class CohortTable:
    frame: pd.DataFrame
    t_mature: float


def maturity_horizon(data: FunnelData, *, mature_share: float = 0.9) -> float:
    """Days by which ``mature_share`` of deals have closed (Kaplan–Meier, from creation).

    Read off :func:`funnelstats.cycle_time`: the first time its probability of
    still being open is at or below ``1 - mature_share``; the longest time
    observed when it never gets there.
    """
    from .survival import cycle_time

    # the probability of still being open is the Kaplan-Meier curve of the fit, read at the
    # exits (not the tidy curves with their intervals: a million rows at a million deals)
    if mature_share <= 0:
        return 0.0  # every curve starts at 1 open at t = 0
    fit = cycle_time(data)._fit
    tab = fit.table
    exits = tab.observed > 0
    t = fit.time_days[exits]
    still = fit.km.survival[exits]
    hit = np.flatnonzero(still <= 1 - mature_share + 1e-12)
    if len(hit):
        return float(t[hit[0]])
    return float(t.max()) if len(t) else 0.0


def _cycle_days(age: np.ndarray, cif: np.ndarray, tau: float) -> float:
    """Restricted mean time to win among winners up to ``tau``: area above F / F(tau)."""
    keep = age <= tau
    t, f = age[keep], cif[keep]
    f_tau = float(f[-1]) if len(f) else 0.0
    if f_tau <= 0:
        return float("nan")
    steps = np.diff(np.r_[0.0, t, tau])
    return float(np.sum(np.r_[1.0, 1.0 - f / f_tau] * steps))


def _open_at(hs: HistoryState, times: np.ndarray) -> np.ndarray:
    """Per time in ``times``: the deals whose state at that time (their last history row
    at or before it, :func:`last_row_at`) is an open stage.

    A row is its deal's state from its time until the deal's next row's time; the deals
    open at ``t`` are the open-stage rows whose interval holds ``t``: rows started by ``t``
    less rows ended by ``t``, counted at once for every time with two sorted arrays (the
    same counts as a :func:`last_row_at` per time).
    """
    n = len(hs.at)
    if not n:
        return np.zeros(len(times), dtype=np.int64)
    same_deal = ~hs.first[1:]
    if np.any(same_deal & (hs.at[1:] < hs.at[:-1])):  # rows out of time order in a deal
        out = []
        for t in times:
            state = last_row_at(hs, int(t))
            out.append(np.count_nonzero((state >= 0) & (hs.kind[np.maximum(state, 0)] == 0)))
        return np.asarray(out, dtype=np.int64)
    nxt = np.r_[np.where(same_deal, hs.at[1:], np.iinfo(np.int64).max), np.iinfo(np.int64).max]
    rows = (hs.kind == 0) & (hs.deal >= 0)
    start = np.sort(hs.at[rows])
    end = np.sort(nxt[rows])
    times = np.asarray(times, dtype=np.int64)
    started = np.searchsorted(start, times, side="right")
    ended = np.searchsorted(end, times, side="right")
    return (started - ended).astype(np.int64)


def cohort_table(
    data: FunnelData, *, freq: str = "M", alpha: float = 0.05, mature_share: float = 0.9
) -> CohortTable:
    """One row per creation period: ``period, n_created, win_rate, ci_lower, ci_upper,
    win_rate_to_date, follow_up_days, mature, avg_won_amount, cycle_days, open_deals``."""
    from .conversion import win_rate

    deals = data.deals
    export = data.exported_at.value
    t_mature = maturity_horizon(data, mature_share=mature_share)
    first_stage = data.pipeline.stages[0]
    wr = win_rate(data, cohort=freq, from_stage=first_stage, horizon=t_mature, alpha=alpha)
    est = wr.frame.dropna(subset=["cohort"]).set_index("cohort")
    curves = wr.curves
    created = deals[C.CREATED_AT]
    periods = pd.PeriodIndex(created.dt.tz_convert("UTC").dt.tz_localize(None), freq=freq)
    cohorts = pd.period_range(periods.min(), periods.max(), freq=freq)
    code = cohorts.get_indexer(periods)
    created_ns = created.to_numpy(dtype="datetime64[ns]").view(np.int64)
    closed_ns = deals[C.CLOSED_AT].to_numpy(dtype="datetime64[ns]").view(np.int64)
    outcome = deals[C.OUTCOME].astype(str).to_numpy()
    amount = deals[C.AMOUNT].to_numpy(dtype=float)
    won_in_time = (outcome == C.WON) & ((closed_ns - created_ns) / NS_PER_DAY <= t_mature)
    hs = history_state(data)
    ends = [min(p.end_time.tz_localize("UTC").value, export) for p in cohorts]
    n_open = _open_at(hs, np.asarray(ends, dtype=np.int64))
    rows = []
    for g, p in enumerate(cohorts):
        p_end = p.end_time.tz_localize("UTC").value
        follow = (export - p_end) / NS_PER_DAY
        mature = follow >= t_mature
        sel = code == g
        if p in est.index:
            r = est.loc[p]
            wr_p, lo, hi, holds = r["win_rate"], r["ci_lower"], r["ci_upper"], r["horizon_days"]
            cv = curves[curves["cohort"] == p]
            cycle = _cycle_days(
                cv["age_days"].to_numpy(dtype=float), cv["win_rate"].to_numpy(dtype=float), holds
            )
        else:
            wr_p, lo, hi, cycle = np.nan, np.nan, np.nan, np.nan
        won_in = sel & won_in_time & ~np.isnan(amount)
        avg_won = float(amount[won_in].mean()) if won_in.any() else np.nan
        open_deals = int(n_open[g])
        rows.append(
            {
                "period": p,
                "n_created": int(sel.sum()),
                "win_rate": wr_p if mature else np.nan,
                "ci_lower": lo if mature else np.nan,
                "ci_upper": hi if mature else np.nan,
                "win_rate_to_date": wr_p,
                "follow_up_days": max(follow, 0.0),
                "mature": bool(mature),
                "avg_won_amount": avg_won if mature else np.nan,
                "cycle_days": cycle if mature else np.nan,
                "open_deals": open_deals,
            }
        )
    frame = pd.DataFrame(rows)
    frame["period"] = pd.PeriodIndex(frame["period"], freq=freq)
    return CohortTable(frame=frame, t_mature=t_mature)
