"""Stage-to-stage conversion and win rates that stay right while deals are still open.

:func:`conversion` estimates, for every open stage, the probability that a deal
that reached the stage gets past it; :func:`win_rate` the probability that a
deal that reached a stage is won. Both treat deals that are still open as
undecided (right-censored at the export date), not as losses and not as
missing, and both offer the naive CRM formulas under their own names so the
difference can be seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from . import _columns as C
from ._conversion_records import (
    ADVANCED,
    CENSORED,
    LOST,
    SKIPPED_OUT,
    StageRecords,
    stage_records,
    win_records,
)
from ._conversion_stats import (
    AJAt,
    aj_fit,
    bootstrap_cif,
    bootstrap_weights,
    loglog_interval,
    proportion_interval,
    shrink_beta_binomial,
    wald_homogeneity,
)
from ._result import Result
from ._stays import NS_PER_DAY, group_codes
from .data import FunnelData
from .errors import InsufficientHistoryError
from .pipeline import suggest_stage

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "ConversionResult",
    "GroupComparison",
    "WinRateResult",
    "conversion",
    "win_rate",
]

METHODS: tuple[str, ...] = ("aalen-johansen", "resolved", "entered")
SKIP_RULES: tuple[str, ...] = ("reached", "strict")
#: A censoring-aware estimate counts as mature when at most this share is still undecided.
MATURE_UNDECIDED = 0.05
_BOOT_CELLS = 4_000_000  # records x replicates handled per bootstrap chunk


# ---------------------------------------------------------------------------
# results


@dataclass(frozen=True, repr=False, kw_only=True)
class _RateResult(Result):
    """Shared behaviour of conversion and win-rate results."""

    method: str
    skips: str
    alpha: float
    ci_method: str
    horizon: float | None
    by: str | None
    cohort: str | None

    value_column: ClassVar[str] = "estimate"
    success_column: ClassVar[str] = "advanced"
    failure_columns: ClassVar[tuple[str, ...]] = ("lost",)

    @property
    def group_columns(self) -> list[str]:
        """The columns that identify a group (``by`` and/or ``cohort``)."""
        return [c for c in (self.by, "cohort" if self.cohort else None) if c]

    def compare(
        self, *, p_adjust: str = "holm", pairwise: bool = False, alpha: float | None = None
    ) -> GroupComparison:
        """Test, stage by stage, whether the groups differ.

        Parameters
        ----------
        p_adjust : str, default "holm"
            Multiple-comparison correction over every test in the table (any
            ``method`` of statsmodels ``multipletests``: "holm", "bonferroni",
            "fdr_bh", ...).
        pairwise : bool, default False
            Test every pair of groups instead of all groups at once.
        alpha : float, optional
            Family-wise level for ``reject`` (default: the result's ``alpha``).

        Returns
        -------
        GroupComparison
            ``.frame`` columns: ``stage``, ``cohort`` (when groups are compared
            within cohorts), ``comparison`` ("all groups" or "a vs b"), ``test``,
            ``statistic`` (chi-square), ``df``, ``difference`` (largest minus
            smallest estimate, or a minus b), ``p_val``, ``p_adj``, ``reject``.

        Notes
        -----
        Censoring-aware estimates (Aalen–Johansen, with delta-method or
        bootstrap variances) are compared with a Wald chi-square,
        ``sum_g (theta_g - theta_w)^2 / var_g`` with ``theta_w`` the
        inverse-variance weighted mean, on ``G - 1`` degrees of freedom (for two
        groups, the unpooled two-sample z test squared). Simple proportions
        (``method="resolved"`` or ``"entered"``) are compared with Pearson's
        chi-square test of the 2 x G table (no continuity correction; for two
        groups, the pooled two-proportion z test squared). Groups with no
        information (no deals, or an estimate without a variance) are left out
        of a test and named in the notes.

        Examples
        --------
        >>> import funnelstats as fs
        >>> cmp = fs.conversion(fs.load_sample(), by="Segment").compare()
        >>> cmp.frame[["stage", "statistic", "df", "p_adj", "reject"]].round(4)
                   stage  statistic  df   p_adj  reject
        0    Prospecting    48.9207   2  0.0000    True
        1  Qualification     5.5552   2  0.0622   False
        2       Proposal    17.1549   2  0.0006    True
        3    Negotiation    11.8535   2  0.0053    True
        """
        from scipy import stats
        from statsmodels.stats.multitest import multipletests

        factor = self.by or ("cohort" if self.cohort else None)
        if factor is None:
            raise ValueError("compare() needs a result computed with by= or cohort=")
        level = self.alpha if alpha is None else float(alpha)
        strata = ["stage"] + (["cohort"] if (self.by and self.cohort) else [])
        f = self.frame
        rows: list[dict[str, Any]] = []
        notes: list[str] = []
        proportion = self.method in ("resolved", "entered")
        for key, part in f.groupby(strata, observed=True, sort=True):
            key_t = key if isinstance(key, tuple) else (key,)
            label = dict(zip(strata, key_t))
            est = part[self.value_column].to_numpy(dtype=float)
            names = part[factor].astype(str).to_numpy()
            if proportion:
                k = part[self.success_column].to_numpy(dtype=float)
                n = self._nobs(part)
                use = n > 0
            else:
                var = part["std_error"].to_numpy(dtype=float) ** 2
                use = np.isfinite(est) & np.isfinite(var) & (var > 0)
            if (~use).any():
                notes.append(
                    f"{', '.join(f'{v}' for v in key_t)}: left out {list(names[~use])} "
                    "(no information)"
                )
            idx = np.flatnonzero(use)
            pairs = list(combinations(idx, 2)) if pairwise else ([tuple(idx)] if len(idx) else [])
            for sel in pairs:
                sel = np.asarray(sel)
                if len(sel) < 2:
                    continue
                if proportion:
                    stat, df = _pearson_chi2(k[sel], n[sel])
                    test = "pearson chi-square" if len(sel) > 2 else "two-proportion z (pooled)"
                else:
                    stat, df = wald_homogeneity(est[sel], var[sel])
                    test = "wald chi-square"
                p = float(stats.chi2.sf(stat, df)) if np.isfinite(stat) else float("nan")
                comp = f"{names[sel[0]]} vs {names[sel[1]]}" if pairwise else "all groups"
                diff = (
                    float(est[sel[0]] - est[sel[1]])
                    if pairwise
                    else float(np.nanmax(est[sel]) - np.nanmin(est[sel]))
                )
                rows.append(
                    {
                        **label,
                        "comparison": comp,
                        "test": test,
                        "statistic": stat,
                        "df": df,
                        "difference": diff,
                        "p_val": p,
                    }
                )
        out = pd.DataFrame(
            rows,
            columns=[
                *strata,
                "comparison",
                "test",
                "statistic",
                "df",
                "difference",
                "p_val",
            ],
        )
        out["p_adj"] = np.nan
        out["reject"] = False
        ok = out["p_val"].notna().to_numpy()
        if ok.any():
            rej, p_adj, _, _ = multipletests(
                out.loc[ok, "p_val"].to_numpy(), alpha=level, method=p_adjust
            )
            out.loc[ok, "p_adj"] = p_adj
            out.loc[ok, "reject"] = rej
        if "stage" in out.columns and len(out):
            out["stage"] = pd.Categorical(out["stage"], dtype=f["stage"].dtype)
        notes.insert(
            0,
            f"{'pairwise' if pairwise else 'omnibus'} tests of {self.value_column} between "
            f"{factor} groups, p-values adjusted over all {int(ok.sum())} tests ({p_adjust})",
        )
        return GroupComparison(
            frame=out.reset_index(drop=True), notes=tuple(notes), alpha=level, p_adjust=p_adjust
        )

    def _nobs(self, part: pd.DataFrame) -> np.ndarray:
        if self.method == "entered":
            return part["entered"].to_numpy(dtype=float)
        cols = [self.success_column, *self.failure_columns]
        return part[cols].to_numpy(dtype=float).sum(axis=1)


@dataclass(frozen=True, repr=False, kw_only=True)
class ConversionResult(_RateResult):
    """What :func:`conversion` returns.

    Attributes
    ----------
    frame : DataFrame
        One row per stage (and group); columns in :func:`conversion`.
    notes : tuple of str
        How the figures were made and what to watch for.
    method, skips, ci_method : str
    alpha : float
    horizon : float or None
        Days, or None for the plateau.
    by, cohort : str or None
    """

    title: ClassVar[str] = "Stage conversion"
    value_column: ClassVar[str] = "conversion"
    success_column: ClassVar[str] = "advanced"
    failure_columns: ClassVar[tuple[str, ...]] = ("lost", "skipped_out")

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Funnel chart (:func:`~funnelstats.plotting_conversion.plot_funnel`), or the
        cohort x stage heat map for a ``cohort=`` result without ``by``."""
        from .plotting_conversion import plot_cohort_heatmap, plot_funnel

        if self.cohort and not self.by:
            return plot_cohort_heatmap(self, ax=ax, **kwargs)
        return plot_funnel(self, ax=ax, **kwargs)


@dataclass(frozen=True, repr=False, kw_only=True)
class WinRateResult(_RateResult):
    """What :func:`win_rate` returns.

    Attributes
    ----------
    frame : DataFrame
        One row per stage (and group); columns in :func:`win_rate`.
    curves : DataFrame or None
        For direct estimates (``horizon=`` or ``cohort=``, or deal-level data):
        each group's win rate by days since it reached the stage:
        group columns, ``stage``, ``age_days``, ``win_rate``, ``ci_lower``,
        ``ci_upper``, ``at_risk``.
    estimator : str
        ``"product"`` (product of stage conversions), ``"direct"`` (Aalen–Johansen
        of time to won vs lost) or ``"proportion"`` (naive methods).
    """

    curves: pd.DataFrame | None = None
    estimator: str = "product"

    title: ClassVar[str] = "Win rate"
    value_column: ClassVar[str] = "win_rate"
    success_column: ClassVar[str] = "won"
    failure_columns: ClassVar[tuple[str, ...]] = ("lost", "skipped_out")

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Win rate by age per cohort (:func:`~funnelstats.plotting_conversion.plot_cohort_curves`)
        for a ``cohort=`` result, else bars per stage
        (:func:`~funnelstats.plotting_conversion.plot_rates`)."""
        from .plotting_conversion import plot_cohort_curves, plot_rates

        if self.cohort and self.curves is not None:
            return plot_cohort_curves(self, ax=ax, **kwargs)
        return plot_rates(self, ax=ax, **kwargs)


@dataclass(frozen=True, repr=False, kw_only=True)
class GroupComparison(Result):
    """Tests of difference between groups, per stage (see :meth:`ConversionResult.compare`)."""

    alpha: float = 0.05
    p_adjust: str = "holm"
    title: ClassVar[str] = "Group comparison"

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Adjusted p-values per test on a -log10 scale, with the ``alpha`` line."""
        from .plotting_conversion import plot_comparison

        return plot_comparison(self, ax=ax, **kwargs)


# ---------------------------------------------------------------------------
# public functions

_SHARED_PARAMS = """by : str, optional
        A deal attribute (a column of ``data.deals``, e.g. ``"Segment"``); one
        set of rows per value (missing values form the group ``"(missing)"``).
    cohort : str, optional
        A pandas period frequency (``"M"``, ``"Q"``, ``"W"``): group deals by the
        period they were created in (column ``cohort``, pandas Periods).
    method : {"aalen-johansen", "resolved", "entered"}
        ``"aalen-johansen"`` (default) is censoring-aware. ``"resolved"`` is the
        CRM formula (decided deals only: open deals dropped) and
        ``"entered"`` divides by every deal that reached the stage (open deals
        counted as failures); both are biased while deals are open and are
        offered to show that.
    horizon : float, optional
        Days since reaching the stage. None (default): the plateau, i.e. the
        value at the end of follow-up (see Notes).
    alpha : float, default 0.05
        1 - confidence level of the intervals.
    skips : {"reached", "strict"}
        How deals that skip stages count (see Notes).
    ci_method : str, optional
        ``"delta"`` (default for aalen-johansen: its delta-method variance,
        log(-log) interval) or ``"bootstrap"`` (percentile interval over
        ``n_boot`` deal resamples, stratified by group); ``"wilson"`` (default
        for the simple proportions) or ``"jeffreys"`` (statsmodels
        ``proportion_confint``).
    n_boot : int, default 1000
        Bootstrap replicates (``ci_method="bootstrap"`` only).
    seed : int, optional
        Seed of the bootstrap.
    shrink : bool, default False
        Add empirical-Bayes (beta-binomial) estimates that pull small groups
        toward the overall rate of their stage: columns ``shrunk``,
        ``shrunk_ci_lower``, ``shrunk_ci_upper``."""


def conversion(
    data: FunnelData,
    *,
    by: str | None = None,
    cohort: str | None = None,
    method: str = "aalen-johansen",
    horizon: float | None = None,
    alpha: float = 0.05,
    skips: str = "reached",
    ci_method: str | None = None,
    n_boot: int = 1000,
    seed: int | None = None,
    shrink: bool = False,
) -> ConversionResult:
    """Per-stage conversion: P(a deal gets past the stage | it reached the stage).

    Parameters
    ----------
    data : FunnelData
        Must have stage history (raises
        :class:`~funnelstats.InsufficientHistoryError` for deal-level exports;
        :func:`win_rate` works on those).
    {shared}

    Returns
    -------
    ConversionResult
        ``.frame`` has one row per open stage (per group), in funnel order:

        - ``by`` column and/or ``cohort`` (when asked), ``stage`` (ordered categorical);
        - ``entered``: deals that reached the stage; ``advanced``, ``lost``,
          ``skipped_out`` (``skips="strict"`` only) and ``open`` (undecided at the
          export) split them: ``entered = advanced + lost + skipped_out + open``;
        - ``skipped_through``: of ``entered``, deals that reached the stage by
          jumping over it (``skips="reached"``; counted as advanced in no time);
          ``moved_back``: deals that moved back from the stage to an earlier one;
          ``reopened``: deals lost and reopened while in the stage's episode;
        - ``conversion``, ``std_error``, ``ci_lower``, ``ci_upper``;
        - ``undecided``: estimated share still in the stage where the estimate
          holds (aalen-johansen; an upper bound on what the estimate can still
          rise by); ``horizon_days``: days since reaching the stage at which it
          holds; ``horizon_rule``: ``"plateau"``, ``"fixed"`` or ``"none"`` (simple
          proportions); ``mature``: the figure is final (horizon reached by
          follow-up, or at most 5% undecided at the plateau);
        - ``method``; with ``shrink=True``: ``shrunk``, ``shrunk_ci_lower``,
          ``shrunk_ci_upper``.

        The counts are what happened by the export date, whatever the horizon.

    Raises
    ------
    InsufficientHistoryError
        For data without stage history.

    Notes
    -----
    **Estimand.** For each open stage ``s``: the probability that a deal that
    reached ``s`` gets past it (enters a later open stage or is won) rather
    than being lost. Each deal has one *episode* per stage it reached, from
    its first arrival to the first time it got past the stage, or its loss,
    or the export date (censored) while undecided.

    **Aalen–Johansen** (default). Getting past and being lost (and, with
    ``skips="strict"``, skipping out) are competing outcomes of an episode;
    undecided episodes are right-censored at ``data.exported_at``. The
    conversion is the cumulative incidence of getting past,
    ``F(t) = sum_{t_i <= t} S(t_{i-1}) d_i / n_i`` with ``S`` the Kaplan–Meier
    of leaving by any outcome, at ``t = horizon`` days since reaching the stage,
    or, with ``horizon=None``, at the plateau: the end of follow-up in that
    stage (its longest observed episode), the estimate of the eventual
    conversion. ``horizon_days`` says where each value holds and ``undecided``
    how much probability is still undecided there: the eventual conversion lies
    between ``conversion`` and ``conversion + undecided``. Durations are exact
    (integer nanoseconds): tied times, as with daily timestamps, are handled by
    the estimator's definition (all exits at a time count against the same
    risk set, censorings after exits), so results are deterministic; there is
    no random jitter as in lifelines. On tie-free data the values, variances
    and intervals equal lifelines' ``AalenJohansenFitter``. The variance is
    Collett's delta-method formula (as in lifelines), with the interval on the
    log(-log) scale; where the last deals at risk all leave at once, lifelines'
    variance is NaN and here the undefined ``0 * inf`` term is its limit 0.
    Where the estimate is 0 or 1 the log(-log) interval is undefined (and a
    bootstrap only resamples the same value) and the Wilson interval of the
    episodes decided by the horizon is used.

    **Skipped stages.** ``skips="reached"`` (default; a funnel "with
    conversions" that counts every intermediate stage as passed): a deal that
    jumps from an earlier open stage over ``s`` to a later open stage or to
    won reached ``s`` and got past it at once (a zero-length episode that
    advanced). ``skips="strict"`` (HubSpot's funnel of deals "that have gone
    through all stages", in order): a deal counts only if it entered the first
    stage first and then every stage in order; at the stage where it jumps past
    the next one its episode ends as ``skipped_out`` (a competing outcome, not
    a conversion: HubSpot counts the deal in that stage but not in the next)
    and it is not counted in any later stage. Deals created past the first
    stage count, with ``"reached"``, from the stage they were created in (they
    did not reach the earlier ones); with ``"strict"`` they do not count.

    **Backward moves, repeated entries, reopened deals.** The first arrival in
    a stage starts the episode and later re-entries belong to it. A move back
    to an earlier stage ends nothing: the episode runs on until the deal gets
    past the stage (counted as advanced then, with the whole time since its
    first arrival) or is lost. A loss that was later reopened is not a loss:
    the episode runs on through the lost period; it ends lost only if the
    deal's current state is lost, at that final loss. A deal reopened into a
    later stage got past the stage at the reopening.

    **Young exports.** The estimate describes the deals that reached the
    stage by the export. Where follow-up in a stage is shorter than its
    longest stays, ``undecided`` stays large and ``mature`` False: the value is
    a lower bound. Where segments move at different speeds and convert at
    different rates, the deals that have had time to reach a late stage of a
    young export lean towards the fast segments, and a pooled estimate leans
    with them; estimate ``by=`` the segment where that matters
    (``benchmarks/conversion_coverage.py`` shows both effects on simulated
    three-month exports).

    **Naive methods.** ``"resolved"`` = advanced / (advanced + lost +
    skipped_out): drops undecided deals, and since lost deals tend to linger
    longer than advancing ones, it overstates conversion in a young export.
    ``"entered"`` = advanced / entered: counts undecided deals as failures and
    understates it. Intervals: Wilson or Jeffreys.

    **Shrinkage** (``shrink=True``): per stage, a beta prior is fitted to the
    groups by marginal maximum likelihood of the beta-binomial (counts of the
    simple proportions; for aalen-johansen, each group's effective counts
    ``n = p (1 - p) / se^2``, ``k = p n``), and each group's posterior mean and
    equal-tailed interval are reported, so a group with a handful of deals
    cannot top the table on luck.

    Examples
    --------
    >>> import funnelstats as fs
    >>> data = fs.load_sample()
    >>> res = fs.conversion(data)
    >>> res.frame[["stage", "entered", "advanced", "lost", "open", "conversion"]].round(3)
               stage  entered  advanced  lost  open  conversion
    0    Prospecting     3000      1590  1286   124       0.544
    1  Qualification     1590       963   527   100       0.632
    2       Proposal      963       669   224    70       0.736
    3    Negotiation      669       522   108    39       0.820

    The naive formulas on the same data:

    >>> fs.conversion(data, method="resolved").frame["conversion"].round(3).tolist()
    [0.553, 0.646, 0.749, 0.829]
    >>> fs.conversion(data, method="entered").frame["conversion"].round(3).tolist()
    [0.53, 0.606, 0.695, 0.78]
    """
    _check_history(data, "conversion per stage")
    opts = _Options.make(method, skips, alpha, horizon, ci_method, n_boot)
    groups, labels = _deal_groups(data, by, cohort)
    records = stage_records(data, skips=skips)
    n_stages = data.pipeline.n_open
    n_cells = len(labels) * n_stages
    cell = groups[records.deal] * n_stages + records.stage
    counts = _counts(records, cell, n_cells)

    if opts.method == "aalen-johansen":
        n_causes = 3 if skips == "strict" else 2
        est = _aj_cells(
            records.duration_ns,
            records.cause,
            cell,
            n_cells,
            n_causes,
            opts,
            deal=records.deal,
            strata=groups,
            seed=seed,
        )
    else:
        k = counts["advanced"]
        nobs = (
            counts["entered"]
            if opts.method == "entered"
            else (counts["advanced"] + counts["lost"] + counts["skipped_out"])
        )
        est = _proportion_cells(k, nobs, opts)

    frame = _assemble(labels, data.pipeline.stages, counts, est, opts, "conversion")
    if shrink:
        frame = _add_shrinkage(
            frame, opts, "conversion", ("advanced", "lost", "skipped_out"), by=by, cohort=cohort
        )
    notes = _notes(data, records, opts, frame, "conversion", by=by, cohort=cohort)
    return ConversionResult(
        frame=frame,
        notes=tuple(notes),
        method=opts.method,
        skips=skips,
        alpha=opts.alpha,
        ci_method=opts.ci_method,
        horizon=opts.horizon,
        by=by,
        cohort=cohort,
    )


conversion.__doc__ = (conversion.__doc__ or "").replace("{shared}", _SHARED_PARAMS)


def win_rate(
    data: FunnelData,
    *,
    by: str | None = None,
    from_stage: str | None = None,
    cohort: str | None = None,
    method: str = "aalen-johansen",
    horizon: float | None = None,
    alpha: float = 0.05,
    skips: str = "reached",
    ci_method: str | None = None,
    n_boot: int = 1000,
    seed: int | None = None,
    shrink: bool = False,
) -> WinRateResult:
    """Win rate: P(a deal is won | it reached the stage), for every open stage.

    Parameters
    ----------
    data : FunnelData
        With stage history, one row per open stage. Deal-level data (no stage
        history) gives one row, the win rate from the stage deals are created
        in.
    from_stage : str, optional
        Only this stage's row.
    {shared}

    Returns
    -------
    WinRateResult
        ``.frame`` has one row per stage (per group): group columns, ``stage``,
        ``entered`` (deals that reached the stage), ``won``, ``lost``,
        ``skipped_out`` (``skips="strict"``: left the stage order) and ``open``
        (their state at the export: ``entered = won + lost + skipped_out + open``),
        ``win_rate``, ``std_error``, ``ci_lower``, ``ci_upper``, ``undecided``,
        ``horizon_days``, ``horizon_rule``, ``mature``, ``method``, and with
        ``shrink=True`` ``shrunk``, ``shrunk_ci_lower``, ``shrunk_ci_upper``.
        ``.curves`` holds each group's win rate by days since reaching the
        stage for direct estimates.

    Notes
    -----
    Two censoring-aware estimators, both built on the episodes of
    :func:`conversion` (same rules for skips, backward moves and reopened
    deals):

    - **product** (``horizon=None`` and no ``cohort``, with stage history):
      the eventual win rate from stage ``s`` is the product of the eventual
      conversions of ``s`` and every later open stage. Each stage uses its own
      follow-up, so a young export, where few deals have had time to go all
      the way, still gives an eventual figure. ``undecided`` is
      ``prod (c_j + u_j) - prod c_j`` with ``u_j`` the stages' undecided shares
      (the eventual figure lies between ``win_rate`` and ``win_rate +
      undecided``); ``mature`` holds when every stage from ``s`` on is mature;
      ``horizon_days`` is empty (each stage holds at its own plateau). It
      assumes that where a deal goes from a stage does not depend on how it
      got there (a Markov funnel).
      Variance by the delta method on the log scale,
      ``var(W) = W^2 sum_j var(c_j) / c_j^2`` (episodes in different stages
      treated as independent; the bootstrap resamples whole deals and does not
      need that), interval on the log(-log) scale.
    - **direct** (``horizon=`` or ``cohort=``, or deal-level data): the
      Aalen–Johansen cumulative incidence of winning, with losing as the
      competing outcome, by days since the deal reached the stage (since it
      was created, for deal-level data), at ``horizon`` or at the end of
      follow-up. No Markov assumption, but it needs follow-up as long as the
      whole remaining sales cycle. With ``cohort="M"`` each creation month
      gets its own curve (``.curves``): a recent cohort's win rate is a curve
      still rising; ``horizon_days`` is the age its value holds at and
      ``mature`` says whether it is final.

    A deal is won when its current state is won, lost when it is lost (a
    reopened loss is not a loss), undecided while open. With
    ``skips="strict"`` a deal is won only if it went on to win in stage
    order; skipping out counts as not won.

    Examples
    --------
    >>> import funnelstats as fs
    >>> wr = fs.win_rate(fs.load_sample())
    >>> wr.frame[["stage", "entered", "won", "win_rate"]].round(3)
               stage  entered  won  win_rate
    0    Prospecting     3000  522     0.208
    1  Qualification     1590  522     0.381
    2       Proposal      963  522     0.604
    3    Negotiation      669  522     0.820

    By creation quarter, the last quarter's figure is not final yet:

    >>> by_q = fs.win_rate(fs.load_sample(), cohort="Q", from_stage="Prospecting")
    >>> by_q.frame[["cohort", "entered", "win_rate", "horizon_days", "mature"]].round(3)
       cohort  entered  win_rate  horizon_days  mature
    0  2024Q1      759     0.209       191.849    True
    1  2024Q2      693     0.225       198.518    True
    2  2024Q3      768     0.204       167.530    True
    3  2024Q4      780     0.149        90.512   False
    """
    opts = _Options.make(method, skips, alpha, horizon, ci_method, n_boot)
    groups, labels = _deal_groups(data, by, cohort)
    if not data.has_stage_history:
        if skips == "strict":
            raise InsufficientHistoryError(
                "skips='strict' needs stage history to know the order of stages; this data came "
                "from a deal-level export (current stage and outcome only)",
                file=_source(data),
            )
        return _win_rate_deal_level(data, groups, labels, from_stage, opts, seed, by, cohort)

    stages = data.pipeline.stages
    n_stages = len(stages)
    only = _stage_code(data, from_stage) if from_stage is not None else None
    records = stage_records(data, skips=skips)
    w_end, w_cause = win_records(data, records)
    n_cells = len(labels) * n_stages
    cell = groups[records.deal] * n_stages + records.stage
    counts = {
        "entered": np.bincount(cell, minlength=n_cells),
        "won": np.bincount(cell[w_cause == 1], minlength=n_cells),
        "lost": np.bincount(cell[w_cause == 2], minlength=n_cells),
        "skipped_out": np.bincount(cell[w_cause == 3], minlength=n_cells),
        "open": np.bincount(cell[w_cause == 0], minlength=n_cells),
    }
    curves = None
    n_causes = 3 if skips == "strict" else 2
    if opts.method != "aalen-johansen":
        decided = counts["won"] + counts["lost"] + counts["skipped_out"]
        nobs = counts["entered"] if opts.method == "entered" else decided
        est = _proportion_cells(counts["won"], nobs, opts)
        estimator = "proportion"
    elif opts.horizon is None and cohort is None:
        est = _product_cells(records, cell, n_cells, n_stages, groups, opts, seed)
        estimator = "product"
    else:
        dur = w_end - records.start
        est = _aj_cells(
            dur, w_cause, cell, n_cells, n_causes, opts, deal=records.deal, strata=groups, seed=seed
        )
        curves = _curves(dur, w_cause, cell, n_cells, n_causes, labels, stages, opts)
        estimator = "direct"
    frame = _assemble(labels, stages, counts, est, opts, "win_rate")
    if only is not None:
        frame = frame[frame["stage"] == stages[only]].reset_index(drop=True)
        if curves is not None:
            curves = curves[curves["stage"] == stages[only]].reset_index(drop=True)
    if shrink:
        frame = _add_shrinkage(
            frame, opts, "win_rate", ("won", "lost", "skipped_out"), by=by, cohort=cohort
        )
    notes = _notes(data, records, opts, frame, "win_rate", by=by, cohort=cohort)
    notes.insert(1, _ESTIMATOR_NOTE[estimator])
    return WinRateResult(
        frame=frame,
        notes=tuple(notes),
        method=opts.method,
        skips=skips,
        alpha=opts.alpha,
        ci_method=opts.ci_method,
        horizon=opts.horizon,
        by=by,
        cohort=cohort,
        curves=curves,
        estimator=estimator,
    )


win_rate.__doc__ = (win_rate.__doc__ or "").replace("{shared}", _SHARED_PARAMS)

_ESTIMATOR_NOTE = {
    "product": "win rate = product of the eventual stage conversions from the stage on "
    "(each stage with its own follow-up; assumes a Markov funnel)",
    "direct": "win rate = Aalen–Johansen cumulative incidence of winning (losing competes) by "
    "days since reaching the stage",
    "proportion": "win rate as a simple proportion (open deals dropped or counted as not won)",
}


# ---------------------------------------------------------------------------
# options and groups


@dataclass(frozen=True)
class _Options:
    method: str
    skips: str
    alpha: float
    horizon: float | None  # days
    ci_method: str
    n_boot: int

    @property
    def horizon_ns(self) -> float | None:
        return None if self.horizon is None else self.horizon * NS_PER_DAY

    @classmethod
    def make(
        cls,
        method: str,
        skips: str,
        alpha: float,
        horizon: Any,
        ci_method: str | None,
        n_boot: int,
    ) -> _Options:
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        if skips not in SKIP_RULES:
            raise ValueError(f"skips must be one of {list(SKIP_RULES)}, got {skips!r}")
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}") from None
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        h: float | None
        if horizon is None:
            h = None
        elif isinstance(horizon, pd.Timedelta):
            h = horizon / pd.Timedelta(days=1)
        else:
            try:
                h = float(horizon)
            except (TypeError, ValueError):
                raise ValueError(
                    f"horizon must be a number of days (or a Timedelta), got {horizon!r}"
                ) from None
        if h is not None and not (math.isfinite(h) and h >= 0):
            raise ValueError(f"horizon must be a finite number of days >= 0, got {horizon!r}")
        if h is not None and method != "aalen-johansen":
            raise ValueError(
                f"horizon applies to method='aalen-johansen' only; method={method!r} has no "
                "time axis"
            )
        allowed = ("delta", "bootstrap") if method == "aalen-johansen" else ("wilson", "jeffreys")
        ci = ci_method or allowed[0]
        if ci not in allowed:
            raise ValueError(
                f"ci_method for method={method!r} must be one of {list(allowed)}, got {ci_method!r}"
            )
        if ci == "bootstrap" and (not isinstance(n_boot, (int, np.integer)) or n_boot < 2):
            raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
        return cls(method, skips, alpha, h, ci, int(n_boot))


