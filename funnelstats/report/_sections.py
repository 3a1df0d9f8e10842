"""The sections of the report, each built from the package's public functions and results.

A builder takes the :class:`Context` and returns a :class:`~._model.Section`. Builders only
arrange results into words, numbers, charts and tables; the statistics come from the
analysis modules.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import _columns as C
from ..ingest.report import RULES
from ._model import Chart, Kpi, Section, Table
from ._style import COLORS, fmt_count, fmt_date, fmt_days, fmt_money, stage_colors

if TYPE_CHECKING:
    from matplotlib.figure import FigureBase

    from ..data import FunnelData

__all__ = ["BUILDERS", "Context"]

#: Attribute names that hold a deal's display name, tried in this order.
_NAME_COLUMNS = ("Name", "name", "deal_name", "dealname", "Deal Name", "opportunity_name", "title")


@dataclass(frozen=True)
class Context:
    """What every section builder reads.

    Attributes
    ----------
    data : FunnelData
        The data cut at the report's as-of date.
    as_of : Timestamp
    by : str or None
        Attribute to compare groups by.
    seed : int
    horizon : str
        Forecast horizon (a pandas offset such as ``"90D"``).
    """

    data: FunnelData
    as_of: pd.Timestamp
    by: str | None
    seed: int
    horizon: str

    @property
    def currency(self) -> str | None:
        """The single currency code of the amounts, when the export names exactly one."""
        deals = self.data.deals
        if C.CURRENCY not in deals.columns:
            return None
        codes = deals[C.CURRENCY].dropna().astype(str).unique()
        return str(codes[0]) if len(codes) == 1 else None

    @property
    def mixed_currencies(self) -> bool:
        deals = self.data.deals
        return C.CURRENCY in deals.columns and deals[C.CURRENCY].dropna().nunique() > 1

    def money(self, x: object) -> str:
        return fmt_money(x, self.currency)

    def display_names(self, deals: pd.DataFrame) -> pd.Series:
        """The deal's name where the export has one, else its id."""
        for col in _NAME_COLUMNS:
            if col in deals.columns:
                names = deals[col].astype(object)
                return names.where(names.notna() & (names.astype(str) != ""), deals[C.DEAL_ID])
        return deals[C.DEAL_ID].astype(object)


_ABS_PATH = re.compile(r"(?:[A-Za-z]:)?[\\/](?:[^\s\\/,;:'\"()]+[\\/])+([^\s\\/,;:'\"()]+)")


def strip_folders(text: str) -> str:
    """Replace absolute file paths in ``text`` by their file names (reports travel).

    Examples
    --------
    >>> strip_folders("attributes from /home/ana/crm/Opportunity.csv, read as UTF-8")
    'attributes from Opportunity.csv, read as UTF-8'
    """
    return _ABS_PATH.sub(lambda m: m.group(1), text)


def _plain_name(path_or_name: str) -> str:
    return os.path.basename(path_or_name) or path_or_name


# --------------------------------------------------------------------------- overview


