"""The open pipeline at a point in time, and the flow of the pipeline between two dates.

Both are built from the history alone: :func:`snapshot` reads the data cut with
:meth:`FunnelData.as_of`, and :func:`flow` replays every history row between the
two dates, so neither can see anything recorded after the time it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from . import _columns as C
from ._currency import mixed_currency_note
from ._forecast_history import NAT, history_state, last_row_at
from ._result import Result, get_ax
from ._stays import NS_PER_DAY, group_codes, require_history
from .data import FunnelData, to_timestamp

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "FLOW_COMPONENTS",
    "FlowResult",
    "SnapshotResult",
    "flow",
    "plot_waterfall",
    "snapshot",
]


# ---------------------------------------------------------------------------
# snapshot


@dataclass(frozen=True, repr=False, kw_only=True)
class SnapshotResult(Result):
    """The open pipeline at ``as_of`` (see :func:`snapshot`)."""

    as_of: pd.Timestamp
    n_open: int
    title: ClassVar[str] = "Open pipeline"

    def by_stage(self) -> pd.DataFrame:
        """Open deals and amount per stage: ``stage, n_deals, amount, median_age_in_stage_days``."""
        f = self.frame
        g = f.groupby(C.STAGE, observed=False)
        out = pd.DataFrame(
            {
                "n_deals": g.size(),
                C.AMOUNT: g[C.AMOUNT].sum(min_count=0),
                "median_age_in_stage_days": g["age_in_stage_days"].median(),
            }
        )
        out = out.reset_index()
        return out[  # open stages only
            out[C.STAGE].isin(self.frame[C.STAGE].cat.categories[: self.n_open])
        ]

    def summary(self) -> str:
        f = self.frame
        head = (
            f"Open pipeline as of {self.as_of:%Y-%m-%d %H:%M} UTC: {len(f):,} deals, "
            f"amount {f[C.AMOUNT].sum():,.0f}"
        )
        with pd.option_context("display.width", 120, "display.float_format", "{:,.4g}".format):
            body = self.by_stage().to_string(index=False)
        notes = "".join(f"\n- {n}" for n in self.notes)
        return f"{head}\n{body}{notes}"

    def plot(self, *, ax: Axes | None = None, value: str = "amount", **kwargs: Any) -> Axes:
        """Bars of open amount (``value="amount"``) or deal count (``"count"``) per stage."""
        ax = get_ax(ax)
        t = self.by_stage()
        y = t[C.AMOUNT] if value == "amount" else t["n_deals"]
        if value not in ("amount", "count"):
            raise ValueError("value must be 'amount' or 'count'")
        ax.bar(t[C.STAGE].astype(str), y.to_numpy(dtype=float), **kwargs)
        ax.set_ylabel("open amount" if value == "amount" else "open deals")
        ax.set_title(f"Open pipeline as of {self.as_of:%Y-%m-%d}")
        return ax


def snapshot(data: FunnelData, as_of: Any = None) -> SnapshotResult:
    """The open pipeline as it stood at ``as_of``, from the history only.

    The data are cut with :meth:`FunnelData.as_of`, so the snapshot is what an
    export taken at ``as_of`` would have shown: stages, amounts and expected close
    dates are the last ones recorded by then, and deals created later are absent.

    Parameters
    ----------
    data : FunnelData
    as_of : date-like, optional
        The moment (naive values are UTC); default ``data.exported_at``.

    Returns
    -------
    SnapshotResult
        ``.frame`` has one row per open deal: ``deal_id, stage, entered_stage_at,
        age_in_stage_days, created_at, age_days, amount, close_date,
        days_to_close`` (``close_date`` is the expected close date last recorded by
        ``as_of``, NaT where the export has none; ``days_to_close`` is negative for
        overdue deals), then the deal attribute columns.

    Examples
    --------
    >>> import funnelstats as fs
    >>> snap = fs.snapshot(fs.load_sample(), "2024-06-30")
    >>> list(snap.frame.columns[:6])
    ['deal_id', 'stage', 'entered_stage_at', 'age_in_stage_days', 'created_at', 'age_days']
    >>> bool((snap.frame["age_in_stage_days"] <= snap.frame["age_days"]).all())
    True
    """
    require_history(data, "snapshot")
    cut_ts = data.exported_at if as_of is None else to_timestamp(as_of, name="as_of")
    cut = data.as_of(cut_ts)
    return SnapshotResult(
        frame=_open_table(cut, cut_ts),
        as_of=cut_ts,
        n_open=cut.pipeline.n_open,
        notes=_snapshot_notes(cut),
    )


def _open_table(cut: FunnelData, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per deal open in ``cut`` (already cut at ``as_of``)."""
    deals = cut.deals
    a = cut.arrays
    n_deals = len(deals)
    # entry time of each deal's last event (its current stage)
    last_entered = np.full(n_deals, NAT, dtype=np.int64)
    if len(a.deal):
        last = np.r_[a.deal[1:] != a.deal[:-1], True]
        last_entered[a.deal[last]] = a.entered[last]
    hs = history_state(cut)
    close = np.full(n_deals, NAT, dtype=np.int64)
    rows = last_row_at(hs, as_of.value)
    has = rows >= 0
    close[has] = hs.close[rows[has]]
    is_open = (deals[C.OUTCOME] == C.OPEN).to_numpy()
    idx = np.flatnonzero(is_open)
    now = as_of.value
    entered = last_entered[idx]
    created = deals[C.CREATED_AT].iloc[idx]
    created_ns = created.to_numpy(dtype="datetime64[ns]").view(np.int64)
    cd = close[idx]
    close_ts = pd.DatetimeIndex(cd.view("datetime64[ns]")).tz_localize("UTC")
    frame = pd.DataFrame(
        {
            C.DEAL_ID: deals[C.DEAL_ID].iloc[idx].to_numpy(),
            C.STAGE: deals[C.STAGE].iloc[idx].to_numpy(),
            "entered_stage_at": pd.DatetimeIndex(entered.view("datetime64[ns]")).tz_localize("UTC"),
            "age_in_stage_days": (now - entered) / NS_PER_DAY,
            C.CREATED_AT: created.to_numpy(),
            "age_days": (now - created_ns) / NS_PER_DAY,
            C.AMOUNT: deals[C.AMOUNT].iloc[idx].to_numpy(dtype=float),
            C.CLOSE_DATE: close_ts,
            "days_to_close": np.where(cd == NAT, np.nan, (cd - now) / NS_PER_DAY),
        }
    )
    frame[C.STAGE] = pd.Categorical(frame[C.STAGE], dtype=cut.pipeline.dtype)
    for col in cut.attributes:
        frame[col] = deals[col].iloc[idx].to_numpy()
        if isinstance(deals[col].dtype, pd.CategoricalDtype):
            frame[col] = pd.Categorical(frame[col], dtype=deals[col].dtype)
    return frame


