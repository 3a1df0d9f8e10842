"""The validation every adapter shares: rows in, FunnelData out, nothing lost.

An adapter maps its export to :class:`Mapped` rows (deal, stage, time, amount,
...) and calls :func:`build_funnel`. Every source row ends up *kept*,
*repaired* (counted per rule) or *quarantined* (with its reason); the counts and
the rows are in the :class:`~funnelstats.ingest.report.IngestReport`.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .. import _columns as C
from ..data import FunnelData, to_timestamp
from ..errors import FunnelDataError
from ..pipeline import Pipeline, suggest_stage
from . import _parse
from ._fastparse import (
    empty_values,
    factorize,
    plain_ends,
    printable_words,
    select_rows,
    take_rows,
)
from ._io import Table
from ._parse import NAT, _arrow_strings, parse_amounts, parse_timestamps
from .report import RULES, IngestReport

__all__ = ["Mapped", "build_funnel", "resolve_column"]

_EARLY = pd.Timestamp("1990-01-01").value
_UTC = pd.DatetimeTZDtype("ns", "UTC")
_ARROW_STRING = pd.StringDtype("pyarrow")
#: From this many mapped rows, the timestamp and amount columns are parsed in a worker thread
#: while the deal and stage columns are checked (numpy and pyarrow release the GIL).
_PARALLEL_MIN_ROWS = 100_000
_STATUS_KEPT, _STATUS_REPAIRED, _STATUS_QUARANTINED = 0, 1, 2


@dataclass
class Mapped:
    """Rows of an export mapped to the standard fields, before validation.

    Every Series has one entry per mapped row; ``pos`` gives the source row
    (position in ``table.frame``) each mapped row came from, so one source row
    may yield several mapped rows (a wide export) or none.
    """

    table: Table
    layout: str
    deal: pd.Series
    stage: pd.Series
    at: pd.Series
    columns: dict[str, str]
    amount: pd.Series | None = None
    close_date: pd.Series | None = None
    currency: pd.Series | None = None
    attributes: pd.DataFrame | None = None
    pos: np.ndarray | None = None
    update_only: np.ndarray | None = None
    created: pd.Series | None = None
    # (source-row mask, rule, column, message) set aside by the adapter
    pre_quarantine: list[tuple[np.ndarray, str, str | None, str]] = field(default_factory=list)
    # (source-row mask, rule, column, message) counted as notes, rows kept
    source_notes: list[tuple[np.ndarray, str, str | None, str]] = field(default_factory=list)
    # (mapped-row mask, rule, column, message, original values, repaired values):
    # CRM-specific repairs the adapter made to the mapped values, counted like any repair
    repairs: list[tuple[np.ndarray, str, str | None, str, Any, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    has_stage_history: bool = True
    undated: pd.DataFrame | None = None


def resolve_column(
    table: Table,
    given: str | None,
    candidates: tuple[str, ...],
    role: str,
    *,
    required: bool = True,
) -> str | None:
    """The column of ``table`` that plays ``role``.

    ``given`` is the user's choice (must exist); otherwise the first of
    ``candidates`` present (compared without case, spaces or punctuation).
    A missing required column raises :class:`FunnelDataError` that lists the
    columns found and the closest match.
    """
    cols = [str(c) for c in table.frame.columns]
    if given is not None:
        if given in cols:
            return given
        raise _missing(table, given, role, cols)
    norm = {_norm(c): c for c in cols}
    for cand in candidates:
        if _norm(cand) in norm:
            return norm[_norm(cand)]
    if required:
        raise _missing(table, candidates[0], role, cols, tried=candidates)
    return None


def _norm(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def _missing(
    table: Table, want: str, role: str, cols: list[str], tried: tuple[str, ...] = ()
) -> FunnelDataError:
    close = difflib.get_close_matches(want, cols, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(_norm(want), [_norm(c) for c in cols], n=1, cutoff=0.6)
        close = [c for c in cols if close and _norm(c) == close[0]][:1]
    looked = f" (looked for {list(tried)})" if tried else ""
    hint = f"; closest match: {close[0]!r}" if close else ""
    arg = {"deal": "deal=", "stage": "stage=", "time": "at="}.get(role, f"{role}=")
    return FunnelDataError(
        f"no {role} column {want!r}{looked}. Columns found: {cols}{hint}. "
        f"Name the column with {arg}",
        file=table.name,
        column=want,
        rule="missing_column",
    )


class _Collector:
    """Per-source-row status and the findings of every rule."""

    def __init__(self, mapped: Mapped) -> None:
        self.m = mapped
        self.table = mapped.table
        n_src = len(self.table.frame)
        self.status = np.zeros(n_src, dtype=np.int8)
        self.pos = mapped.pos if mapped.pos is not None else np.arange(len(mapped.deal))
        self.findings: list[dict[str, Any]] = []
        self.quarantine_parts: list[pd.DataFrame] = []
        self.repair_parts: list[pd.DataFrame] = []

    def _rows(self, src_positions: np.ndarray) -> np.ndarray:
        return self.table.rows[src_positions]

    def _add(self, rule: str, src: np.ndarray, column: str | None, message: str) -> None:
        if len(src) > 1 and not (src[1:] > src[:-1]).all():
            src = np.unique(src)
        if not len(src):
            return
        rows = self._rows(src)
        self.findings.append(
            {
                "rule": rule,
                "kind": RULES[rule].kind,
                "rows": len(src),
                "column": column,
                "first_row": int(rows.min()),
                "message": message,
            }
        )

    def quarantine(
        self,
        mask: np.ndarray,
        rule: str,
        column: str | None,
        message: str,
        *,
        source: bool = False,
        values: pd.Series | None = None,
    ) -> None:
        """Quarantine mapped rows (or source rows with ``source=True``).

        With ``values`` (one per mapped row), each reason quotes the row's value.
        """
        where = np.flatnonzero(mask)
        src = where if source else self.pos[where]
        live = self.status[src] != _STATUS_QUARANTINED
        where, src = where[live], src[live]
        src, first = np.unique(src, return_index=True)
        if not len(src):
            return
        self.status[src] = _STATUS_QUARANTINED
        self._add(rule, src, column, message)
        reason: Any = message
        if values is not None:
            vals = take_rows(values, where[first]).astype(object).to_numpy()
            reason = [f"{message}: {v!r}" for v in vals]
        self.quarantine_parts.append(
            pd.DataFrame({"_pos": src, "rule": rule, "column": column, "reason": reason})
        )

    def repair(
        self,
        mask: np.ndarray,
        rule: str,
        column: str | None,
        message: str,
        original: Any = None,
        repaired: Any = None,
    ) -> None:
        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        src = self.pos[idx]
        live = self.status[src] != _STATUS_QUARANTINED
        idx, src = idx[live], src[live]
        if not len(idx):
            return
        self.status[src] = np.maximum(self.status[src], _STATUS_REPAIRED)
        self._add(rule, src, column, message)
        self.repair_parts.append(
            pd.DataFrame(
                {
                    "_pos": src,
                    "rule": rule,
                    "column": column,
                    "original": _pick(original, idx),
                    "repaired": _pick(repaired, idx),
                }
            )
        )

    def note(self, mask: np.ndarray, rule: str, column: str | None, message: str) -> None:
        src = self.pos[np.flatnonzero(mask)]
        self._add(rule, src, column, message)

    def raise_first(self) -> None:
        """strict=True: raise for the earliest repaired or quarantined row."""
        bad = [f for f in self.findings if f["kind"] in ("repair", "quarantine")]
        if not bad:
            return
        first = min(bad, key=lambda f: f["first_row"])
        raise FunnelDataError(
            f"{first['message']} [{first['rule']}] (strict=True; {len(bad)} rule(s) fired, "
            "see IngestReport with strict=False)",
            file=self.table.name,
            row=first["first_row"],
            column=first["column"],
            rule=first["rule"],
            row_word=self.table.row_word,
        )


def _pick(values: Any, idx: np.ndarray) -> Any:
    if values is None:
        return None
    if isinstance(values, pd.Series):
        return take_rows(values, idx).astype(object).to_numpy()
    arr = np.asarray(values, dtype=object)
    return arr[idx] if arr.ndim else arr


def _strings(series: pd.Series) -> pd.Series:
    s = series.reset_index(drop=True)
    if pd.api.types.is_float_dtype(s.dtype):
        # ids that came through a numeric dtype: 123.0 -> "123"
        v = s.to_numpy()
        integral = np.isfinite(v) & (np.floor(v) == v)
        out = pd.Series(s.astype(object).astype(str), dtype="string[pyarrow]")
        out[integral] = pd.Series(
            v[integral].astype(np.int64).astype(str), dtype="string[pyarrow]"
        ).to_numpy()
        out[pd.isna(s).to_numpy()] = pd.NA
        return out
    if not isinstance(s.dtype, pd.StringDtype):
        s = s.astype("string[pyarrow]")
    return s


def build_funnel(
    mapped: Mapped,
    *,
    pipeline: Pipeline | None = None,
    tz: str | None = None,
    strict: bool = False,
    exported_at: Any = None,
    on_unknown_stage: str = "error",
    dayfirst: bool | None = None,
) -> FunnelData:
    """Validate mapped rows and build :class:`FunnelData`.

    See the rules in :data:`funnelstats.ingest.report.RULES`.
    """
    if on_unknown_stage not in ("error", "quarantine", "add"):
        raise ValueError("on_unknown_stage must be 'error', 'quarantine' or 'add'")
    _check_tz(tz or "UTC")
    with _Parses(len(mapped.deal)) as parses:
        return _build_funnel(
            mapped,
            parses,
            pipeline=pipeline,
            tz=tz,
            strict=strict,
            exported_at=exported_at,
            on_unknown_stage=on_unknown_stage,
            dayfirst=dayfirst,
        )


class _Parses:
    """The column parses, started early in a worker thread on large inputs.

    Each parse is a pure function of its column; its result (or its exception) is taken
    where the sequential code would have called it, so the outcome is the same either way.
    Small inputs run each parse when its result is asked for.
    """

    def __init__(self, n: int) -> None:
        # one worker: with the main thread, two threads at a time
        self._pool = ThreadPoolExecutor(max_workers=1) if n >= _PARALLEL_MIN_ROWS else None
        self._started: dict[str, Future[Any]] = {}
        self._calls: dict[str, tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = {}

    def __enter__(self) -> _Parses:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def start(
        self, key: str, fn: Callable[..., Any], *args: Any, here: bool = False, **kwargs: Any
    ) -> None:
        """Start ``fn(*args, **kwargs)``: in the worker, or (``here``) now in this thread,
        to balance the two threads; its result or exception is kept for :meth:`result`."""
        if self._pool is None:
            self._calls[key] = (fn, args, kwargs)
        elif here:
            done: Future[Any] = Future()
            try:
                done.set_result(fn(*args, **kwargs))
            except Exception as exc:  # raised where the result is taken, as in sequence
                done.set_exception(exc)
            self._started[key] = done
        else:
            self._started[key] = self._pool.submit(_in_worker, fn, *args, **kwargs)

    def result(self, key: str) -> Any:
        if key in self._started:
            return self._started.pop(key).result()
        fn, args, kwargs = self._calls.pop(key)
        return fn(*args, **kwargs)


def _in_worker(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, then the memory arrow cached for this thread handed back
    (a worker's cache is not released from the main thread, and it would stay resident)."""
    try:
        return fn(*args, **kwargs)
    finally:
        pa.default_memory_pool().release_unused()


