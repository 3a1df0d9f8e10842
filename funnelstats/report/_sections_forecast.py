"""Sections built on :mod:`funnelstats.forecast` and :mod:`funnelstats.snapshot`: the bookings
forecast and its backtest, the pipeline flow, the win-rate trend and sales velocity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _columns as C
from ._model import Chart, Kpi, Section, Table
from ._sections import Context, _tidy
from ._style import COLORS, fmt_count, fmt_date, fmt_money, fmt_pct

if TYPE_CHECKING:
    from matplotlib.figure import FigureBase

__all__ = [
    "bookings_forecast",
    "pipeline_flow",
    "run_backtest",
    "velocity_trend",
    "win_rate_trend",
]

#: Past cut-offs the forecast is replayed at (month ends), at most.
N_CUTOFFS = 6
#: Simulations and bootstrap refits of the forecast at each past cut-off.
BACKTEST_SIMS = 2_000
BACKTEST_BOOT = 20
#: From this many deals on, the backtest is lighter (:data:`LARGE_BACKTEST`): each
#: past forecast costs about as much as the headline one, which grows with the deals.
LARGE_DATA_DEALS = 250_000
#: The lighter backtest: cut-offs, simulations and bootstrap refits per cut-off.
LARGE_BACKTEST = (3, 1_000, 10)


@dataclass(frozen=True)
class BacktestSettings:
    """How the report replays the forecast at past month ends."""

    n_cutoffs: int
    n_sims: int
    n_boot: int
    lighter: bool

    def note(self, n_deals: int) -> str:
        """What the reader is told when the settings are lighter than the usual ones."""
        return (
            f"With {fmt_count(n_deals)} deals the backtest is lighter, to keep the report "
            f"quick: {self.n_cutoffs} past month ends (not {N_CUTOFFS}), each forecast with "
            f"{self.n_sims:,} simulations and {self.n_boot} bootstrap refits (not "
            f"{BACKTEST_SIMS:,} and {BACKTEST_BOOT}); the forecast above uses the full "
            "settings. funnelstats.backtest runs the backtest with any settings."
        )


def backtest_settings(ctx: Context) -> BacktestSettings:
    """The usual settings, or the lighter ones from :data:`LARGE_DATA_DEALS` deals on
    (never more simulations than the report's ``n_sims``)."""
    if ctx.data.n_deals >= LARGE_DATA_DEALS:
        n_cut, n_sims, n_boot = LARGE_BACKTEST
        return BacktestSettings(n_cut, min(n_sims, ctx.n_sims), n_boot, lighter=True)
    return BacktestSettings(N_CUTOFFS, min(BACKTEST_SIMS, ctx.n_sims), BACKTEST_BOOT, False)


def _horizon_text(ctx: Context) -> str:
    return f"{ctx.horizon_days:g} days"


def backtest_cutoffs(ctx: Context) -> list[pd.Timestamp]:
    """Month ends whose horizon has fully passed by the as-of date, latest first, with at
    least one horizon of history before them (as many as :func:`backtest_settings` says)."""
    last = ctx.as_of - pd.Timedelta(days=ctx.horizon_days)
    created = ctx.data.deals[C.CREATED_AT].dropna()
    if not len(created):
        return []
    earliest = created.min() + pd.Timedelta(days=ctx.horizon_days)
    ends = pd.date_range(
        end=last.tz_convert("UTC").tz_localize(None),
        periods=backtest_settings(ctx).n_cutoffs,
        freq="ME",
    ).tz_localize("UTC")
    return [c for c in ends if earliest <= c <= last]


# ---------------------------------------------------------------------- bookings forecast


def backtest_plan(ctx: Context) -> Any:
    """:func:`funnelstats.backtest` at :func:`backtest_cutoffs` with :func:`backtest_settings`,
    checked and ready to run one cut-off at a time (``None`` when fewer than two month ends
    qualify): the report's two processes share the cut-offs."""
    from ..forecast import _backtest_plan

    cutoffs = backtest_cutoffs(ctx)
    if len(cutoffs) < 2:
        return None
    settings = backtest_settings(ctx)
    return _backtest_plan(
        ctx.data,
        cutoffs=cutoffs,
        horizon=ctx.horizon,
        n_sims=settings.n_sims,
        seed=ctx.seed,
        include_new=True,
        by=None,
        amount_bands=5,
        age_classes=1,
        n_boot=settings.n_boot,
        probabilities="auto",
    )


def run_backtest(ctx: Context) -> Any:
    """The forecast replayed at :func:`backtest_cutoffs` with :func:`backtest_settings`
    (``None`` when fewer than two month ends qualify): :func:`funnelstats.backtest` with its
    defaults for every other setting (the settings of :func:`backtest_plan`)."""
    from ..forecast import backtest

    cutoffs = backtest_cutoffs(ctx)
    if len(cutoffs) < 2:
        return None
    settings = backtest_settings(ctx)
    return backtest(
        ctx.data,
        cutoffs=cutoffs,
        horizon=ctx.horizon,
        n_sims=settings.n_sims,
        n_boot=settings.n_boot,
        seed=ctx.seed,
        progress=False,
    )


def bookings_forecast(ctx: Context) -> Section:
    """Expected bookings in the horizon, its range, the CRM baseline and past accuracy."""
    fc = ctx.bookings
    wp = ctx.weighted
    t = fc.frame.set_index("component")
    total, opn, new = t.loc["total"], t.loc["open_pipeline"], t.loc["new_deals"]
    h = _horizon_text(ctx)
    end = ctx.as_of + pd.Timedelta(days=ctx.horizon_days)
    kpis = (
        Kpi(
            f"Expected bookings, next {h}",
            ctx.money(total["expected"]),
            f"80% range {ctx.money(total['p10'])} – {ctx.money(total['p90'])}",
            tone="won",
        ),
        Kpi(
            "From the open pipeline",
            ctx.money(opn["expected"]),
            f"{opn['expected_wins']:,.0f} of {fmt_count(opn['n_deals'])} open deals expected "
            "to win",
        ),
        Kpi(
            "From deals not yet created",
            ctx.money(new["expected"]),
            f"at the creation rate of the last {h}",
        ),
        Kpi(
            "CRM weighted pipeline",
            ctx.money(wp.total),
            "amount × the CRM's stage probability"
            if wp.source == "crm"
            else "amount × each stage's past win share",
            tone="accent",
        ),
    )
    lead = (
        f"We expect {ctx.money(total['expected'])} in bookings between {fmt_date(ctx.as_of)} "
        f"and {fmt_date(end)} (80% range {ctx.money(total['p10'])} – "
        f"{ctx.money(total['p90'])}): {ctx.money(opn['expected'])} from deals open today "
        f"and {ctx.money(new['expected'])} from deals not yet created."
    )
    paragraphs = [
        "Each open deal's chance of closing won in the window comes from how deals in its "
        "stage, with as many days in it, have moved on before, stage by stage; the range "
        "comes from simulating which deals close."
    ]
    settings = backtest_settings(ctx)
    bt = ctx.backtest
    tables = []
    extra_notes: tuple[str, ...] = ()
    if bt is not None:
        if settings.lighter:
            extra_notes = (settings.note(ctx.data.n_deals),)
        m = bt.metrics.set_index("method")
        ours, crm = m.loc["funnelstats"], m.loc["weighted_pipeline"]
        covered = int(bt.frame["covered"].sum())
        better = (
            "closer than"
            if ours["wape"] < crm["wape"]
            else ("less close than" if ours["wape"] > crm["wape"] else "as close as")
        )
        paragraphs.append(
            f"How good is it? Replayed at {len(bt.frame)} past month ends with only what was "
            f"known then, the forecast missed the bookings actually won by "
            f"{fmt_pct(ours['wape'])} on average, {better} the CRM weighted pipeline "
            f"({fmt_pct(crm['wape'])}); the actual result fell inside the 80% range "
            f"{covered} times out of {len(bt.frame)}."
        )
        tables.append(
            Table.from_records(
                ["Method", "Typical miss (WAPE)", "Bias", "Actual inside 80% range"],
                [
                    (
                        "funnelstats forecast",
                        fmt_pct(ours["wape"]),
                        _signed_pct(ours["bias"]),
                        f"{covered} of {len(bt.frame)}",
                    ),
                    (
                        "CRM weighted pipeline",
                        fmt_pct(crm["wape"]),
                        _signed_pct(crm["bias"]),
                        "no range",
                    ),
                ],
                numeric=[False, True, True, True],
                title=f"Backtest at {len(bt.frame)} past month ends",
                frame=bt.metrics,
            )
        )
    else:
        paragraphs.append(
            "The history is too short to replay the forecast at past dates and measure its "
            "accuracy."
        )
    deals = fc.deals
    top = deals.head(8)
    top = top.assign(_name=ctx.display_names(top).to_numpy())
    by_count = top[C.AMOUNT].to_numpy(dtype=float) * top["p_won"].to_numpy(dtype=float)
    if np.any(np.abs(top["expected_amount"].to_numpy(dtype=float) - by_count) > 0.005 * by_count):
        extra_notes += (
            "Open deals table: Expected is the amount times the chance weighted by deal value "
            "(in a stage, large deals win at their own rate), so it can differ from the amount "
            "times the chance shown, which counts every deal alike.",
        )
    tables.append(
        Table.from_records(
            ["Deal", "Stage", "Amount", f"Chance to win in {h}", "Expected"],
            [
                (
                    str(r["_name"]),
                    str(r[C.STAGE]),
                    ctx.money(r[C.AMOUNT]),
                    fmt_pct(r["p_won"]),
                    ctx.money(r["expected_amount"]),
                )
                for r in top.to_dict("records")
            ],
            numeric=[False, False, True, True, True],
            title="Open deals that weigh most on the forecast",
            frame=deals,
        )
    )
    return Section(
        key="bookings-forecast",
        title="Bookings forecast",
        lead=lead,
        kpis=kpis,
        paragraphs=tuple(paragraphs),
        chart=Chart(
            draw=lambda fig: _draw_forecast(fig, fc, bt),
            size=(10.0, 3.4),
            alt="Distribution of simulated bookings, and past forecasts against what was won",
        ),
        caption=(
            "Left: simulated bookings in the window; the dashed lines bound the 80% range. "
            "Right (when there is enough history): the forecast made at each past month end "
            "(blue, with its 80% range) and the CRM weighted pipeline (orange) against the "
            "bookings actually won (black)."
        ),
        tables=tuple(tables),
        notes=tuple(dict.fromkeys((*fc.notes, *wp.notes, *(bt.notes if bt else ()), *extra_notes))),
    )


def _signed_pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x * 100:+.0f}%"