def _snapshot_notes(cut: FunnelData) -> tuple[str, ...]:
    notes = []
    open_deals = cut.deals[cut.deals[C.OUTCOME] == C.OPEN]
    missing = int(open_deals[C.AMOUNT].isna().sum())
    if missing:
        notes.append(f"{missing} open deal(s) have no amount recorded (left out of amount sums)")
    notes.extend(mixed_currency_note(cut, open_deals[C.DEAL_ID]))
    return tuple(notes)


# ---------------------------------------------------------------------------
# flow

#: Components of the pipeline waterfall, in order (``pulled_in`` and ``pushed``
#: only with ``scope="closing"``; ``moved_*`` are memo lines that net to zero).
FLOW_COMPONENTS: tuple[str, ...] = (
    "open_start",
    "created",
    "reopened",
    "pulled_in",
    "amount_increased",
    "amount_decreased",
    "won",
    "lost",
    "pushed",
    "open_end",
    "moved_forward",
    "moved_backward",
)
_STAGE_COMPONENTS: tuple[str, ...] = (
    "open_start",
    "created",
    "reopened",
    "pulled_in",
    "amount_increased",
    "amount_decreased",
    "moved_in_forward",
    "moved_in_backward",
    "moved_out_forward",
    "moved_out_backward",
    "won",
    "lost",
    "pushed",
    "open_end",
)


_SCOPES = {"closing": "open deals expected to close by the end", "open": "all open deals"}


