"""One record per deal per open stage it reached: how long until it got past, and how it ended.

This is the counting behind :mod:`funnelstats.conversion`. A *record* is a
deal's episode in a stage, from the moment it first reached the stage to the
moment it first got past it (or was lost, or the export was taken). It is
derived from the sorted event arrays in one vectorised pass per stage; the
rules are those documented in :func:`funnelstats.conversion.conversion`:

- **first entry counts**: the episode starts at the deal's first arrival in the
  stage; later re-entries belong to the same episode;
- **backward moves are not exits**: a move to an earlier stage neither
  advances nor loses the deal; its episode runs on until it gets past the
  stage or is lost;
- **the last word decides**: a loss that was later reopened is not a loss; the
  episode ends as lost only when the deal's current state is lost (at the time
  of that final loss);
- ``skips="reached"``: a deal that jumps over the stage (from an earlier open
  stage to a later open stage or to won) reached it and got past it in the same
  instant (a zero-length advancing episode);
- ``skips="strict"``: only deals that entered every stage in pipeline order
  from the first one count; an episode that ends with a jump past the next
  stage ends as *skipped out* (a third outcome, not an advance), and the deal
  is not counted in any later stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._stays import memo
from .data import FunnelData

__all__ = [
    "ADVANCED",
    "CENSORED",
    "LOST",
    "SKIPPED_OUT",
    "StageRecords",
    "stage_records",
    "win_records",
]

#: Outcome codes of a record (also the cause codes passed to ``event_table``).
CENSORED, ADVANCED, LOST, SKIPPED_OUT = 0, 1, 2, 3

_NAT = np.iinfo(np.int64).min


@dataclass(frozen=True)
class StageRecords:
    """Per deal and reached open stage: the episode and how it ended.

    Attributes
    ----------
    stage : ndarray of int64
        Open stage code (0 = first open stage).
    deal : ndarray of int64
        Row of ``data.deals``.
    start : ndarray of int64
        When the deal reached the stage (ns since the epoch, UTC).
    end : ndarray of int64
        When the episode ended (got past, lost, skipped out), or the export
        time while undecided.
    cause : ndarray of int8
        ``CENSORED``, ``ADVANCED``, ``LOST`` or ``SKIPPED_OUT``.
    skipped_through : ndarray of bool
        Reached by jumping over the stage (``skips="reached"`` only).
    moved_back : ndarray of bool
        The deal moved back from this stage to an earlier one during the episode.
    reopened : ndarray of bool
        The deal was lost and reopened during the episode.
    n_stages : int
    skips : str
    """

    stage: np.ndarray
    deal: np.ndarray
    start: np.ndarray
    end: np.ndarray
    cause: np.ndarray
    skipped_through: np.ndarray
    moved_back: np.ndarray
    reopened: np.ndarray
    n_stages: int
    skips: str

    @property
    def duration_ns(self) -> np.ndarray:
        """Length of each episode in nanoseconds (int64, ties exact)."""
        return self.end - self.start

    def __len__(self) -> int:
        return len(self.stage)


@dataclass(frozen=True)
class _EventIndex:
    """Per-event helper arrays over ``data.arrays`` (events sorted by deal, time)."""

    n: int
    stage: np.ndarray
    deal: np.ndarray
    entered: np.ndarray
    next_stage: np.ndarray
    kind: np.ndarray  # kind of the event's stage: 0 open, 1 won, 2 lost
    first: np.ndarray  # index of the deal's first event
    last: np.ndarray  # index of the deal's last event
    prev_open: np.ndarray  # code of the last open stage before this event in the deal, or -1


def _index(data: FunnelData) -> _EventIndex:
    a = data.arrays
    n = len(a.stage)
    idx = np.arange(n, dtype=np.int64)
    kind = a.kind[a.stage].astype(np.int8) if n else np.zeros(0, np.int8)
    if n:
        starts = np.flatnonzero(np.r_[True, a.deal[1:] != a.deal[:-1]])
        size = np.diff(np.r_[starts, n])
        first = np.repeat(starts, size)
        last = np.repeat(starts + size - 1, size)
    else:
        first = last = idx
    is_open = kind == 0
    acc = np.maximum.accumulate(np.where(is_open, idx, -1)) if n else idx
    prev = np.r_[-1, acc[:-1]] if n else idx
    prev_open = np.where(prev >= first, a.stage[np.maximum(prev, 0)], -1) if n else idx
    return _EventIndex(
        n=n,
        stage=a.stage,
        deal=a.deal,
        entered=a.entered,
        next_stage=a.next_stage,
        kind=kind,
        first=first,
        last=last,
        prev_open=prev_open.astype(np.int64),
    )


def _next_true(mask: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For each position i in ``at``: the smallest j >= i with ``mask[j]``, or ``len(mask)``."""
    hits = np.flatnonzero(mask)
    i = np.searchsorted(hits, at)
    if not len(hits):
        return np.full(len(at), len(mask), dtype=np.int64)
    return np.where(i < len(hits), hits[np.minimum(i, len(hits) - 1)], len(mask))