def _build_funnel(
    mapped: Mapped,
    parses: _Parses,
    *,
    pipeline: Pipeline | None,
    tz: str | None,
    strict: bool,
    exported_at: Any,
    on_unknown_stage: str,
    dayfirst: bool | None,
) -> FunnelData:
    table = mapped.table
    cols = mapped.columns
    col = cols.get
    tz_given = tz is not None
    tz = tz or "UTC"
    # the worker parses the times of the changes, then the close dates; the amounts are
    # parsed here meanwhile (the two threads take about as long)
    parses.start("at", parse_timestamps, mapped.at, tz=tz, dayfirst=dayfirst)
    if mapped.close_date is not None:
        parses.start("close_date", parse_timestamps, mapped.close_date, tz=tz, dayfirst=dayfirst)
    if mapped.amount is not None:
        parses.start("amount", parse_amounts, mapped.amount, here=True)
    notes = list(table.notes) + list(mapped.notes)
    k = _Collector(mapped)
    n = len(mapped.deal)
    for row, _text, reason in table.malformed:
        k.findings.append(
            {
                "rule": "malformed_row",
                "kind": "quarantine",
                "rows": 1,
                "column": None,
                "first_row": row,
                "message": reason,
            }
        )
    malformed_frame = pd.DataFrame(
        {
            "row": [r for r, _, _ in table.malformed],
            "rule": "malformed_row",
            "column": None,
            "reason": [why for _, _, why in table.malformed],
            "text": [t for _, t, _ in table.malformed],
        }
    )
    for mask, rule, column, message in mapped.pre_quarantine:
        k.quarantine(mask, rule, column, message, source=True)
    for mask, rule, column, message in mapped.source_notes:
        k._add(rule, np.flatnonzero(mask), column, message)
    for mask, rule, column, message, original, repaired in mapped.repairs:
        k.repair(np.asarray(mask, dtype=bool), rule, column, message, original, repaired)

    # ---- deal ids
    deal = _strings(mapped.deal)
    words = _printable_words(deal)  # no spaces, controls or other text: nothing to repair
    deal = deal if words else _drop_invisible(k, deal, col("deal"), "deal id")
    deal_stripped, miss, ws = _strip(deal, words=words)
    k.quarantine(miss, "missing_deal_id", col("deal"), "empty deal id")
    k.repair(
        ws,
        "deal_id_whitespace",
        col("deal"),
        "spaces around the deal id removed",
        deal,
        deal_stripped,
    )
    deal = deal_stripped
    # the deal column's sort codes, while the worker thread parses the other columns
    deal_codes_all, deal_uniques = _sorted_codes(deal)

    # ---- stages
    update_only = (
        np.zeros(n, dtype=bool)
        if mapped.update_only is None
        else np.asarray(mapped.update_only, dtype=bool)
    )
    stage = _strings(mapped.stage)
    plain = _plain_names(stage)  # the names checked once each: nothing to repair
    if plain is not None:
        smiss = plain[0] < 0
        k.quarantine(smiss & ~update_only, "missing_stage", col("stage"), "empty stage")
        stage, stage_factorized = _stage_variants(k, stage, pipeline, col("stage"), plain)
    else:
        stage = _drop_invisible(
            k,
            stage,
            col("stage"),
            "stage name",
            pipeline.order if pipeline is not None else (),
        )
        stage_stripped, smiss, sws = _strip(stage)
        k.quarantine(smiss & ~update_only, "missing_stage", col("stage"), "empty stage")
        k.repair(
            sws,
            "stage_whitespace",
            col("stage"),
            "spaces around the stage name removed",
            stage,
            stage_stripped,
        )
        stage, stage_factorized = _stage_variants(k, stage_stripped, pipeline, col("stage"))

    # ---- time of the change
    times = parses.result("at")
    if times.ambiguous_format:
        pos = k.pos[times.ambiguous_example] if times.ambiguous_example is not None else None
        raise table.error(
            times.ambiguous_format, position=pos, column=col("at"), rule="ambiguous_date_format"
        )
    notes += [f"{col('at')}: {t}" for t in times.notes]
    k.quarantine(times.missing, "missing_timestamp", col("at"), "empty timestamp")
    k.quarantine(
        times.bad,
        "unparseable_timestamp",
        col("at"),
        "timestamp cannot be read as a date and time",
        values=mapped.at,
    )
    if times.naive.any():
        k.note(
            times.naive,
            "naive_timestamp",
            col("at"),
            f"no time zone; read as {tz}" + ("" if tz_given else " (the default; pass tz=)"),
        )
        if not tz_given:
            notes.append("timestamps without a zone were read as UTC; pass tz= if they are local")
    if times.dst_ambiguous.any():
        k.repair(
            times.dst_ambiguous,
            "dst_ambiguous",
            col("at"),
            f"local time occurs twice in {tz}; first occurrence taken",
            mapped.at,
        )
    if times.dst_nonexistent.any():
        k.repair(
            times.dst_nonexistent,
            "dst_nonexistent",
            col("at"),
            f"local time does not exist in {tz}; moved forward",
            mapped.at,
        )
    at = times.ns

    # ---- amounts
    if mapped.amount is not None:
        am = parses.result("amount")
        acol = col("amount")
        k.repair(
            am.text,
            "amount_text",
            acol,
            "amount written as text read as a number",
            mapped.amount,
            am.values,
        )
        k.repair(
            am.not_numeric,
            "amount_not_numeric",
            acol,
            "amount is not a number; set to NaN",
            mapped.amount,
            np.nan,
        )
        k.repair(
            am.not_finite,
            "amount_not_finite",
            acol,
            "infinite amount; set to NaN",
            mapped.amount,
            np.nan,
        )
        k.repair(
            am.negative,
            "amount_negative",
            acol,
            "negative amount; set to NaN",
            mapped.amount,
            np.nan,
        )
        k.note(am.missing & ~update_only, "amount_missing", acol, "no amount; kept as NaN")
        amount = am.values
        notes += [f"{acol}: {t}" for t in am.notes]
    else:
        amount = np.full(n, np.nan)
        notes.append("no amount column: amounts are unknown")

    # ---- expected close date (optional)
    if mapped.close_date is None:
        close_ns = np.full(n, NAT, dtype=np.int64)
    else:
        cd = parses.result("close_date")
        k.repair(
            cd.bad,
            "close_date_unparseable",
            col("close_date"),
            "close date cannot be read; left empty",
            mapped.close_date,
            None,
        )
        close_ns = np.where(cd.bad, NAT, cd.ns) if cd.bad.any() else cd.ns

    created = None
    if mapped.created is not None:
        cr = parse_timestamps(mapped.created, tz=tz, dayfirst=dayfirst)
        created = pd.Series(cr.ns, index=deal.to_numpy(dtype=object, na_value=None))

    identity = mapped.pos is None and len(k.status) == n  # mapped row i is source row i
    alive = (k.status if identity else k.status[k.pos]) != _STATUS_QUARANTINED
    # ---- pipeline (stage names factorized once: a stage column holds a handful of names)
    known_stage = ~smiss
    stage_all, stage_names = stage_factorized
    pipeline, unknown = _resolve_pipeline(
        k, pipeline, stage, alive & known_stage, on_unknown_stage, (stage_all, stage_names)
    )
    if unknown is not None and unknown.any():
        k.quarantine(unknown, "unknown_stage_row", col("stage"), "stage not in the pipeline")
        alive &= ~unknown

    # ---- sort: deal, time, pipeline order, source order
    idx = np.flatnonzero(alive)
    deal_codes = deal_codes_all[idx]
    deal_codes_all = None  # type: ignore[assignment]
    stage_map = np.append(pd.Index(pipeline.order).get_indexer(stage_names), -1)
    stage_codes = stage_map[stage_all[idx]].astype(np.int64, copy=False)
    if smiss.any():
        stage_codes[~known_stage[idx]] = -1
    at_a = at[idx]
    # the full-length parses are no longer needed: let their memory go
    times = am = cd = stage_all = at = None  # type: ignore[assignment]
    upd = (
        update_only[idx] & (stage_codes < 0)
        if update_only.any()
        else np.zeros(len(idx), dtype=bool)
    )
    # an update that ties with a stage change at the same instant sorts after it
    tie_rank = np.where(upd, len(pipeline.order), stage_codes) if upd.any() else stage_codes
    reordered = False
    if not _is_sorted(deal_codes, at_a, tie_rank):
        # lexsort is stable and idx is increasing: ties keep the source order
        order = np.lexsort((tie_rank, at_a, deal_codes))
        reordered = True
        idx, deal_codes, stage_codes, at_a, upd = (
            idx[order],
            deal_codes[order],
            stage_codes[order],
            at_a[order],
            upd[order],
        )

    # ---- field updates take the deal's current stage
    if upd.any():
        new_deal = np.r_[True, deal_codes[1:] != deal_codes[:-1]]
        filled = pd.Series(np.where(upd, np.nan, stage_codes)).groupby(np.cumsum(new_deal)).ffill()
        orphan = filled.isna().to_numpy()
        if orphan.any():
            m = np.zeros(n, dtype=bool)
            m[idx[orphan]] = True
            k.quarantine(
                m, "update_before_stage", col("stage"), "field update before the deal's first stage"
            )
            keep = ~orphan
            idx, deal_codes, stage_codes, at_a, upd = (
                idx[keep],
                deal_codes[keep],
                stage_codes[keep],
                at_a[keep],
                upd[keep],
            )
            filled = filled[keep]
        stage_codes = filled.to_numpy().astype(np.int64)

    # ---- exact duplicates (collapsed) and same-instant stage changes (ordered)
    if len(idx) > 1:
        same_da = (deal_codes[1:] == deal_codes[:-1]) & (at_a[1:] == at_a[:-1])
        same_stage = same_da & (stage_codes[1:] == stage_codes[:-1])
        cand = np.flatnonzero(same_stage)
        dup = np.zeros(len(idx), dtype=bool)
        if len(cand):
            a_src = k.pos[idx[cand]]
            b_src = k.pos[idx[cand + 1]]
            equal = _rows_equal(table.frame, a_src, b_src) & (a_src != b_src)
            dup[cand[equal] + 1] = True
        if dup.any():
            m = np.zeros(n, dtype=bool)
            m[idx[dup]] = True
            k.repair(m, "duplicate_row", None, "exact duplicate of an earlier row; collapsed")
            keep = ~dup
            idx, deal_codes, stage_codes, at_a = (
                idx[keep],
                deal_codes[keep],
                stage_codes[keep],
                at_a[keep],
            )
        if len(idx) > 1:
            tie = (
                (deal_codes[1:] == deal_codes[:-1])
                & (at_a[1:] == at_a[:-1])
                & (stage_codes[1:] != stage_codes[:-1])
            )
            if tie.any():
                m = np.zeros(n, dtype=bool)
                m[idx[np.flatnonzero(tie) + 1]] = True
                k.repair(
                    m,
                    "same_instant",
                    col("at"),
                    "stage changes of one deal at the same instant; ordered by pipeline order",
                )

    # ---- export date
    if exported_at is not None:
        exp = to_timestamp(exported_at, name="exported_at")
        late = at_a > exp.value
        if late.any():
            m = np.zeros(n, dtype=bool)
            m[idx[late]] = True
            k.quarantine(m, "after_export", col("at"), f"dated after the export date {exp}")
            keep = ~late
            idx, deal_codes, stage_codes, at_a = (
                idx[keep],
                deal_codes[keep],
                stage_codes[keep],
                at_a[keep],
            )
    else:
        far = _far_future(at_a)
        if far.any():
            m = np.zeros(n, dtype=bool)
            m[idx[far]] = True
            k.quarantine(
                m,
                "far_future",
                col("at"),
                "dated more than a year after all the other rows; set aside so that it does "
                "not move the export date (pass exported_at= to keep it)",
                values=mapped.at,
            )
            keep = ~far
            idx, deal_codes, stage_codes, at_a = (
                idx[keep],
                deal_codes[keep],
                stage_codes[keep],
                at_a[keep],
            )
        if len(at_a):
            exp = pd.Timestamp(int(at_a.max()), tz="UTC")
        elif mapped.undated is not None and len(mapped.undated):
            raise FunnelDataError(
                "no dated rows: pass exported_at=", file=table.name, rule="no_usable_rows"
            )
        else:
            raise _no_usable_rows(k, n)
        notes.append(
            f"export date taken as the latest timestamp, {exp:%Y-%m-%d %H:%M} UTC; "
            "pass exported_at= to set it"
            + (
                f" ({int(far.sum())} row(s) dated more than a year after the rest set aside: "
                "far_future)"
                if far.any()
                else ""
            )
        )
    early = at_a < _EARLY
    if early.any():
        m = np.zeros(n, dtype=bool)
        m[idx[early]] = True
        k.note(m, "early_timestamp", col("at"), "timestamp before 1990")

    # ---- history table
    history = pd.DataFrame(
        {
            # rows in source order (the usual, sorted export): the kept rows' own strings,
            # selected chunk by chunk; else the sorted distinct ids by code
            C.DEAL_ID: (
                select_rows(deal, idx)
                if not reordered and deal.dtype == _ARROW_STRING
                else deal_uniques().take(deal_codes)
            )
            if len(idx)
            else pd.array([], dtype="string[pyarrow]"),
            # nanoseconds since the epoch, UTC: the arrays (fresh copies) are used as they are
            C.AT: pd.DatetimeIndex(at_a, dtype=_UTC),
            C.STAGE: pd.Categorical.from_codes(stage_codes, dtype=pipeline.dtype),
            C.AMOUNT: amount[idx],
            C.CLOSE_DATE: pd.DatetimeIndex(close_ns[idx], dtype=_UTC),
            "source_row": table.rows[idx if mapped.pos is None else k.pos[idx]],
        },
        copy=False,
    )
    if mapped.currency is not None:
        cur = _strings(mapped.currency).str.strip().str.upper()
        history[C.CURRENCY] = pd.Categorical(cur.iloc[idx].to_numpy(dtype=object, na_value=None))
    if mapped.attributes is not None:
        attrs = mapped.attributes.reset_index(drop=True)
        for c in attrs.columns:
            if c in history.columns:
                raise FunnelDataError(
                    f"attribute column {c!r} clashes with a standard column; rename it",
                    file=table.name,
                    column=c,
                )
            values = attrs[c].iloc[idx]
            if isinstance(values.dtype, pd.StringDtype) or values.dtype == object:
                values = values.astype(object).where(values.notna(), None)
                history[c] = pd.Categorical(values.to_numpy())
            else:
                history[c] = values.to_numpy()

    created_series = None
    if created is not None:
        cr = created[created.to_numpy() != NAT]
        cr = pd.Series(
            pd.DatetimeIndex(cr.to_numpy().view("datetime64[ns]")).tz_localize("UTC"),
            index=cr.index,
        )
        created_series = cr.groupby(level=0).min()

    data = FunnelData(
        history=history,
        pipeline=pipeline,
        exported_at=exp,
        report=_EMPTY_REPORT,
        has_stage_history=mapped.has_stage_history,
        undated=mapped.undated,
        _created=created_series,
    )

    # the history holds its own copies now: let the full-length columns go
    amount = close_ns = at_a = stage_codes = None  # type: ignore[assignment]

    # ---- facts about the moves (kept as events, counted)
    _count_moves(k, data, idx, n, deal_codes)
    if strict:
        k.raise_first()
    report = _make_report(k, mapped, notes, malformed_frame, pipeline)
    object.__setattr__(data, "report", report)
    return data