def _source(data: FunnelData) -> str | None:
    rep = data.report
    return getattr(rep, "source", None) if rep is not None else None


def _check_history(data: FunnelData, what: str) -> None:
    if not data.has_stage_history:
        raise InsufficientHistoryError(
            f"{what} needs stage history (one row per stage change); this data came from a "
            "deal-level export with the current stage and the outcome only. "
            "win_rate(data) works on it (the win rate from the stage deals are created in).",
            file=_source(data),
        )


def _stage_code(data: FunnelData, stage: str) -> int:
    stages = data.pipeline.stages
    if stage not in stages:
        hint = suggest_stage(str(stage), stages)
        extra = f" (did you mean {hint!r}?)" if hint else ""
        raise ValueError(
            f"from_stage {stage!r} is not an open stage{extra}; open stages: {list(stages)}"
        )
    return stages.index(stage)


def _deal_groups(
    data: FunnelData, by: str | None, cohort: str | None
) -> tuple[np.ndarray, pd.DataFrame]:
    """Per deal: the group index; and one row of labels per group."""
    codes, names = group_codes(data, by)
    labels = pd.DataFrame({by: names}) if by else pd.DataFrame(index=range(1))
    if cohort is None:
        return codes, labels
    created = data.deals[C.CREATED_AT]
    try:
        periods = created.dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period(cohort)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"cohort must be a pandas period frequency such as 'M', 'Q' or 'W', got "
            f"{cohort!r} ({exc})"
        ) from None
    pcodes, uniques = pd.factorize(periods, sort=True)
    n_c = len(uniques)
    pcodes = np.where(pcodes < 0, n_c, pcodes)  # deals without a created date
    n_c_all = n_c + int((pcodes == n_c).any())
    combined = codes * n_c_all + pcodes
    cohort_vals = list(uniques) + ([pd.NaT] if n_c_all > n_c else [])
    rows = []
    for gi in range(len(labels)):
        for ci in range(n_c_all):
            row = labels.iloc[gi].to_dict() if by else {}
            row["cohort"] = cohort_vals[ci]
            rows.append(row)
    lab = pd.DataFrame(rows, columns=[*([by] if by else []), "cohort"])
    lab["cohort"] = pd.array(lab["cohort"], dtype=pd.PeriodDtype(uniques.freq))
    return combined.astype(np.int64), lab


