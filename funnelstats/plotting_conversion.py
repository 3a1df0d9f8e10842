"""Plots of conversion and win-rate results: funnel chart, rates by stage, cohort heat map,
cohort win-rate curves, group-comparison p-values.

Every function takes a result object first and ``ax=`` (default: the current
Axes), draws on it and returns it; pyplot is imported only when no Axes is
given, and no global style is changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._result import get_ax

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .conversion import ConversionResult, GroupComparison, WinRateResult, _RateResult

__all__ = [
    "plot_cohort_curves",
    "plot_cohort_heatmap",
    "plot_comparison",
    "plot_funnel",
    "plot_rates",
]

NAIVE = ("resolved", "entered")


def _pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{100 * x:.0f}%"


def _group_labels(result: _RateResult, frame: pd.DataFrame) -> pd.Series:
    cols = result.group_columns
    if not cols:
        return pd.Series(["all"] * len(frame), index=frame.index)
    return frame[cols].astype(str).agg(" / ".join, axis=1)


def _select(result: _RateResult, group: Any) -> pd.DataFrame:
    """The rows of one group (``group`` a label, or a tuple/dict of the group columns)."""
    f = result.frame
    cols = result.group_columns
    if not cols:
        return f
    labels = _group_labels(result, f)
    if group is None:
        uniq = labels.unique()
        if len(uniq) == 1:
            return f
        raise ValueError(f"several groups; pick one with group=, one of {list(uniq)}")
    if isinstance(group, dict):
        key = " / ".join(str(group[c]) for c in cols)
    elif isinstance(group, tuple):
        key = " / ".join(str(g) for g in group)
    else:
        key = str(group)
    sel = labels == key
    if not sel.any():
        raise ValueError(f"no group {group!r}; groups: {list(labels.unique())}")
    return f[sel.to_numpy()]


def _naive_values(frame: pd.DataFrame, naive: str, success: str, failures: tuple[str, ...]):
    k = frame[success].to_numpy(dtype=float)
    if naive == "entered":
        n = frame["entered"].to_numpy(dtype=float)
    else:
        n = frame[[success, *failures]].to_numpy(dtype=float).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, k / n, np.nan)


def plot_funnel(
    result: ConversionResult,
    *,
    ax: Axes | None = None,
    group: Any = None,
    naive: str | None = None,
    annotate: bool = True,
    color: str = "C0",
    **kwargs: Any,
) -> Axes:
    """Funnel chart of a :func:`~funnelstats.conversion` result.

    One centred bar per open stage, top to bottom, then the won bar: its width
    is the share of deals entering the first stage that the stage conversions
    carry to it (1 for the first stage, then the running product). Each stage
    is annotated with its conversion and interval (``≥`` marks a figure that is
    not final: still undecided deals can only raise it).

    Parameters
    ----------
    result : ConversionResult
    ax : Axes, optional
    group : label, tuple or dict, optional
        Which group to draw when the result has several; with several groups
        and no ``group`` the groups' conversions are drawn side by side
        (:func:`plot_rates`).
    naive : {"resolved", "entered"}, optional
        Overlay the naive funnel as faint dashed outlines (computed from the
        result's counts), annotated in grey.
    annotate : bool, default True
    color : str
    **kwargs
        Passed to ``Axes.barh`` for the funnel bars.

    Returns
    -------
    Axes

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> import funnelstats as fs
    >>> ax = fs.plot_funnel(
    ...     fs.conversion(fs.load_sample()), naive="resolved", ax=Figure().subplots()
    ... )
    >>> [round(float(w), 3) for w in ax.containers[0].datavalues]
    [1.0, 0.544, 0.344, 0.253, 0.208]
    """
    if getattr(result, "value_column", None) != "conversion":
        raise ValueError(
            "plot_funnel draws a conversion() result (stage conversions); for win rates use "
            "plot_rates"
        )
    if naive is not None and naive not in NAIVE:
        raise ValueError(f"naive must be one of {list(NAIVE)} or None, got {naive!r}")
    if group is None and result.group_columns and _group_labels(result, result.frame).nunique() > 1:
        return plot_rates(result, ax=ax, **kwargs)
    f = _select(result, group)
    ax = get_ax(ax)
    value = result.value_column
    conv = f[value].to_numpy(dtype=float)
    stages = [str(s) for s in f["stage"]]
    reach = np.r_[1.0, np.cumprod(conv)]
    y = np.arange(len(reach))
    kwargs.setdefault("color", color)
    kwargs.setdefault("label", f"{result.method}")
    ax.barh(y, reach, left=-reach / 2, height=0.8, **kwargs)
    if naive is not None:
        nv = _naive_values(f, naive, result.success_column, result.failure_columns)
        nreach = np.r_[1.0, np.cumprod(nv)]
        ax.barh(
            y,
            nreach,
            left=-nreach / 2,
            height=0.8,
            fill=False,
            edgecolor="0.45",
            linestyle="--",
            alpha=0.7,
            label=f"naive ({naive})",
        )
    if annotate:
        mature = f["mature"].to_numpy(dtype=object) if "mature" in f.columns else None
        lo = f["ci_lower"].to_numpy(dtype=float)
        hi = f["ci_upper"].to_numpy(dtype=float)
        for i in range(len(conv)):
            final = mature is None or mature[i] is pd.NA or bool(mature[i])
            text = f"{'' if final else '≥'}{_pct(conv[i])} [{_pct(lo[i])}–{_pct(hi[i])}]"
            if naive is not None:
                ax.text(
                    0.62,
                    i + 0.22,
                    f"naive {_pct(nv[i])}",
                    va="center",
                    color="0.45",
                    fontsize="small",
                )
            ax.text(0.62, i - 0.1, text, va="center")
        ax.text(0, len(conv), _pct(reach[-1]), ha="center", va="center", color="white")
    ax.set_yticks(y, [*stages, "won"])
    ax.set_ylim(len(reach) - 0.5, -0.5)
    ax.set_xlim(-0.55, 1.25)
    ax.set_xticks([])
    ax.set_xlabel("share of deals entering the first stage (conversion per stage at right)")
    ax.set_title("Funnel" + (f" ({group})" if group is not None else ""))
    if naive is not None:
        ax.legend(loc="lower right", fontsize="small")
    return ax


def plot_rates(
    result: _RateResult,
    *,
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Horizontal bars of the estimate per stage, one colour per group, with intervals.

    Parameters
    ----------
    result : ConversionResult or WinRateResult
    ax : Axes, optional
    **kwargs
        Passed to ``Axes.barh``.

    Returns
    -------
    Axes

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> import funnelstats as fs
    >>> ax = fs.plot_rates(fs.win_rate(fs.load_sample(), by="Segment"), ax=Figure().subplots())
    >>> ax.get_legend_handles_labels()[1]
    ['Enterprise', 'Mid-Market', 'SMB']
    """
    ax = get_ax(ax)
    f = result.frame
    value = result.value_column
    labels = _group_labels(result, f)
    groups = list(dict.fromkeys(labels))
    stages = list(f["stage"].cat.categories)
    present = [s for s in stages if (f["stage"] == s).any()]
    pos = {s: i for i, s in enumerate(present)}
    height = 0.8 / max(len(groups), 1)
    for gi, g in enumerate(groups):
        part = f[(labels == g).to_numpy()]
        y = np.array([pos[str(s)] for s in part["stage"]]) - 0.4 + height * (gi + 0.5)
        est = part[value].to_numpy(dtype=float)
        err = np.vstack(
            [
                est - part["ci_lower"].to_numpy(dtype=float),
                part["ci_upper"].to_numpy(dtype=float) - est,
            ]
        )
        ax.barh(
            y,
            est,
            height=height,
            xerr=err,
            label=g if len(groups) > 1 else result.method,
            color=f"C{gi % 10}",
            error_kw={"ecolor": "0.2", "capsize": 2, "linewidth": 1},
            **kwargs,
        )
    ax.set_yticks(np.arange(len(present)), present)
    ax.set_ylim(len(present) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel(value.replace("_", " "))
    if len(groups) > 1:
        ax.legend(fontsize="small", title=" / ".join(result.group_columns))
    return ax


def plot_cohort_heatmap(
    result: _RateResult,
    *,
    ax: Axes | None = None,
    group: Any = None,
    annotate: bool = True,
    cmap: str = "viridis",
    colorbar: bool = True,
    **kwargs: Any,
) -> Axes:
    """Cohort x stage heat map of a ``cohort=`` conversion or win-rate result.

    Rows are creation periods (oldest on top), columns the stages; the colour
    is the estimate. Cells whose figure is not final (``mature`` False) are
    annotated with ``≥`` and hatched.

    Parameters
    ----------
    result : ConversionResult or WinRateResult
        Computed with ``cohort=``.
    ax : Axes, optional
    group : label, optional
        The ``by`` group to draw, when the result has one.
    annotate : bool, default True
    cmap : str
    colorbar : bool, default True
    **kwargs
        Passed to ``Axes.imshow``.

    Returns
    -------
    Axes

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> import funnelstats as fs
    >>> res = fs.conversion(fs.load_sample(), cohort="Q")
    >>> ax = fs.plot_cohort_heatmap(res, ax=Figure().subplots())
    >>> ax.images[0].get_array().shape
    (4, 4)
    """
    if not result.cohort:
        raise ValueError("plot_cohort_heatmap needs a result computed with cohort=")
    f = result.frame
    if result.by:
        if group is None:
            groups = list(dict.fromkeys(f[result.by].astype(str)))
            if len(groups) > 1:
                raise ValueError(
                    f"several {result.by} groups; pick one with group=, one of {groups}"
                )
            group = groups[0] if groups else None
        f = f[f[result.by].astype(str) == str(group)]
    value = result.value_column
    stages = list(f["stage"].cat.categories)
    cohorts = sorted(f["cohort"].dropna().unique())
    grid = f.pivot_table(
        index="cohort", columns="stage", values=value, observed=False, aggfunc="first"
    ).reindex(index=cohorts, columns=stages)
    mature = (
        f.assign(m=f["mature"].fillna(True).astype(bool))
        .pivot_table(index="cohort", columns="stage", values="m", observed=False, aggfunc="first")
        .reindex(index=cohorts, columns=stages)
    )
    ax = get_ax(ax)
    data = np.ma.masked_invalid(grid.to_numpy(dtype=float))
    kwargs.setdefault("vmin", 0.0)
    kwargs.setdefault("vmax", 1.0)
    im = ax.imshow(data, cmap=cmap, aspect="auto", **kwargs)
    m = mature.to_numpy(dtype=object)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = grid.iat[i, j]
            if not np.isfinite(v):
                continue
            final = (
                m[i, j] is None
                or (isinstance(m[i, j], float) and np.isnan(m[i, j]))
                or bool(m[i, j])
            )
            if not final:
                ax.add_patch(
                    _rect(j - 0.5, i - 0.5, hatch="//", fill=False, edgecolor="white", lw=0)
                )
            if annotate:
                shade = im.norm(v)
                ax.text(
                    j,
                    i,
                    f"{'' if final else '≥'}{_pct(v)}",
                    ha="center",
                    va="center",
                    color="black" if shade > 0.6 else "white",
                    fontsize="small",
                )
    ax.set_xticks(np.arange(len(stages)), stages)
    ax.set_yticks(np.arange(len(cohorts)), [str(c) for c in cohorts])
    ax.set_xlabel("stage")
    ax.set_ylabel("created")
    ax.set_title(f"{value.replace('_', ' ')} by creation cohort")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label=value.replace("_", " "))
    return ax


def _rect(x: float, y: float, **kwargs: Any):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), 1.0, 1.0, **kwargs)