#: Characters nobody sees: control characters (tab, newline and carriage return aside), soft
#: hyphen, zero-width space / non-joiner, direction marks and overrides, word joiner, and a
#: byte-order mark inside the text. The zero-width joiner is kept (emoji sequences need it),
#: and so are C1 controls, which come from a wrong encoding (reported when decoding).
_INVISIBLE = (
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad\u200b\u200c\u200e\u200f"
    "\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
)
_YEAR_NS = 365 * 86_400 * 10**9


def _drop_invisible(
    k: _Collector,
    values: pd.Series,
    column: str | None,
    what: str,
    known: tuple[str, ...] = (),
) -> pd.Series:
    """Remove invisible characters from ids and stage names (counted as repairs).

    Names in ``known`` (the pipeline's stages, spelled as given) are left as they are.
    """
    if not _maybe_invisible(values):
        return values
    has = values.str.contains(_INVISIBLE, regex=True).to_numpy(dtype=bool, na_value=False)
    if has.any() and known:
        has &= ~values.isin(known).to_numpy(dtype=bool, na_value=False)
    if not has.any():
        return values
    cleaned = values.copy()
    cleaned[has] = values[has].str.replace(_INVISIBLE, "", regex=True)
    k.repair(
        has,
        "invisible_character",
        column,
        f"invisible characters (control characters, zero-width spaces, direction marks) "
        f"removed from the {what}",
        values,
        cleaned,
    )
    return cleaned


