"""The sections of the report, each built from the package's public functions and results.

A builder takes the :class:`Context` and returns a :class:`~._model.Section`. Builders only
arrange results into words, numbers, charts and tables; the statistics come from the
analysis modules.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _columns as C
from .._stays import require_history
from ..ingest.report import RULES
from ._model import Chart, Kpi, Section, Table
from ._style import COLORS, fmt_count, fmt_date, fmt_days, fmt_money, fmt_pct, stage_colors

if TYPE_CHECKING:
    from matplotlib.figure import FigureBase

    from ..data import FunnelData

__all__ = ["Context", "data_quality", "open_pipeline", "overview"]

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
    n_sims : int
        Simulated totals of the bookings forecast (the backtest's own settings:
        :func:`~funnelstats.report._sections_forecast.backtest_settings`).
    """

    data: FunnelData
    as_of: pd.Timestamp
    by: str | None
    seed: int
    horizon: str
    n_sims: int = 10_000
    #: Hand the backtest, the cohorts and half of the charts to a second process (large
    #: data, POSIX; see :func:`funnelstats.report.build_sections`).
    parallel: bool = False
    #: Analyses computing in another process (:mod:`._parallel`), by name.
    pending: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

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

    @property
    def horizon_days(self) -> float:
        return pd.Timedelta(pd.tseries.frequencies.to_offset(self.horizon)).total_seconds() / 86400

    # analyses several sections read, computed once (they raise InsufficientHistoryError on
    # deal-level data)
    @cached_property
    def cut(self) -> FunnelData:
        """The data as an export taken at the as-of date would show it (what
        :func:`~funnelstats.snapshot`, :func:`~funnelstats.forecast_bookings` and
        :func:`~funnelstats.weighted_pipeline` cut it to), made once for the three; the data
        itself when the cut would hold the same rows (the usual report, as of the export
        date), so its derived tables are not made, nor held, twice."""
        if _cut_is_same(self.data, self.as_of):
            return self.data
        return self.data.as_of(self.as_of)

    @cached_property
    def open_table(self) -> pd.DataFrame:
        """The deals open at the as-of date (:func:`funnelstats.snapshot`'s frame), shared by
        the snapshot, the forecast and the weighted pipeline, as :func:`~funnelstats.backtest`
        shares it at each cut-off."""
        from ..snapshot import _open_table

        return _open_table(self.cut, self.as_of)

    @cached_property
    def bookings(self) -> Any:
        """:func:`funnelstats.forecast_bookings` at the as-of date."""
        from ..forecast import _bookings_of_cut

        require_history(self.data, "forecast_bookings")
        return _bookings_of_cut(
            self.cut,
            self.as_of,
            self.open_table,
            horizon=self.horizon,
            n_sims=self.n_sims,
            seed=self.seed,
        )

    @cached_property
    def weighted(self) -> Any:
        """:func:`funnelstats.weighted_pipeline` at the as-of date over the horizon."""
        from ..forecast import _days, _weighted_cut

        require_history(self.data, "weighted_pipeline")
        return _weighted_cut(self.cut, self.as_of, self.open_table, _days(self.horizon), "auto")

    @cached_property
    def backtest(self) -> Any:
        """The forecast replayed at past month ends (``None`` when the history is too short);
        from the second process when it was started there (:func:`.build_sections`)."""
        part = self.pending.pop("backtest", None)
        if part is not None:
            return part.result()
        from ._sections_forecast import run_backtest

        return run_backtest(self)

    @cached_property
    def win_rates(self) -> Any:
        from ..conversion import win_rate

        return win_rate(self.data, seed=self.seed)

    @cached_property
    def cycle(self) -> Any:
        from ..survival import cycle_time

        return cycle_time(self.data)

    @cached_property
    def cohorts(self) -> Any:
        """Monthly creation cohorts, shared by the win-rate trend and velocity."""
        from .._forecast_velocity import cohort_table

        require_history(self.data, "velocity")
        part = self.pending.pop("cohorts", None)
        if part is not None:
            return part.result()
        return cohort_table(self.data, freq="M")

    @cached_property
    def win_rate_forecast(self) -> Any:
        """:func:`funnelstats.forecast_win_rate` (monthly, 3 periods, 80% intervals) on the
        shared cohorts."""
        from ..forecast import _win_rate_forecast_of_cohorts

        part = self.pending.pop("win_rate_forecast", None)
        if part is not None:
            return part.result()
        return _win_rate_forecast_of_cohorts(self.cohorts, freq="M", periods=3, alpha=0.2)

    @cached_property
    def velocity(self) -> Any:
        from ..forecast import _velocity_of_cohorts

        return _velocity_of_cohorts(self.data, self.cohorts)

    @cached_property
    def snapshot(self) -> Any:
        """:func:`funnelstats.snapshot` at the as-of date."""
        from ..snapshot import SnapshotResult, _snapshot_notes

        require_history(self.data, "snapshot")
        return SnapshotResult(
            frame=self.open_table,
            as_of=self.as_of,
            n_open=self.cut.pipeline.n_open,
            notes=_snapshot_notes(self.cut),
        )

    def display_names(self, frame: pd.DataFrame) -> pd.Series:
        """The name of each deal in ``frame`` (by ``deal_id``) where the export has one,
        else its id."""
        ids = frame[C.DEAL_ID].astype(object)
        deals = self.data.deals
        for col in _NAME_COLUMNS:
            if col in deals.columns:
                lookup = pd.Series(
                    deals[col].astype(object).to_numpy(), index=deals[C.DEAL_ID].astype(object)
                )
                names = ids.map(lookup)
                ok = names.notna() & (names.astype(str) != "")
                return names.where(ok, ids).reset_index(drop=True)
        return ids.reset_index(drop=True)


