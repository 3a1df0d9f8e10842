"""The sales pipeline: ordered open stages, won and lost stages, stage probabilities."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .errors import FunnelDataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["Pipeline", "suggest_stage"]

_WON_PATTERN = re.compile(
    r"(\bwon\b|\bwin\b|closed[\s_-]*won|closedwon|\bsigned\b|\bbooked\b|\bclosed[\s_-]*win)",
    re.IGNORECASE,
)
_LOST_PATTERN = re.compile(
    r"(\blost\b|closed[\s_-]*lost|closedlost|\bdead\b|disqualified|\brejected\b|no[\s_-]*decision"
    r"|\bcancel+ed\b|\bchurned\b|\bdeclined\b|\bunqualified\b)",
    re.IGNORECASE,
)


def _normalise(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", name.casefold())


def suggest_stage(name: str, known: Iterable[str]) -> str | None:
    """Return the known stage name that ``name`` most likely means, or None.

    A near miss is a name that differs only in case, spacing or punctuation
    (``"Closed-Won"`` for ``"Closed Won"``), or that is very close in spelling.

    Examples
    --------
    >>> suggest_stage("Closed-Won", ["Prospecting", "Closed Won", "Closed Lost"])
    'Closed Won'
    >>> suggest_stage("Banana", ["Prospecting", "Closed Won"]) is None
    True
    """
    known = list(known)
    by_norm = {_normalise(k): k for k in known}
    norm = _normalise(name)
    if norm in by_norm:
        return by_norm[norm]
    match = difflib.get_close_matches(norm, list(by_norm), n=1, cutoff=0.8)
    return by_norm[match[0]] if match else None


@dataclass(frozen=True, init=False)
class Pipeline:
    """Ordered open stages, the won stage(s), the lost stage(s).

    Parameters
    ----------
    stages : sequence of str
        The open stages in funnel order (first stage first).
    won : sequence of str
        Terminal stages that mean the deal was won.
    lost : sequence of str
        Terminal stages that mean the deal was lost.
    probabilities : mapping of str to float, optional
        The CRM's win probability per stage (0-1), used by the weighted-pipeline
        baseline. Percentages (0-100) are accepted and divided by 100.
    name : str, optional
        The pipeline's name.
    notes : sequence of str
        How the pipeline was obtained (for example, what inference decided).

    Examples
    --------
    >>> p = Pipeline(["Lead", "Demo", "Proposal"], won=["Won"], lost=["Lost"])
    >>> p.order
    ('Lead', 'Demo', 'Proposal', 'Won', 'Lost')
    >>> p.outcome_of("Won"), p.outcome_of("Demo")
    ('won', 'open')
    """

    stages: tuple[str, ...]
    won: tuple[str, ...]
    lost: tuple[str, ...]
    probabilities: Mapping[str, float]
    name: str | None
    notes: tuple[str, ...]

    def __init__(
        self,
        stages: Sequence[str],
        won: Sequence[str] | str = ("Closed Won",),
        lost: Sequence[str] | str = ("Closed Lost",),
        probabilities: Mapping[str, float] | None = None,
        name: str | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        stages_t = _as_names(stages, "stages")
        won_t = _as_names(won, "won")
        lost_t = _as_names(lost, "lost")
        object.__setattr__(self, "stages", stages_t)
        object.__setattr__(self, "won", won_t)
        object.__setattr__(self, "lost", lost_t)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "notes", tuple(notes))
        object.__setattr__(self, "probabilities", probabilities or {})
        self._check()

    def _check(self) -> None:
        stages, won, lost = self.stages, self.won, self.lost
        if not stages and not (won or lost):
            raise ValueError("a pipeline needs at least one stage")
        seen: dict[str, str] = {}
        for kind, names in (("open", stages), ("won", won), ("lost", lost)):
            for n in names:
                if n in seen:
                    raise ValueError(f"stage {n!r} is listed twice (as {seen[n]} and as {kind})")
                seen[n] = kind
        probs: dict[str, float] = {}
        raw = dict(self.probabilities or {})
        scale = 100.0 if raw and max(float(v) for v in raw.values()) > 1.0 else 1.0
        for k, v in raw.items():
            if k not in seen:
                hint = suggest_stage(k, seen)
                extra = f" (did you mean {hint!r}?)" if hint else ""
                raise ValueError(f"probability given for unknown stage {k!r}{extra}")
            p = float(v) / scale
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"probability of stage {k!r} must be within 0-1, got {v!r}")
            probs[k] = p
        object.__setattr__(self, "probabilities", MappingProxyType(probs))

    def __hash__(self) -> int:
        return hash(
            (self.stages, self.won, self.lost, tuple(sorted(self.probabilities.items())), self.name)
        )

    # ------------------------------------------------------------------ views
    @property
    def order(self) -> tuple[str, ...]:
        """All stages: open stages in order, then won, then lost."""
        return self.stages + self.won + self.lost

    @property
    def terminal(self) -> tuple[str, ...]:
        """The won and lost stages."""
        return self.won + self.lost

    @property
    def dtype(self) -> pd.CategoricalDtype:
        """The ordered categorical dtype of the ``stage`` columns."""
        return pd.CategoricalDtype(list(self.order), ordered=True)

    @property
    def n_open(self) -> int:
        """Number of open stages."""
        return len(self.stages)

    def code(self, stage: str) -> int:
        """Position of ``stage`` in :attr:`order` (raises ``KeyError`` with a hint)."""
        try:
            return self.order.index(stage)
        except ValueError:
            hint = suggest_stage(stage, self.order)
            extra = f"; did you mean {hint!r}?" if hint else ""
            raise KeyError(f"{stage!r} is not a stage of this pipeline{extra}") from None

    def outcome_of(self, stage: str) -> str:
        """``"won"``, ``"lost"`` or ``"open"`` for a stage name."""
        if stage in self.won:
            return "won"
        if stage in self.lost:
            return "lost"
        if stage in self.stages:
            return "open"
        self.code(stage)  # raises with a hint
        raise AssertionError("unreachable")  # pragma: no cover

    def kind_codes(self) -> np.ndarray:
        """Per stage code: 0 open, 1 won, 2 lost."""
        return np.array(
            [0] * len(self.stages) + [1] * len(self.won) + [2] * len(self.lost), dtype=np.int8
        )

    def probability_array(self) -> np.ndarray:
        """CRM probability per stage code (NaN where not given; won 1, lost 0 by default)."""
        out = np.full(len(self.order), np.nan)
        for i, s in enumerate(self.order):
            if s in self.probabilities:
                out[i] = self.probabilities[s]
            elif s in self.won:
                out[i] = 1.0
            elif s in self.lost:
                out[i] = 0.0
        return out

    def with_notes(self, *notes: str) -> Pipeline:
        """A copy with more notes appended."""
        return Pipeline(
            self.stages,
            self.won,
            self.lost,
            dict(self.probabilities),
            self.name,
            self.notes + notes,
        )

    # --------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Pipeline:
        """Build from a mapping with keys ``stages``, ``won``, ``lost``, optional
        ``probabilities`` and ``name`` (the layout of the TOML file).

        Examples
        --------
        >>> Pipeline.from_dict({"stages": ["A", "B"], "won": "Won", "lost": ["Lost"]}).order
        ('A', 'B', 'Won', 'Lost')
        """
        spec = dict(spec)
        if "pipeline" in spec and isinstance(spec["pipeline"], Mapping):
            spec = dict(spec["pipeline"])
        unknown = set(spec) - {"stages", "won", "lost", "probabilities", "name"}
        if unknown:
            raise ValueError(
                f"unknown pipeline keys {sorted(unknown)}; expected stages, won, lost, "
                "probabilities, name"
            )
        if "stages" not in spec:
            raise ValueError("a pipeline definition needs 'stages' (the open stages in order)")
        return cls(
            stages=spec["stages"],
            won=spec.get("won", ()),
            lost=spec.get("lost", ()),
            probabilities=spec.get("probabilities", {}) or {},
            name=spec.get("name"),
        )

    @classmethod
    def from_toml(cls, path: str | PathLike[str]) -> Pipeline:
        """Load a pipeline from a TOML file.

        The file holds a ``[pipeline]`` table (or the same keys at top level)::

            [pipeline]
            name = "New business"
            stages = ["Prospecting", "Qualification", "Proposal", "Negotiation"]
            won = ["Closed Won"]
            lost = ["Closed Lost"]

            [pipeline.probabilities]
            Prospecting = 0.1
            Qualification = 0.2
        """
        path = Path(path)
        try:
            with path.open("rb") as fh:
                spec = tomllib.load(fh)
        except FileNotFoundError:
            raise FunnelDataError("pipeline file not found", file=str(path)) from None
        except tomllib.TOMLDecodeError as exc:
            raise FunnelDataError(f"not valid TOML: {exc}", file=str(path)) from None
        try:
            return cls.from_dict(spec)
        except ValueError as exc:
            raise FunnelDataError(str(exc), file=str(path)) from None

    def to_toml(self) -> str:
        """The pipeline as TOML text that :meth:`from_toml` reads back.

        Examples
        --------
        >>> p = Pipeline(["A", "B"], won=["Won"], lost=["Lost"], probabilities={"A": 0.2})
        >>> print(p.to_toml())
        [pipeline]
        stages = ["A", "B"]
        won = ["Won"]
        lost = ["Lost"]
        <BLANKLINE>
        [pipeline.probabilities]
        "A" = 0.2
        <BLANKLINE>
        """

        def q(s: str) -> str:
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

        def arr(xs: Sequence[str]) -> str:
            return "[" + ", ".join(q(x) for x in xs) + "]"

        lines = ["[pipeline]"]
        if self.name:
            lines.append(f"name = {q(self.name)}")
        lines += [
            f"stages = {arr(self.stages)}",
            f"won = {arr(self.won)}",
            f"lost = {arr(self.lost)}",
        ]
        if self.probabilities:
            lines += ["", "[pipeline.probabilities]"]
            lines += [f"{q(k)} = {v:g}" for k, v in self.probabilities.items()]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------- inference
    @classmethod
    def infer(
        cls,
        deal_codes: np.ndarray,
        stage_codes: np.ndarray,
        names: Sequence[str],
    ) -> Pipeline:
        """Infer a pipeline from observed stage sequences.

        Parameters
        ----------
        deal_codes, stage_codes : ndarray of int
            One entry per stage entry, sorted by deal and time; ``stage_codes``
            index into ``names``.
        names : sequence of str
            The distinct stage names.

        Returns
        -------
        Pipeline
            With :attr:`notes` saying which stages were taken as won or lost and why,
            and how the open stages were ordered.

        Notes
        -----
        Won and lost stages are recognised by name (``won``, ``closed won``,
        ``signed``; ``lost``, ``closed lost``, ``disqualified``, ...). The open
        stages are ordered by how often one is entered before the other in the
        same deal (a Copeland ranking of pairwise precedences), ties broken by
        the average position of the stage's first entry in a deal.
        """
        names = list(names)
        k = len(names)
        won = [n for n in names if _WON_PATTERN.search(n) and not _LOST_PATTERN.search(n)]
        lost = [n for n in names if _LOST_PATTERN.search(n) and n not in won]
        open_ = [n for n in names if n not in won and n not in lost]
        notes = []
        if won:
            notes.append(f"won stage(s) {won} recognised by name")
        else:
            notes.append("no stage name looks like a won stage: every deal counts as lost or open")
        if lost:
            notes.append(f"lost stage(s) {lost} recognised by name")
        else:
            notes.append("no stage name looks like a lost stage")

        # last stages of deals that are never left: a hint the user may need a pipeline file
        if len(deal_codes):
            last = np.r_[deal_codes[1:] != deal_codes[:-1], True]
            has_exit = np.zeros(k, dtype=bool)
            has_exit[stage_codes[~last]] = True
            sinks = [names[i] for i in range(k) if not has_exit[i] and names[i] in open_]
            if sinks:
                notes.append(
                    f"open stage(s) {sinks} are never left; if they are terminal, give a pipeline"
                )

        order = _order_stages(deal_codes, stage_codes, k)
        open_sorted = [names[i] for i in order if names[i] in open_]
        won_sorted = [names[i] for i in order if names[i] in won]
        lost_sorted = [names[i] for i in order if names[i] in lost]
        notes.append(f"open stages ordered by observed precedence: {open_sorted}")
        return cls(open_sorted, won_sorted, lost_sorted, notes=tuple(notes))


def _as_names(values: Any, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values:
        if not isinstance(v, str) or not v:
            raise ValueError(f"{what}: stage names must be non-empty strings, got {v!r}")
        out.append(v)
    return tuple(out)


def _order_stages(deal_codes: np.ndarray, stage_codes: np.ndarray, k: int) -> list[int]:
    """Order stage codes by pairwise precedence of first entries within deals."""
    if k == 0:
        return []
    if len(stage_codes) == 0:
        return list(range(k))
    # first entry of each stage per deal, in time order
    key = deal_codes.astype(np.int64) * k + stage_codes
    _, first = np.unique(key, return_index=True)
    first.sort()
    d = deal_codes[first]
    s = stage_codes[first].astype(np.int64)
    new = np.r_[True, d[1:] != d[:-1]]
    starts = np.flatnonzero(new)
    pos = np.arange(len(d)) - np.repeat(starts, np.diff(np.r_[starts, len(d)]))
    mean_pos = np.bincount(s, weights=pos, minlength=k) / np.maximum(np.bincount(s, minlength=k), 1)
    # precedes[a, b] = number of deals that entered a before first entering b
    precedes = np.zeros((k, k), dtype=np.int64)
    maxlen = int(pos.max()) + 1 if len(pos) else 0
    if maxlen > 64 or k > 64:
        return list(np.argsort(mean_pos, kind="stable"))
    seen = np.zeros(len(starts), dtype=np.uint64)  # bitmask per deal of stages entered so far
    deal_index = np.cumsum(new) - 1
    for p in range(maxlen):
        at = pos == p
        di = deal_index[at]
        st = s[at]
        mask = seen[di]
        for a in range(k):
            hit = (mask >> np.uint64(a)) & np.uint64(1)
            if hit.any():
                precedes[a] += np.bincount(st[hit.astype(bool)], minlength=k)
        seen[di] = mask | (np.uint64(1) << st.astype(np.uint64))
    wins = (precedes > precedes.T).sum(axis=1)
    return sorted(range(k), key=lambda i: (-wins[i], mean_pos[i], i))