# ---------------------------------------------------------------------------
# estimation per cell (group x stage)


@dataclass(frozen=True)
class _Est:
    estimate: np.ndarray
    std_error: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    undecided: np.ndarray
    horizon_days: np.ndarray
    horizon_rule: np.ndarray
    mature: np.ndarray  # float: 1, 0 or NaN


def _counts(records: StageRecords, cell: np.ndarray, n_cells: int) -> dict[str, np.ndarray]:
    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(cell[mask], minlength=n_cells)

    return {
        "entered": np.bincount(cell, minlength=n_cells),
        "advanced": count(records.cause == ADVANCED),
        "lost": count(records.cause == LOST),
        "skipped_out": count(records.cause == SKIPPED_OUT),
        "open": count(records.cause == CENSORED),
        "skipped_through": count(records.skipped_through),
        "moved_back": count(records.moved_back),
        "reopened": count(records.reopened),
    }


def _aj_cells(
    duration_ns: np.ndarray,
    cause: np.ndarray,
    cell: np.ndarray,
    n_cells: int,
    n_causes: int,
    opts: _Options,
    *,
    deal: np.ndarray,
    strata: np.ndarray,
    seed: int | None,
) -> _Est:
    fit = aj_fit(duration_ns, cause, cell, n_groups=n_cells, n_causes=n_causes, alpha=opts.alpha)
    at = fit.at(opts.horizon_ns)
    est = at.estimate
    lo, hi = at.ci_lower.copy(), at.ci_upper.copy()
    se = np.sqrt(at.variance)
    if opts.ci_method == "bootstrap":
        reps = _bootstrap_aj(duration_ns, cause, cell, n_cells, opts, deal, strata, seed)
        with np.errstate(invalid="ignore"):
            se = np.nanstd(reps, axis=0, ddof=1)
            lo = np.nanquantile(reps, opts.alpha / 2, axis=0)
            hi = np.nanquantile(reps, 1 - opts.alpha / 2, axis=0)
        # a 0 or 1 estimate resamples to itself: no interval to read off the replicates
        lo[(est == 0) | (est == 1)] = np.nan
    _fill_degenerate(est, at, lo, hi, opts.alpha)
    return _Est(
        estimate=est,
        std_error=se,
        ci_lower=lo,
        ci_upper=hi,
        undecided=at.undecided,
        horizon_days=at.holds_at / NS_PER_DAY,
        horizon_rule=np.where(at.n > 0, "plateau" if opts.horizon is None else "fixed", "").astype(
            object
        ),
        mature=_mature(at, opts),
    )