def overview(ctx: Context) -> Section:
    """Headline numbers: deals, won, open pipeline, lost; deals created per month by outcome."""
    deals = ctx.data.deals
    outcome = deals[C.OUTCOME].astype(str)
    amount = deals[C.AMOUNT]
    n = len(deals)
    n_won, n_lost, n_open = (int((outcome == o).sum()) for o in (C.WON, C.LOST, C.OPEN))
    won_amount = float(amount[outcome == C.WON].sum(min_count=1))
    open_amount = float(amount[outcome == C.OPEN].sum(min_count=1))
    created = deals[C.CREATED_AT].dropna()
    first, last = (created.min(), created.max()) if len(created) else (None, None)
    span = f"created {fmt_date(first)} – {fmt_date(last)}" if first is not None else ""
    kpis = (
        Kpi("Deals", fmt_count(n), span),
        Kpi("Won", ctx.money(won_amount), f"{fmt_count(n_won)} deals closed won"),
        Kpi("Open pipeline", ctx.money(open_amount), f"{fmt_count(n_open)} deals still open"),
        Kpi("Lost", fmt_count(n_lost), "deals closed lost"),
    )
    won_part = f" ({ctx.money(won_amount)})" if np.isfinite(won_amount) else ""
    open_part = (
        f" with {ctx.money(open_amount)} in the pipeline" if np.isfinite(open_amount) else ""
    )
    lead = (
        f"Of {fmt_count(n)} deals, {fmt_count(n_won)} have been won{won_part}, "
        f"{fmt_count(n_lost)} lost, and {fmt_count(n_open)} are still open{open_part}."
    )
    paragraphs = []
    no_amount = int(amount.isna().sum())
    if no_amount:
        paragraphs.append(
            f"{fmt_count(no_amount)} of the {fmt_count(n)} deals have no amount recorded; "
            "amounts are totals of the deals that have one."
        )
    if ctx.mixed_currencies:
        paragraphs.append(
            "Amounts are in several currencies and are added as recorded, without conversion."
        )
    chart = None
    if len(created):
        month = created.dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period("M")
        counts = (
            pd.crosstab(month, outcome.loc[created.index])
            .reindex(columns=[C.WON, C.LOST, C.OPEN], fill_value=0)
            .sort_index()
        )
        full = pd.period_range(counts.index.min(), counts.index.max(), freq="M")
        counts = counts.reindex(full, fill_value=0)
        chart = Chart(
            draw=lambda fig: _draw_monthly_outcomes(fig, counts),
            size=(9.5, 3.2),
            alt="Deals created each month, split by outcome so far",
        )
    tables = ()
    if ctx.by is not None:
        tables = (_by_group_table(ctx),)
    return Section(
        key="overview",
        title="Headline",
        lead=lead,
        kpis=kpis,
        paragraphs=tuple(paragraphs),
        chart=chart,
        caption=(
            "Deals created each month, coloured by what has happened to them so far. Recent "
            "months are mostly blue because their deals have not had time to close yet: "
            "that is not a drop in quality."
        ),
        tables=tables,
    )