def plot_cohort_curves(
    result: WinRateResult,
    *,
    ax: Axes | None = None,
    stage: str | None = None,
    group: Any = None,
    ci: bool = False,
    **kwargs: Any,
) -> Axes:
    """Win rate by days since reaching the stage, one step line per cohort (or group).

    A young cohort's line stops early and is still rising: its win rate is not
    final yet.

    Parameters
    ----------
    result : WinRateResult
        A direct estimate (``cohort=`` or ``horizon=``, or deal-level data).
    ax : Axes, optional
    stage : str, optional
        Which stage's curves (default: the first stage present).
    group : label, optional
        The ``by`` group, when the result has one and also cohorts.
    ci : bool, default False
        Shade each curve's pointwise interval.
    **kwargs
        Passed to ``Axes.step``.

    Returns
    -------
    Axes

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> import funnelstats as fs
    >>> res = fs.win_rate(fs.load_sample(), cohort="Q", from_stage="Prospecting")
    >>> ax = fs.plot_cohort_curves(res, ax=Figure().subplots())
    >>> [line.get_label() for line in ax.get_lines()]
    ['2024Q1', '2024Q2', '2024Q3', '2024Q4']
    """
    if result.curves is None:
        raise ValueError(
            "no curves: win rates by age come with cohort=, horizon= or deal-level data"
        )
    c = result.curves
    if stage is None:
        stage = str(c["stage"].iloc[0]) if len(c) else None
    c = c[c["stage"].astype(str) == str(stage)]
    if result.by and result.cohort:
        if group is None:
            groups = list(dict.fromkeys(c[result.by].astype(str)))
            if len(groups) > 1:
                raise ValueError(
                    f"several {result.by} groups; pick one with group=, one of {groups}"
                )
            group = groups[0] if groups else None
        c = c[c[result.by].astype(str) == str(group)]
    ax = get_ax(ax)
    key = "cohort" if result.cohort else (result.by if result.by else None)
    parts = (
        [(str(k), p) for k, p in c.groupby(key, observed=True, sort=True)] if key else [("all", c)]
    )
    color = kwargs.pop("color", None)
    if key == "cohort" and len(parts) > 1:
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        palette = [cmap(0.9 * i / (len(parts) - 1)) for i in range(len(parts))]
    else:
        palette = [f"C{i % 10}" for i in range(len(parts))]
    for i, (label, p) in enumerate(parts):
        x = p["age_days"].to_numpy(dtype=float)
        y = p["win_rate"].to_numpy(dtype=float)
        if not len(x) or x[0] > 0:
            x = np.r_[0.0, x]
            y = np.r_[0.0, y]
        col = color or palette[i]
        ax.step(x, y, where="post", label=label, color=col, **kwargs)
        if ci:
            lo = p["ci_lower"].to_numpy(dtype=float)
            hi = p["ci_upper"].to_numpy(dtype=float)
            xs = p["age_days"].to_numpy(dtype=float)
            ax.fill_between(xs, lo, hi, step="post", alpha=0.15, color=col, linewidth=0)
    ax.set_xlabel(f"days since reaching {stage}")
    ax.set_ylabel("win rate")
    ax.set_ylim(0, None)
    if len(parts) > 1:
        ax.legend(fontsize="small", title=key)
    return ax