def _draw_forecast(fig: FigureBase, fc: Any, bt: Any) -> None:
    from ..forecast import plot_backtest, plot_bookings

    axes = fig.subplots(1, 2 if bt is not None else 1, squeeze=False)[0]
    ax = plot_bookings(fc, ax=axes[0], color="#9CC3E0", bins=40)
    for line in ax.lines:
        name, _, value = line.get_label().partition(" ")
        try:
            line.set_label(f"{name} {fmt_money(float(value.replace(',', '')))}")
        except ValueError:
            pass
        line.set_color(COLORS["accent"] if name == "expected" else COLORS["ink"])
    ax.set_yticks([])
    ax.set_ylabel("")
    ax.xaxis.set_major_formatter(_money_axis())
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    _tidy(ax)
    ax.spines["left"].set_visible(False)
    ax.yaxis.grid(False)
    if bt is not None:
        ax2 = plot_backtest(bt, ax=axes[1])
        styles = {"funnelstats": COLORS["open"], "weighted pipeline": COLORS["accent"]}
        for line in ax2.lines:
            if line.get_label() in styles:
                line.set_color(styles[line.get_label()])
        for coll in ax2.collections:
            coll.set_color(COLORS["open"])
            coll.set_alpha(0.18)
        ax2.yaxis.set_major_formatter(_money_axis())
        ax2.set_ylabel("bookings in the window", fontsize=9)
        ax2.legend(frameon=False, fontsize=8, ncols=4, loc="lower left", bbox_to_anchor=(0, 1.0))
        ax2.tick_params(axis="x", labelsize=8)
        for label in ax2.get_xticklabels():
            label.set_rotation(0)
        import matplotlib.dates as mdates

        ax2.xaxis.set_major_formatter(mdates.DateFormatter("%b %Y"))
        ax2.xaxis.set_major_locator(mdates.MonthLocator())
        _tidy(ax2)


