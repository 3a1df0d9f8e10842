"""Sections built on :mod:`funnelstats.survival`: time in stage with the sales cycle, and
how stays in each stage end (competing outcomes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._model import Chart, Section, Table
from ._sections import Context, _tidy
from ._style import COLORS, fmt_count, fmt_days, fmt_p, fmt_pct, stage_colors

if TYPE_CHECKING:
    from matplotlib.figure import FigureBase

__all__ = ["competing_outcomes", "time_in_stage_section"]

#: Colours of the ways a stay ends, as everywhere in the report.
OUTCOME_COLORS = {
    "advanced": COLORS["won"],
    "lost": COLORS["lost"],
    "moved back": COLORS["accent"],
    "in stage": "#D9E2EC",
}


def _d(x: float) -> str:
    return "not reached" if not np.isfinite(x) else f"{x:,.0f}"


# -------------------------------------------------------------------------- time in stage


def time_in_stage_section(ctx: Context) -> Section:
    """Kaplan–Meier time in each stage, and the sales cycle from creation to won."""
    from ..survival import time_in_stage

    tis = time_in_stage(ctx.data)
    f = tis.frame
    if f.empty:
        from ..errors import InsufficientHistoryError

        raise InsufficientHistoryError(
            "no deal has stayed in an open stage yet, so there is no time in stage to show"
        )
    finite = f[np.isfinite(f["median"].to_numpy(dtype=float))]
    cyc = ctx.cycle
    won = cyc.frame.set_index("outcome").loc["won"]
    if len(finite) >= 2:
        slowest = finite.loc[finite["median"].idxmax()]
        fastest = finite.loc[finite["median"].idxmin()]
        lead = (
            f"Deals sit longest in {slowest['stage']} (half leave within "
            f"{fmt_days(slowest['median'])}) and move fastest through {fastest['stage']} "
            f"({fmt_days(fastest['median'])})."
        )
    elif len(finite) == 1:
        one = finite.iloc[0]
        lead = f"Half of the deals leave {one['stage']} within {fmt_days(one['median'])}."
    else:
        lead = "Too few deals have left their stage yet to say how long half of them stay."
    if np.isfinite(won["median"]):
        lead += f" Won deals take {fmt_days(won['median'])} from creation to close (median)."
    at = cyc.at([30, 60, 90]).set_index(["t", "outcome"])["probability"]
    paragraphs = [
        f"Of all deals created, {fmt_pct(at[(30.0, 'won')])} are won within 30 days, "
        f"{fmt_pct(at[(60.0, 'won')])} within 60 and {fmt_pct(at[(90.0, 'won')])} within 90 "
        f"({fmt_pct(won['probability'])} eventually).",
        "Deals still in a stage count up to today and then drop out of the count, so the "
        "long stays that have not ended yet are not lost. The average allows for them "
        "(within the longest stay seen); the plain average of finished stays, which a CRM "
        "shows, leaves them out and is listed for comparison.",
    ]
    rows = [
        (
            str(r["stage"]),
            fmt_count(r["n_entered"]),
            fmt_count(r["n_censored"]),
            f"{_d(r['median'])} ({_d(r['median_ci_lower'])}–{_d(r['median_ci_upper'])})",
            f"{_d(r['q25'])} – {_d(r['q75'])}",
            f"{r['restricted_mean']:,.0f}",
            f"{r['naive_mean_closed']:,.0f}",
        )
        for r in f.to_dict("records")
    ]
    tables = [
        Table.from_records(
            [
                "Stage",
                "Stays",
                "Still in it",
                "Median days (95% CI)",
                "Middle half (days)",
                "Average days",
                "Plain average of finished stays",
            ],
            rows,
            numeric=[False, True, True, True, True, True, True],
            title="Days in each stage",
            frame=f,
        )
    ]
    if ctx.by is not None:
        grouped = time_in_stage(ctx.data, by=ctx.by)
        g = grouped.frame.pivot_table(
            index="group", columns="stage", values="median", observed=True, sort=False
        )
        stages = [s for s in ctx.data.pipeline.stages if s in g.columns]
        p = grouped.logrank.set_index("stage")["p_value"] if grouped.logrank is not None else None
        tables.append(
            Table.from_records(
                [ctx.by, *stages],
                [(str(name), *(_d(r[s]) for s in stages)) for name, r in g.iterrows()],
                numeric=[False, *([True] * len(stages))],
                title=f"Median days in stage by {ctx.by}",
                note=(
                    "Log-rank test of a difference between groups, p-value per stage: "
                    + ", ".join(f"{s} {fmt_p(p[s])}" for s in stages if s in p.index)
                    if p is not None
                    else ""
                ),
                frame=grouped.frame,
            )
        )
    return Section(
        key="time-in-stage",
        title="Time in stage",
        lead=lead,
        paragraphs=tuple(paragraphs),
        chart=Chart(
            draw=lambda fig: _draw_time_in_stage(fig, tis, cyc, ctx),
            size=(10.0, 3.9),
            alt="Share of deals still in each stage by days in the stage, and time to win",
        ),
        caption=(
            "Left: the share of deals still in each stage after a given number of days (with "
            "95% bands); the numbers beneath are how many were still there. Right: the share "
            "of all deals won (and lost) by days since creation."
        ),
        tables=tuple(tables),
        notes=tuple(dict.fromkeys((*tis.notes, *cyc.notes))),
    )


def _draw_time_in_stage(fig: FigureBase, tis: Any, cyc: Any, ctx: Context) -> None:
    from ..survival import plot_stage_outcomes, plot_survival

    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.5, 1])
    ax1.set_prop_cycle(color=stage_colors(len(ctx.data.pipeline.stages)))
    plot_survival(tis, ax=ax1, linewidth=1.8)
    ax1.legend(frameon=False, fontsize=8.5)
    ax1.xaxis.label.set_size(9)
    ax1.yaxis.set_major_formatter(_pct_axis())
    _tidy(ax1)
    ax2.set_prop_cycle(color=[COLORS["won"], COLORS["lost"]])
    plot_stage_outcomes(cyc, ax=ax2, stacked=False, linewidth=1.8)
    ax2.yaxis.set_major_formatter(_pct_axis())
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("share of deals", fontsize=9)
    ax2.set_xlabel("days since created", fontsize=9)
    ax2.legend(frameon=False, fontsize=8.5)
    _tidy(ax2)


def _pct_axis() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0, decimals=0)


def pct_ticks(ax: Any) -> None:
    """Percent labels on round steps (no repeated labels after rounding)."""
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(_pct_axis())


# --------------------------------------------------------------------- competing outcomes


def competing_outcomes(ctx: Context) -> Section:
    """How stays in each stage end: advanced, lost or moved back (Aalen–Johansen)."""
    from ..survival import stage_outcomes

    so = stage_outcomes(ctx.data)
    f = so.frame
    names = list(so.outcomes)
    wide = f.pivot_table(
        index="stage", columns="outcome", values="probability", observed=True, sort=False
    ).reindex(columns=names, fill_value=0.0)
    med = f.pivot_table(
        index="stage", columns="outcome", values="median", observed=True, dropna=False
    ).reindex(columns=names)
    stages = [s for s in ctx.data.pipeline.stages if s in wide.index]
    if not stages:
        from ..errors import InsufficientHistoryError

        raise InsufficientHistoryError(
            "no deal has stayed in an open stage yet, so no stay has an ending to show"
        )
    leakiest = max(stages, key=lambda s: wide.loc[s, "lost"])
    lead = (
        f"{leakiest} loses the most deals: {fmt_pct(wide.loc[leakiest, 'lost'])} of stays "
        f"there end lost and {fmt_pct(wide.loc[leakiest, 'advanced'])} move on. "
    )
    later = [s for s in stages if med.loc[s, "lost"] > med.loc[s, "advanced"]]  # NaN: False
    if later:
        lead += (
            "In every stage" if len(later) == len(stages) else f"In {len(later)} stages"
        ) + " lost deals linger longer than the ones that move on: a deal that sits still is "
        lead += "at risk."
    rows = []
    for s in stages:
        rows.append(
            (
                s,
                fmt_pct(wide.loc[s, "advanced"]),
                fmt_pct(wide.loc[s, "lost"]),
                fmt_pct(wide.loc[s, "moved back"]),
                fmt_pct(wide.loc[s, "in stage"]),
                _d(med.loc[s, "advanced"]),
                _d(med.loc[s, "lost"]),
            )
        )
    return Section(
        key="stage-outcomes",
        title="How stays in each stage end",
        lead=lead,
        paragraphs=(
            "For the deals that entered each stage: the share that moved on, was lost or moved "
            "back, over time; deals still in the stage are counted as undecided, not as "
            "losses. At every point the shares add up to 100%.",
        ),
        chart=Chart(
            draw=lambda fig: _draw_outcomes(fig, so, stages),
            size=(10.0, 2.9),
            alt="Share of stays that advanced, were lost or are still open, by days in stage",
        ),
        caption=(
            "Each panel is one stage: green moved on, red lost, amber moved back, grey still "
            "in the stage, by days since entering it."
        ),
        tables=(
            Table.from_records(
                [
                    "Stage",
                    "Moved on",
                    "Lost",
                    "Moved back",
                    "Still in stage",
                    "Median days to move on",
                    "Median days to loss",
                ],
                rows,
                numeric=[False, True, True, True, True, True, True],
                title="Where stays end (estimated at the end of follow-up)",
                frame=f,
            ),
        ),
        notes=tuple(so.notes),
    )


def _draw_outcomes(fig: FigureBase, so: Any, stages: list[str]) -> None:
    from ..survival import plot_stage_outcomes

    axes = np.atleast_1d(fig.subplots(1, len(stages), sharey=True))
    colors = [OUTCOME_COLORS.get(o, COLORS["muted"]) for o in so.outcomes]
    for i, (ax, s) in enumerate(zip(axes, stages)):
        plot_stage_outcomes(so, stage=s, ax=ax, colors=colors)
        ax.set_title("")
        ax.set_title(s, fontsize=10, loc="left")
        ax.set_xlabel("days in stage", fontsize=8.5)
        ax.tick_params(labelsize=8)
        ax.yaxis.set_major_formatter(_pct_axis())
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        if i:
            ax.set_ylabel("")
        _tidy(ax)
        ax.yaxis.grid(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside upper right", ncols=len(labels), frameon=False, fontsize=8.5
    )
