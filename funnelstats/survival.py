"""Time in stage and sales-cycle length as survival curves, with competing outcomes.

An average of closed stays is biased short: the stays still open at the export
date are the long ones. These functions treat open stays as right-censored
and estimate, per open stage (and group):

- :func:`time_in_stage` — Kaplan–Meier curves of time in stage, with median,
  quartiles and restricted mean, and a log-rank test across groups;
- :func:`stage_outcomes` — how stays end (advanced, lost, moved back) as
  Aalen–Johansen cumulative incidence curves;
- :func:`cycle_time` — time from creation (or from reaching a stage) to won,
  with lost as a competing outcome; works on deal-level exports too;
- :func:`stage_hazards` — a Cox model of the hazard of advancing, with deal
  attributes as covariates and the proportional-hazards check reported.

Durations are counted in integer nanoseconds (so ties are exact) and reported
in days.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from . import _columns as C
from . import _stays
from ._estimators import (
    aalen_johansen,
    any_cause,
    event_table,
    kaplan_meier,
    quantile_time,
    restricted_mean,
)
from ._result import Result
from ._stays import ADVANCE, NS_PER_DAY
from ._survival_fit import Fit, naive_medians, nice_times, select_stays, step_values
from ._survival_logrank import logrank
from ._survival_plots import plot_hazard_ratios, plot_stage_outcomes, plot_survival
from .data import FunnelData
from .errors import FunnelDataError, InsufficientHistoryError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "CompetingOutcomes",
    "StageHazards",
    "TimeInStage",
    "cycle_time",
    "plot_hazard_ratios",
    "plot_stage_outcomes",
    "plot_survival",
    "stage_hazards",
    "stage_outcomes",
    "time_in_stage",
]

_STAGE_OUTCOMES = ("advanced", "lost", "moved back")
_IN_STAGE = "in stage"


def _check_alpha(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    return float(alpha)


def _times(times: Any, default: np.ndarray) -> np.ndarray:
    if times is None:
        return default
    t = np.atleast_1d(np.asarray(times, dtype=float))
    if np.any(~np.isfinite(t)) or np.any(t < 0):
        raise ValueError("times must be finite and >= 0 (days)")
    return t


def _repeat_note(n_repeat: int, repeats: str) -> tuple[str, ...]:
    if not n_repeat:
        return ()
    if repeats == "all":
        return (
            f"{n_repeat:,} stays are a deal's second or later entry into the same stage; each "
            "counts as a stay of its own (repeats='first' keeps first entries only)",
        )
    return (f"{n_repeat:,} repeat entries into the same stage left out (repeats='first')",)


# --------------------------------------------------------------------------- time in stage


@dataclass(frozen=True, repr=False, kw_only=True)
class TimeInStage(Result):
    """Kaplan–Meier time in stage; see :func:`time_in_stage`.

    Attributes
    ----------
    frame : DataFrame
        One row per stage (and group); columns in :func:`time_in_stage`.
    logrank : DataFrame or None
        With ``by=``: per stage, ``stage, n_groups, statistic, df, p_value``.
    by : str or None
    alpha : float
    """

    logrank: pd.DataFrame | None = None
    by: str | None = None
    alpha: float = 0.05
    _fit: Fit = field(repr=False, compare=False)
    title: ClassVar[str] = "Time in stage (Kaplan–Meier, days)"

    @cached_property
    def curves(self) -> pd.DataFrame:
        """The survival curves, tidy: one row per stage, group and distinct exit time.

        Columns ``stage, group, t`` (days), ``survival`` (probability of still
        being in the stage just after ``t``), ``ci_lower, ci_upper``
        (exponential Greenwood), ``at_risk`` (stays in the stage just before
        ``t``). Each curve starts with a row at ``t = 0``.
        """
        fit = self._fit
        tab, km = fit.table, fit.km
        ev = tab.observed > 0
        off = tab.offsets
        present = fit.present()
        first = off[:-1][present]
        zero_exit = (tab.time[first] == 0) & (tab.observed[first] > 0)
        start = present[~zero_exit]
        keys = np.r_[start, tab.group[ev]]
        t = np.r_[np.zeros(len(start)), fit.time_days[ev]]
        order = np.lexsort((np.r_[np.zeros(len(start)), np.ones(ev.sum())], t, keys))
        one = np.ones(len(start))
        cols = {
            **fit.id_columns(keys[order]),
            "t": t[order],
            "survival": np.r_[one, km.survival[ev]][order],
            "ci_lower": np.r_[one, km.ci_lower[ev]][order],
            "ci_upper": np.r_[one, km.ci_upper[ev]][order],
            "at_risk": np.r_[tab.totals[start], tab.at_risk[ev]][order].astype(np.int64),
        }
        return pd.DataFrame(cols)

    def at(self, times: Any) -> pd.DataFrame:
        """Survival at chosen times (days).

        Returns
        -------
        DataFrame
            ``stage, group, t, survival, ci_lower, ci_upper``.
        """
        t = _times(times, np.zeros(0))
        fit = self._fit
        keys, s = step_values(fit, fit.km.survival, t, 1.0)
        _, lo = step_values(fit, fit.km.ci_lower, t, 1.0)
        _, hi = step_values(fit, fit.km.ci_upper, t, 1.0)
        return pd.DataFrame(
            {
                **fit.id_columns(keys),
                "t": np.tile(t, len(fit.present())),
                "survival": s,
                "ci_lower": lo,
                "ci_upper": hi,
            }
        )

    def at_risk_table(self, times: Any = None) -> pd.DataFrame:
        """Stays still in the stage at chosen times, with exits and censorings so far.

        Parameters
        ----------
        times : array of float, optional
            Days; default: round times over the plotted range.

        Returns
        -------
        DataFrame
            ``stage, group, t, at_risk`` (still in the stage just after ``t``:
            duration > t, lifelines' ``add_at_risk_counts`` convention),
            ``exited`` and ``censored`` (durations <= t); the three add up to
            ``n_entered``.
        """
        fit = self._fit
        t = _times(times, nice_times(fit.horizon()))
        c = fit.counts_at(t)
        return pd.DataFrame(
            {
                **fit.id_columns(c["key"]),
                "t": c["t"],
                "at_risk": c["at_risk"],
                "exited": c["exited"],
                "censored": c["censored"],
            }
        )

    def summary(self) -> str:
        text = super().summary()
        if self.logrank is not None:
            with pd.option_context("display.float_format", "{:,.4g}".format):
                text += f"\nLog-rank test across {self.by}:\n{self.logrank.to_string(index=False)}"
        return text

    def _repr_html_(self) -> str:
        html = super()._repr_html_()
        if self.logrank is not None:
            table = self.logrank.to_html(index=False, float_format="{:,.4g}".format, border=0)
            html += f"<p>Log-rank test across {self.by}</p>{table}"
        return html

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Survival curves with CI bands and an at-risk table (:func:`plot_survival`)."""
        return plot_survival(self, ax=ax, **kwargs)


def time_in_stage(
    data: FunnelData,
    *,
    stage: str | Sequence[str] | None = None,
    by: str | None = None,
    alpha: float = 0.05,
    tau: float | None = None,
    repeats: str = "all",
) -> TimeInStage:
    """How long deals stay in each open stage: Kaplan–Meier per stage (and group).

    Stays still open at the export date are right-censored there, not
    dropped and not counted as exits. Leaving by any route (advance, lost,
    moved back) ends a stay.

    Parameters
    ----------
    data : FunnelData
        Needs stage history (deal-level exports raise
        :class:`~funnelstats.InsufficientHistoryError`).
    stage : str or list of str, optional
        Open stage(s); default all, in pipeline order.
    by : str, optional
        A deal attribute (``data.attributes``) to compare groups; adds a
        log-rank test per stage.
    alpha : float
        1 - confidence level of the intervals.
    tau : float, optional
        Horizon (days) of the restricted mean. Default, per stage: the
        smallest over the groups of the longest stay observed, so groups are
        compared over the same window.
    repeats : {"all", "first"}
        A deal that enters the same stage twice (after moving back, or after
        being reopened) contributes two stays with ``"all"`` (the default: each
        stay is time the deal spent in the stage), only the first with
        ``"first"``. Stays of one deal are treated as independent.

    Returns
    -------
    TimeInStage
        ``.frame`` columns: ``stage, group`` (``"all"`` without ``by``),
        ``n_entered, n_exited, n_censored``, ``median, median_ci_lower,
        median_ci_upper`` (days; the first time the curve, or its lower / upper
        confidence curve, is at or below 0.5, as lifelines'
        ``median_survival_times``; ``inf`` where not reached), ``q25, q25_ci_lower,
        q25_ci_upper, q75, q75_ci_lower, q75_ci_upper`` (days by which 25% / 75%
        have left, with their intervals read off the confidence curves the same
        way), ``restricted_mean,
        restricted_mean_ci_lower, restricted_mean_ci_upper`` (mean days in
        stage within the first ``tau`` days), ``tau``, and
        ``naive_mean_closed`` (the plain mean of closed stays, biased short,
        shown for comparison). ``.curves`` holds the curves, ``.at(times)`` and
        ``.at_risk_table(times)`` read them at chosen times, ``.logrank`` the
        test across groups.

    Notes
    -----
    Survival and intervals are lifelines' ``KaplanMeierFitter`` (exponential
    Greenwood intervals) computed from one event table over every stage and
    group. The restricted-mean variance is Klein & Moeschberger (2003) eq.
    4.5.1 and its interval is normal. The log-rank statistic is lifelines'
    ``multivariate_logrank_test``.

    Examples
    --------
    >>> import funnelstats as fs
    >>> r = fs.time_in_stage(fs.load_sample())
    >>> r.frame[["stage", "n_entered", "median", "naive_mean_closed"]].round(1)
               stage  n_entered  median  naive_mean_closed
    0    Prospecting       3000    12.3               15.7
    1  Qualification       1504    15.7               19.9
    2       Proposal        912    20.4               24.7
    3    Negotiation        645    13.0               16.4
    >>> by = fs.time_in_stage(fs.load_sample(), stage="Proposal", by="Segment")
    >>> by.logrank["p_value"].item() < 0.001
    True
    """
    alpha = _check_alpha(alpha)
    sel = select_stays(data, stage, by, repeats, "time in stage")
    s = sel.stays
    observed = (s.outcome != _stays.CENSORED).astype(np.int64)
    keys = sel.key
    table = any_cause(sel.table)
    km = kaplan_meier(table, alpha=alpha)
    fit = Fit(table, km, None, sel.stage_names, sel.group_labels, s.duration_ns, observed, keys)
    dur = s.duration_ns / NS_PER_DAY
    tdays = fit.time_days
    last = fit.last_time()
    g = sel.n_groups
    closed_n = np.bincount(keys[observed == 1], minlength=sel.n_keys)
    closed_sum = np.bincount(keys[observed == 1], weights=dur[observed == 1], minlength=sel.n_keys)
    if tau is not None and (not np.isfinite(tau) or tau <= 0):
        raise ValueError(f"tau must be a positive number of days, got {tau!r}")
    rows = []
    for k in fit.present():
        r = table.rows(k)
        t = tdays[r]
        surv = km.survival[r]
        stage_taus = last[(k // g) * g : (k // g + 1) * g]
        tau_k = float(tau) if tau is not None else float(np.nanmin(stage_taus))
        rm, var = restricted_mean(
            t, surv, tau_k, events=table.observed[r], at_risk=table.at_risk[r]
        )
        half = _z(alpha) * np.sqrt(var)
        bounds = km.bound_quantiles(r, t, (0.5, 0.75, 0.25))
        rows.append(
            (
                k,
                int(table.totals[k]),
                int(table.observed[r].sum()),
                int(table.censored[r].sum()),
                quantile_time(t, surv, 0.5),
                *bounds[0],
                quantile_time(t, surv, 0.75),
                *bounds[1],
                quantile_time(t, surv, 0.25),
                *bounds[2],
                rm,
                max(rm - half, 0.0),
                rm + half,
                tau_k,
                closed_sum[k] / closed_n[k] if closed_n[k] else np.nan,
            )
        )
    cols = [
        "key",
        "n_entered",
        "n_exited",
        "n_censored",
        "median",
        "median_ci_lower",
        "median_ci_upper",
        "q25",
        "q25_ci_lower",
        "q25_ci_upper",
        "q75",
        "q75_ci_lower",
        "q75_ci_upper",
        "restricted_mean",
        "restricted_mean_ci_lower",
        "restricted_mean_ci_upper",
        "tau",
        "naive_mean_closed",
    ]
    body = pd.DataFrame(rows, columns=cols).astype(
        {c: np.int64 if c.startswith("n_") or c == "key" else np.float64 for c in cols}
    )
    frame = pd.concat(
        [pd.DataFrame(fit.id_columns(body["key"].to_numpy())), body.drop(columns="key")], axis=1
    )
    lr = None
    if by is not None:
        tests = []
        for i, name in enumerate(sel.stage_names):
            m = sel.stage_pos == i
            n_present = int((np.bincount(sel.group[m], minlength=g) > 0).sum())
            stat, df, p = logrank(s.duration_ns[m], observed[m] == 1, sel.group[m], g)
            tests.append((name, n_present, stat, df, p))
        lr = pd.DataFrame(tests, columns=["stage", "n_groups", "statistic", "df", "p_value"])
        lr["stage"] = pd.Categorical(lr["stage"], categories=sel.stage_names, ordered=True)
    notes = [
        f"open stays censored at the export date {data.exported_at:%Y-%m-%d}",
        "restricted mean: mean days in stage within the first tau days"
        + (" (tau given)" if tau is not None else " (tau = shortest group's longest stay)"),
        *_repeat_note(sel.n_repeat, repeats),
    ]
    if not len(frame):
        notes.append("no stays in an open stage: nothing to estimate")
    if np.isinf(frame["median"].to_numpy()).any():
        notes.append("median inf: fewer than half the stays have left the stage (not reached)")
    return TimeInStage(frame=frame, notes=tuple(notes), logrank=lr, by=by, alpha=alpha, _fit=fit)


def _z(alpha: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(1 - alpha / 2))


# ---------------------------------------------------------------------- competing outcomes


@dataclass(frozen=True, repr=False, kw_only=True)
class CompetingOutcomes(Result):
    """Aalen–Johansen cumulative incidence of competing outcomes.

    Returned by :func:`stage_outcomes` (outcomes ``advanced, lost, moved
    back``; still open: ``in stage``) and :func:`cycle_time` (``won, lost``;
    still open: ``open``).

    Attributes
    ----------
    frame : DataFrame
        Per stage (for :func:`stage_outcomes`), group and outcome; columns in
        the function's docstring.
    outcomes : tuple of str
        The outcome names, then the name of the still-open state.
    by : str or None
    alpha : float
    """

    outcomes: tuple[str, ...] = ()
    by: str | None = None
    alpha: float = 0.05
    time_label: str = "days in stage"
    default_plot: Mapping[str, Any] = field(default_factory=dict)
    _fit: Fit = field(repr=False, compare=False)
    title: ClassVar[str] = "Competing outcomes (Aalen–Johansen)"

    @cached_property
    def curves(self) -> pd.DataFrame:
        """The cumulative incidence curves, tidy.

        Columns: ``stage`` (for :func:`stage_outcomes`), ``group, t`` (days),
        ``outcome`` (the outcomes and the still-open state), ``probability``
        (of having left with that outcome by ``t``, or of still being open
        just after ``t``), ``ci_lower, ci_upper``, ``at_risk`` (open just
        before ``t``). One row per outcome at every distinct exit time and at
        ``t = 0``; at every ``(stage, group, t)`` the probabilities add up to 1.
        """
        fit = self._fit
        tab = fit.table
        ev = tab.observed > 0
        present = fit.present()
        first = tab.offsets[:-1][present]
        zero_exit = (tab.time[first] == 0) & (tab.observed[first] > 0)
        start = present[~zero_exit]
        keys = np.r_[start, tab.group[ev]]
        t = np.r_[np.zeros(len(start)), fit.time_days[ev]]
        is_row = np.r_[np.zeros(len(start), bool), np.ones(ev.sum(), bool)]
        order = np.lexsort((is_row, t, keys))
        keys, t = keys[order], t[order]
        rows = np.r_[np.full(len(start), -1), np.flatnonzero(ev)][order]
        prob, lo, hi = self._values_at_rows(rows)
        at_risk = np.where(rows >= 0, tab.at_risk[np.maximum(rows, 0)], tab.totals[keys])
        n_out = len(self.outcomes)
        frame = pd.DataFrame(
            {
                **fit.id_columns(np.repeat(keys, n_out)),
                "t": np.repeat(t, n_out),
                "outcome": pd.Categorical.from_codes(
                    np.tile(np.arange(n_out), len(keys)), categories=list(self.outcomes)
                ),
                "probability": prob.ravel(),
                "ci_lower": lo.ravel(),
                "ci_upper": hi.ravel(),
                "at_risk": np.repeat(at_risk, n_out).astype(np.int64),
            }
        )
        return frame

    def _values_at_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, n_outcomes) probability and CI at event-table rows (-1: before the first)."""
        fit = self._fit
        aj, km = fit.aj, fit.km
        assert aj is not None  # built with one
        r = np.maximum(rows, 0)
        before = rows < 0
        k = aj.table.n_causes
        prob = np.stack([*(aj.cif_of(j)[r] for j in range(k)), km.survival[r]], axis=-1)
        aj_lo, aj_hi = aj.interval(r)
        km_lo, km_hi = km.interval(r)
        lo = np.c_[aj_lo, km_lo]
        hi = np.c_[aj_hi, km_hi]
        prob[before] = np.r_[np.zeros(k), 1.0]
        lo[before] = np.r_[np.zeros(k), 1.0]
        hi[before] = np.r_[np.zeros(k), 1.0]
        # a probability of exactly 0 has no spread (the log(-log) interval is undefined there)
        zero = prob == 0
        lo[zero] = 0.0
        hi[zero] = 0.0
        return prob, lo, hi

    def at(self, times: Any) -> pd.DataFrame:
        """Probabilities at chosen times (days).

        Returns
        -------
        DataFrame
            ``stage`` (for :func:`stage_outcomes`), ``group, t, outcome,
            probability, ci_lower, ci_upper``; at each ``(stage, group, t)``
            the probabilities add up to 1.

        Examples
        --------
        >>> import funnelstats as fs
        >>> r = fs.cycle_time(fs.load_sample())
        >>> won = r.at([30, 90])
        >>> won[won["outcome"] == "won"][["t", "probability"]].round(3)
              t  probability
        0  30.0        0.024
        3  90.0        0.185
        """
        t = _times(times, np.zeros(0))
        fit = self._fit
        tab = fit.table
        tdays = fit.time_days
        keys, rows = [], []
        for k in fit.present():
            r = tab.rows(k)
            i = np.searchsorted(tdays[r], t, side="right")
            rows.append(np.where(i > 0, r.start + i - 1, -1))
            keys.append(np.full(len(t), k))
        key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        prob, lo, hi = self._values_at_rows(row)
        n_out = len(self.outcomes)
        return pd.DataFrame(
            {
                **fit.id_columns(np.repeat(key, n_out)),
                "t": np.repeat(np.tile(t, len(keys)), n_out),
                "outcome": pd.Categorical.from_codes(
                    np.tile(np.arange(n_out), len(key)), categories=list(self.outcomes)
                ),
                "probability": prob.ravel(),
                "ci_lower": lo.ravel(),
                "ci_upper": hi.ravel(),
            }
        )

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Stacked cumulative incidence, or lines (:func:`plot_stage_outcomes`)."""
        return plot_stage_outcomes(self, ax=ax, **{**self.default_plot, **kwargs})


def _competing(
    fit_args: dict[str, Any],
    *,
    alpha: float,
    outcome_names: Sequence[str],
    open_name: str,
) -> tuple[Fit, pd.DataFrame]:
    """Fit AJ on (durations_ns, causes, keys) and build the per-outcome frame."""
    dur, causes, keys = fit_args["durations_ns"], fit_args["causes"], fit_args["keys"]
    n_keys = len(fit_args["stage_names"] or [None]) * len(fit_args["group_labels"])
    k = len(outcome_names)
    table = fit_args.get("table")
    if table is None:
        table = event_table(dur, causes, groups=keys, n_groups=n_keys, n_causes=k)
    km = kaplan_meier(table, alpha=alpha)
    aj = aalen_johansen(table, alpha=alpha)
    fit = Fit(table, km, aj, fit_args["stage_names"], fit_args["group_labels"], dur, causes, keys)
    tdays = fit.time_days
    naive = naive_medians(fit)
    counts = np.bincount(keys * (k + 1) + causes, minlength=n_keys * (k + 1)).reshape(n_keys, k + 1)
    ids, n, t_end, prob, lo, hi, med, nmed, outc = [], [], [], [], [], [], [], [], []
    present = list(fit.present())
    ends = np.array([table.rows(key).stop - 1 for key in present], dtype=np.int64)
    aj_lo, aj_hi = aj.interval(ends)
    km_lo, km_hi = km.interval(ends)
    for i, key in enumerate(present):
        r = table.rows(key)
        end = r.stop - 1
        for j in range(k):
            f = aj.cif_of(j)[r]
            final = f[-1]
            hit = np.flatnonzero(f >= final / 2 * (1 - 1e-12)) if final > 0 else []
            med.append(float(tdays[r][hit[0]]) if len(hit) else np.nan)
            prob.append(final)
            lo.append(aj_lo[i, j] if final > 0 else 0.0)
            hi.append(aj_hi[i, j] if final > 0 else 0.0)
            n.append(counts[key, j + 1])
            nmed.append(naive[key, j])
            outc.append(j)
        med.append(np.nan)
        s_end = km.survival[end]
        prob.append(s_end)
        lo.append(km_lo[i] if s_end > 0 else 0.0)
        hi.append(km_hi[i] if s_end > 0 else 0.0)
        n.append(counts[key, 0])
        nmed.append(np.nan)
        outc.append(k)
        ids.extend([key] * (k + 1))
        t_end.extend([tdays[end]] * (k + 1))
    frame = pd.DataFrame(
        {
            **fit.id_columns(np.asarray(ids, dtype=np.int64)),
            "outcome": pd.Categorical.from_codes(
                np.asarray(outc, dtype=np.int64), categories=[*outcome_names, open_name]
            ),
            "n": np.asarray(n, dtype=np.int64),
            "t": np.asarray(t_end, dtype=float),
            "probability": np.asarray(prob, dtype=float),
            "ci_lower": np.asarray(lo, dtype=float),
            "ci_upper": np.asarray(hi, dtype=float),
            "median": np.asarray(med, dtype=float),
            "naive_median": np.asarray(nmed, dtype=float),
        }
    )
    return fit, frame


_COMPETING_RETURNS = """``outcome``, ``n`` (stays or deals that ended so; for the open state:
        still open), ``t`` (days: the end of follow-up, the longest duration
        observed), ``probability`` (Aalen–Johansen cumulative incidence at
        ``t``; for the open state the Kaplan–Meier probability of still being
        open), ``ci_lower, ci_upper`` (log(-log) intervals), ``median`` (days:
        median time to the outcome among those that end with it — the first
        time its cumulative incidence reaches half of its value at ``t``),
        ``naive_median`` (median of the observed times with that outcome,
        ignoring open ones; biased short, for comparison)."""


def _doc(func: Any) -> Any:
    func.__doc__ = func.__doc__.replace("%(competing_returns)s", _COMPETING_RETURNS)
    return func


@_doc
def stage_outcomes(
    data: FunnelData,
    stage: str | Sequence[str] | None = None,
    *,
    by: str | None = None,
    alpha: float = 0.05,
    repeats: str = "all",
) -> CompetingOutcomes:
    """How stays in a stage end: advanced, lost or moved back, over time.

    Aalen–Johansen cumulative incidence of each way of leaving the stage,
    with stays still open at the export date censored. At every time the
    three incidences and the probability of still being in the stage add up
    to 1.

    Parameters
    ----------
    data : FunnelData
        Needs stage history.
    stage : str or list of str, optional
        Open stage(s); default all.
    by : str, optional
        A deal attribute to split by.
    alpha : float
        1 - confidence level.
    repeats : {"all", "first"}
        As in :func:`time_in_stage`.

    Returns
    -------
    CompetingOutcomes
        ``.frame`` columns: ``stage, group``, %(competing_returns)s
        ``.curves`` holds the curves, ``.at(times)`` reads them at chosen
        times.

    Notes
    -----
    "Advanced" is a move to a later open stage or to a won stage, "lost" a
    move to a lost stage, "moved back" a move to an earlier open stage. Exits
    of different kinds at the same instant are counted as they are (no
    random jitter as in lifelines' ``AalenJohansenFitter``), so the result is
    deterministic; with no ties it equals lifelines'.

    Examples
    --------
    >>> import funnelstats as fs
    >>> r = fs.stage_outcomes(fs.load_sample(), "Proposal")
    >>> r.frame[["outcome", "n", "probability"]].round(3)
          outcome    n  probability
    0    advanced  618        0.722
    1        lost  224        0.276
    2  moved back    0        0.000
    3    in stage   70        0.002
    """
    alpha = _check_alpha(alpha)
    sel = select_stays(data, stage, by, repeats, "stage outcomes")
    s = sel.stays
    args = {
        "durations_ns": s.duration_ns,
        "causes": s.outcome.astype(np.int64),
        "keys": sel.key,
        "stage_names": sel.stage_names,
        "group_labels": sel.group_labels,
        "table": sel.table,
    }
    fit, frame = _competing(args, alpha=alpha, outcome_names=_STAGE_OUTCOMES, open_name=_IN_STAGE)
    notes = (
        f"stays still open at the export date {data.exported_at:%Y-%m-%d} are censored",
        *_repeat_note(sel.n_repeat, repeats),
    )
    return CompetingOutcomes(
        frame=frame,
        notes=notes,
        outcomes=(*_STAGE_OUTCOMES, _IN_STAGE),
        by=by,
        alpha=alpha,
        _fit=fit,
    )


def _ns(values: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(values).asi8


@_doc
def cycle_time(
    data: FunnelData,
    *,
    start: str = "created",
    end: str = "won",
    by: str | None = None,
    alpha: float = 0.05,
) -> CompetingOutcomes:
    """Sales-cycle length: time from creation (or from reaching a stage) to won.

    Lost is a competing outcome; deals still open at the export date are
    censored there. Works on deal-level exports (``fs.read_deals``) from
    creation; from a stage it needs stage history.

    Parameters
    ----------
    data : FunnelData
    start : str
        ``"created"`` (the deal's created date), or an open stage: the clock
        starts when the deal first reached it (entered it or, having skipped
        it, a later stage or won). Deals that never reached it are left out.
    end : {"won"}
        The outcome timed.
    by : str, optional
        A deal attribute to split by.
    alpha : float
        1 - confidence level.

    Returns
    -------
    CompetingOutcomes
        ``.frame`` columns: ``group``, %(competing_returns)s
        The ``won`` row's ``median`` is the median time to win among deals
        that win. ``.at(times)`` gives the probability of having won (lost,
        still open) by day ``t``; ``.curves`` the whole curves.

    Notes
    -----
    Each deal counts by its outcome at the export date: a deal lost and
    reopened is open. The median among winners assumes the cumulative
    incidence of winning has levelled off by the end of follow-up; when many
    deals are still open late it is an estimate for the window observed.

    Examples
    --------
    >>> import funnelstats as fs
    >>> r = fs.cycle_time(fs.load_sample())
    >>> r.frame[["outcome", "n", "probability", "median", "naive_median"]].round(3)
      outcome     n  probability  median  naive_median
    0     won   522        0.207  52.169        50.381
    1    lost  2145        0.793  27.465        25.885
    2    open   333        0.001     NaN           NaN
    """
    alpha = _check_alpha(alpha)
    if end != "won":
        raise ValueError(f"end must be 'won', got {end!r}")
    deals = data.deals
    outcome = deals[C.OUTCOME].astype(str).to_numpy()
    cause = np.select([outcome == C.WON, outcome == C.LOST], [1, 2], 0).astype(np.int64)
    nat = np.iinfo(np.int64).min
    closed = _ns(deals[C.CLOSED_AT])
    end_ns = np.where(cause > 0, closed, data.exported_at.value)
    notes = [f"deals still open at the export date {data.exported_at:%Y-%m-%d} are censored"]
    if start == "created":
        t0 = _ns(deals[C.CREATED_AT])
        valid = t0 != nat
        if (~valid).any():
            notes.append(f"{int((~valid).sum()):,} deals without a created date left out")
        label = "created"
    else:
        _stays.require_history(data, "cycle time from a stage")
        p = data.pipeline
        if start not in p.stages:
            raise ValueError(f"start must be 'created' or an open stage {list(p.stages)}")
        code = p.code(start)
        a = data.arrays
        kind = a.kind[a.stage]
        reach = ((kind == 0) & (a.stage >= code)) | (kind == 1)
        idx = np.flatnonzero(reach)
        d_idx, first = np.unique(a.deal[idx], return_index=True)
        t0 = np.full(len(deals), nat, dtype=np.int64)
        t0[d_idx] = a.entered[idx[first]]
        valid = t0 != nat
        notes.append(f"{int(valid.sum()):,} of {len(deals):,} deals reached {start!r}")
        label = start
    gcode, labels = _stays.group_codes(data, by)
    idx = np.flatnonzero(valid)
    dur = np.maximum(end_ns[idx] - t0[idx], 0)
    args = {
        "durations_ns": dur,
        "causes": cause[idx],
        "keys": gcode[idx],
        "stage_names": None,
        "group_labels": labels,
    }
    fit, frame = _competing(args, alpha=alpha, outcome_names=(C.WON, C.LOST), open_name=C.OPEN)
    notes.append(f"clock starts at {label!r}; each deal counts by its outcome at the export date")
    return CompetingOutcomes(
        frame=frame,
        notes=tuple(notes),
        outcomes=(C.WON, C.LOST, C.OPEN),
        by=by,
        alpha=alpha,
        time_label="days since created" if start == "created" else f"days since reaching {start}",
        default_plot={"stacked": False, "outcomes": (C.WON,)},
        _fit=fit,
    )


# ---------------------------------------------------------------------------- Cox model


@dataclass(frozen=True, repr=False, kw_only=True)
class StageHazards(Result):
    """Cox model of the hazard of advancing from a stage; see :func:`stage_hazards`.

    Attributes
    ----------
    frame : DataFrame
        Hazard ratios, one row per model term (columns in :func:`stage_hazards`).
    ph_test : DataFrame
        Proportional-hazards check per term: ``term, statistic, p_value,
        violated``.
    model : lifelines.CoxPHFitter
        The fitted model.
    design : DataFrame
        The data the model was fitted on (``duration`` days, ``advanced``, terms).
    stage : str
    n_stays, n_events : int
    concordance : float
    """

    ph_test: pd.DataFrame
    model: Any = field(repr=False, compare=False)
    design: pd.DataFrame = field(repr=False, compare=False)
    stage: str = ""
    n_stays: int = 0
    n_events: int = 0
    concordance: float = float("nan")
    title: ClassVar[str] = "Hazard of advancing (Cox, cause-specific)"

    def summary(self) -> str:
        text = super().summary()
        with pd.option_context("display.float_format", "{:,.4g}".format):
            ph = self.ph_test.to_string(index=False)
        return (
            f"{text}\nstays: {self.n_stays:,}, advanced: {self.n_events:,}, "
            f"concordance: {self.concordance:.3f}\n"
            f"Proportional-hazards check (Schoenfeld residuals vs rank of time):\n{ph}"
        )

    def _repr_html_(self) -> str:
        ph = self.ph_test.to_html(index=False, float_format="{:,.4g}".format, border=0)
        return super()._repr_html_() + f"<p>Proportional-hazards check</p>{ph}"

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Forest plot of the hazard ratios (:func:`plot_hazard_ratios`)."""
        return plot_hazard_ratios(self, ax=ax, **kwargs)


_MAX_LEVELS = 50


def _design(
    data: FunnelData,
    sel_deal: np.ndarray,
    amount: np.ndarray,
    covariates: Sequence[str],
    reference: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], list[tuple[str, str, str | None, str | None]], np.ndarray, list]:
    """Model columns, term descriptions (term, covariate, level, reference), rows usable."""
    cols: dict[str, np.ndarray] = {}
    terms: list[tuple[str, str, str | None, str | None]] = []
    ok = np.ones(len(sel_deal), dtype=bool)
    notes: list[str] = []
    for cov in covariates:
        if cov == C.AMOUNT:
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.log2(amount)
            bad = ~np.isfinite(x)
            if bad.any():
                notes.append(f"{int(bad.sum()):,} stays without a positive amount left out")
            ok &= ~bad
            cols["log2_amount"] = np.where(bad, 0.0, x)
            terms.append(("log2_amount", C.AMOUNT, None, None))
            continue
        if cov not in data.deals.columns or cov in (C.DEAL_ID,):
            raise FunnelDataError(
                f"no deal attribute {cov!r} to use as a covariate; attributes: "
                f"{list(data.attributes)} (or 'amount')",
                column=cov,
            )
        values = data.deals[cov].iloc[sel_deal].reset_index(drop=True)
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if numeric and not isinstance(values.dtype, pd.CategoricalDtype):
            x = values.to_numpy(dtype=float)
            bad = ~np.isfinite(x)
            if bad.any():
                notes.append(f"{int(bad.sum()):,} stays without a value of {cov!r} left out")
            ok &= ~bad
            cols[cov] = np.where(bad, 0.0, x)
            terms.append((cov, cov, None, None))
            continue
        labels = values.astype(object).where(values.notna(), "(missing)").astype(str)
        counts = labels.value_counts(sort=False).sort_index()
        if len(counts) > _MAX_LEVELS:
            raise FunnelDataError(
                f"covariate {cov!r} has {len(counts)} levels; at most {_MAX_LEVELS} can be "
                "dummy-coded (group the rare ones first)",
                column=cov,
            )
        if cov in reference:
            ref = str(reference[cov])
            if ref not in counts.index:
                raise ValueError(
                    f"reference level {ref!r} of {cov!r} not found; levels: {list(counts.index)}"
                )
        else:
            ref = str(counts.idxmax())  # the most common level (first in sort order on ties)
        lab = labels.to_numpy()
        for level in counts.index:
            if level == ref:
                continue
            name = f"{cov}[{level}]"
            cols[name] = (lab == level).astype(float)
            terms.append((name, cov, str(level), ref))
    return cols, terms, ok, notes


def stage_hazards(
    data: FunnelData,
    stage: str,
    *,
    covariates: Sequence[str],
    reference: Mapping[str, Any] | None = None,
    alpha: float = 0.05,
    penalizer: float = 0.0,
    repeats: str = "all",
) -> StageHazards:
    """Which deals advance from a stage faster: a Cox model with deal attributes.

    The cause-specific hazard of leaving ``stage`` by advancing: stays that
    end lost or moved back, and stays still open, are censored at their end.
    Fitted with lifelines' ``CoxPHFitter`` (Efron ties); the
    proportional-hazards assumption is checked for every term with lifelines'
    ``proportional_hazard_test`` (rank of time) and reported in
    ``.ph_test`` and the notes.

    Parameters
    ----------
    data : FunnelData
        Needs stage history.
    stage : str
        An open stage.
    covariates : list of str
        Deal attributes (``data.attributes``) and/or ``"amount"``. Text and
        categorical attributes are dummy-coded against a reference level;
        numeric ones enter as they are; ``"amount"`` is the amount at entry
        into the stage, as ``log2`` (hazard ratio per doubling).
    reference : dict, optional
        Reference level per categorical covariate; default the most common.
    alpha : float
        1 - confidence level of the hazard-ratio intervals; also the level of
        the proportional-hazards check.
    penalizer : float
        Passed to ``CoxPHFitter`` (ridge penalty; 0 = plain partial likelihood).
    repeats : {"all", "first"}
        As in :func:`time_in_stage`.

    Returns
    -------
    StageHazards
        ``.frame`` columns: ``term, covariate, level, reference``,
        ``hazard_ratio, ci_lower, ci_upper``, ``coef, se, z, p_value``.
        ``.ph_test``: ``term, statistic, p_value, violated``. A term with no finite
        estimate (it separates the stays) is NaN, and the notes say so.

    Raises
    ------
    InsufficientHistoryError
        No stay in ``stage`` has ended by advancing (nothing to estimate), or the data is
        a deal-level export.
    FunnelDataError
        A covariate takes a single value among the stays (``.column`` names it), has too
        many levels, or the model cannot be estimated (separation, collinearity: fewer
        covariates or ``penalizer > 0`` help).

    Examples
    --------
    >>> import funnelstats as fs
    >>> r = fs.stage_hazards(fs.load_sample(), "Proposal", covariates=["Segment", "amount"])
    >>> r.frame[["term", "reference", "hazard_ratio"]].round(2)
                      term reference  hazard_ratio
    0  Segment[Enterprise]       SMB          0.23
    1  Segment[Mid-Market]       SMB          0.71
    2          log2_amount      None          1.01
    >>> r.ph_test["violated"].tolist()
    [False, True, False]
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError
    from lifelines.statistics import proportional_hazard_test

    alpha = _check_alpha(alpha)
    if isinstance(stage, str) is False:
        raise ValueError("stage_hazards takes one stage")
    if isinstance(covariates, str):
        covariates = [covariates]
    if not covariates:
        raise ValueError("covariates: give at least one deal attribute (or 'amount')")
    sel = select_stays(data, stage, None, repeats, "stage hazards")
    s = sel.stays
    if not (s.outcome == ADVANCE).any():
        raise InsufficientHistoryError(
            f"no stay in stage {stage!r} has ended by advancing yet ({len(s.deal):,} stays), so "
            "the hazard of advancing cannot be estimated"
        )
    cols, terms, ok, notes = _design(data, s.deal, s.amount, covariates, dict(reference or {}))
    design = (
        pd.DataFrame(
            {"duration": s.duration_ns / NS_PER_DAY, "advanced": (s.outcome == ADVANCE), **cols}
        )
        .loc[ok]
        .reset_index(drop=True)
    )
    design["advanced"] = design["advanced"].astype(int)
    names = [t[0] for t in terms]
    const = [n for n in names if design[n].nunique() < 2]
    const += [c for c in covariates if c != "amount" and not any(t[1] == c for t in terms)]
    if const:
        raise FunnelDataError(
            f"covariate term(s) {const} take a single value in stage {stage!r}", column=const[0]
        )
    cph = CoxPHFitter(alpha=alpha, penalizer=penalizer)
    try:
        cph.fit(design, duration_col="duration", event_col="advanced")
    except ConvergenceError as exc:
        raise FunnelDataError(
            f"the Cox model of stage {stage!r} cannot be estimated on these stays "
            f"({len(design):,} stays, {int(design['advanced'].sum()):,} advanced): the "
            "covariates separate the stays or repeat each other; try fewer covariates or "
            f"penalizer > 0 (lifelines: {str(exc).split('. ')[0]})"
        ) from None
    sm = cph.summary
    ci = cph.confidence_intervals_
    with np.errstate(over="ignore"):  # a separated term: exp(inf), made NaN below
        frame = pd.DataFrame(
            {
                "term": names,
                "covariate": [t[1] for t in terms],
                "level": [t[2] for t in terms],
                "reference": [t[3] for t in terms],
                "hazard_ratio": np.exp(sm.loc[names, "coef"].to_numpy()),
                "ci_lower": np.exp(ci.loc[names].iloc[:, 0].to_numpy()),
                "ci_upper": np.exp(ci.loc[names].iloc[:, 1].to_numpy()),
                "coef": sm.loc[names, "coef"].to_numpy(),
                "se": sm.loc[names, "se(coef)"].to_numpy(),
                "z": sm.loc[names, "z"].to_numpy(),
                "p_value": sm.loc[names, "p"].to_numpy(),
            }
        )
    est = ["hazard_ratio", "ci_lower", "ci_upper", "coef", "se", "z"]
    unbounded = frame.loc[~np.isfinite(frame[est].to_numpy(dtype=float)).all(axis=1), "term"]
    if len(unbounded):
        frame[est] = frame[est].where(np.isfinite(frame[est].to_numpy(dtype=float)))
        notes.append(
            f"no finite estimate or interval for {unbounded.tolist()} (too few advances, or the "
            "term separates the stays): shown as NaN"
        )
    try:
        ph = proportional_hazard_test(cph, design, time_transform="rank").summary
        ph_stat = ph.loc[names, "test_statistic"].to_numpy(dtype=float)
        ph_p = ph.loc[names, "p"].to_numpy(dtype=float)
    except ValueError:  # lifelines on degenerate residuals (very few advances)
        ph_stat = ph_p = np.full(len(names), np.nan)
        notes.append("the proportional-hazards check cannot be computed on these few stays")
    ph_test = pd.DataFrame({"term": names, "statistic": ph_stat, "p_value": ph_p})
    ph_test["violated"] = ph_test["p_value"] < alpha
    refs = {t[1]: t[3] for t in terms if t[3] is not None}
    notes = [
        f"stage {stage!r}: hazard of advancing; lost, moved back and open stays censored",
        *(f"reference level of {c!r}: {r!r}" for c, r in refs.items()),
        *notes,
        *_repeat_note(sel.n_repeat, repeats),
    ]
    bad = ph_test.loc[ph_test["violated"], "term"].tolist()
    if bad:
        notes.append(
            f"proportional hazards doubtful (p < {alpha:g}) for {bad}: the hazard ratio is an "
            "average over time; consider stratifying or splitting the time axis"
        )
    else:
        notes.append(f"proportional-hazards check: no term rejected at {alpha:g}")
    return StageHazards(
        frame=frame,
        notes=tuple(notes),
        ph_test=ph_test,
        model=cph,
        design=design,
        stage=stage,
        n_stays=len(design),
        n_events=int(design["advanced"].sum()),
        concordance=_concordance(cph),
    )


def _concordance(cph: Any) -> float:
    """Harrell's C of the fitted model; NaN when no pair of stays can be compared."""
    try:
        return float(cph.concordance_index_)
    except ZeroDivisionError:
        return float("nan")
