"""Stays in open stages, with how each ended, as arrays: the input of every estimator."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd

from .data import FunnelData
from .errors import FunnelDataError

__all__ = [
    "ADVANCE",
    "BACK",
    "CENSORED",
    "LOST",
    "NS_PER_DAY",
    "Stays",
    "group_codes",
    "memo",
    "stays",
]

NS_PER_DAY = 86_400 * 10**9

T = TypeVar("T")

#: How a stay ended (the ``outcome`` codes of :class:`Stays`).
CENSORED, ADVANCE, LOST, BACK = 0, 1, 2, 3
OUTCOME_NAMES = ("open", "advanced", "lost", "moved back")


@dataclass(frozen=True)
class Stays:
    """One entry per stay in an open stage.

    Attributes
    ----------
    event : ndarray of int64
        Row of ``data.events`` the stay is.
    deal : ndarray of int64
        Row of ``data.deals``.
    stage : ndarray of int64
        Stage code (position in ``pipeline.order``; open stages only).
    start : ndarray of int64
        Entry time, ns since the epoch (UTC).
    duration_ns : ndarray of int64
        Time in the stage: to the exit, or to the export date while open.
    outcome : ndarray of int8
        ``CENSORED`` (still there), ``ADVANCE`` (to a later open stage or a won
        stage), ``LOST`` (to a lost stage) or ``BACK`` (to an earlier open stage).
    next_stage : ndarray of int64
        Stage code moved to, -1 while open.
    amount : ndarray of float64
        Amount at entry.
    """

    event: np.ndarray
    deal: np.ndarray
    stage: np.ndarray
    start: np.ndarray
    duration_ns: np.ndarray
    outcome: np.ndarray
    next_stage: np.ndarray
    amount: np.ndarray

    @property
    def duration_days(self) -> np.ndarray:
        """Durations in days (float)."""
        return self.duration_ns / NS_PER_DAY

    def __len__(self) -> int:
        return len(self.event)


def stays(data: FunnelData) -> Stays:
    """Every stay in an open stage, censored at ``data.exported_at`` while open.

    Raises :class:`~funnelstats.InsufficientHistoryError` for deal-level data.

    Examples
    --------
    >>> import funnelstats as fs
    >>> s = stays(fs.load_sample())
    >>> bool((s.duration_ns >= 0).all())
    True
    """
    return memo(data, "stays", lambda: _stays(data))


def memo(data: FunnelData, key: Any, build: Callable[[], T]) -> T:
    """``build()``, kept in ``data``'s cache under ``key``; its arrays made read-only."""
    cache = data._cache
    if key in cache:
        return cast(T, cache[key])
    value = build()
    _freeze(value)
    cache[key] = value
    return value


def _freeze(value: Any) -> None:
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, tuple | list):
        for v in value:
            _freeze(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _freeze(getattr(value, f.name))


def _stays(data: FunnelData) -> Stays:
    a = data.arrays
    is_open_stage = a.kind[a.stage] == 0
    idx = np.flatnonzero(is_open_stage)
    exported = data.exported_at.value
    exited = a.exited[idx]
    still = exited == np.iinfo(np.int64).min
    end = np.where(still, exported, exited)
    nxt = a.next_stage[idx]
    stage = a.stage[idx]
    nkind = np.where(nxt >= 0, a.kind[np.maximum(nxt, 0)], -1)
    outcome = np.full(len(idx), CENSORED, dtype=np.int8)
    outcome[nkind == 1] = ADVANCE
    outcome[nkind == 2] = LOST
    fwd = (nkind == 0) & (nxt > stage)
    outcome[fwd] = ADVANCE
    outcome[(nkind == 0) & (nxt < stage)] = BACK
    return Stays(
        event=idx.astype(np.int64),
        deal=a.deal[idx],
        stage=stage,
        start=a.entered[idx],
        duration_ns=np.maximum(end - a.entered[idx], 0),
        outcome=outcome,
        next_stage=nxt,
        amount=a.amount[idx],
    )


def require_history(data: FunnelData, what: str) -> None:
    """Raise when ``data`` has no stage history (deal-level exports)."""
    if not data.has_stage_history:
        from .errors import InsufficientHistoryError

        raise InsufficientHistoryError(
            f"{what} needs stage history (one row per stage change); this data came from a "
            "deal-level export with the current stage and the outcome only",
            file=data.report.source if data.report is not None else None,
        )


def group_codes(data: FunnelData, by: str | None) -> tuple[np.ndarray, list[str]]:
    """Per deal: the group index of attribute ``by``, and the group labels.

    Deals with no value form a group labelled ``"(missing)"``.
    """
    n = data.n_deals
    if by is None:
        return np.zeros(n, dtype=np.int64), ["all"]
    if by not in data.deals.columns:
        raise FunnelDataError(
            f"no deal attribute {by!r}; attributes: {list(data.attributes)}", column=by
        )
    values = data.deals[by]
    codes, uniques = pd.factorize(values, sort=True)
    labels = [str(u) for u in uniques]
    if (codes < 0).any():
        codes = np.where(codes < 0, len(labels), codes)
        labels.append("(missing)")
    return codes.astype(np.int64), labels