def _maybe_invisible(values: pd.Series) -> bool:
    """False when the text is plain ASCII without control characters (a scan of its bytes)."""
    try:
        chunks = values.array.__arrow_array__().chunks
    except (AttributeError, TypeError):  # pragma: no cover - not arrow-backed: check it all
        return True
    for chunk in chunks:
        buf = chunk.buffers()[2]
        if buf is None:
            continue
        b = np.frombuffer(buf, dtype=np.uint8)
        odd = (b - np.uint8(0x20)) > 0x5E  # outside printable ASCII: one pass over the bytes
        if odd.any():
            x = b[odd]
            if ((x >= 0x7F) | ((x != 0x09) & (x != 0x0A) & (x != 0x0D))).any():
                return True
    return False


def _case_key(name: str) -> str:
    name = re.sub(_INVISIBLE, "", unicodedata.normalize("NFC", name))
    return " ".join(name.casefold().split())


def _printable_words(values: pd.Series) -> bool:
    """Whether the values are arrow strings of printable ASCII without spaces (one scan of
    their bytes): nothing for the invisible-character and whitespace rules to repair."""
    if not _parse.FAST_PATH:
        return False
    arr = _arrow_strings(values)
    return arr is not None and printable_words(arr)


def _plain_names(stage: pd.Series) -> tuple[np.ndarray, Any] | None:
    """``pd.factorize(stage)`` when no stage name needs a repair of its invisible characters
    or surrounding spaces and none is empty, else None.

    The rules' own string operations run on the distinct names: a column of stage names
    holds a handful, so the rows are hashed once and their bytes never scanned.
    """
    if not _parse.FAST_PATH or _arrow_strings(stage) is None:
        return None
    codes, uniques = factorize(stage)
    names = pd.Series(uniques, dtype=stage.dtype)
    if names.str.contains(_INVISIBLE, regex=True).to_numpy(dtype=bool, na_value=True).any():
        return None
    stripped = names.str.strip()
    if ((stripped != names) | (stripped == "")).to_numpy(dtype=bool, na_value=True).any():
        return None
    return codes, uniques