def _money_axis() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: fmt_money(v))


# -------------------------------------------------------------------------- pipeline flow


def pipeline_flow(ctx: Context) -> Section:
    """How the open pipeline changed over the last three months (:func:`funnelstats.flow`)."""
    from ..snapshot import flow

    end = ctx.as_of
    start = end - pd.DateOffset(months=3)
    fl = flow(ctx.data, start, end, scope="open")
    t = fl.frame.set_index("component")
    amt, cnt = t[C.AMOUNT], t["count"]
    lead = (
        f"Over the three months to {fmt_date(end)} the open pipeline went from "
        f"{ctx.money(amt['open_start'])} ({fmt_count(cnt['open_start'])} deals) to "
        f"{ctx.money(amt['open_end'])} ({fmt_count(cnt['open_end'])} deals): "
        f"{ctx.money(amt['created'])} was added by new deals, {ctx.money(-amt['won'])} was won "
        f"and {ctx.money(-amt['lost'])} was lost."
    )
    labels = {
        "open_start": f"Open on {fmt_date(start)}",
        "created": "Created",
        "reopened": "Reopened",
        "pulled_in": "Pulled into the period",
        "amount_increased": "Amounts raised",
        "amount_decreased": "Amounts cut",
        "won": "Won",
        "lost": "Lost",
        "pushed": "Pushed past the period",
        "open_end": f"Open on {fmt_date(end)}",
        "moved_forward": "Moved to a later stage (memo)",
        "moved_backward": "Moved back a stage (memo)",
    }
    rows = []
    for comp, r in fl.frame.set_index("component").iterrows():
        if r["role"] == "change" and r["count"] == 0 and r[C.AMOUNT] == 0:
            continue
        count = fmt_count(abs(r["count"])) if r["role"] != "change" or r["count"] else ""
        if r["role"] == "change" and r["count"]:
            count = f"{int(r['count']):+,}"
        amount = ctx.money(r[C.AMOUNT])
        if r["role"] == "change" and r[C.AMOUNT] > 0:
            amount = "+" + amount
        rows.append((labels.get(str(comp), str(comp)), count, amount, fmt_count(r["n_deals"])))
    return Section(
        key="pipeline-flow",
        title="Pipeline flow",
        lead=lead,
        chart=Chart(
            draw=lambda fig: _draw_flow(fig, fl, labels),
            size=(10.0, 3.3),
            alt="Waterfall of the open pipeline amount over the last three months",
        ),
        caption=(
            "The open pipeline amount at the start of the period, what was added (green) and "
            "taken out (red), and the amount open at the end. Every deal's changes add up "
            "exactly."
        ),
        tables=(
            Table.from_records(
                ["", "Deals", "Amount", "Deals involved"],
                rows,
                numeric=[False, True, True, True],
                title="The balance",
                frame=fl.frame,
            ),
        ),
        notes=tuple(fl.notes),
    )


