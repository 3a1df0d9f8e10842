"""Shared machinery of the survival analyses: selecting stays, fitted tables, tidy curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from . import _stays
from ._estimators import AJResult, EventTable, KMResult, event_table
from ._stays import NS_PER_DAY
from .data import FunnelData

__all__ = [
    "Fit",
    "Selection",
    "naive_medians",
    "nice_times",
    "resolve_stages",
    "select_stays",
    "step_values",
]

REPEATS = ("all", "first")
#: Ways a stay ends (advanced, lost, moved back): the causes of :attr:`Selection.table`.
N_OUTCOMES = 3


def resolve_stages(data: FunnelData, stage: str | Sequence[str] | None) -> list[int]:
    """Open-stage codes for ``stage`` (None: every open stage, in pipeline order)."""
    p = data.pipeline
    if stage is None:
        return list(range(p.n_open))
    names = [stage] if isinstance(stage, str) else list(stage)
    if not names:
        raise ValueError("stage: give at least one open stage (or None for all)")
    codes = []
    for name in names:
        if name in p.terminal:
            raise ValueError(
                f"stage {name!r} is a won or lost stage: deals do not leave it, so time in "
                f"it is not defined; open stages: {list(p.stages)}"
            )
        try:
            code = p.code(name)
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]}; open stages: {list(p.stages)}") from None
        if code not in codes:
            codes.append(code)
    return sorted(codes)


@dataclass(frozen=True)
class Selection:
    """Stays of some open stages, with their stage position and group."""

    stays: _stays.Stays
    stage_pos: np.ndarray  # 0..n_stages-1, position in ``stage_names``
    group: np.ndarray  # 0..n_groups-1
    stage_names: list[str]
    group_labels: list[str]
    n_repeat: int  # stays that were a second or later entry of the same deal into the stage

    @property
    def n_groups(self) -> int:
        return len(self.group_labels)

    @cached_property
    def key(self) -> np.ndarray:
        return self.stage_pos * self.n_groups + self.group

    @cached_property
    def table(self) -> EventTable:
        """The event table of the stays by key, with the outcome of each exit as its cause.

        Shared by the analyses of these stays (:func:`~funnelstats.time_in_stage`
        reads the exits of any cause, :func:`~funnelstats.stage_outcomes` each).
        """
        s = self.stays
        return event_table(
            s.duration_ns, s.outcome, groups=self.key, n_groups=self.n_keys, n_causes=N_OUTCOMES
        )

    @property
    def n_keys(self) -> int:
        return len(self.stage_names) * self.n_groups


def _take(s: _stays.Stays, idx: np.ndarray) -> _stays.Stays:
    return _stays.Stays(
        event=s.event[idx],
        deal=s.deal[idx],
        stage=s.stage[idx],
        start=s.start[idx],
        duration_ns=s.duration_ns[idx],
        outcome=s.outcome[idx],
        next_stage=s.next_stage[idx],
        amount=s.amount[idx],
    )


def select_stays(
    data: FunnelData,
    stage: str | Sequence[str] | None,
    by: str | None,
    repeats: str,
    what: str,
) -> Selection:
    """Stays in the chosen open stages, grouped by the deal attribute ``by``."""
    _stays.require_history(data, what)
    if repeats not in REPEATS:
        raise ValueError(f"repeats must be one of {REPEATS}, got {repeats!r}")
    codes = resolve_stages(data, stage)
    return _stays.memo(
        data, ("selection", tuple(codes), by, repeats), lambda: _select(data, codes, by, repeats)
    )


def _select(data: FunnelData, codes: list[int], by: str | None, repeats: str) -> Selection:
    s = _stays.stays(data)
    pos = np.full(len(data.pipeline.order), -1, dtype=np.int64)
    pos[codes] = np.arange(len(codes))
    sp = pos[s.stage]
    keep = sp >= 0
    # stays are in deal order, then entry time: the first stay of a (deal, stage) pair
    # is the first occurrence of its key
    pair = s.deal * len(data.pipeline.order) + s.stage
    first = np.zeros(len(s), dtype=bool)
    if len(s):
        _, first_idx = np.unique(pair, return_index=True)
        first[first_idx] = True
    n_repeat = int((keep & ~first).sum())
    if repeats == "first":
        keep &= first
    idx = np.flatnonzero(keep)
    sub = s if len(idx) == len(s) else _take(s, idx)
    gcode, labels = _stays.group_codes(data, by)
    names = [data.pipeline.order[c] for c in codes]
    return Selection(sub, sp[idx], gcode[sub.deal], names, labels, n_repeat)


@dataclass(frozen=True)
class Fit:
    """An event table (ns) and its estimates, with the label of every key.

    Key ``k`` is stage ``k // n_groups`` (or nothing when there is no stage
    dimension) and group ``k % n_groups``.
    """

    table: EventTable
    km: KMResult
    aj: AJResult | None
    stage_names: list[str] | None
    group_labels: list[str]
    durations_ns: np.ndarray
    causes: np.ndarray
    keys: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.group_labels)

    @property
    def time_days(self) -> np.ndarray:
        return self.table.time / NS_PER_DAY

    def present(self) -> np.ndarray:
        """Keys with at least one subject."""
        return np.flatnonzero(self.table.totals > 0)

    def id_columns(self, keys: np.ndarray) -> dict[str, pd.Categorical]:
        keys = np.asarray(keys, dtype=np.int64)
        g = self.n_groups
        out: dict[str, pd.Categorical] = {}
        if self.stage_names is not None:
            out["stage"] = pd.Categorical.from_codes(
                keys // g, categories=pd.Index(self.stage_names), ordered=True
            )
        out["group"] = pd.Categorical.from_codes(keys % g, categories=pd.Index(self.group_labels))
        return out

    def last_time(self) -> np.ndarray:
        """Per key: the largest duration observed (days), NaN for empty keys."""
        out = np.full(self.table.n_groups, np.nan)
        off = self.table.offsets
        has = off[1:] > off[:-1]
        out[has] = self.time_days[off[1:][has] - 1]
        return out

    def horizon(self, q: float = 0.05) -> float:
        """A readable x range: the largest time any curve takes to fall to ``q``.

        Curves that never get there contribute their last observed time.
        """
        t = self.time_days
        best = 0.0
        for k in self.present():
            r = self.table.rows(k)
            hit = np.flatnonzero(self.km.survival[r] <= q)
            best = max(best, float(t[r][hit[0]]) if len(hit) else float(t[r][-1]))
        return best

    def counts_at(self, times: np.ndarray) -> dict[str, np.ndarray]:
        """At each (present key, time): still in (duration > t), exits and censorings <= t."""
        tab = self.table
        times = np.asarray(times, dtype=float)
        keys, ts, risk, ex, ce = [], [], [], [], []
        tdays = self.time_days
        obs = tab.observed
        for k in self.present():
            r = tab.rows(k)
            i = np.searchsorted(tdays[r], times, side="right")
            cum_e = np.r_[0.0, np.cumsum(obs[r])][i]
            cum_c = np.r_[0.0, np.cumsum(tab.censored[r])][i]
            keys.append(np.full(len(times), k))
            ts.append(times)
            ex.append(cum_e)
            ce.append(cum_c)
            risk.append(tab.totals[k] - cum_e - cum_c)
        if not keys:
            z = np.zeros(0)
            return {"key": z.astype(np.int64), "t": z, "at_risk": z, "exited": z, "censored": z}
        return {
            "key": np.concatenate(keys),
            "t": np.concatenate(ts),
            "at_risk": np.concatenate(risk).astype(np.int64),
            "exited": np.concatenate(ex).astype(np.int64),
            "censored": np.concatenate(ce).astype(np.int64),
        }


def step_values(
    fit: Fit, values: np.ndarray, times: np.ndarray, start: float
) -> tuple[np.ndarray, np.ndarray]:
    """A right-continuous step function per key, read at ``times``.

    ``values`` is per row of the event table (the value from that row's time
    on); before a key's first row the value is ``start``. Returns the keys and
    the values, key-major.
    """
    tab = fit.table
    tdays = fit.time_days
    keys, out = [], []
    for k in fit.present():
        r = tab.rows(k)
        i = np.searchsorted(tdays[r], times, side="right")
        out.append(np.r_[start, values[r]][i])
        keys.append(np.full(len(times), k))
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(keys), np.concatenate(out)


def nice_times(hi: float, n: int = 8) -> np.ndarray:
    """Round times from 0 to about ``hi`` (days), ``n`` steps or so.

    Examples
    --------
    >>> nice_times(37.0).tolist()
    [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0]
    """
    if not np.isfinite(hi) or hi <= 0:
        return np.array([0.0])
    raw = hi / n
    mag = 10.0 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw)
    return np.arange(0.0, np.floor(hi / step + 1e-9) * step + step / 2, step)


def naive_medians(fit: Fit) -> np.ndarray:
    """Median duration (days) of the exits of each cause, per key, ignoring open ones.

    Read off the event table (rows sorted by time within a key), so no sort is
    needed. Shape (n_keys, n_causes); NaN where a key has no exit of a cause.
    """
    tab = fit.table
    tdays = fit.time_days
    out = np.full((tab.n_groups, tab.n_causes), np.nan)
    for k in fit.present():
        r = tab.rows(k)
        t = tdays[r]
        for j in range(tab.n_causes):
            cum = np.cumsum(tab.events[r, j])
            n = int(cum[-1]) if len(cum) else 0
            if n == 0:
                continue
            # 0-based positions of the middle value(s) among the n sorted exit times
            lo = np.searchsorted(cum, (n - 1) // 2 + 1, side="left")
            hi = np.searchsorted(cum, n // 2 + 1, side="left")
            out[k, j] = (t[lo] + t[hi]) / 2
    return out
