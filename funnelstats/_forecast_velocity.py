"""Per-cohort, censoring-aware win rate, won amount and cycle length (velocity's parts).

A cohort is the deals created in one period. Its win rate and its time to win
come from the Aalen–Johansen cumulative incidence of winning (lost competing,
open deals censored at the export date), read at the maturity horizon
``t_mature``: the time by which 90% of deals have closed (Kaplan–Meier of time
to close, any outcome). A cohort is *mature* once every deal in it has been
followed that long; younger cohorts get their estimate to date, never used as
final. These are the quantities ``conversion.win_rate(cohort=...)`` and
``survival.cycle_time`` describe; they are computed here from the estimator
core so the forecast does not depend on those modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import _columns as C
from ._estimators import aalen_johansen, event_table, kaplan_meier, quantile_time
from ._forecast_history import history_state, last_row_at
from ._stays import NS_PER_DAY
from .data import FunnelData

__all__ = ["CohortTable", "cohort_table"]


@dataclass(frozen=True)
class CohortTable:
    frame: pd.DataFrame
    t_mature: float


def _periods(ts: pd.Series, freq: str) -> pd.PeriodIndex:
    return pd.PeriodIndex(ts.dt.tz_convert("UTC").dt.tz_localize(None), freq=freq)


def cohort_table(
    data: FunnelData, *, freq: str = "M", alpha: float = 0.05, mature_share: float = 0.9
) -> CohortTable:
    """One row per creation period: ``period, n_created, win_rate, ci_lower, ci_upper,
    win_rate_to_date, follow_up_days, mature, avg_won_amount, cycle_days, open_deals``."""
    deals = data.deals
    export = data.exported_at.value
    created = deals[C.CREATED_AT].to_numpy(dtype="datetime64[ns]").view(np.int64)
    closed = deals[C.CLOSED_AT].to_numpy(dtype="datetime64[ns]").view(np.int64)
    outcome = deals[C.OUTCOME].astype(str).to_numpy()
    is_closed = outcome != C.OPEN
    end = np.where(is_closed, closed, export)
    dur = np.maximum(end - created, 0)
    cause = np.where(outcome == C.WON, 1, np.where(outcome == C.LOST, 2, 0))
    # maturity horizon: 90% closed, from the Kaplan–Meier of time to close
    pooled = event_table(dur, cause, n_causes=2)
    km = kaplan_meier(pooled)
    t_m = quantile_time(pooled.time, km.survival, 1 - mature_share)
    if not np.isfinite(t_m):
        t_m = float(pooled.time[-1]) if len(pooled.time) else 0.0
    t_mature = t_m / NS_PER_DAY

    periods = _periods(deals[C.CREATED_AT], freq)
    cohorts = pd.period_range(periods.min(), periods.max(), freq=freq)
    code = cohorts.get_indexer(periods)
    n_c = len(cohorts)
    table = event_table(dur, cause, groups=code, n_groups=n_c, n_causes=2)
    aj = aalen_johansen(table, alpha=alpha)
    amount = deals[C.AMOUNT].to_numpy(dtype=float)
    hs = history_state(data)
    rows = []
    for g, p in enumerate(cohorts):
        r = table.rows(g)
        t = table.time[r]
        p_end = p.end_time.tz_localize("UTC").value
        follow = (export - p_end) / NS_PER_DAY
        sel = code == g
        horizon_ns = min(t_m, max(export - p_end, 0)) if follow < t_mature else t_m
        i = np.searchsorted(t, horizon_ns, side="right") - 1
        if i >= 0:
            wr = float(aj.cif[r][i, 0])
            lo, hi = float(aj.ci_lower[r][i, 0]), float(aj.ci_upper[r][i, 0])
            cif_won = aj.cif[r][: i + 1, 0]
            tt = t[: i + 1] / NS_PER_DAY
            # restricted mean time to win among winners: area above the normalised CIF
            if wr > 0:
                frac = cif_won / wr
                steps = np.diff(np.r_[0.0, tt, horizon_ns / NS_PER_DAY])
                cycle = float(np.sum(np.r_[1.0, 1.0 - frac] * steps))
            else:
                cycle = np.nan
        else:
            wr, lo, hi, cycle = 0.0, np.nan, np.nan, np.nan
        won_in = sel & (outcome == C.WON) & (dur <= t_m)
        won_amounts = amount[won_in & ~np.isnan(amount)]  # (none known: NaN, no warning)
        avg_won = float(won_amounts.mean()) if len(won_amounts) else np.nan
        state = last_row_at(hs, min(p_end, export))
        open_deals = int(np.count_nonzero((state >= 0) & (hs.kind[np.maximum(state, 0)] == 0)))
        mature = follow >= t_mature
        rows.append(
            {
                "period": p,
                "n_created": int(sel.sum()),
                "win_rate": wr if mature else np.nan,
                "ci_lower": lo if mature else np.nan,
                "ci_upper": hi if mature else np.nan,
                "win_rate_to_date": wr,
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
