"""FunnelData: the tidy event table, the deals table, the pipeline and the ingest report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import _columns as C
from .errors import FunnelDataError
from .pipeline import Pipeline

if TYPE_CHECKING:
    from .ingest.report import IngestReport

__all__ = ["FunnelData", "to_timestamp"]

_NAT = np.iinfo(np.int64).min


def to_timestamp(value: Any, *, name: str = "timestamp") -> pd.Timestamp:
    """A UTC ``Timestamp`` from a string, date, datetime or Timestamp.

    Naive values are taken as UTC.

    Examples
    --------
    >>> to_timestamp("2024-03-31")
    Timestamp('2024-03-31 00:00:00+0000', tz='UTC')
    """
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: cannot read {value!r} as a date or time ({exc})") from None
    if ts is pd.NaT:
        raise ValueError(f"{name}: a date or time is required, got {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True, eq=False, repr=False)
class FunnelData:
    """Stage history of a set of deals, cleaned and ready for analysis.

    Build it with :func:`funnelstats.read`, :func:`funnelstats.read_events`,
    :func:`funnelstats.read_deals` or :meth:`from_events`; every analysis
    function takes it as its first argument.

    Attributes
    ----------
    events : DataFrame
        The tidy event table, one row per deal per stage entry, sorted by
        ``deal_id`` and ``entered_at``: ``deal_id`` (string), ``stage`` (ordered
        categorical in pipeline order), ``entered_at`` and ``exited_at``
        (datetime64[ns, UTC]; ``exited_at`` is NaT while the deal is still in the
        stage), ``next_stage`` (NA while still there), ``amount`` (float64, the
        amount recorded at entry).
    deals : DataFrame
        One row per deal: ``deal_id, created_at, outcome`` (``won``/``lost``/
        ``open``), ``closed_at, amount`` (latest), ``stage`` (current),
        ``furthest_stage`` (furthest open stage entered, or the won stage), then
        ``currency`` where the export has one and the attribute columns.
    history : DataFrame
        Every kept input row, stage changes and field updates alike: ``deal_id,
        at, stage, amount, close_date`` (expected close date where the export
        has one), ``source_row`` and the attribute columns. The events and deals
        tables are derived from it.
    pipeline : Pipeline
        The stage order and the won and lost stages.
    report : IngestReport
        What ingest read, repaired, and quarantined.
    exported_at : Timestamp
        When the export was taken: deals still open are censored here.
    has_stage_history : bool
        False for deal-level exports (current stage and outcome only); analyses
        of time in stage refuse such data.

    Notes
    -----
    The analyses keep what they derive from the data (the stays in each stage,
    the episodes of conversion, each deal's state after each history row, the
    event tables) with the data, read-only, so the next analysis of the same
    data starts from them: about 450 MB for a million deals once
    :func:`~funnelstats.conversion`, :func:`~funnelstats.time_in_stage`,
    :func:`~funnelstats.stage_outcomes` and :func:`~funnelstats.flow` have run.
    It goes with the data; a cut (:meth:`as_of`, :meth:`select`) is new data.
    """

    history: pd.DataFrame
    pipeline: Pipeline
    exported_at: pd.Timestamp
    report: IngestReport
    has_stage_history: bool = True
    undated: pd.DataFrame | None = None
    _created: pd.Series | None = field(default=None)

    # ------------------------------------------------------------ derived
    @cached_property
    def _cache(self) -> dict[Any, Any]:
        """Tables derived for the analyses (stays, episodes, event tables), kept per data.

        Analyses of the same data share them (each is a pure function of the
        data); their arrays are read-only. A cut (:meth:`as_of`, :meth:`select`)
        is a new :class:`FunnelData` with its own.
        """
        return {}

    @cached_property
    def _derived(self) -> _Derived:
        return _derive(self.history, self.pipeline, self.undated, self._created)

    @cached_property
    def _events(self) -> pd.DataFrame:
        return _events_frame(self.history, self.pipeline, self._derived)

    @property
    def events(self) -> pd.DataFrame:
        """The tidy event table (see the class docstring).

        Built on first use: the analyses read :attr:`arrays`.
        """
        return self._events

    @property
    def deals(self) -> pd.DataFrame:
        """The deals table (see the class docstring)."""
        return self._derived.deals

    @property
    def attributes(self) -> tuple[str, ...]:
        """Names of the deal attribute columns usable as ``by=``."""
        fixed = {*C.DEAL_COLUMNS, C.CURRENCY}
        return tuple(c for c in self.deals.columns if c not in fixed)

    @property
    def n_deals(self) -> int:
        """Number of deals."""
        return len(self.deals)

    @cached_property
    def arrays(self) -> EventArrays:
        """The event table as numpy arrays (int64 nanoseconds, integer codes).

        Analyses read these instead of the DataFrame columns; they are computed
        once per :class:`FunnelData`.
        """
        return self._derived.arrays

    # ------------------------------------------------------------- cutting
    def as_of(self, ts: Any) -> FunnelData:
        """The data as an export taken at ``ts`` would have shown it.

        Rows after ``ts`` are removed, so stays that ended after ``ts`` are open
        again, outcomes reached after ``ts`` are open again, amounts are the last
        ones recorded by ``ts``, and deals created after ``ts`` are absent.

        Parameters
        ----------
        ts : str, datetime or Timestamp
            The cut-off (naive values are UTC). Must not be after
            :attr:`exported_at`.

        Examples
        --------
        >>> import funnelstats as fs
        >>> d = fs.load_sample()
        >>> early = d.as_of("2024-06-30")
        >>> bool(early.events["entered_at"].max() <= pd.Timestamp("2024-06-30", tz="UTC"))
        True
        """
        cut = to_timestamp(ts, name="as_of")
        if cut > self.exported_at:
            raise ValueError(
                f"as_of {cut} is after the export date {self.exported_at}: "
                "the data holds nothing about that time"
            )
        keep = _ns(self.history[C.AT]) <= cut.value
        history = self.history.loc[keep].reset_index(drop=True)
        created = None
        if self._created is not None:
            created = self._created[self._created.notna() & (self._created <= cut)]
        return FunnelData(
            history=history,
            pipeline=self.pipeline,
            exported_at=cut,
            report=self.report,
            has_stage_history=self.has_stage_history,
            undated=None,
            _created=created,
        )

    def select(self, deals: Sequence[str] | pd.Series | np.ndarray) -> FunnelData:
        """The data restricted to some deals.

        Parameters
        ----------
        deals : sequence of deal ids, or a boolean Series aligned with :attr:`deals`

        Examples
        --------
        >>> import funnelstats as fs
        >>> d = fs.load_sample()
        >>> smb = d.select(d.deals["Segment"] == "SMB")
        >>> set(smb.deals["Segment"])
        {'SMB'}
        """
        if isinstance(deals, pd.Series) and deals.dtype == bool:
            ids = self.deals.loc[deals.to_numpy(), C.DEAL_ID]
        else:
            ids = pd.Series(np.asarray(deals, dtype=object)).astype(str)
        wanted = set(ids)
        keep = self.history[C.DEAL_ID].isin(wanted).to_numpy()
        undated = None
        if self.undated is not None:
            undated = self.undated[self.undated[C.DEAL_ID].isin(wanted)].reset_index(drop=True)
        created = None
        if self._created is not None:
            created = self._created[self._created.index.isin(wanted)]
        return FunnelData(
            history=self.history.loc[keep].reset_index(drop=True),
            pipeline=self.pipeline,
            exported_at=self.exported_at,
            report=self.report,
            has_stage_history=self.has_stage_history,
            undated=undated,
            _created=created,
        )

    # -------------------------------------------------------- construction
    @classmethod
    def from_events(
        cls,
        events: pd.DataFrame,
        *,
        pipeline: Pipeline | None = None,
        exported_at: Any = None,
        tz: str = "UTC",
    ) -> FunnelData:
        """Build from a DataFrame in the tidy event-table layout.

        Only ``deal_id``, ``stage`` and ``entered_at`` are required; ``amount``
        and any other columns (attributes) are used when present. When ``stage``
        is an ordered categorical and no pipeline is given, the categories'
        order is the stage order (won and lost stages recognised by name).

        Examples
        --------
        >>> ev = pd.DataFrame({
        ...     "deal_id": ["a", "a", "b"],
        ...     "stage": ["Lead", "Won", "Lead"],
        ...     "entered_at": ["2024-01-01", "2024-01-05", "2024-01-02"],
        ... })
        >>> d = FunnelData.from_events(ev, pipeline=Pipeline(["Lead"], won=["Won"], lost=["Lost"]))
        >>> d.deals["outcome"].tolist()
        ['won', 'open']
        """
        from .ingest.generic import read_events

        missing = [c for c in (C.DEAL_ID, C.STAGE, C.ENTERED_AT) if c not in events.columns]
        if missing:
            raise FunnelDataError(
                f"missing column(s) {missing}; a tidy event table has {list(C.EVENT_COLUMNS)}",
                file="<DataFrame>",
            )
        if pipeline is None and isinstance(events[C.STAGE].dtype, pd.CategoricalDtype):
            cats = [str(c) for c in events[C.STAGE].cat.categories]
            inferred = Pipeline.infer(
                np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), cats
            )
            order = {s: i for i, s in enumerate(cats)}
            pipeline = Pipeline(
                sorted(inferred.stages, key=order.__getitem__),
                sorted(inferred.won, key=order.__getitem__),
                sorted(inferred.lost, key=order.__getitem__),
                notes=("stage order taken from the categorical column",),
            )
        skip = {C.EXITED_AT, C.NEXT_STAGE}
        frame = events[[c for c in events.columns if c not in skip]]
        extra = [c for c in frame.columns if c not in (C.DEAL_ID, C.STAGE, C.ENTERED_AT, C.AMOUNT)]
        return read_events(
            frame,
            deal=C.DEAL_ID,
            stage=C.STAGE,
            at=C.ENTERED_AT,
            amount=C.AMOUNT if C.AMOUNT in frame.columns else None,
            attributes=extra,
            pipeline=pipeline,
            exported_at=exported_at,
            tz=tz,
        )

    # -------------------------------------------------------------- display
    def __repr__(self) -> str:
        d = self.deals
        counts = d[C.OUTCOME].value_counts()
        hist = "" if self.has_stage_history else ", outcome-only history"
        return (
            f"<FunnelData: {len(d):,} deals ({counts.get(C.WON, 0):,} won, "
            f"{counts.get(C.LOST, 0):,} lost, {counts.get(C.OPEN, 0):,} open), "
            f"{len(self.arrays.stage):,} stage entries, {len(self.pipeline.order)} stages, "
            f"exported {self.exported_at:%Y-%m-%d %H:%M} UTC{hist}>"
        )

    def _repr_html_(self) -> str:
        import html

        head = html.escape(repr(self))
        stages = " → ".join(html.escape(s) for s in self.pipeline.stages)
        return (
            f"<div><p><b>{head}</b></p><p>Pipeline: {stages} → "
            f"{html.escape(', '.join(self.pipeline.won))} | "
            f"{html.escape(', '.join(self.pipeline.lost))}</p>"
            f"{self.events.head(10).to_html(max_rows=10)}</div>"
        )


# ---------------------------------------------------------------------------
# derivation of the event and deals tables from the history


@dataclass(frozen=True)
class EventArrays:
    """The event table as arrays, for fast analysis.

    Attributes
    ----------
    deal : ndarray of int64
        Deal index (row of :attr:`FunnelData.deals`) per event.
    stage : ndarray of int64
        Stage code (position in ``pipeline.order``) per event.
    entered, exited : ndarray of int64
        Nanoseconds since the epoch (UTC); ``exited`` is ``INT64_MIN`` while open.
    next_stage : ndarray of int64
        Stage code of the next event, -1 while open.
    amount : ndarray of float64
    kind : ndarray of int8
        Per stage code: 0 open, 1 won, 2 lost.
    """

    deal: np.ndarray
    stage: np.ndarray
    entered: np.ndarray
    exited: np.ndarray
    next_stage: np.ndarray
    amount: np.ndarray
    kind: np.ndarray

    @property
    def is_open_stay(self) -> np.ndarray:
        """True where the deal is still in the stage."""
        return self.exited == _NAT


@dataclass(frozen=True)
class _Derived:
    deals: pd.DataFrame
    arrays: EventArrays
    rows: np.ndarray  # history row where each event starts


def _ns(series: pd.Series) -> np.ndarray:
    """int64 nanoseconds of a datetime64[ns, UTC] Series (NaT -> INT64_MIN)."""
    dt = series.dtype
    if isinstance(dt, pd.DatetimeTZDtype) and dt.unit == "ns":
        return series.array.asi8  # UTC nanoseconds already: no copy
    values = (
        series.to_numpy(dtype="datetime64[ns]")
        if series.dt.tz is None
        else (series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]"))
    )
    return values.view(np.int64)


def _to_utc(ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")


def _first_rows(values: pd.Series, pos: np.ndarray) -> pd.Series:
    """``values.iloc[pos]`` (``pos`` increasing) with a fresh index.

    An arrow column of many chunks is filtered chunk by chunk: ``iloc`` would join its
    chunks first (a copy of the whole column).
    """
    ca = getattr(values.array, "_pa_array", None)
    if ca is not None and getattr(ca, "num_chunks", 1) > 1 and len(pos):
        import pyarrow as pa

        mask = np.zeros(len(values), dtype=bool)
        mask[pos] = True
        return pd.Series(type(values.array)(ca.filter(pa.array(mask))), name=values.name)
    return values.iloc[pos].reset_index(drop=True)


def _derive(
    history: pd.DataFrame,
    pipeline: Pipeline,
    undated: pd.DataFrame | None,
    created: pd.Series | None,
) -> _Derived:
    """The deals table and the event arrays from the history (sorted by deal and time)."""
    dtype = pipeline.dtype
    kind = pipeline.kind_codes()
    deal_ids = history[C.DEAL_ID]
    n = len(history)
    stage = history[C.STAGE].cat.codes.to_numpy()
    at = _ns(history[C.AT])
    amount = history[C.AMOUNT].to_numpy(dtype=np.float64)

    # one pass per array; outputs filled in place (every big temporary costs page faults)
    new_deal = np.ones(n, dtype=bool)
    new_run = np.ones(n, dtype=bool)
    if n > 1:
        ca = getattr(deal_ids.array, "_pa_array", None)
        if (
            hasattr(ca, "chunks")
            and ca.null_count == 0
            and str(ca.type) in ("string", "large_string")
        ):
            import pyarrow.compute as pc

            # arrow strings compared by pyarrow, the result written chunk by chunk
            row = 1
            for chunk in pc.not_equal(ca.slice(0, n - 1), ca.slice(1)).chunks:
                k = len(chunk)
                new_deal[row : row + k] = chunk.to_numpy(zero_copy_only=False)
                row += k
        else:
            ids = deal_ids.to_numpy(dtype=object) if deal_ids.dtype == object else deal_ids.array
            np.not_equal(np.asarray(ids[1:] == ids[:-1], dtype=bool), True, out=new_deal[1:])
        np.not_equal(stage[1:], stage[:-1], out=new_run[1:])
        new_run |= new_deal
    ev = np.flatnonzero(new_run)
    first_row = np.flatnonzero(new_deal)
    n_deals = len(first_row)
    # a new deal starts a new run: the deal of each event counts the deal starts up to it
    ev_new_deal = new_deal[ev]
    ev_deal = np.cumsum(ev_new_deal, dtype=np.int64)
    ev_deal -= 1
    ev_stage = stage[ev].astype(np.int64)
    ev_at = at[ev]
    m = len(ev)
    last_of_deal = np.ones(m, dtype=bool)
    last_of_deal[:-1] = ev_new_deal[1:]
    ev_exit = np.empty(m, dtype=np.int64)
    ev_next = np.empty(m, dtype=np.int64)
    if m:
        ev_exit[:-1] = ev_at[1:]
        ev_next[:-1] = ev_stage[1:]
        ev_exit[last_of_deal] = _NAT
        ev_next[last_of_deal] = -1

    arrays = EventArrays(
        deal=ev_deal,
        stage=ev_stage,
        entered=ev_at,
        exited=ev_exit,
        next_stage=ev_next,
        amount=amount[ev],
        kind=kind,
    )

    # ---- deals
    last_ev = np.flatnonzero(last_of_deal)
    last_stage = ev_stage[last_ev]
    last_kind = kind[last_stage] if len(last_stage) else np.zeros(0, np.int8)
    # kind 0 / 1 / 2 (open / won / lost) as codes of C.OUTCOMES (won, lost, open)
    outcome_code = np.array(
        [C.OUTCOMES.index(C.OPEN), C.OUTCOMES.index(C.WON), C.OUTCOMES.index(C.LOST)]
    )[last_kind]
    closed = np.where(last_kind > 0, ev_at[last_ev], _NAT)
    created_at = at[first_row]
    # furthest stage: the furthest open stage entered, or the won stage when won
    # (events are sorted by deal and every deal has one: a maximum per run of events)
    open_stage = np.where(kind[ev_stage] == 0, ev_stage, -1)
    if len(ev):
        first_ev = np.flatnonzero(ev_new_deal)
        furthest = np.maximum.reduceat(open_stage, first_ev).astype(np.int64, copy=False)
    else:
        furthest = np.full(n_deals, -1, dtype=np.int64)
    won_now = last_kind == 1
    furthest[won_now] = last_stage[won_now]
    # latest known amount per deal (last non-NaN)
    latest_amount = _latest_amounts(amount, first_row)

    deals = pd.DataFrame(
        {
            C.DEAL_ID: _first_rows(deal_ids, first_row),
            C.CREATED_AT: _to_utc(created_at),
            C.OUTCOME: pd.Categorical.from_codes(outcome_code, categories=list(C.OUTCOMES)),
            C.CLOSED_AT: _to_utc(closed),
            C.AMOUNT: latest_amount,
            C.STAGE: pd.Categorical.from_codes(last_stage, dtype=dtype),
            C.FURTHEST_STAGE: pd.Categorical.from_codes(furthest, dtype=dtype),
        },
        copy=False,  # every column is a new array made here
    )
    if created is not None and len(created):
        given = created.reindex(deals[C.DEAL_ID].to_numpy())
        given_ns = _ns(pd.Series(given.to_numpy(), dtype="datetime64[ns, UTC]"))
        use = (given_ns != _NAT) & (given_ns < created_at)
        if use.any():
            created_at = np.where(use, given_ns, created_at)
            deals[C.CREATED_AT] = _to_utc(created_at)
    extra = [c for c in history.columns if c not in (*C.HISTORY_COLUMNS, "source_row")]
    if extra and n:
        deal = np.cumsum(new_deal, dtype=np.int64)
        deal -= 1
        last_vals = history[extra].groupby(deal, sort=True).last()
        for c in extra:
            deals[c] = last_vals[c].to_numpy()
            if isinstance(history[c].dtype, pd.CategoricalDtype):
                deals[c] = pd.Categorical(deals[c], dtype=history[c].dtype)
    elif extra:
        for c in extra:
            deals[c] = history[c].iloc[:0].to_numpy()
    if undated is not None and len(undated):
        und = undated.copy()
        for c in deals.columns:
            if c not in und.columns:
                und[c] = pd.Series([pd.NA] * len(und))
        und = und[list(deals.columns)]
        deals = pd.concat([deals, und.astype(deals.dtypes.to_dict())], ignore_index=True)
        deals = deals.sort_values(C.DEAL_ID, kind="stable").reset_index(drop=True)
        # keep event deal codes aligned with the deals table
        pos = pd.Index(deals[C.DEAL_ID]).get_indexer(deal_ids.iloc[ev])
        arrays = EventArrays(
            deal=pos.astype(np.int64),
            stage=arrays.stage,
            entered=arrays.entered,
            exited=arrays.exited,
            next_stage=arrays.next_stage,
            amount=arrays.amount,
            kind=arrays.kind,
        )
    return _Derived(deals=deals, arrays=arrays, rows=ev)


def _events_frame(history: pd.DataFrame, pipeline: Pipeline, derived: _Derived) -> pd.DataFrame:
    """The tidy event table, from the arrays and the history's deal ids."""
    a = derived.arrays
    dtype = pipeline.dtype
    return pd.DataFrame(
        {
            C.DEAL_ID: history[C.DEAL_ID].iloc[derived.rows].reset_index(drop=True),
            C.STAGE: pd.Categorical.from_codes(a.stage, dtype=dtype),
            C.ENTERED_AT: _to_utc(a.entered),
            C.EXITED_AT: _to_utc(a.exited),
            C.NEXT_STAGE: pd.Categorical.from_codes(a.next_stage, dtype=dtype),
            C.AMOUNT: a.amount,
        }
    )