def _draw_flow(fig: FigureBase, fl: Any, labels: dict[str, str]) -> None:
    import dataclasses

    from ..snapshot import plot_waterfall

    ax = fig.subplots()
    f = fl.frame
    empty = (f["role"] == "change") & (f["count"] == 0) & (f[C.AMOUNT] == 0)
    fl = dataclasses.replace(fl, frame=f[~empty.to_numpy()].reset_index(drop=True))
    plot_waterfall(fl, ax=ax, value="amount", width=0.7)
    shown = fl.frame.groupby("component", sort=False)["role"].first()
    shown = [c for c, role in shown.items() if role != "memo"]
    recolour = {"#4c72b0": COLORS["open"], "#55a868": COLORS["won"], "#c44e52": COLORS["lost"]}
    from matplotlib.colors import to_hex

    for p in ax.patches:
        p.set_facecolor(recolour.get(to_hex(p.get_facecolor()), p.get_facecolor()))
    short = {
        "open_start": "open at start",
        "open_end": "open at end",
        "amount_increased": "amounts raised",
        "amount_decreased": "amounts cut",
        "pulled_in": "pulled in",
    }
    ax.set_xticks(
        range(len(shown)),
        [short.get(c, c.replace("_", " ")) for c in shown],
        rotation=0,
        fontsize=8.5,
    )
    ax.set_title("")
    ax.set_ylabel("")
    ax.yaxis.set_major_formatter(_money_axis())
    _tidy(ax)


