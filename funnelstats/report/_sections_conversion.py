"""The funnel section, built on :mod:`funnelstats.conversion`: per-stage conversion that
counts open deals as undecided, beside the naive formulas, by cohort and by group."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._model import Chart, Section, Table
from ._sections import Context
from ._style import COLORS, fmt_count, fmt_p, fmt_pct

if TYPE_CHECKING:
    from matplotlib.figure import FigureBase

__all__ = ["funnel_conversion"]


def _ci(r: dict[str, Any], value: str = "conversion") -> str:
    mark = "" if r.get("mature", True) is not False else "≥"
    return f"{mark}{fmt_pct(r[value])} ({fmt_pct(r['ci_lower'])}–{fmt_pct(r['ci_upper'])})"


def funnel_conversion(ctx: Context) -> Section:
    """Stage conversion (Aalen–Johansen), the naive formulas, the win rate from each stage."""
    from ..conversion import conversion

    conv = conversion(ctx.data, seed=ctx.seed)
    resolved = conversion(ctx.data, method="resolved").frame.set_index("stage")["conversion"]
    entered = conversion(ctx.data, method="entered").frame.set_index("stage")["conversion"]
    cohort = conversion(ctx.data, cohort="Q", seed=ctx.seed)
    wr = ctx.win_rates.frame.set_index("stage")
    f = conv.frame
    if not f["conversion"].notna().any():
        from ..errors import InsufficientHistoryError

        raise InsufficientHistoryError(
            "no deal has been in an open stage yet: every deal in the export was created "
            "already won or lost, so there is no stage conversion to show"
        )
    stages = [str(s) for s in f["stage"]]
    top = wr.loc[stages[0]]
    worst = f.loc[f["conversion"].idxmin()]
    lead = (
        f"{fmt_pct(top['win_rate'])} of the deals that enter the funnel are won (95% interval "
        f"{fmt_pct(top['ci_lower'])}–{fmt_pct(top['ci_upper'])}). The biggest leak is "
        f"{worst['stage']}: only {fmt_pct(worst['conversion'])} of the deals that reach it "
        "move on."
    )
    first = stages[0]
    gap = float(resolved[first] - f["conversion"].iloc[0])
    paragraphs = [
        "Deals still open are counted as undecided, not as lost and not ignored: each stage's "
        "figure is the share of the deals that reached it which get past it, allowing for "
        "the ones still there.",
        f"For comparison, the CRM's formula (won ÷ closed, open deals ignored) gives "
        f"{fmt_pct(resolved[first])} at {first}, and dividing by every deal that reached it "
        f"(open deals counted as lost) gives {fmt_pct(entered[first])}"
        + (
            "; on this export the difference is small because most deals have had time to close."
            if abs(gap) < 0.02 and abs(float(entered[first] - f["conversion"].iloc[0])) < 0.03
            else "; on a young export with many open deals both drift from the truth."
        ),
    ]
    rows = [
        (
            str(r["stage"]),
            fmt_count(r["entered"]),
            fmt_count(r["advanced"]),
            fmt_count(r["lost"]),
            fmt_count(r["open"]),
            _ci(r),
            fmt_pct(resolved[str(r["stage"])]),
            fmt_pct(entered[str(r["stage"])]),
            fmt_pct(wr.loc[str(r["stage"]), "win_rate"]),
        )
        for r in f.to_dict("records")
    ]
    tables = [
        Table.from_records(
            [
                "Stage",
                "Reached",
                "Moved on",
                "Lost",
                "Still open",
                "Conversion (95% CI)",
                "CRM formula",
                "Moved on ÷ reached",
                "Win rate from here",
            ],
            rows,
            numeric=[False, *([True] * 8)],
            title="Conversion per stage",
            note="≥ marks a figure that is not final yet: deals still open can only raise it."
            if (f["mature"] == False).any()  # noqa: E712 - pandas boolean column
            else "",
            frame=f,
        )
    ]
    notes = list(conv.notes)
    if ctx.by is not None:
        by_conv = conversion(ctx.data, by=ctx.by, seed=ctx.seed)
        cmp = by_conv.compare().frame.set_index("stage")
        g = by_conv.frame
        groups = [str(x) for x in dict.fromkeys(g[ctx.by].astype(str))]
        grow = []
        for s in stages:
            part = g[g["stage"].astype(str) == s]
            part = part.set_index(part[ctx.by].astype(str))
            p = float(cmp.loc[s, "p_adj"]) if s in cmp.index else float("nan")
            grow.append(
                (
                    s,
                    *(
                        fmt_pct(part.loc[x, "conversion"]) if x in part.index else "–"
                        for x in groups
                    ),
                    "–" if not np.isfinite(p) else fmt_p(p) + (" *" if p < 0.05 else ""),
                )
            )
        tables.append(
            Table.from_records(
                ["Stage", *groups, "p (Holm)"],
                grow,
                numeric=[False, *([True] * (len(groups) + 1))],
                title=f"Conversion by {ctx.by}",
                note="p: test of a difference between the groups at that stage, corrected "
                "for testing every stage (Holm); * below 0.05.",
                frame=g,
            )
        )
    return Section(
        key="funnel",
        title="Funnel and conversion",
        lead=lead,
        paragraphs=tuple(paragraphs),
        chart=Chart(
            draw=lambda fig: _draw_funnel(fig, conv, cohort),
            size=(10.0, 3.5),
            alt="Funnel of stage conversions and conversion by quarter of creation",
        ),
        caption=(
            "Left: the funnel, each bar the share of deals entering the first stage that get "
            "that far, with each stage's conversion and its 95% interval; the dashed outline is "
            "the CRM's formula. Right: conversion by quarter of creation (≥: still maturing)."
        ),
        tables=tuple(tables),
        notes=tuple(notes),
    )


def _draw_funnel(fig: FigureBase, conv: Any, cohort: Any) -> None:
    from ..plotting_conversion import plot_cohort_heatmap, plot_funnel

    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.25, 1])
    plot_funnel(conv, ax=ax1, naive="resolved", color=COLORS["open"])
    handles, labels = ax1.get_legend_handles_labels()
    names = {"aalen-johansen": "funnelstats (open deals undecided)"}
    labels = [names.get(x, "CRM formula (closed deals only)") for x in labels]
    ax1.legend(handles, labels, frameon=False, fontsize=8, loc="lower right")
    ax1.set_title("")
    ax1.set_xlabel("")
    ax1.tick_params(axis="y", length=0)
    for side in ("top", "right", "bottom", "left"):
        ax1.spines[side].set_visible(False)
    plot_cohort_heatmap(cohort, ax=ax2)
    ax2.set_title("")
    ax2.set_xlabel("")
    ax2.set_ylabel("created", fontsize=9)
    ax2.tick_params(labelsize=8.5)