def _latest_amounts(amount: np.ndarray, first_row: np.ndarray) -> np.ndarray:
    """Last non-NaN amount per deal, the deals' rows starting at ``first_row``."""
    n = len(amount)
    if not n:
        return np.full(0, np.nan)
    last_row = np.empty(len(first_row), dtype=np.int64)
    last_row[:-1] = first_row[1:]
    last_row[:-1] -= 1
    last_row[-1] = n - 1
    out = amount[last_row]
    if not np.isnan(out).any():  # the common case: every deal's last row has an amount
        return out
    group = np.zeros(n, dtype=np.int64)
    group[first_row[1:]] = 1
    np.cumsum(group, out=group)
    return _last_valid(amount, group, len(first_row))


def _last_valid(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Last non-NaN value per group of a group-sorted array (NaN when none)."""
    out = np.full(n_groups, np.nan)
    missing = np.isnan(values)
    if not missing.any() and len(values):  # the common case: the group's last row
        last = np.ones(len(group), dtype=bool)
        np.not_equal(group[1:], group[:-1], out=last[:-1])
        out[group[last]] = values[last]
        return out
    pos = np.flatnonzero(~missing)
    if len(pos):
        g = group[pos]
        last = np.r_[g[1:] != g[:-1], True]
        out[g[last]] = values[pos[last]]
    return out