def _cut_is_same(data: FunnelData, ts: pd.Timestamp) -> bool:
    """True when ``data.as_of(ts)`` would be ``data`` again: cut at its export date, no row
    after it, no undated rows (a cut drops them), every creation date known and not after
    it, and the rows numbered 0, 1, ... as a cut numbers them."""
    from ..data import _ns

    if ts != data.exported_at:
        return False
    if data.undated is not None and len(data.undated):
        return False
    h = data.history
    index = h.index
    if not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
        return False
    if len(h) and not bool((_ns(h[C.AT]) <= ts.value).all()):
        return False
    created = data._created
    return created is None or bool((created.notna() & (created <= ts)).all())


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
    won = ctx.cycle.frame.set_index("outcome").loc["won"]
    wr = ctx.win_rates.frame.iloc[0]  # from the first stage (or creation, deal-level data)
    kpis = [
        Kpi("Won", ctx.money(won_amount), f"{fmt_count(n_won)} deals closed won", tone="won"),
        Kpi(
            "Win rate",
            fmt_pct(wr["win_rate"]),
            f"of the deals that enter the funnel are won (95% interval "
            f"{fmt_pct(wr['ci_lower'])}–{fmt_pct(wr['ci_upper'])}; open deals undecided)",
            tone="won",
        ),
        Kpi(
            "Open pipeline",
            ctx.money(open_amount),
            f"{fmt_count(n_open)} deals still open",
            tone="accent",
        ),
    ]
    won_part = f" ({ctx.money(won_amount)})" if np.isfinite(won_amount) else ""
    open_part = (
        f" with {ctx.money(open_amount)} in the pipeline" if np.isfinite(open_amount) else ""
    )
    lead = (
        f"Of {fmt_count(n)} deals, {fmt_count(n_won)} have been won{won_part}, "
        f"{fmt_count(n_lost)} lost, and {fmt_count(n_open)} are still open{open_part}."
    )
    if ctx.data.has_stage_history and n_open:
        t = ctx.bookings.frame.set_index("component").loc["total"]
        h = f"{ctx.horizon_days:g} days"
        kpis.append(
            Kpi(
                f"Expected bookings, next {h}",
                ctx.money(t["expected"]),
                f"80% range {ctx.money(t['p10'])} – {ctx.money(t['p90'])}",
                tone="won",
            )
        )
        lead += (
            f" We expect {ctx.money(t['expected'])} of bookings in the next {h} "
            f"(80% range {ctx.money(t['p10'])} – {ctx.money(t['p90'])})."
        )
    kpis.append(
        Kpi(
            "Days to win",
            f"{won['median']:,.0f}" if np.isfinite(won["median"]) else "–",
            "median, from creation, for won deals",
            tone="open",
        )
    )
    kpis.append(Kpi("Deals", fmt_count(n), span, tone="open"))
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
    r = ctx.data.report
    paragraphs.append(
        f"Data quality: all {fmt_count(r.rows_read)} rows of the export are accounted for "
        f"({fmt_count(r.rows_repaired)} repaired, {fmt_count(r.rows_quarantined)} set aside); "
        "see the last section."
    )
    return Section(
        key="overview",
        title="At a glance",
        lead=lead,
        kpis=tuple(kpis),
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
    """Where the open deals stand (:func:`funnelstats.snapshot`): per stage, and the largest."""
    snap = ctx.snapshot
    f = snap.frame
    per_stage = snap.by_stage().reset_index(drop=True)
    if not len(f):
        return Section(
            key="open-pipeline",
            title="Open pipeline",
            lead=f"No deal was open on {fmt_date(ctx.as_of)}.",
        )
    stages = per_stage[C.STAGE].astype(str).tolist()
    counts = per_stage["n_deals"].to_numpy()
    amounts = per_stage[C.AMOUNT].to_numpy(dtype=float)
    biggest = int(counts.argmax())
    total = float(f[C.AMOUNT].sum(min_count=1))
    worth = f" worth {ctx.money(total)}" if np.isfinite(total) else ""
    lead = (
        f"{fmt_count(len(f))} deals{worth} were open on {fmt_date(ctx.as_of)}; the most "
        f"crowded stage is {stages[biggest]} ({fmt_count(counts[biggest])} deals, "
        f"{ctx.money(amounts[biggest])})."
    )
    paragraphs = [
        f"Half of the open deals were created more than "
        f"{fmt_days(float(f['age_days'].median()))} ago and have sat in their current stage "
        f"for more than {fmt_days(float(f['age_in_stage_days'].median()))}."
    ]
    overdue = f["days_to_close"] < 0
    if overdue.any():
        paragraphs.append(
            f"{fmt_count(int(overdue.sum()))} open deals "
            f"({ctx.money(float(f.loc[overdue, C.AMOUNT].sum()))}) are past their expected "
            "close date."
        )
    names = ctx.display_names(f)
    top = f.assign(_name=names.to_numpy()).sort_values(
        [C.AMOUNT, C.DEAL_ID], ascending=[False, True], na_position="last", kind="stable"
    )
    cols = ["Deal", "Stage", "Amount", "Days in stage", "Age (days)", "Expected close"]
    numeric = [False, False, True, True, True, False]
    if ctx.by is not None:
        cols.insert(2, ctx.by)
        numeric.insert(2, False)
    rows = []
    for rec in top.head(10).to_dict("records"):
        close = rec["close_date"]
        close_text = "–" if pd.isna(close) else fmt_date(close)
        if not pd.isna(close) and rec["days_to_close"] < 0:
            close_text += " (overdue)"
        row = [
            str(rec["_name"]),
            str(rec[C.STAGE]),
            ctx.money(rec[C.AMOUNT]),
            f"{rec['age_in_stage_days']:,.0f}",
            f"{rec['age_days']:,.0f}",
            close_text,
        ]
        if ctx.by is not None:
            row.insert(2, "" if pd.isna(rec[ctx.by]) else str(rec[ctx.by]))
        rows.append(row)
    return Section(
        key="open-pipeline",
        title="Open pipeline",
        lead=lead,
        paragraphs=tuple(paragraphs),
        chart=Chart(
            draw=lambda fig: _draw_open_by_stage(fig, snap, ctx.money),
            size=(9.5, 2.9),
            alt="Open deals and their amount in each stage",
        ),
        caption="Open deals in each stage (left) and the amount they carry (right).",
        tables=(
            Table.from_records(
                cols,
                rows,
                numeric=numeric,
                title="Largest open deals",
                frame=top.drop(columns="_name").reset_index(drop=True),
            ),
        ),
        notes=tuple(snap.notes),
    )


def _draw_open_by_stage(fig: FigureBase, snap: Any, money: Callable[[object], str]) -> None:
    axes = fig.subplots(1, 2)
    n = len(snap.by_stage())
    colors = stage_colors(n)
    for ax, value, fmt, title in (
        (axes[0], "count", fmt_count, "open deals"),
        (axes[1], "amount", money, "open amount"),
    ):
        snap.plot(ax=ax, value=value, color=colors, width=0.7)
        bars = ax.containers[0]
        ax.bar_label(bars, labels=[fmt(b.get_height()) for b in bars], padding=2, fontsize=9)
        ax.set_title("")
        ax.set_title(title, loc="left", fontsize=10, color=COLORS["muted"])
        ax.set_ylabel("")
        ax.set_yticks([])
        ax.margins(y=0.15)
        _tidy(ax)
        ax.yaxis.grid(False)
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="x", length=0)