def plot_comparison(result: GroupComparison, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Adjusted p-values of a group comparison on a -log10 scale, with the ``alpha`` line.

    Parameters
    ----------
    result : GroupComparison
    ax : Axes, optional
    **kwargs
        Passed to ``Axes.barh``.

    Returns
    -------
    Axes

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> import funnelstats as fs
    >>> cmp = fs.conversion(fs.load_sample(), by="Segment").compare()
    >>> ax = fs.plot_comparison(cmp, ax=Figure().subplots())
    >>> len(ax.patches)
    4
    """
    ax = get_ax(ax)
    f = result.frame
    keys = [c for c in ("stage", "cohort") if c in f.columns]
    label = f[keys].astype(str).agg(" ".join, axis=1) + ": " + f["comparison"].astype(str)
    with np.errstate(divide="ignore"):
        score = -np.log10(f["p_adj"].to_numpy(dtype=float))
    score = np.where(np.isfinite(score), score, np.nan)
    y = np.arange(len(f))
    kwargs.setdefault("color", np.where(f["reject"].to_numpy(dtype=bool), "C3", "C7"))
    ax.barh(y, score, **kwargs)
    ax.axvline(-np.log10(result.alpha), color="0.3", linestyle="--", linewidth=1)
    ax.set_yticks(y, label.tolist())
    ax.set_ylim(len(f) - 0.5, -0.5)
    ax.set_xlabel(f"-log10 adjusted p ({result.p_adjust}); dashed: alpha = {result.alpha:g}")
    return ax