# -------------------------------------------------------------------------- win-rate trend


def win_rate_trend(ctx: Context) -> Section:
    """Cohort win rates and their forecast (:func:`funnelstats.forecast_win_rate`)."""
    fc = ctx.win_rate_forecast
    v = ctx.velocity
    f = fc.frame
    obs = f[f["kind"] == "observed"]
    fut = f[f["kind"] == "forecast"]
    last = obs.dropna(subset=["observed"]).iloc[-1]
    nxt = fut.iloc[0]
    lead = (
        f"Deals created in {last['period'].strftime('%B %Y')} (the latest month whose deals "
        f"have had time to close) win {fmt_pct(last['observed'])} of the time; the trend "
        f"points to about {fmt_pct(nxt['forecast'])} for deals created in the next months "
        f"(80% interval {fmt_pct(nxt['ci_lower'])} – {fmt_pct(nxt['ci_upper'])})."
    )
    vf = v.frame.set_index("period")
    rows = []
    for r in v.frame.tail(8).to_dict("records"):
        status = "final" if r["mature"] else f"still closing ({r['follow_up_days']:.0f} days)"
        rate = (
            f"{fmt_pct(r['win_rate'])} ({fmt_pct(r['ci_lower'])}–{fmt_pct(r['ci_upper'])})"
            if r["mature"]
            else "–"
        )
        rows.append(
            (
                r["period"].strftime("%b %Y"),
                fmt_count(r["n_created"]),
                rate,
                fmt_pct(r["win_rate_to_date"]),
                status,
            )
        )
    del vf
    return Section(
        key="win-rate-trend",
        title="Win-rate trend and forecast",
        lead=lead,
        paragraphs=(
            "A month's win rate is only final once its deals have had time to close: the "
            "most recent months are still closing, so their rate so far understates them. "
            "They are estimated by the model, not counted as final.",
        ),
        chart=Chart(
            draw=lambda fig: _draw_series(fig, fc, pct=True),
            size=(10.0, 3.0),
            alt="Win rate by month of creation with its forecast",
        ),
        caption=(
            "Win rate of the deals created each month (dots: months whose deals have had time "
            "to close), the model's estimate (line) and its 80% interval (band), three months "
            "ahead."
        ),
        tables=(
            Table.from_records(
                ["Created", "Deals", "Win rate (95% interval)", "Won so far", "Status"],
                rows,
                numeric=[False, True, True, True, False],
                title="Recent months",
                frame=v.frame,
            ),
        ),
        notes=tuple(fc.notes),
    )