def _draw_monthly_outcomes(fig: FigureBase, counts: pd.DataFrame) -> None:
    ax = fig.subplots()
    x = np.arange(len(counts))
    bottom = np.zeros(len(counts))
    labels = {C.WON: "won", C.LOST: "lost", C.OPEN: "still open"}
    for col in (C.WON, C.LOST, C.OPEN):
        v = counts[col].to_numpy(dtype=float)
        ax.bar(x, v, bottom=bottom, color=COLORS[col], width=0.8, label=labels[col])
        bottom += v
    ticks = [
        p.strftime("%b\n%Y") if (i == 0 or p.month == 1) else p.strftime("%b")
        for i, p in enumerate(counts.index)
    ]
    step = max(1, len(x) // 18)
    ax.set_xticks(x[::step], ticks[::step])
    ax.set_ylabel("deals created")
    ax.legend(frameon=False, ncols=3, loc="upper left", bbox_to_anchor=(0, 1.12))
    _tidy(ax)


def _tidy(ax) -> None:  # type: ignore[no-untyped-def]
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.spines["left"].set_color(COLORS["grid"])
    ax.spines["bottom"].set_color(COLORS["muted"])
    ax.tick_params(colors=COLORS["muted"], labelcolor=COLORS["ink"])
    ax.yaxis.grid(True, color=COLORS["grid"], linewidth=0.8)
    ax.set_axisbelow(True)


def _by_group_table(ctx: Context) -> Table:
    deals = ctx.data.deals
    by = ctx.by
    assert by is not None
    outcome = deals[C.OUTCOME].astype(str)
    key = deals[by].astype(object).where(deals[by].notna(), "(none)").astype(str)
    frame = pd.DataFrame(
        {
            "group": key,
            "won": outcome == C.WON,
            "lost": outcome == C.LOST,
            "open": outcome == C.OPEN,
            "won_amount": deals[C.AMOUNT].where(outcome == C.WON, 0.0),
            "open_amount": deals[C.AMOUNT].where(outcome == C.OPEN, 0.0),
        }
    )
    g = frame.groupby("group", sort=True)
    agg = pd.DataFrame(
        {
            "deals": g.size(),
            "won": g["won"].sum(),
            "lost": g["lost"].sum(),
            "open": g["open"].sum(),
            "won_amount": g["won_amount"].sum(),
            "open_amount": g["open_amount"].sum(),
        }
    ).sort_values("deals", ascending=False, kind="stable")
    rows = [
        (
            str(name),
            fmt_count(r.deals),
            fmt_count(r.won),
            fmt_count(r.lost),
            fmt_count(r.open),
            ctx.money(r.won_amount),
            ctx.money(r.open_amount),
        )
        for name, r in agg.iterrows()
    ]
    return Table.from_records(
        [by, "Deals", "Won", "Lost", "Open", "Won amount", "Open pipeline"],
        rows,
        numeric=[False, True, True, True, True, True, True],
        title=f"By {by}",
        frame=agg.reset_index(),
        max_rows=12,
        what="groups",
    )


# ------------------------------------------------------------------------- data quality


def data_quality(ctx: Context) -> Section:
    """The ingest report in plain words: every row read is accounted for."""
    r = ctx.data.report
    source = _plain_name(r.source)
    lead = (
        f"All {fmt_count(r.rows_read)} rows read from {source} are accounted for: "
        f"{fmt_count(r.rows_kept)} used as read, {fmt_count(r.rows_repaired)} repaired and "
        f"{fmt_count(r.rows_quarantined)} set aside."
    )
    if r.is_clean:
        lead = (
            f"All {fmt_count(r.rows_read)} rows read from {source} were used as read: "
            "nothing needed repairing or setting aside."
        )
    findings = r.findings
    paragraphs = [
        "Rows set aside are not used in any figure; repaired rows are used after the repair "
        "listed; kept rows are used as read, and the facts counted about them are listed "
        "because they change how a figure should be read."
    ]
    rows = [
        (
            {"quarantine": "set aside", "repair": "repaired", "note": "kept"}.get(
                str(f.kind), str(f.kind)
            ),
            fmt_count(f.rows),
            RULES[str(f.rule)].description if str(f.rule) in RULES else str(f.message),
            str(f.column) if isinstance(f.column, str) else "",
            fmt_count(f.first_row) if pd.notna(f.first_row) else "",
        )
        for f in findings.itertuples(index=False)
    ]
    tables = []
    if rows:
        tables.append(
            Table.from_records(
                ["What happened", "Rows", "Why", "Column", "First row"],
                rows,
                numeric=[False, True, False, False, True],
                title="Findings",
                frame=findings,
            )
        )
    q = r.quarantined
    if len(q):
        value_cols = [c for c in q.columns if c not in ("row", "rule", "column", "reason")]
        shown = q.head(8)
        qrows = [
            (
                fmt_count(rec["row"]),
                str(rec["reason"]),
                textwrap_short(
                    "; ".join(
                        f"{c}={rec[c]}" for c in value_cols[:4] if pd.notna(rec[c]) and rec[c] != ""
                    ),
                    90,
                ),
            )
            for rec in shown.to_dict("records")
        ]
        tables.append(
            Table.from_records(
                ["Row", "Reason", "Values (first columns)"],
                qrows,
                numeric=[True, False, False],
                title="Rows set aside",
                note=(
                    f"{fmt_count(len(q) - len(shown))} more rows not shown; all are in "
                    "data.report.quarantined."
                    if len(q) > len(shown)
                    else ""
                ),
                frame=q,
            )
        )
    notes = tuple(strip_folders(n) for n in r.notes)
    return Section(
        key="data-quality",
        title="Data quality",
        lead=lead,
        paragraphs=tuple(paragraphs),
        tables=tuple(tables),
        notes=notes,
    )


def textwrap_short(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis."""
    return text if len(text) <= width else text[: width - 1] + "…"


# ------------------------------------------------------------------------ open pipeline


def open_pipeline(ctx: Context) -> Section:
    """Where the open deals stand: count and amount per stage, and the largest deals."""
    data = ctx.data
    deals = data.deals
    is_open = deals[C.OUTCOME].astype(str) == C.OPEN
    open_deals = deals.loc[is_open]
    stages = list(data.pipeline.stages)
    stage = open_deals[C.STAGE].astype(str)
    count = stage.value_counts().reindex(stages, fill_value=0)
    amount = open_deals[C.AMOUNT].groupby(stage).sum(min_count=1).reindex(stages, fill_value=np.nan)
    if not len(open_deals):
        return Section(
            key="open-pipeline",
            title="Open pipeline",
            lead=f"No deal was open on {fmt_date(ctx.as_of)}.",
        )
    # time in the current stage: from the last stage entry of each open deal
    ev = data.events
    last = ev.drop_duplicates(C.DEAL_ID, keep="last").set_index(C.DEAL_ID)[C.ENTERED_AT]
    entered = last.reindex(open_deals[C.DEAL_ID].to_numpy())
    days_in_stage = (ctx.as_of - entered).dt.total_seconds().to_numpy() / 86_400.0
    age = (ctx.as_of - open_deals[C.CREATED_AT]).dt.total_seconds().to_numpy() / 86_400.0
    table_frame = pd.DataFrame(
        {
            "deal": ctx.display_names(open_deals).to_numpy(),
            "deal_id": open_deals[C.DEAL_ID].to_numpy(),
            "stage": stage.to_numpy(),
            "amount": open_deals[C.AMOUNT].to_numpy(),
            "days_in_stage": days_in_stage,
            "age_days": age,
        }
    )
    if ctx.by is not None:
        table_frame[ctx.by] = open_deals[ctx.by].astype(object).to_numpy()
    top = table_frame.sort_values(
        ["amount", "deal_id"], ascending=[False, True], na_position="last", kind="stable"
    )
    history = data.has_stage_history
    cols = ["Deal", "Stage", "Amount", "Days in stage", "Age (days)"]
    numeric = [False, False, True, True, True]
    if not history:  # deal-level export: when the deal entered its stage is unknown
        del cols[3], numeric[3]
    if ctx.by is not None:
        cols.insert(2, ctx.by)
        numeric.insert(2, False)
    rows = []
    for rec in top.head(10).to_dict("records"):
        row = [
            str(rec["deal"]),
            str(rec["stage"]),
            ctx.money(rec["amount"]),
            f"{rec['days_in_stage']:,.0f}" if np.isfinite(rec["days_in_stage"]) else "–",
            f"{rec['age_days']:,.0f}" if np.isfinite(rec["age_days"]) else "–",
        ]
        if not history:
            del row[3]
        if ctx.by is not None:
            row.insert(2, "" if pd.isna(rec[ctx.by]) else str(rec[ctx.by]))
        rows.append(row)
    biggest = int(count.to_numpy().argmax())
    total = float(amount.sum(min_count=1))
    worth = f" worth {ctx.money(total)}" if np.isfinite(total) else ""
    big_amount = float(amount.iloc[biggest])
    big_worth = f", {ctx.money(big_amount)}" if np.isfinite(big_amount) else ""
    lead = (
        f"{fmt_count(len(open_deals))} deals{worth} were open on {fmt_date(ctx.as_of)}; "
        f"the most crowded stage is {stages[biggest]} "
        f"({fmt_count(count.iloc[biggest])} deals{big_worth})."
    )
    median_age = float(np.nanmedian(age)) if len(age) else float("nan")
    paragraphs = (f"Half of the open deals were created more than {fmt_days(median_age)} ago.",)
    per_stage = pd.DataFrame(
        {"stage": stages, "deals": count.to_numpy(), "amount": amount.to_numpy()}
    )
    return Section(
        key="open-pipeline",
        title="Open pipeline",
        lead=lead,
        paragraphs=paragraphs,
        chart=Chart(
            draw=lambda fig: _draw_open_by_stage(fig, per_stage, ctx.money),
            size=(9.5, 2.8),
            alt="Open deals and their amount in each stage",
        ),
        caption="Open deals in each stage (left) and the amount they carry (right).",
        tables=(
            Table.from_records(
                cols,
                rows,
                numeric=numeric,
                title="Largest open deals",
                frame=top.reset_index(drop=True),
            ),
        ),
    )


def _draw_open_by_stage(
    fig: FigureBase, per_stage: pd.DataFrame, money: Callable[[object], str]
) -> None:
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(per_stage))[::-1]
    colors = stage_colors(len(per_stage))
    for ax, col, fmt in (
        (axes[0], "deals", fmt_count),
        (axes[1], "amount", money),
    ):
        v = np.nan_to_num(per_stage[col].to_numpy(dtype=float))
        ax.barh(y, v, color=colors, height=0.7)
        top = float(v.max()) if len(v) and v.max() > 0 else 1.0
        for yi, vi in zip(y, v):
            ax.text(
                vi + top * 0.01,
                yi,
                fmt(vi),
                va="center",
                ha="left",
                fontsize=9,
                color=COLORS["ink"],
            )
        ax.set_xlim(0, top * 1.22)
        ax.set_xticks([])
        ax.set_title(
            "deals" if col == "deals" else "amount", loc="left", fontsize=10, color=COLORS["muted"]
        )
        _tidy(ax)
        ax.yaxis.grid(False)
        ax.spines["bottom"].set_visible(False)
    axes[0].set_yticks(y, per_stage["stage"].tolist())
    axes[0].tick_params(axis="y", length=0)
    axes[1].tick_params(axis="y", length=0)


#: Section builders in report order: (name, builder).
BUILDERS: tuple[tuple[str, Callable[[Context], Section]], ...] = (
    ("headline", overview),
    ("data quality", data_quality),
    ("open pipeline", open_pipeline),
)