@dataclass(frozen=True, repr=False, kw_only=True)
class FlowResult(Result):
    """The pipeline waterfall between two dates (see :func:`flow`).

    Attributes
    ----------
    frame : DataFrame
        The waterfall per group (see :func:`flow`).
    by_stage : DataFrame
        The same balance per open stage.
    per_deal : DataFrame
        The balance of every deal that was in the pipeline at some time.
    """

    by_stage: pd.DataFrame
    per_deal: pd.DataFrame
    start: pd.Timestamp
    end: pd.Timestamp
    scope: str
    by: str | None = None
    title: ClassVar[str] = "Pipeline flow"

    def summary(self) -> str:
        head = (
            f"Pipeline flow {self.start:%Y-%m-%d} → {self.end:%Y-%m-%d} "
            f"(scope: {_SCOPES[self.scope]})"
        )
        with pd.option_context("display.width", 120, "display.float_format", "{:,.2f}".format):
            body = self.frame.to_string(index=False)
        notes = "".join(f"\n- {n}" for n in self.notes)
        return f"{head}\n{body}{notes}"

    def plot(self, *, ax: Axes | None = None, value: str = "amount", **kwargs: Any) -> Axes:
        """The waterfall (see :func:`plot_waterfall`)."""
        return plot_waterfall(self, ax=ax, value=value, **kwargs)


