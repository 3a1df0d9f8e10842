"""Plots of the survival results: curves with an at-risk table, stacked incidence, forest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._result import get_ax
from ._survival_fit import nice_times

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .survival import CompetingOutcomes, StageHazards, TimeInStage

__all__ = ["plot_hazard_ratios", "plot_stage_outcomes", "plot_survival"]

AT_RISK_GID = "at_risk"


def _pick(
    frame: pd.DataFrame, stage: str | Sequence[str] | None, group: str | Sequence[str] | None
) -> pd.DataFrame:
    out = frame
    for col, want in (("stage", stage), ("group", group)):
        if want is None or col not in out.columns:
            continue
        names = [want] if isinstance(want, str) else list(want)
        # compare names with the distinct values only (a curve frame can hold millions of rows)
        present = {str(v): v for v in out[col].unique()}
        unknown = [n for n in names if n not in present]
        if unknown:
            raise ValueError(
                f"{col} {unknown} not in the result; {col}s: {list(out[col].cat.categories)}"
            )
        out = out[out[col].isin([present[n] for n in names])]
    return out


#: Plotted curves keep at most about twice this many points (see :func:`_thin`).
PLOT_BINS = 2_000


def _thin(t: np.ndarray, hi: float, bins: int = PLOT_BINS) -> np.ndarray | slice:
    """Rows of a step curve (times ``t``, increasing) worth drawing on an axis to ``hi``.

    The visible range is cut into ``bins`` slices (far finer than a pixel at report size);
    in each, the first and last rows are kept. A monotone curve's steps between them move
    less than a slice sideways and stay between their values, so the drawing is the same to
    the eye; a curve with few rows is drawn whole. A million-deal export gives curves of
    millions of rows, which would otherwise cost tens of seconds to draw and save.
    """
    n = len(t)
    if n <= 2 * bins or not np.isfinite(hi) or hi <= 0:
        return slice(None)
    b = np.minimum(np.floor(np.maximum(t, 0.0) * (bins / hi)), bins).astype(np.int64)
    keep = np.ones(n, dtype=bool)
    keep[1:-1] = (b[1:-1] != b[:-2]) | (b[1:-1] != b[2:])
    return np.flatnonzero(keep)


def _series(frame: pd.DataFrame, by: str | None) -> list[tuple[str, pd.DataFrame]]:
    """Split a curve frame into (label, rows) per curve."""
    has_stage = "stage" in frame.columns
    stages = frame["stage"].unique().tolist() if has_stage else [None]
    groups = frame["group"].unique().tolist()
    if has_stage and len(stages) > 1 and len(groups) > 1:
        raise ValueError(
            f"the result has several stages and groups of {by!r}: pick one with stage= "
            f"(stages: {[str(s) for s in stages]})"
        )
    out = []
    keys = ["stage", "group"] if has_stage else ["group"]
    for key, rows in frame.groupby(keys, observed=True, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        if has_stage and len(stages) > 1:
            label = str(key[0])
        elif by is None and has_stage:
            label = str(key[0])
        else:
            label = str(key[-1])
        out.append((label, rows))
    return out


def plot_survival(
    result: TimeInStage,
    *,
    stage: str | Sequence[str] | None = None,
    group: str | Sequence[str] | None = None,
    ax: Axes | None = None,
    ci: bool = True,
    at_risk: bool = True,
    times: Sequence[float] | None = None,
    xmax: float | None = None,
    **kwargs: Any,
) -> Axes:
    """Kaplan–Meier curves of time in stage, with CI bands and an at-risk table.

    One curve per stage (without ``by``) or per group (with ``by``; pick one
    stage with ``stage=`` when the result holds several).

    Parameters
    ----------
    result : TimeInStage
    stage, group : str or list of str, optional
        Curves to draw (default all).
    ax : Axes, optional
        Default: the current Axes.
    ci : bool
        Shade the pointwise confidence band.
    at_risk : bool
        Write the number still in the stage at each of ``times`` beneath the
        axes (texts with gid ``"at_risk"``).
    times : list of float, optional
        Days for the at-risk table and x ticks; default round numbers up to
        ``xmax``.
    xmax : float, optional
        Right end of the x axis (days); default: where the slowest curve has
        fallen to 5% (or its last observation).
    **kwargs
        Passed to ``Axes.step`` for every curve.

    Returns
    -------
    Axes

    Examples
    --------
    >>> import funnelstats as fs
    >>> import matplotlib.pyplot as plt
    >>> r = fs.time_in_stage(fs.load_sample(), stage="Proposal", by="Segment")
    >>> fig, ax = plt.subplots()
    >>> ax = plot_survival(r, ax=ax)
    >>> [line.get_label() for line in ax.get_lines()]
    ['Enterprise', 'Mid-Market', 'SMB']
    >>> plt.close(fig)
    """
    ax = get_ax(ax)
    curves = _pick(result.curves, stage, group)
    series = _series(curves, result.by)
    fit = result._fit
    last = fit.last_time()
    hi = float(xmax) if xmax is not None else fit.horizon()
    ticks = np.asarray(times, dtype=float) if times is not None else nice_times(hi)
    hi = max(hi, float(ticks.max()) if len(ticks) else hi)
    table = result.at_risk_table(ticks) if at_risk else None
    for label, rows in series:
        t = rows["t"].to_numpy()
        s = rows["survival"].to_numpy()
        lo = rows["ci_lower"].to_numpy()
        up = rows["ci_upper"].to_numpy()
        key = _key_of(fit, rows.iloc[0])
        end = last[key]
        if end > t[-1]:  # run the last step on to the end of follow-up
            t, s, lo, up = np.r_[t, end], np.r_[s, s[-1]], np.r_[lo, lo[-1]], np.r_[up, up[-1]]
        if t[0] > 0 or s[0] < 1:
            t, s, lo, up = np.r_[0.0, t], np.r_[1.0, s], np.r_[1.0, lo], np.r_[1.0, up]
        keep = _thin(t, hi)
        t, s, lo, up = t[keep], s[keep], lo[keep], up[keep]
        (line,) = ax.step(t, s, where="post", label=label, **kwargs)
        if ci:
            ax.fill_between(t, lo, up, step="post", alpha=0.2, color=line.get_color(), lw=0)
    ax.set_xlim(0, hi if hi > 0 else 1.0)  # all stays of length 0: a unit axis
    ax.set_ylim(0, 1.02)
    ax.set_xticks(ticks)
    ax.set_xlabel("days in stage")
    ax.set_ylabel("share still in stage")
    if "stage" in curves.columns and result.by is not None:
        stages = curves["stage"].unique().tolist()
        if len(stages) == 1:
            ax.set_title(f"{stages[0]}: time in stage by {result.by}")
    ax.legend(frameon=False)
    if table is not None:
        _at_risk_rows(ax, series, table)
    return ax


def _one_key(fit: Any, stage: Any, group: Any) -> int | None:
    """The key of the one present curve that ``stage`` and ``group`` select (a name or
    None each), or None when the selection is not that simple (several curves, unknown
    names: :func:`_pick` on the curve frame then decides, and raises)."""
    present = fit.present()
    if fit.stage_names is None:
        stage = None
    for want in (stage, group):
        if want is not None and not isinstance(want, str):
            return None
    keys = [
        int(k)
        for k in present
        if (stage is None or fit.stage_names[k // fit.n_groups] == stage)
        and (group is None or fit.group_labels[k % fit.n_groups] == group)
    ]
    return keys[0] if len(keys) == 1 else None


def _stacked_values(result: CompetingOutcomes, key: int) -> tuple[np.ndarray, np.ndarray]:
    """Times and probabilities (one column per outcome, still open last) of one curve: the
    rows of ``result.curves`` for ``key`` pivoted wide, without building the whole frame."""
    fit = result._fit
    tab = fit.table
    lo, hi = int(tab.offsets[key]), int(tab.offsets[key + 1])
    r = np.arange(lo, hi)
    r = r[tab.observed[r] > 0]
    start = not (hi > lo and tab.time[lo] == 0 and tab.observed[lo] > 0)
    rows = np.r_[np.full(int(start), -1), r]
    t = np.r_[np.zeros(int(start)), fit.time_days[r]]
    prob, _, _ = result._values_at_rows(rows)
    return t, prob


def _key_of(fit: Any, row: pd.Series) -> int:
    g = fit.group_labels.index(str(row["group"]))
    if fit.stage_names is None:
        return g
    return fit.stage_names.index(str(row["stage"])) * fit.n_groups + g


def _at_risk_rows(ax: Axes, series: list, table: pd.DataFrame) -> None:
    base = -44.0
    step = 11.0
    ax.annotate(
        "still in stage",
        xy=(0, 0),
        xycoords="axes fraction",
        xytext=(-24, base),
        textcoords="offset points",
        ha="right",
        va="top",
        fontsize="small",
        fontweight="bold",
        annotation_clip=False,
    )
    colors = [line.get_color() for line in ax.get_lines()[-len(series) :]]
    for i, (label, rows) in enumerate(series):
        first = rows.iloc[0]
        mask = np.ones(len(table), dtype=bool)
        for col in ("stage", "group"):
            if col in table.columns:
                mask &= (table[col].astype(str) == str(first[col])).to_numpy()
        sub = table[mask]
        y = base - step * (i + 1)
        ax.annotate(
            label,
            xy=(0, 0),
            xycoords="axes fraction",
            xytext=(-24, y),
            color=colors[i] if i < len(colors) else None,
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize="small",
            annotation_clip=False,
        )
        for t, n in zip(sub["t"], sub["at_risk"]):
            txt = ax.annotate(
                f"{int(n):,}",
                xy=(t, 0),
                xycoords=("data", "axes fraction"),
                xytext=(0, y),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize="small",
                annotation_clip=False,
            )
            txt.set_gid(AT_RISK_GID)


def plot_stage_outcomes(
    result: CompetingOutcomes,
    *,
    stage: str | None = None,
    group: str | Sequence[str] | None = None,
    ax: Axes | None = None,
    stacked: bool = True,
    outcomes: Sequence[str] | None = None,
    ci: bool = True,
    xmax: float | None = None,
    **kwargs: Any,
) -> Axes:
    """Cumulative incidence of each outcome: stacked bands, or lines with CI bands.

    Stacked (the default for :func:`~funnelstats.stage_outcomes`): for one
    stage and group, the outcomes stacked bottom up in their order with the
    still-open state on top; the bands fill 0..1 at every time. Lines
    (``stacked=False``, the default for :func:`~funnelstats.cycle_time`):
    one curve per group (or stage) and outcome in ``outcomes``, with its
    confidence band.

    Parameters
    ----------
    result : CompetingOutcomes
    stage, group : str, optional
        Which curves (stacked: exactly one stage and one group must remain).
    ax : Axes, optional
    stacked : bool
    outcomes : list of str, optional
        Lines mode: outcomes to draw (default all but the still-open state).
    ci : bool
        Lines mode: shade the confidence band.
    xmax : float, optional
        Right end of the x axis (days).
    **kwargs
        Passed to ``fill_between`` (stacked) or ``step`` (lines).

    Returns
    -------
    Axes

    Examples
    --------
    >>> import funnelstats as fs
    >>> import matplotlib.pyplot as plt
    >>> r = fs.stage_outcomes(fs.load_sample(), "Proposal")
    >>> fig, ax = plt.subplots()
    >>> ax = plot_stage_outcomes(r, ax=ax)
    >>> [c.get_label() for c in ax.collections]
    ['advanced', 'lost', 'moved back', 'in stage']
    >>> plt.close(fig)
    """
    ax = get_ax(ax)
    fit = result._fit
    names = list(result.outcomes)
    one = _one_key(fit, stage, group) if stacked else None
    if one is None:
        curves = _pick(result.curves, stage, group)
    hi = float(xmax) if xmax is not None else fit.horizon()
    if stacked:
        if one is not None:
            # the one curve read off the fit's arrays, as the rows of .curves would give it
            t, vals = _stacked_values(result, one)
        else:
            ids = [c for c in ("stage", "group") if c in curves.columns]
            combos = curves[ids].drop_duplicates()
            if len(combos) != 1:
                raise ValueError(
                    "a stacked plot shows one stage and group: pick them with stage= and group= "
                    f"(the selection holds {len(combos)})"
                )
            wide = curves.pivot_table(
                index="t", columns="outcome", values="probability", observed=True, sort=True
            )
            # several rows at t = 0 are impossible; pivot keeps the one there is
            t = wide.index.to_numpy()
            vals = wide[names].to_numpy()
            one = _key_of(fit, curves.iloc[0])
        end = fit.last_time()[one]
        if end > t[-1]:
            t = np.r_[t, end]
            vals = np.vstack([vals, vals[-1]])
        if t[0] > 0:
            t = np.r_[0.0, t]
            vals = np.vstack([np.r_[np.zeros(len(names) - 1), 1.0], vals])
        keep = _thin(t, hi)
        t, vals = t[keep], vals[keep]
        top = np.cumsum(vals, axis=1)
        bottom = np.c_[np.zeros(len(t)), top[:, :-1]]
        colors = kwargs.pop("colors", None) or _stack_colors(len(names))
        for j, name in enumerate(names):
            ax.fill_between(
                t,
                bottom[:, j],
                top[:, j],
                step="post",
                label=name,
                color=colors[j],
                lw=0,
                **kwargs,
            )
        ax.set_ylim(0, 1)
        g = fit.n_groups
        parts = [fit.group_labels[one % g]]
        if fit.stage_names is not None:
            parts.insert(0, fit.stage_names[one // g])
        ax.set_ylabel("share of stays" if fit.stage_names is not None else "share of deals")
        label = " · ".join(str(p) for p in parts if str(p) != "all")
        if label:
            ax.set_title(label)
        ax.legend(loc="lower right", framealpha=0.9)
    else:
        want = list(outcomes) if outcomes is not None else names[:-1]
        bad = [o for o in want if o not in names]
        if bad:
            raise ValueError(f"outcomes {bad} not in {names}")
        present = {str(v): v for v in curves["outcome"].unique()}
        curves = curves[curves["outcome"].isin([present[o] for o in want if o in present])]
        ids = [c for c in ("stage", "group", "outcome") if c in curves.columns]
        for key, rows in curves.groupby(ids, observed=True, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            parts = [str(k) for k in key if str(k) != "all"]
            if len(want) == 1 and len(parts) > 1:
                parts = parts[:-1]
            t = rows["t"].to_numpy()
            p = rows["probability"].to_numpy()
            lo = rows["ci_lower"].to_numpy()
            up = rows["ci_upper"].to_numpy()
            end = fit.last_time()[_key_of(fit, rows.iloc[0])]
            if end > t[-1]:
                t, p, lo, up = np.r_[t, end], np.r_[p, p[-1]], np.r_[lo, lo[-1]], np.r_[up, up[-1]]
            keep = _thin(t, hi)
            t, p, lo, up = t[keep], p[keep], lo[keep], up[keep]
            (line,) = ax.step(t, p, where="post", label=" · ".join(parts) or str(key[-1]), **kwargs)
            if ci:
                ax.fill_between(t, lo, up, step="post", alpha=0.2, color=line.get_color(), lw=0)
        ax.set_ylim(0, None)
        ax.set_ylabel("cumulative probability" if len(want) > 1 else f"share {want[0]} by day")
        ax.legend(frameon=False)
    ax.set_xlim(0, hi if hi > 0 else 1.0)  # all stays of length 0: a unit axis
    ax.set_xlabel(result.time_label)
    return ax


def _stack_colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    base = ["#4c9a6a", "#c8553d", "#e0a458", "#9aa5b1"]
    if n <= len(base):
        return [*base[: n - 1], base[-1]]
    cmap = colormaps["tab10"]
    return [cmap(i) for i in range(n - 1)] + [base[-1]]


def plot_hazard_ratios(result: StageHazards, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Forest plot of hazard ratios with their confidence intervals (log scale).

    Terms whose proportional-hazards check failed are marked ``(PH?)``.

    Parameters
    ----------
    result : StageHazards
    ax : Axes, optional
    **kwargs
        Passed to ``Axes.errorbar``.

    Returns
    -------
    Axes

    Examples
    --------
    >>> import funnelstats as fs
    >>> import matplotlib.pyplot as plt
    >>> r = fs.stage_hazards(fs.load_sample(), "Proposal", covariates=["Segment"])
    >>> fig, ax = plt.subplots()
    >>> ax = plot_hazard_ratios(r, ax=ax)
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['Segment[Enterprise] vs SMB', 'Segment[Mid-Market] vs SMB (PH?)']
    >>> plt.close(fig)
    """
    ax = get_ax(ax)
    f = result.frame
    y = np.arange(len(f))[::-1]
    hr = f["hazard_ratio"].to_numpy()
    err = np.vstack([hr - f["ci_lower"].to_numpy(), f["ci_upper"].to_numpy() - hr])
    kwargs.setdefault("fmt", "o")
    kwargs.setdefault("capsize", 3)
    ax.errorbar(hr, y, xerr=err, **kwargs)
    ax.axvline(1.0, color="0.5", lw=1, ls="--")
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    lo = np.nanmin(f["ci_lower"].to_numpy(), initial=1.0)
    up = np.nanmax(f["ci_upper"].to_numpy(), initial=1.0)
    marks = [m for m in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20) if lo / 2 <= m <= up * 2]
    ax.xaxis.set_major_locator(FixedLocator(marks))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    violated = set(result.ph_test.loc[result.ph_test["violated"], "term"])
    labels = [
        f"{t} vs {r}" if isinstance(r, str) else str(t) for t, r in zip(f["term"], f["reference"])
    ]
    labels = [lab + (" (PH?)" if t in violated else "") for lab, t in zip(labels, f["term"])]
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.set_xlabel("hazard ratio of advancing (log scale)")
    ax.set_title(f"{result.stage}: hazard of advancing")
    return ax
