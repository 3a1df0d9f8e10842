"""The state of every deal after every history row, as arrays (snapshots, flows, forecasts).

A deal's state after a history row is its stage (and so whether it is open, won
or lost), its amount and its expected close date as last recorded by then
(amounts and close dates carry forward within the deal while a row leaves them
empty). The state of every deal at any time ``t`` is then the state after its
last row at or before ``t`` — the same rule as :meth:`FunnelData.as_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import _columns as C
from ._stays import memo
from .data import FunnelData, _ns

__all__ = ["NAT", "HistoryState", "history_state", "last_row_at"]

NAT = np.iinfo(np.int64).min


@dataclass(frozen=True)
class HistoryState:
    """Per history row, the deal's state after the row.

    Attributes
    ----------
    deal : ndarray of int64
        Row of ``data.deals``.
    at : ndarray of int64
        Time of the row, ns since the epoch (UTC).
    stage : ndarray of int64
        Stage code (position in ``pipeline.order``).
    kind : ndarray of int8
        0 open, 1 won, 2 lost.
    amount : ndarray of float64
        Last amount recorded by this row (NaN while none is).
    close : ndarray of int64
        Last expected close date recorded by this row (``NAT`` while none is).
    first : ndarray of bool
        True on each deal's first row.
    deal_start : ndarray of int64
        Per deal (row of ``data.deals``), its first history row (-1 for none).
    deal_rows : ndarray of int64
        Per deal, its number of history rows.
    has_close_dates : bool
        True when any expected close date is recorded.
    """

    deal: np.ndarray
    at: np.ndarray
    stage: np.ndarray
    kind: np.ndarray
    amount: np.ndarray
    close: np.ndarray
    first: np.ndarray
    deal_start: np.ndarray
    deal_rows: np.ndarray
    has_close_dates: bool

    def __len__(self) -> int:
        return len(self.at)


def _ffill_within(values: np.ndarray, valid: np.ndarray, start_row: np.ndarray) -> np.ndarray:
    """Index of the last valid row at or before each row, within the row's deal (-1: none)."""
    idx = np.where(valid, np.arange(len(values)), -1)
    last = np.maximum.accumulate(idx) if len(idx) else idx
    return np.where(last >= start_row, last, -1)


def _deal_rows(history_ids: pd.Series, deal_ids: pd.Series) -> np.ndarray:
    """Row of the deals table of each history row.

    The history is sorted by deal and the deals table lists the deals in the same order
    (each deal's first history row); this is checked on the first row of every deal, and a
    lookup by id is the fallback.
    """
    n = len(history_ids)
    if n:
        ids = (
            history_ids.to_numpy(dtype=object) if history_ids.dtype == object else history_ids.array
        )
        new = np.r_[True, ~np.asarray(ids[1:] == ids[:-1], dtype=bool)]
        first = np.flatnonzero(new)
        if len(first) == len(deal_ids) and np.array_equal(
            history_ids.iloc[first].to_numpy(dtype=object), deal_ids.to_numpy(dtype=object)
        ):
            return np.cumsum(new, dtype=np.int64) - 1
    index = pd.Index(deal_ids.astype(object))
    return index.get_indexer(history_ids.astype(object)).astype(np.int64)


def history_state(data: FunnelData) -> HistoryState:
    """The state of each deal after each of its history rows.

    Examples
    --------
    >>> import funnelstats as fs
    >>> hs = history_state(fs.load_sample())
    >>> len(hs) == len(fs.load_sample().history)
    True
    """
    return memo(data, "history_state", lambda: _history_state(data))


def _history_state(data: FunnelData) -> HistoryState:
    h = data.history
    n = len(h)
    n_deals = data.n_deals
    deal = _deal_rows(h[C.DEAL_ID], data.deals[C.DEAL_ID])
    at = _ns(h[C.AT]) if n else np.zeros(0, dtype=np.int64)
    stage = h[C.STAGE].cat.codes.to_numpy().astype(np.int64)
    kind_codes = data.pipeline.kind_codes()
    # a row without a stage keeps the deal's stage (ingest fills these; stay safe)
    first = np.r_[True, deal[1:] != deal[:-1]] if n else np.zeros(0, dtype=bool)
    start_row = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else first.astype(int)
    if n and (stage < 0).any():
        src = _ffill_within(stage, stage >= 0, start_row)
        stage = np.where(src >= 0, stage[np.maximum(src, 0)], -1)
    kind = np.where(stage >= 0, kind_codes[np.maximum(stage, 0)], 0).astype(np.int8)
    raw_amount = h[C.AMOUNT].to_numpy(dtype=np.float64) if n else np.zeros(0)
    src = _ffill_within(raw_amount, ~np.isnan(raw_amount), start_row)
    amount = np.where(src >= 0, raw_amount[np.maximum(src, 0)], np.nan)
    if C.CLOSE_DATE in h.columns and n:
        raw_close = _ns(h[C.CLOSE_DATE])
        src = _ffill_within(raw_close, raw_close != NAT, start_row)
        close = np.where(src >= 0, raw_close[np.maximum(src, 0)], NAT)
    else:
        close = np.full(n, NAT, dtype=np.int64)
    deal_rows = np.bincount(deal[deal >= 0], minlength=n_deals).astype(np.int64)
    deal_start = np.full(n_deals, -1, dtype=np.int64)
    if n:
        fr = np.flatnonzero(first)
        deal_start[deal[fr]] = fr
    return HistoryState(
        deal=deal,
        at=at,
        stage=stage,
        kind=kind,
        amount=amount,
        close=close.astype(np.int64),
        first=first,
        deal_start=deal_start,
        deal_rows=deal_rows,
        has_close_dates=bool((close != NAT).any()),
    )


def last_row_at(hs: HistoryState, t_ns: int) -> np.ndarray:
    """Per deal, the index of its last history row at or before ``t_ns`` (-1: none yet)."""
    n_deals = len(hs.deal_start)
    upto = np.bincount(hs.deal[hs.at <= t_ns], minlength=n_deals)
    return np.where(upto > 0, hs.deal_start + upto - 1, -1)