def _first_per_deal(mask: np.ndarray, deal: np.ndarray) -> np.ndarray:
    """Index of the first True event of each deal that has one (ascending)."""
    cand = np.flatnonzero(mask)
    if not len(cand):
        return cand
    d = deal[cand]
    return cand[np.r_[True, d[1:] != d[:-1]]]


def _in_window(flagged: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether any of the sorted positions ``flagged`` lies in each window ``[lo, hi)``.

    Backward moves and reopenings are rare: a binary search among them costs
    less than a running count over every event.
    """
    if not len(flagged):
        return np.zeros(len(lo), dtype=bool)
    return np.searchsorted(flagged, hi) > np.searchsorted(flagged, lo)


def stage_records(data: FunnelData, *, skips: str = "reached") -> StageRecords:
    """Episodes of every deal in every open stage it reached (see the module docstring).

    Parameters
    ----------
    data : FunnelData
        Must have stage history.
    skips : {"reached", "strict"}

    Returns
    -------
    StageRecords

    Examples
    --------
    >>> import funnelstats as fs
    >>> r = stage_records(fs.load_sample())
    >>> bool((r.duration_ns >= 0).all())
    True
    """
    if skips not in ("reached", "strict"):
        raise ValueError(f"skips must be 'reached' or 'strict', got {skips!r}")
    return memo(data, ("stage_records", skips), lambda: _stage_records(data, skips))


def _stage_records(data: FunnelData, skips: str) -> StageRecords:
    ev = _index(data)
    n_open = data.pipeline.n_open
    exported = data.exported_at.value
    forward = ev.kind != 2  # open or won: a stage a deal can be "past" s in
    lost_now = ev.kind[ev.last] == 2 if ev.n else np.zeros(0, bool)
    back_ev = (ev.next_stage >= 0) & (ev.kind == 0)
    if ev.n:
        nk = data.arrays.kind[np.maximum(ev.next_stage, 0)]
        back_ev &= (nk == 0) & (ev.next_stage < ev.stage)
        reopen_ev = (ev.kind == 2) & (ev.next_stage >= 0)
    else:
        reopen_ev = np.zeros(0, bool)

    back_at = np.flatnonzero(back_ev)
    back_stage = ev.stage[back_at]
    reopen_at = np.flatnonzero(reopen_ev)
    parts: list[tuple[np.ndarray, ...]] = []
    strict_reach = _first_per_deal((ev.stage == 0) & (np.arange(ev.n) == ev.first), ev.deal)
    # stage codes in the smallest integer type: the passes per stage below read less memory
    small = np.min_scalar_type(-max(len(data.pipeline.order), 1))
    stage = ev.stage.astype(small)
    prev_open = ev.prev_open.astype(small)
    for s in range(n_open):
        beyond = forward & (stage > s)
        if skips == "reached":
            skip_over = beyond & (prev_open >= 0) & (prev_open < s)
            reach = _first_per_deal((stage == s) | skip_over, ev.deal)
        else:
            reach = strict_reach
        if not len(reach):
            continue
        nb = _next_true(beyond, reach)
        last = ev.last[reach]
        got_past = nb <= last
        pas = np.where(got_past, nb, last)
        if skips == "strict":
            if s + 1 < n_open:
                in_order = ev.stage[pas] == s + 1
            else:
                in_order = ev.kind[pas] == 1
            advanced = got_past & in_order
            skipped_out = got_past & ~in_order
            strict_reach = pas[advanced]
        else:
            advanced = got_past
            skipped_out = np.zeros(len(reach), bool)
        lost = ~got_past & lost_now[reach]
        cause = np.full(len(reach), CENSORED, dtype=np.int8)
        cause[advanced] = ADVANCED
        cause[skipped_out] = SKIPPED_OUT
        cause[lost] = LOST
        end = np.where(got_past | lost, ev.entered[pas], exported)
        start = ev.entered[reach]
        stop = np.where(got_past, pas, last + 1)
        parts.append(
            (
                np.full(len(reach), s, dtype=np.int64),
                ev.deal[reach],
                start,
                np.maximum(end, start),
                cause,
                ev.stage[reach] != s,
                _in_window(back_at[back_stage == s], reach, stop),
                _in_window(reopen_at, reach, stop),
            )
        )
    if parts:
        cols = [np.concatenate(c) for c in zip(*parts)]
    else:
        cols = [np.zeros(0, np.int64)] * 4 + [np.zeros(0, np.int8)] + [np.zeros(0, bool)] * 3
    return StageRecords(*cols, n_stages=n_open, skips=skips)


def win_records(data: FunnelData, records: StageRecords) -> tuple[np.ndarray, np.ndarray]:
    """Per record: when the deal's won/lost fate was decided, and how.

    With ``skips="reached"`` a deal reached from a stage is won when its current
    state is won (at the time it was won), lost when its current state is lost,
    and undecided (censored at the export) while open. With ``skips="strict"``
    it is won only when it went on to win in pipeline order; leaving the order
    (a skip) ends it as not won at that moment.

    Returns
    -------
    end : ndarray of int64
        ns since the epoch.
    cause : ndarray of int8
        0 undecided, 1 won, 2 lost, 3 skipped out of the stage order
        (``strict`` only).
    """
    a = data.arrays
    exported = data.exported_at.value
    if records.skips == "reached" or not len(records):
        n_deals = data.n_deals
        last_stage = np.full(n_deals, -1, dtype=np.int64)
        last_at = np.full(n_deals, exported, dtype=np.int64)
        if len(a.stage):
            last_ev = np.r_[a.deal[1:] != a.deal[:-1], True]
            last_stage[a.deal[last_ev]] = a.stage[last_ev]
            last_at[a.deal[last_ev]] = a.entered[last_ev]
        kind = np.where(last_stage >= 0, a.kind[np.maximum(last_stage, 0)], 0)
        k = kind[records.deal]
        cause = np.where(k == 1, 1, np.where(k == 2, 2, 0)).astype(np.int8)
        end = np.where(cause > 0, last_at[records.deal], exported)
        return np.maximum(end, records.start), cause
    # strict: follow the chain of in-order episodes from each record to its end
    n_open = records.n_stages
    n_deals = data.n_deals
    end_at = np.full((n_open, n_deals), _NAT, dtype=np.int64)
    cause_at = np.zeros((n_open, n_deals), dtype=np.int8)
    end_at[records.stage, records.deal] = records.end
    cause_at[records.stage, records.deal] = records.cause
    fate_end = np.full(n_deals, exported, dtype=np.int64)
    fate = np.zeros(n_deals, dtype=np.int8)
    out_end = np.empty(len(records), dtype=np.int64)
    out_cause = np.empty(len(records), dtype=np.int8)
    for s in range(n_open - 1, -1, -1):
        c = cause_at[s]
        e = end_at[s]
        # advancing from the last stage in order is winning
        stop = (c == LOST) | (c == SKIPPED_OUT)
        if s == n_open - 1:
            fate = np.where(c == ADVANCED, 1, np.where(stop, c, 0)).astype(np.int8)
            fate_end = np.where(fate > 0, e, exported)
        else:
            und = c == CENSORED
            fate = np.where(stop, c, np.where(und, 0, fate)).astype(np.int8)
            fate_end = np.where(stop, e, np.where(und, exported, fate_end))
        sel = records.stage == s
        out_end[sel] = fate_end[records.deal[sel]]
        out_cause[sel] = fate[records.deal[sel]]
    return np.maximum(out_end, records.start), out_cause