def _stage_variants(
    k: _Collector,
    stage: pd.Series,
    pipeline: Pipeline | None,
    column: str | None,
    factorized: tuple[np.ndarray, Any] | None = None,
) -> tuple[pd.Series, tuple[np.ndarray, Any]]:
    """One spelling per stage: Unicode NFC, and variants in case or inner spacing merged.

    With a pipeline, a name that differs from exactly one pipeline stage only in case or
    spacing takes the pipeline's spelling. Without one, such variants take the spelling
    used most often (the first seen on a tie). Both are counted as repairs; names that differ
    in punctuation or spelling are never merged. Returns the stage names and their
    ``pd.factorize`` (codes, names), made once here for the steps after (or given).
    """
    codes, uniques = factorized or pd.factorize(stage, use_na_sentinel=True)
    names = [str(u) for u in uniques]
    known = set(pipeline.order) if pipeline is not None else set()
    nfc = {u: u if u in known else unicodedata.normalize("NFC", u) for u in names}
    if any(u != v for u, v in nfc.items()):
        decomposed = np.array([nfc[u] != u for u in names] + [False])[codes]
        new = pd.Series(
            np.asarray([nfc[u] for u in names] + [None], dtype=object)[codes],
            dtype="string[pyarrow]",
        )
        k.repair(
            decomposed,
            "stage_unicode_form",
            column,
            "stage name in decomposed Unicode (e + combining accent) written precomposed (NFC)",
            stage,
            new,
        )
        stage = new
        codes, uniques = pd.factorize(stage, use_na_sentinel=True)
        names = [str(u) for u in uniques]
    target: dict[int, str] = {}
    if pipeline is not None:
        by_key: dict[str, list[str]] = {}
        for name in pipeline.order:
            by_key.setdefault(_case_key(name), []).append(name)
        for i, u in enumerate(names):
            match = by_key.get(_case_key(u), [])
            if u not in known and len(match) == 1:
                target[i] = match[0]
        whose = "the pipeline's"
    else:
        counts = np.bincount(codes[codes >= 0], minlength=len(names))
        groups: dict[str, list[int]] = {}
        for i, u in enumerate(names):
            groups.setdefault(_case_key(u), []).append(i)
        for members in groups.values():
            if len(members) > 1:
                best = max(members, key=lambda i: (counts[i], -i))
                target.update({i: names[best] for i in members if i != best})
        whose = "the most frequent"
    if not target:
        return stage, (codes, uniques)
    spelled = np.asarray([target.get(i, u) for i, u in enumerate(names)] + [None], dtype=object)[
        codes
    ]
    new = pd.Series(spelled, dtype="string[pyarrow]")
    changed = np.array([i in target for i in range(len(names))] + [False])[codes]
    k.repair(
        changed,
        "stage_case_variant",
        column,
        f"stage name that differs only in case or spacing written as {whose} spelling",
        stage,
        new,
    )
    return new, pd.factorize(new, use_na_sentinel=True)