def _fill_degenerate(
    est: np.ndarray, at: AJAt, lo: np.ndarray, hi: np.ndarray, alpha: float
) -> None:
    """Wilson interval where the log(-log) interval is undefined (estimate 0 or 1)."""
    bad = np.isfinite(est) & ~np.isfinite(lo)
    if not bad.any():
        return
    n = at.exits[bad]
    wl, wh = proportion_interval(est[bad] * n, n, alpha=alpha, method="wilson")
    lo[bad] = np.where(n > 0, wl, 0.0)
    hi[bad] = np.where(n > 0, wh, 1.0)


def _mature(at: AJAt, opts: _Options) -> np.ndarray:
    out = np.full(len(at.estimate), np.nan)
    has = at.n > 0
    if opts.horizon is None:
        out[has] = (at.undecided[has] <= MATURE_UNDECIDED).astype(float)
    else:
        out[has] = (at.follow_up[has] >= opts.horizon_ns).astype(float)
    return out


def _bootstrap_aj(
    duration_ns: np.ndarray,
    cause: np.ndarray,
    cell: np.ndarray,
    n_cells: int,
    opts: _Options,
    deal: np.ndarray,
    strata: np.ndarray,
    seed: int | None,
) -> np.ndarray:
    """Estimates of every cell in each of ``opts.n_boot`` deal resamples, shape (n_boot, cells)."""
    rng = np.random.default_rng(seed)
    out = np.empty((opts.n_boot, n_cells))
    order = np.lexsort((duration_ns, cell))  # sorted once for every replicate
    duration_ns, cause, cell, deal = duration_ns[order], cause[order], cell[order], deal[order]
    r = len(cell)
    chunk = max(1, min(opts.n_boot, _BOOT_CELLS // max(r, 1)))
    done = 0
    while done < opts.n_boot:
        b = min(chunk, opts.n_boot - done)
        w = bootstrap_weights(strata, b, rng)[:, deal]  # (b, records)
        out[done : done + b] = bootstrap_cif(
            duration_ns,
            cause,
            cell,
            n_groups=n_cells,
            horizon=opts.horizon_ns,
            weights=w,
            presorted=True,
        )
        done += b
    return out


def _proportion_cells(k: np.ndarray, nobs: np.ndarray, opts: _Options) -> _Est:
    k = k.astype(float)
    nobs = nobs.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(nobs > 0, k / nobs, np.nan)
        se = np.sqrt(p * (1 - p) / nobs)
    lo, hi = proportion_interval(k, nobs, alpha=opts.alpha, method=opts.ci_method)
    n = len(k)
    return _Est(
        estimate=p,
        std_error=se,
        ci_lower=lo,
        ci_upper=hi,
        undecided=np.full(n, np.nan),
        horizon_days=np.full(n, np.nan),
        horizon_rule=np.full(n, "none", dtype=object),
        mature=np.full(n, np.nan),
    )


def _product_cells(
    records: StageRecords,
    cell: np.ndarray,
    n_cells: int,
    n_stages: int,
    strata: np.ndarray,
    opts: _Options,
    seed: int | None,
) -> _Est:
    """Eventual win rate from each stage: product of the eventual stage conversions."""
    n_causes = 3 if records.skips == "strict" else 2
    fit = aj_fit(
        records.duration_ns,
        records.cause,
        cell,
        n_groups=n_cells,
        n_causes=n_causes,
        alpha=opts.alpha,
    )
    at = fit.at(None)
    c = at.estimate.reshape(-1, n_stages)
    v = at.variance.reshape(-1, n_stages)
    # W_s = prod_{j >= s} c_j: reversed cumulative products along stages
    w = np.cumprod(c[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.cumsum((v / c**2)[:, ::-1], axis=1)[:, ::-1]
        var = (w**2 * rel).ravel()
    est = w.ravel()
    lo, hi = loglog_interval(est, var, opts.alpha)
    se = np.sqrt(var)
    if opts.ci_method == "bootstrap":
        reps = _bootstrap_aj(
            records.duration_ns,
            records.cause,
            cell,
            n_cells,
            _Options(opts.method, opts.skips, opts.alpha, None, opts.ci_method, opts.n_boot),
            records.deal,
            strata,
            seed,
        )
        rc = reps.reshape(opts.n_boot, -1, n_stages)
        rw = np.cumprod(rc[:, :, ::-1], axis=2)[:, :, ::-1].reshape(opts.n_boot, -1)
        with np.errstate(invalid="ignore"):
            se = np.nanstd(rw, axis=0, ddof=1)
            lo = np.nanquantile(rw, opts.alpha / 2, axis=0)
            hi = np.nanquantile(rw, 1 - opts.alpha / 2, axis=0)
    else:
        bad = np.isfinite(est) & ~np.isfinite(lo)
        if bad.any():
            # estimate 0 or 1: the product of the stages' own bounds (conservative)
            slo, shi = at.ci_lower.copy(), at.ci_upper.copy()
            _fill_degenerate(at.estimate, at, slo, shi, opts.alpha)
            plo = np.cumprod(slo.reshape(-1, n_stages)[:, ::-1], axis=1)[:, ::-1].ravel()
            phi = np.cumprod(shi.reshape(-1, n_stages)[:, ::-1], axis=1)[:, ::-1].ravel()
            lo[bad], hi[bad] = plo[bad], phi[bad]
    # still undecided: the eventual win rate lies between prod c_j and prod (c_j + u_j)
    u = at.undecided.reshape(-1, n_stages)
    upper = np.cumprod((c + u)[:, ::-1], axis=1)[:, ::-1].ravel()
    stage_mature = (u <= MATURE_UNDECIDED).astype(float)
    stage_mature[~np.isfinite(u)] = np.nan
    mature = np.cumprod(stage_mature[:, ::-1], axis=1)[:, ::-1].ravel()
    return _Est(
        estimate=est,
        std_error=se,
        ci_lower=lo,
        ci_upper=hi,
        undecided=upper - est,
        horizon_days=np.full(len(est), np.nan),
        horizon_rule=np.where(at.n > 0, "plateau", "").astype(object),
        mature=mature,
    )


def _curves(
    duration_ns: np.ndarray,
    cause: np.ndarray,
    cell: np.ndarray,
    n_cells: int,
    n_causes: int,
    labels: pd.DataFrame,
    stages: Sequence[str],
    opts: _Options,
) -> pd.DataFrame:
    """Each cell's win-rate curve by days since reaching the stage."""
    fit = aj_fit(duration_ns, cause, cell, n_groups=n_cells, n_causes=n_causes, alpha=opts.alpha)
    t = fit.table
    lo, hi = loglog_interval(fit.cif, fit.variance, opts.alpha)
    n_stages = len(stages)
    g = t.group // n_stages
    s = t.group % n_stages
    out = labels.iloc[g].reset_index(drop=True) if len(labels.columns) else pd.DataFrame()
    out["stage"] = pd.Categorical.from_codes(s, categories=list(stages), ordered=True)
    out["age_days"] = t.time / NS_PER_DAY
    out["win_rate"] = fit.cif
    out["ci_lower"] = lo
    out["ci_upper"] = hi
    out["at_risk"] = t.at_risk
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------
# deal-level data


def _win_rate_deal_level(
    data: FunnelData,
    groups: np.ndarray,
    labels: pd.DataFrame,
    from_stage: str | None,
    opts: _Options,
    seed: int | None,
    by: str | None,
    cohort: str | None,
) -> WinRateResult:
    created_stage = _created_stage(data)
    if from_stage is not None and from_stage != created_stage:
        raise InsufficientHistoryError(
            f"win rate from {from_stage!r} needs stage history; this deal-level export only "
            f"says where deals started ({created_stage!r}) and how they ended. Use "
            "from_stage=None",
            file=_source(data),
        )
    d = data.deals
    created = d[C.CREATED_AT]
    dated = created.notna().to_numpy()
    idx = np.flatnonzero(dated)
    start = created.iloc[idx].array.asi8 if len(idx) else np.zeros(0, np.int64)
    outcome = d[C.OUTCOME].astype(str).to_numpy()[idx]
    closed = d[C.CLOSED_AT].iloc[idx]
    closed_ns = np.where(closed.notna().to_numpy(), closed.array.asi8, data.exported_at.value)
    cause = np.where(outcome == C.WON, 1, np.where(outcome == C.LOST, 2, 0)).astype(np.int8)
    end = np.where(cause > 0, closed_ns, data.exported_at.value)
    dur = np.maximum(end - start, 0)
    n_cells = len(labels)
    cell = groups[idx]
    counts = {
        "entered": np.bincount(cell, minlength=n_cells),
        "won": np.bincount(cell[cause == 1], minlength=n_cells),
        "lost": np.bincount(cell[cause == 2], minlength=n_cells),
        "skipped_out": np.zeros(n_cells, dtype=np.int64),
        "open": np.bincount(cell[cause == 0], minlength=n_cells),
    }
    curves = None
    if opts.method == "aalen-johansen":
        est = _aj_cells(dur, cause, cell, n_cells, 2, opts, deal=idx, strata=groups, seed=seed)
        curves = _curves(dur, cause, cell, n_cells, 2, labels, [created_stage], opts)
        estimator = "direct"
    else:
        nobs = counts["entered"] if opts.method == "entered" else counts["won"] + counts["lost"]
        est = _proportion_cells(counts["won"], nobs, opts)
        estimator = "proportion"
    frame = _assemble(labels, [created_stage], counts, est, opts, "win_rate")
    frame["stage"] = pd.Categorical(
        frame["stage"].astype(str), categories=list(data.pipeline.stages), ordered=True
    )
    if curves is not None:
        curves["stage"] = pd.Categorical(
            curves["stage"].astype(str), categories=list(data.pipeline.stages), ordered=True
        )
    notes = [
        _METHOD_NOTE[opts.method].format(what="win rate"),
        _ESTIMATOR_NOTE[estimator],
        f"deal-level data: win rate from {created_stage!r} (where deals are created), by days "
        "since creation; per-stage figures need stage history",
    ]
    if (~dated).any():
        notes.append(f"{int((~dated).sum())} deal(s) without a created date left out")
    notes.extend(_maturity_notes(frame, opts, "win_rate", by=by, cohort=cohort))
    return WinRateResult(
        frame=frame,
        notes=tuple(notes),
        method=opts.method,
        skips=opts.skips,
        alpha=opts.alpha,
        ci_method=opts.ci_method,
        horizon=opts.horizon,
        by=by,
        cohort=cohort,
        curves=curves,
        estimator=estimator,
    )


def _created_stage(data: FunnelData) -> str:
    """The stage deal-level data places deals in on their created date.

    It is the first stage of every closed deal (``read_deals``' ``created_stage``);
    without closed deals, the pipeline's first open stage.
    """
    a = data.arrays
    stages = data.pipeline.stages
    if len(a.stage):
        first = np.r_[True, a.deal[1:] != a.deal[:-1]]
        nxt_same = np.r_[a.deal[1:] == a.deal[:-1], False]
        codes = a.stage[first & nxt_same]
        codes = codes[codes < len(stages)]
        if len(codes):
            return stages[int(np.bincount(codes).argmax())]
    return stages[0] if stages else ""


# ---------------------------------------------------------------------------
# assembling frames and notes


def _assemble(
    labels: pd.DataFrame,
    stages: Sequence[str],
    counts: dict[str, np.ndarray],
    est: _Est,
    opts: _Options,
    value: str,
) -> pd.DataFrame:
    n_stages = len(stages)
    n_groups = len(labels)
    g = np.repeat(np.arange(n_groups), n_stages)
    s = np.tile(np.arange(n_stages), n_groups)
    frame = labels.iloc[g].reset_index(drop=True) if len(labels.columns) else pd.DataFrame()
    frame["stage"] = pd.Categorical.from_codes(s, categories=list(stages), ordered=True)
    for name, arr in counts.items():
        frame[name] = arr.astype(np.int64)
    frame[value] = est.estimate
    frame["std_error"] = est.std_error
    frame["ci_lower"] = est.ci_lower
    frame["ci_upper"] = est.ci_upper
    frame["undecided"] = est.undecided
    frame["horizon_days"] = est.horizon_days
    frame["horizon_rule"] = est.horizon_rule
    frame["mature"] = pd.array(
        [pd.NA if np.isnan(m) else bool(m) for m in est.mature], dtype="boolean"
    )
    frame["method"] = opts.method
    # a cohort with no deals reaching a stage has nothing to show
    if "cohort" in frame.columns:
        frame = frame[frame["entered"] > 0]
    return frame.reset_index(drop=True)


def _add_shrinkage(
    frame: pd.DataFrame,
    opts: _Options,
    value: str,
    outcome_cols: tuple[str, ...],
    *,
    by: str | None,
    cohort: str | None,
) -> pd.DataFrame:
    frame = frame.copy()
    p = frame[value].to_numpy(dtype=float)
    if opts.method == "aalen-johansen":
        var = frame["std_error"].to_numpy(dtype=float) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            n_eff = np.where((p > 0) & (p < 1) & (var > 0), p * (1 - p) / var, np.nan)
        decided = frame[list(outcome_cols)].to_numpy(dtype=float).sum(axis=1)
        n_eff = np.where(np.isfinite(n_eff), n_eff, decided)
    elif opts.method == "entered":
        n_eff = frame["entered"].to_numpy(dtype=float)
    else:
        n_eff = frame[list(outcome_cols)].to_numpy(dtype=float).sum(axis=1)
    n_eff = np.where(np.isfinite(p), n_eff, 0.0)
    k_eff = np.nan_to_num(p) * n_eff
    shrunk = np.full(len(frame), np.nan)
    lo = np.full(len(frame), np.nan)
    hi = np.full(len(frame), np.nan)
    keys = ["stage"] + (["cohort"] if (by and cohort) else [])
    for _, idx in frame.groupby(keys, observed=True, sort=False).indices.items():
        if (n_eff[idx] > 0).sum() < 2:
            shrunk[idx] = p[idx]
            lo[idx] = frame["ci_lower"].to_numpy()[idx]
            hi[idx] = frame["ci_upper"].to_numpy()[idx]
            continue
        m, a, b, _, _ = shrink_beta_binomial(k_eff[idx], n_eff[idx], alpha=opts.alpha)
        shrunk[idx], lo[idx], hi[idx] = m, a, b
    frame["shrunk"] = shrunk
    frame["shrunk_ci_lower"] = lo
    frame["shrunk_ci_upper"] = hi
    return frame


_METHOD_NOTE = {
    "aalen-johansen": "{what}: Aalen–Johansen (success vs failure as competing outcomes; "
    "open deals censored at the export date)",
    "resolved": "{what}: naive 'resolved' formula, successes / (successes + failures): open "
    "deals dropped (overstates while deals are open)",
    "entered": "{what}: naive 'entered' formula, successes / entered: open deals counted as "
    "failures (understates while deals are open)",
}


def _maturity_notes(
    frame: pd.DataFrame,
    opts: _Options,
    value: str,
    *,
    by: str | None,
    cohort: str | None,
) -> list[str]:
    notes = []
    if opts.method != "aalen-johansen":
        return notes
    if opts.horizon is None:
        notes.append(
            "horizon=None: each value is at the plateau, the end of follow-up in its stage "
            "(horizon_days); the eventual figure lies between the value and value + undecided"
        )
    else:
        notes.append(f"values at {opts.horizon:g} days since reaching the stage")
        short = frame["horizon_days"] < opts.horizon - 1e-9
        if short.any():
            notes.append(
                f"{int(short.sum())} row(s) have less than {opts.horizon:g} days of follow-up: "
                "their values hold at horizon_days (mature is False)"
            )
    und = frame["undecided"].to_numpy(dtype=float)
    big = np.isfinite(und) & (und > MATURE_UNDECIDED)
    if big.any() and not cohort:
        where = frame.loc[big, "stage"].astype(str)
        if by:
            where = frame.loc[big, by].astype(str) + "/" + where
        notes.append(
            f"more than {MATURE_UNDECIDED:.0%} still undecided at the horizon in: "
            f"{', '.join(where)} (not final)"
        )
    return notes


def _notes(
    data: FunnelData,
    records: StageRecords,
    opts: _Options,
    frame: pd.DataFrame,
    value: str,
    *,
    by: str | None,
    cohort: str | None,
) -> list[str]:
    what = "conversion" if value == "conversion" else "win rate"
    notes = [_METHOD_NOTE[opts.method].format(what=what)]
    if opts.skips == "reached":
        notes.append(
            "skips='reached': a deal that jumped over a stage reached it and got past it at once"
        )
    else:
        in_funnel = int(np.count_nonzero(records.stage == 0))  # one episode per deal and stage
        out = data.n_deals - in_funnel
        notes.append(
            "skips='strict': only deals that entered every stage in order count; a jump past "
            f"the next stage ends the deal's count as skipped_out ({out} deal(s) did not start "
            "in the first stage and are not counted)"
        )
    seen = np.bincount(records.deal, minlength=data.n_deals) if len(records) else np.zeros(0)
    never = data.n_deals - int(np.count_nonzero(seen))
    if opts.skips == "reached" and never:
        notes.append(
            f"{never} deal(s) were never in an open stage (created closed) and do not count"
        )
    notes.append(
        f"intervals: {opts.ci_method}"
        + (f" ({opts.n_boot} deal resamples)" if opts.ci_method == "bootstrap" else "")
        + f", {1 - opts.alpha:.0%}"
    )
    notes.extend(_maturity_notes(frame, opts, value, by=by, cohort=cohort))
    return notes


def _pearson_chi2(k: np.ndarray, n: np.ndarray) -> tuple[float, int]:
    """Pearson chi-square of the 2 x G table of successes and failures (no correction)."""
    pooled = k.sum() / n.sum()
    if pooled <= 0 or pooled >= 1:
        return 0.0, len(k) - 1
    expected = np.stack([n * pooled, n * (1 - pooled)])
    observed = np.stack([k, n - k])
    return float(np.sum((observed - expected) ** 2 / expected)), len(k) - 1