def _draw_series(fig: FigureBase, fc: Any, *, pct: bool) -> None:
    from matplotlib.ticker import FuncFormatter, MultipleLocator, PercentFormatter

    from ..forecast import plot_series_forecast

    ax = fig.subplots()
    plot_series_forecast(fc, ax=ax)
    ax.lines[1].set_color(COLORS["open"])
    for coll in ax.collections:
        coll.set_color(COLORS["open"])
        coll.set_alpha(0.18)
    ax.lines[0].set_color(COLORS["ink"])
    if pct:
        # a round step giving at least three labels (a million deals make a narrow band)
        span = _span(fc)
        step = next((x for x in (0.05, 0.02, 0.01, 0.005, 0.002) if span >= 3 * x), 0.001)
        ax.yaxis.set_major_locator(MultipleLocator(step))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if step >= 0.01 else 1))
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: _money_axis()(v, _p)))
    ax.legend(frameon=False, fontsize=8, ncols=3, loc="upper left")
    ax.margins(y=0.25)
    _month_axis(ax)
    _tidy(ax)


# -------------------------------------------------------------------------------- velocity


def velocity_trend(ctx: Context) -> Section:
    """Sales velocity per creation month and its parts (:func:`funnelstats.velocity`)."""
    v = ctx.velocity
    f = v.frame
    mature = f[f["mature"] & np.isfinite(f["velocity"])]
    if not len(mature):
        return Section(
            key="velocity",
            title="Sales velocity",
            lead="No month's deals have had time to close yet, so velocity cannot be measured.",
        )
    last = mature.iloc[-1]
    slope = v.trend_per_period
    direction = (
        "rising"
        if slope > 0.02 * abs(last["velocity"])
        else "falling"
        if slope < -0.02 * abs(last["velocity"])
        else "flat"
    )
    lead = (
        f"Deals created in {last['period'].strftime('%B %Y')} moved "
        f"{ctx.money(last['velocity'])} of bookings per day through the pipeline; the trend "
        f"over the months with final figures is {direction} "
        f"({'+' if slope >= 0 else '-'}{ctx.money(abs(slope))} per day each month)."
    )
    rows = [
        (
            r["period"].strftime("%b %Y"),
            fmt_count(r["open_deals"]),
            ctx.money(r["avg_won_amount"]),
            fmt_pct(r["win_rate"]),
            f"{r['cycle_days']:,.0f}",
            ctx.money(r["velocity"]),
        )
        for r in mature.tail(6).to_dict("records")
    ]
    return Section(
        key="velocity",
        title="Sales velocity",
        lead=lead,
        paragraphs=(
            "Velocity = open deals × average won amount × win rate ÷ days to win: how much "
            "revenue the pipeline moves per day. Each part is shown so a change can be traced "
            "to its cause.",
        ),
        chart=Chart(
            draw=lambda fig: _draw_velocity(fig, v),
            size=(10.0, 2.8),
            alt="Sales velocity by month of creation with its trend",
        ),
        caption=(
            "Velocity of the deals created each month (months whose deals have had time to "
            "close) and its linear trend."
        ),
        tables=(
            Table.from_records(
                [
                    "Created",
                    "Open deals",
                    "Avg won amount",
                    "Win rate",
                    "Days to win",
                    "Velocity per day",
                ],
                rows,
                numeric=[False, True, True, True, True, True],
                title="The parts of velocity",
                frame=f,
            ),
        ),
        notes=tuple(v.notes),
    )


def _draw_velocity(fig: FigureBase, v: Any) -> None:
    ax = fig.subplots()
    v.plot(ax=ax, color=COLORS["open"])
    ax.lines[1].set_color(COLORS["muted"])
    ax.set_ylabel("per day", fontsize=9)
    ax.yaxis.set_major_formatter(_money_axis())
    ax.legend(frameon=False, fontsize=8)
    _month_axis(ax)
    _tidy(ax)


def _span(fc: Any) -> float:
    f = fc.frame[["observed", "ci_lower", "ci_upper"]].to_numpy(dtype=float)
    f = f[np.isfinite(f)]
    return float(f.max() - f.min()) if len(f) else 0.0


def _month_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %Y"))
    ax.tick_params(axis="x", labelsize=8.5)