def _far_future(at: np.ndarray) -> np.ndarray:
    """Rows dated far after all the others: a few rows after a gap of more than a year.

    "A few" is at most 10 rows or 1% of the rows (whichever is more) and fewer than half of
    them. Without this, one row typed as 2099 would make 2099 the export date and every
    open deal would look open until then.
    """
    n = len(at)
    out = np.zeros(n, dtype=bool)
    limit = min(max(10, n // 100), (n - 1) // 2)
    if limit < 1:
        return out
    # more than limit rows within a year of the latest: no gap of a year among the latest
    # limit + 1 (the usual case, told in one pass, without sorting or copying the times)
    if np.count_nonzero(at > at.max() - _YEAR_NS) > limit:
        return out
    tail = np.sort(np.partition(at, n - limit - 1)[n - limit - 1 :])
    big = np.flatnonzero(np.diff(tail) > _YEAR_NS)
    if len(big):
        out = at >= tail[big[0] + 1]
    return out


def _no_usable_rows(k: _Collector, n: int) -> FunnelDataError:
    """Every row was quarantined: say why, with the first quarantined row."""
    table = k.table
    if not n and not table.malformed:
        return FunnelDataError("no rows", file=table.name, rule="no_usable_rows")
    first_row, column, reason = None, None, ""
    if k.quarantine_parts:
        q = pd.concat(k.quarantine_parts, ignore_index=True)
        q["row"] = table.rows[q["_pos"].to_numpy()]
        top = q.sort_values("row", kind="stable").iloc[0]
        first_row, column = int(top["row"]), top["column"]
        reason = f"{top['reason']} [{top['rule']}]"
    for row, _text, why in table.malformed:
        if first_row is None or row < first_row:
            first_row, column, reason = row, None, f"{why} [malformed_row]"
    return FunnelDataError(
        f"no usable rows: every row was quarantined; the first because: {reason} "
        "(see data.report with strict=False for every reason)",
        file=table.name,
        row=first_row,
        column=column if isinstance(column, str) else None,
        rule="no_usable_rows",
        row_word=table.row_word,
    )


def _strip(s: pd.Series, *, words: bool = False) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """(values without surrounding spaces, which are empty or missing, which changed).

    ``words``: the values are known to hold no spaces (:func:`_printable_words`).
    """
    arr = _arrow_strings(s)
    if words and arr is not None:
        return s, empty_values(arr), np.zeros(len(s), dtype=bool)
    ends = plain_ends(arr) if arr is not None and len(arr) else None
    if ends is not None and ends[1].all():  # nothing to strip: no copy, no comparison
        return s, ends[0] <= 0, np.zeros(len(s), dtype=bool)
    stripped = s.str.strip()
    missing = (stripped.isna() | (stripped == "")).to_numpy(dtype=bool, na_value=True)
    changed = (s != stripped).to_numpy(dtype=bool, na_value=False) & ~missing
    return stripped, missing, changed


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, Callable[[], Any]]:
    """Codes of every value that sort as the values do (-1 for missing), and a function
    that gives the values per code (made when asked for: most exports never need them).

    Factorizes the whole column once (no copy of the selected strings) and ranks the
    distinct values, as ``pd.factorize(values.iloc[idx], sort=True)`` orders them for the
    rows ``idx`` that are kept (codes of values outside them stay unused).
    """
    arr = _arrow_strings(values)
    if arr is not None and len(arr) > 1 and arr.null_count == 0:
        # sorted exports (by deal) need no hashing: codes are runs of equal values
        head, tail = arr.slice(0, len(arr) - 1), arr.slice(1)
        if pc.all(pc.less_equal(head, tail)).as_py():
            new = np.ones(len(arr), dtype=bool)
            new[1:] = pc.not_equal(head, tail).to_numpy(zero_copy_only=False)
            codes = np.cumsum(new, dtype=np.int64)
            codes -= 1
            return codes, lambda: select_rows(values, np.flatnonzero(new))
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    order = np.asarray(uniques.argsort(), dtype=np.int64)
    rank = np.empty(len(uniques) + 1, dtype=np.int64)
    rank[order] = np.arange(len(uniques))
    rank[-1] = -1
    by_code = pd.array(uniques.take(order), dtype="string[pyarrow]")
    return rank[codes], lambda: by_code


def _is_sorted(deal: np.ndarray, at: np.ndarray, tie: np.ndarray) -> bool:
    """Whether rows are already in (deal, time, tie) order (exports often are)."""
    if len(deal) < 2:
        return True
    d0, d1 = deal[:-1], deal[1:]
    if (d1 < d0).any():
        return False
    same = d1 == d0
    a0, a1 = at[:-1], at[1:]
    if (same & (a1 < a0)).any():
        return False
    return not (same & (a1 == a0) & (tie[1:] < tie[:-1])).any()


def _take_rows(frame: pd.DataFrame, pos: np.ndarray) -> pd.DataFrame:
    """``frame.iloc[pos]`` with a fresh index, column by column (cheaper on arrow columns)."""
    if frame.columns.has_duplicates:
        return frame.iloc[pos].reset_index(drop=True)
    return pd.DataFrame({c: take_rows(frame[c], pos) for c in frame.columns})


def _check_tz(tz: str) -> None:
    try:
        pd.Timestamp("2000-01-01").tz_localize(tz)
    except Exception:
        raise ValueError(
            f"unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin'"
        ) from None


def _rows_equal(frame: pd.DataFrame, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    eq = np.ones(len(a), dtype=bool)
    for c in frame.columns:
        col = frame[c]
        va = take_rows(col, a)
        vb = take_rows(col, b)
        same = (va == vb).fillna(False).to_numpy(dtype=bool) | (va.isna() & vb.isna()).to_numpy(
            dtype=bool
        )
        eq &= same
    return eq


def _resolve_pipeline(
    k: _Collector,
    pipeline: Pipeline | None,
    stage: pd.Series,
    usable: np.ndarray,
    on_unknown: str,
    factorized: tuple[np.ndarray, Any] | None = None,
) -> tuple[Pipeline, np.ndarray | None]:
    table = k.table
    col = k.m.columns.get("stage")
    if pipeline is not None and factorized is not None:
        # the common case, every stage known, decided from the codes without touching strings
        codes, names = factorized
        known = set(pipeline.order)
        if all(str(s) in known for s in np.asarray(names, dtype=object)):
            return pipeline, None  # every name in the column is a pipeline stage
        seen = np.bincount(codes[usable & (codes >= 0)], minlength=len(names)) > 0
        if all(str(s) in known for s in np.asarray(names, dtype=object)[seen]):
            return pipeline, None
    present = stage[usable]
    counts = present.value_counts()
    if pipeline is None:
        names = [str(s) for s in counts.index]
        if not names:
            return Pipeline((), ("Won",), ("Lost",), notes=("no stages in the data",)), None
        codes_map = {s: i for i, s in enumerate(names)}
        idx = np.flatnonzero(usable)
        deal = k.m.deal.reset_index(drop=True).iloc[idx].astype(str).str.strip()
        d_codes, _ = pd.factorize(deal, sort=True)
        at = parse_timestamps(k.m.at.reset_index(drop=True).iloc[idx]).ns
        s_codes = present.map(codes_map).to_numpy(dtype=np.int64)
        order = np.lexsort((at, d_codes))
        inferred = Pipeline.infer(d_codes[order], s_codes[order], names)
        similar = _case_twins(names)
        if similar:
            inferred = inferred.with_notes(
                "stage names that differ only in case, spacing or punctuation are kept apart: "
                + "; ".join(similar)
                + ". Give a pipeline to merge or order them"
            )
        return inferred.with_notes(
            "pipeline inferred from the data; pass pipeline= to fix it"
        ), None
    unknown_names = [s for s in counts.index if s not in set(pipeline.order)]
    if not unknown_names:
        return pipeline, None
    if on_unknown == "add":
        added = Pipeline(
            list(pipeline.stages) + [str(s) for s in unknown_names],
            pipeline.won,
            pipeline.lost,
            dict(pipeline.probabilities),
            pipeline.name,
            (
                *pipeline.notes,
                "stages not in the pipeline added after the open stages: "
                f"{[str(s) for s in unknown_names]}",
            ),
        )
        return added, None
    unknown_mask = stage.isin(unknown_names).to_numpy(dtype=bool, na_value=False) & usable
    if on_unknown == "quarantine":
        return pipeline, unknown_mask
    parts = []
    first_pos = None
    for s in unknown_names:
        where = np.flatnonzero(stage.eq(s).to_numpy(dtype=bool, na_value=False) & usable)
        src = k.pos[where[0]]
        first_pos = src if first_pos is None else min(first_pos, src)
        hint = suggest_stage(str(s), pipeline.order)
        extra = f", did you mean {hint!r}?" if hint else ""
        parts.append(
            f"{s!r} ({int(counts[s])} rows, first at {table.row_word} "
            f"{int(table.rows[src])}{extra})"
        )
    raise table.error(
        "stage(s) not in the pipeline: "
        + "; ".join(parts)
        + f". Pipeline stages: {list(pipeline.order)}. Fix the pipeline, or pass "
        "on_unknown_stage='quarantine' or 'add'",
        position=first_pos,
        column=col,
        rule="unknown_stage",
    )


def _case_twins(names: list[str]) -> list[str]:
    groups: dict[str, list[str]] = {}
    for s in names:
        groups.setdefault(_norm(s), []).append(s)
    return [" ~ ".join(repr(x) for x in g) for g in groups.values() if len(g) > 1]


def _count_moves(
    k: _Collector, data: FunnelData, idx: np.ndarray, n: int, deal_codes: np.ndarray
) -> None:
    hist = data.history
    if not len(hist):
        return
    # The stage entries as FunnelData derives them (a new entry where the deal or the
    # stage changes), computed from the codes: the event table itself is built later,
    # on first use, once the export's raw columns are no longer held.
    kind = data.pipeline.kind_codes()
    stage = hist[C.STAGE].cat.codes.to_numpy()
    # row i (from 1) against row i - 1: a repeat of the stage (a field update) or a move
    same_deal = deal_codes[1:] == deal_codes[:-1]
    same_stage = stage[1:] == stage[:-1]

    def mask_of(hist_positions: np.ndarray) -> np.ndarray:
        m = np.zeros(n, dtype=bool)
        m[idx[hist_positions]] = True
        return m

    col = k.m.columns.get("stage")
    repeat = same_deal & same_stage
    if repeat.any():
        k.note(
            mask_of(np.flatnonzero(repeat) + 1),
            "no_stage_change",
            col,
            "row repeats the current stage (an amount or date update)",
        )
    # a move: a row of the same deal in another stage than the row before, which (rows that
    # repeat a stage carry it on) is the stage of the deal's previous entry
    np.logical_not(same_stage, out=same_stage)
    same_stage &= same_deal
    moves = np.flatnonzero(same_stage)
    s = stage[moves].astype(np.int32)
    nx = stage[moves + 1].astype(np.int32)
    from_kind = kind[s]
    to_kind = kind[nx]
    n_open = data.pipeline.n_open
    # forward skips: open -> open jumping stages, or open -> won from before the last stage
    skip = (from_kind == 0) & (
        ((to_kind == 0) & (nx > s + 1)) | ((to_kind == 1) & (s < n_open - 1))
    )
    back = (from_kind == 0) & (to_kind == 0) & (nx < s)
    reopen = from_kind > 0
    moves += 1  # the history position of the row that makes the move
    if skip.any():
        k.note(
            mask_of(moves[skip]),
            "skipped_stage",
            col,
            "forward move skipping stages; skipped stages count as reached",
        )
    if back.any():
        k.note(mask_of(moves[back]), "backward_move", col, "move back to an earlier stage")
    if reopen.any():
        k.note(mask_of(moves[reopen]), "reopened", col, "row after a won or lost stage (reopened)")


def _make_report(
    k: _Collector, mapped: Mapped, notes: list[str], malformed: pd.DataFrame, pipeline: Pipeline
) -> IngestReport:
    table = k.table
    n_mal = len(table.malformed)
    status = k.status
    kept = int((status == _STATUS_KEPT).sum())
    repaired = int((status == _STATUS_REPAIRED).sum())
    quarantined = int((status == _STATUS_QUARANTINED).sum()) + n_mal
    findings = pd.DataFrame(
        k.findings, columns=["rule", "kind", "rows", "column", "first_row", "message"]
    )
    if len(findings):
        kind_order = {"quarantine": 0, "repair": 1, "note": 2}
        findings = (
            findings.assign(_k=findings["kind"].map(kind_order))
            .sort_values(["_k", "first_row"], kind="stable")
            .drop(columns="_k")
            .reset_index(drop=True)
        )
    original = table.frame
    if k.quarantine_parts:
        q = pd.concat(k.quarantine_parts, ignore_index=True)
        q = q.drop_duplicates("_pos", keep="first")
        vals = _take_rows(original, q["_pos"].to_numpy())
        q = pd.concat(
            [
                pd.DataFrame({"row": table.rows[q["_pos"].to_numpy()]}),
                q.drop(columns="_pos").reset_index(drop=True),
                vals,
            ],
            axis=1,
        )
    else:
        q = pd.DataFrame(columns=["row", "rule", "column", "reason"])
    if n_mal:
        q = pd.concat([q, malformed], ignore_index=True)
    q = q.sort_values("row", kind="stable").reset_index(drop=True)
    if k.repair_parts:
        r = pd.concat(k.repair_parts, ignore_index=True)
        r.insert(0, "row", table.rows[r["_pos"].to_numpy()])
        r = (
            r.drop(columns="_pos")
            .sort_values(["row", "rule"], kind="stable")
            .reset_index(drop=True)
        )
    else:
        r = pd.DataFrame(columns=["row", "rule", "column", "original", "repaired"])
    notes = list(dict.fromkeys(notes + list(pipeline.notes)))
    return IngestReport(
        source=table.name,
        layout=mapped.layout,
        rows_read=len(status) + n_mal,
        rows_kept=kept,
        rows_repaired=repaired,
        rows_quarantined=quarantined,
        findings=findings,
        quarantined=q,
        repairs=r,
        notes=tuple(notes),
    )


_EMPTY_REPORT: Any = None