def flow(
    data: FunnelData,
    start: Any,
    end: Any,
    *,
    by: str | None = None,
    scope: str = "auto",
) -> FlowResult:
    """The pipeline waterfall between two dates, in deal count and amount.

    The pipeline open at ``start``, plus deals created, reopened (and, with
    ``scope="closing"``, pulled into the period), plus amount increases, minus
    amount decreases, minus deals won and lost (and pushed past the period end),
    equals the pipeline open at ``end``. Moves between stages are shown forward
    and backward; they net to zero in the total and balance in
    :attr:`FlowResult.by_stage`.

    Every history row in ``(start, end]`` is replayed in order. On each row an
    amount change is booked first (in the stage the deal was in), then the stage
    change, then the exit: a deal won with a different amount than it had while
    open shows the change as an increase or decrease and leaves at the amount it
    was won at. The identity holds exactly per deal, per stage and in total.

    Parameters
    ----------
    data : FunnelData
    start, end : date-like
        The period ``(start, end]``; the opening balance is the state at
        ``start``, the closing balance the state at ``end`` (both as
        :meth:`FunnelData.as_of` would show them).
    by : str, optional
        A deal attribute: one waterfall per group.
    scope : {"auto", "open", "closing"}
        ``"open"``: every open deal is in the pipeline. ``"closing"``: only open
        deals whose expected close date (as recorded at the time) is on or
        before ``end`` — the quarter's pipeline; a deal whose close date moves
        past ``end`` is *pushed*, one whose close date moves in is *pulled in*;
        deals with no close date recorded count as in scope. ``"auto"`` (the
        default) is ``"closing"`` when the export has close-date history, else
        ``"open"``.

    Returns
    -------
    FlowResult
        ``.frame``: one row per component (and group): ``component, role, count,
        amount, n_deals`` — ``role`` is ``"level"`` (``open_start``, ``open_end``),
        ``"change"`` (signed: ``count`` and ``amount`` add up from the opening to
        the closing balance) or ``"memo"`` (``moved_forward``/``moved_backward``:
        number of moves and amount moved, which net to zero); ``n_deals`` is
        the number of deals the line involves. With ``by=`` a first column
        ``group``. ``.by_stage``: ``[group,] stage, component, count, amount``,
        signed, with the moves as ``moved_in_*`` / ``moved_out_*``.
        ``.per_deal``: ``deal_id, [group,] stage_start, stage_end`` and the count
        and amount of every component (``<component>_count``,
        ``<component>_amount``).

    Notes
    -----
    Amounts carry forward within a deal while a row leaves them empty; a deal
    with no amount recorded yet counts with amount 0 (the result's notes say
    how many).

    Examples
    --------
    >>> import funnelstats as fs
    >>> f = fs.flow(fs.load_sample(), "2024-04-01", "2024-06-30", scope="open")
    >>> t = f.frame.set_index("component")
    >>> change = t.loc[t["role"] == "change", "count"].sum()
    >>> bool(t.loc["open_start", "count"] + change == t.loc["open_end", "count"])
    True
    """
    require_history(data, "flow")
    t0 = to_timestamp(start, name="start")
    t1 = to_timestamp(end, name="end")
    if t1 <= t0:
        raise ValueError(f"end ({t1}) must be after start ({t0})")
    if t1 > data.exported_at:
        raise ValueError(
            f"end {t1} is after the export date {data.exported_at}: the data holds nothing "
            "about that time"
        )
    hs = history_state(data)
    if scope == "auto":
        scope = "closing" if hs.has_close_dates else "open"
    if scope not in ("open", "closing"):
        raise ValueError(f"scope must be 'auto', 'open' or 'closing', got {scope!r}")
    if scope == "closing" and not hs.has_close_dates:
        raise ValueError("scope='closing' needs expected close dates; the export has none")
    n_deals = data.n_deals
    n_stage = len(data.pipeline.order)
    end_ns = t1.value

    def member(kind: np.ndarray, close: np.ndarray) -> np.ndarray:
        m = kind == 0
        if scope == "closing":
            m &= (close == NAT) | (close <= end_ns)
        return m

    # ---- balances at start and end
    def balance(t_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = last_row_at(hs, t_ns)
        ok = r >= 0
        rr = np.maximum(r, 0)
        m = ok & member(hs.kind[rr], hs.close[rr])
        amt = np.where(m, np.nan_to_num(hs.amount[rr]), 0.0)
        stage = np.where(ok, hs.stage[rr], -1)
        return m, amt, stage

    m0, a0, s0 = balance(t0.value)
    m1, a1, s1 = balance(end_ns)

    # ---- replay rows in (start, end]
    w = np.flatnonzero((hs.at > t0.value) & (hs.at <= end_ns))
    prev = w - 1
    p_present = ~hs.first[w]
    pp = np.maximum(prev, 0)
    p_kind = np.where(p_present, hs.kind[pp], -1)
    p_m = p_present & member(hs.kind[pp], hs.close[pp])
    p_amt = np.where(p_present, np.nan_to_num(hs.amount[pp]), 0.0)
    p_stage = np.where(p_present, hs.stage[pp], -1)
    n_m = member(hs.kind[w], hs.close[w])
    n_amt = np.nan_to_num(hs.amount[w])
    nxt_stage = hs.stage[w]
    n_kind = hs.kind[w]
    deal = hs.deal[w]

    entering = ~p_m & n_m
    created = entering & ~p_present
    reopened = entering & p_present & (p_kind > 0)
    pulled = entering & p_present & (p_kind == 0)
    delta = np.where(p_m, n_amt - p_amt, 0.0)
    moved = p_m & n_m & (nxt_stage != p_stage)
    fwd = moved & (nxt_stage > p_stage)
    back = moved & (nxt_stage < p_stage)
    leaving = p_m & ~n_m
    won = leaving & (n_kind == 1)
    lost = leaving & (n_kind == 2)
    pushed = leaving & (n_kind == 0)

    # (component, row mask, sign, amount per row, stage per row)
    rows: list[tuple[str, np.ndarray, int, np.ndarray, np.ndarray]] = [
        ("created", created, 1, n_amt, nxt_stage),
        ("reopened", reopened, 1, n_amt, nxt_stage),
        ("pulled_in", pulled, 1, n_amt, nxt_stage),
        ("amount_increased", delta > 0, 0, delta, p_stage),
        ("amount_decreased", delta < 0, 0, delta, p_stage),
        ("moved_in_forward", fwd, 1, n_amt, nxt_stage),
        ("moved_in_backward", back, 1, n_amt, nxt_stage),
        ("moved_out_forward", fwd, -1, -n_amt, p_stage),
        ("moved_out_backward", back, -1, -n_amt, p_stage),
        ("won", won, -1, -n_amt, p_stage),
        ("lost", lost, -1, -n_amt, p_stage),
        ("pushed", pushed, -1, -n_amt, p_stage),
    ]

    # ---- per deal, over the deals open at either end or with a row in the period
    # (``deals``, ascending); every other deal has nothing in any component
    mark = m0 | m1
    mark[deal] = True
    deals = np.flatnonzero(mark)
    local = (np.cumsum(mark) - 1)[deal]
    n_local = len(deals)
    per_count: dict[str, np.ndarray] = {}
    per_amount: dict[str, np.ndarray] = {}
    # per (deal, stage) cell: the key and the amount of each row, summed per group below
    per_stage: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    for name, mask, sign, amt, stg in rows:
        d = local[mask]
        per_count[name] = sign * np.bincount(d, minlength=n_local)
        per_amount[name] = np.bincount(d, weights=amt[mask], minlength=n_local)
        per_stage[name] = (deal[mask] * n_stage + stg[mask], amt[mask], sign)
    per_stage["open_start"] = (np.flatnonzero(m0) * n_stage + s0[m0], a0[m0], 1)
    per_stage["open_end"] = (np.flatnonzero(m1) * n_stage + s1[m1], a1[m1], 1)
    per_count["open_start"], per_amount["open_start"] = m0[deals].astype(np.int64), a0[deals]
    per_count["open_end"], per_amount["open_end"] = m1[deals].astype(np.int64), a1[deals]
    for memo, a_in in (
        ("moved_forward", "moved_in_forward"),
        ("moved_backward", "moved_in_backward"),
    ):
        per_count[memo] = per_count[a_in]
        per_amount[memo] = per_amount[a_in]

    gcode, labels = group_codes(data, by)
    n_groups = len(labels)
    components = [
        c for c in FLOW_COMPONENTS if scope == "closing" or c not in ("pulled_in", "pushed")
    ]
    stage_components = [
        c for c in _STAGE_COMPONENTS if scope == "closing" or c not in ("pulled_in", "pushed")
    ]

    # ---- total per group
    records = []
    local_group = gcode[deals]
    for g in range(n_groups):
        sel = local_group == g
        for c in components:
            role = (
                "level"
                if c in ("open_start", "open_end")
                else ("memo" if c.startswith("moved") else "change")
            )
            cnt, amt = per_count[c][sel], per_amount[c][sel]
            if c.startswith("amount_"):
                involved = int(np.count_nonzero(amt))
            else:
                involved = int(np.count_nonzero(cnt))
            rec = {
                "component": c,
                "role": role,
                "count": int(cnt.sum()),
                C.AMOUNT: float(amt.sum()),
                "n_deals": involved,
            }
            if by is not None:
                rec = {"group": labels[g], **rec}
            records.append(rec)
    frame = pd.DataFrame.from_records(records)

    # ---- per stage (and group)
    open_names = list(data.pipeline.stages)
    n_open = len(open_names)
    stage_sums = {
        c: _group_stage_sums(*per_stage[c], gcode, n_groups, n_stage) for c in stage_components
    }
    srec = []
    for g in range(n_groups):
        for c in stage_components:
            cnt, amt = stage_sums[c][0][g], stage_sums[c][1][g]
            for s in range(n_open):
                rec = {
                    C.STAGE: open_names[s],
                    "component": c,
                    "count": int(round(cnt[s])),
                    C.AMOUNT: float(amt[s]),
                }
                if by is not None:
                    rec = {"group": labels[g], **rec}
                srec.append(rec)
    by_stage = pd.DataFrame.from_records(srec)
    by_stage[C.STAGE] = pd.Categorical(by_stage[C.STAGE], categories=open_names, ordered=True)

    # ---- per deal: every deal in the pipeline at some time in the period
    touched = m0[deals] | m1[deals]
    for c in components:
        touched |= (per_count[c] != 0) | (per_amount[c] != 0)
    li = np.flatnonzero(touched)  # positions in ``deals``
    idx = deals[li]
    order = data.pipeline.order
    per_deal = pd.DataFrame({C.DEAL_ID: data.deals[C.DEAL_ID].iloc[idx].to_numpy()})
    if by is not None:
        per_deal["group"] = np.asarray(labels, dtype=object)[gcode[idx]]
    per_deal["stage_start"] = pd.Categorical(
        np.where(m0[idx], np.asarray(order, dtype=object)[np.maximum(s0[idx], 0)], None),
        categories=open_names,
        ordered=True,
    )
    per_deal["stage_end"] = pd.Categorical(
        np.where(m1[idx], np.asarray(order, dtype=object)[np.maximum(s1[idx], 0)], None),
        categories=open_names,
        ordered=True,
    )
    for c in components:
        per_deal[f"{c}_count"] = per_count[c][li]
        per_deal[f"{c}_amount"] = per_amount[c][li]

    notes = []
    unknown = int(np.count_nonzero((m0 | m1) & np.isnan(_amount_at_end(hs, n_deals, end_ns))))
    if unknown:
        notes.append(f"{unknown} deal(s) in the pipeline have no amount recorded (counted as 0)")
    if scope == "closing":
        no_close = int(np.count_nonzero(m1 & (_close_at(hs, n_deals, end_ns) == NAT)))
        if no_close:
            notes.append(f"{no_close} open deal(s) have no expected close date (kept in scope)")
    return FlowResult(
        frame=frame,
        by_stage=by_stage,
        per_deal=per_deal,
        start=t0,
        end=t1,
        scope=scope,
        by=by,
        notes=(*notes, *mixed_currency_note(data, per_deal[C.DEAL_ID])),
    )


def _group_stage_sums(
    key: np.ndarray,
    amount: np.ndarray,
    sign: int,
    gcode: np.ndarray,
    n_groups: int,
    n_stage: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows per (group, stage) times ``sign`` and their amount, ``(n_groups, n_stage)`` each,
    from the rows' (deal, stage) cells ``key = deal * n_stage + stage``.

    The amounts are added as a dense (deal, stage) table of per-cell sums summed over the
    group's deals would add them (each cell's rows in order, then the cells in deal order),
    but only over the cells that occur: a million deals need no table of millions of cells.
    """
    cells, inv = np.unique(key, return_inverse=True)
    where = gcode[cells // n_stage] * n_stage + cells % n_stage
    n = n_groups * n_stage
    count = np.bincount(where, weights=np.bincount(inv, minlength=len(cells)), minlength=n)
    cell_amount = np.bincount(inv, weights=amount, minlength=len(cells))
    total = np.bincount(where, weights=cell_amount, minlength=n)
    return sign * count.reshape(n_groups, n_stage), total.reshape(n_groups, n_stage)


def _amount_at_end(hs: Any, n_deals: int, t_ns: int) -> np.ndarray:
    r = last_row_at(hs, t_ns)
    return np.where(r >= 0, hs.amount[np.maximum(r, 0)], np.nan)


def _close_at(hs: Any, n_deals: int, t_ns: int) -> np.ndarray:
    r = last_row_at(hs, t_ns)
    return np.where(r >= 0, hs.close[np.maximum(r, 0)], NAT)


# ---------------------------------------------------------------------------
# plot


def plot_waterfall(
    result: FlowResult,
    *,
    ax: Axes | None = None,
    value: str = "amount",
    group: str | None = None,
    **kwargs: Any,
) -> Axes:
    """Draw a pipeline waterfall: opening bar, floating change bars, closing bar.

    Parameters
    ----------
    result : FlowResult
    ax : Axes, optional
    value : {"amount", "count"}
    group : str, optional
        With ``by=``: the group to draw (default: all groups added up).
    **kwargs
        Passed to ``Axes.bar``.

    Returns
    -------
    Axes
        One bar per level and change line, in the order of ``result.frame``
        (memo lines are not drawn): levels from zero, changes floating from the
        running total (green up, red down).

    Examples
    --------
    >>> import funnelstats as fs
    >>> f = fs.flow(fs.load_sample(), "2024-04-01", "2024-06-30")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = plot_waterfall(f, ax=ax)
    >>> len(ax.patches) == int((f.frame["role"] != "memo").sum())
    True
    """
    if value not in ("amount", "count"):
        raise ValueError("value must be 'amount' or 'count'")
    ax = get_ax(ax)
    f = result.frame
    if group is not None:
        if "group" not in f.columns:
            raise ValueError("group= needs a flow computed with by=")
        f = f[f["group"] == group]
        if f.empty:
            raise ValueError(f"no group {group!r} in the flow")
    col = C.AMOUNT if value == "amount" else "count"
    t = f.groupby("component", sort=False).agg(role=("role", "first"), v=(col, "sum"))
    t = t[t["role"] != "memo"]
    bottoms, heights, colors = [], [], []
    running = 0.0
    for _name, row in t.iterrows():
        v = float(row["v"])
        if row["role"] == "level":
            bottoms.append(0.0)
            heights.append(v)
            colors.append("#4c72b0")
            running = v
        else:
            bottoms.append(running if v >= 0 else running + v)
            heights.append(abs(v))
            colors.append("#55a868" if v >= 0 else "#c44e52")
            running += v
    kwargs.setdefault("edgecolor", "none")
    labels = [c.replace("_", " ") for c in t.index]
    ax.bar(labels, heights, bottom=bottoms, color=colors, **kwargs)
    ax.set_ylabel("amount" if value == "amount" else "deals")
    ax.set_title(f"Pipeline flow {result.start:%Y-%m-%d} → {result.end:%Y-%m-%d}")
    ax.tick_params(axis="x", labelrotation=45)
    return ax
