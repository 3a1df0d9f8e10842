"""Helpers the CRM adapters share: several files as one table, flags, JSON, change logs."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FunnelDataError
from ..pipeline import Pipeline
from . import _parse
from ._fastparse import _chunks, plain_ends, printable_words, take_rows
from ._io import Source, Table, read_table, source_name
from ._parse import parse_amounts, parse_timestamps
from .validate import _norm

__all__ = [
    "SOURCE_FILE",
    "combine",
    "find_column",
    "load_json",
    "probability_pipeline",
    "round_float_noise",
    "to_table",
    "truthy",
]

#: Column added to a table combined from several files: the file each row came from.
SOURCE_FILE = "source_file"

_TRUE = {"true", "1", "yes", "y", "t", "wahr", "vrai"}


def truthy(s: pd.Series) -> np.ndarray:
    """True where a CRM flag column says true (``true``, ``1``, ``yes``...)."""
    return (
        s.astype("string").str.strip().str.lower().isin(_TRUE).to_numpy(dtype=bool, na_value=False)
    )


def blank(s: pd.Series) -> np.ndarray:
    """True where a string column is empty or missing."""
    t = s.astype("string").str.strip()
    return (t.isna() | (t == "")).to_numpy(dtype=bool, na_value=True)


def to_table(source: Source | Table, encoding: str | None = None, sheet_name: Any = None) -> Table:
    """A :class:`Table` from a path, file, bytes or DataFrame (a Table is returned as is)."""
    if isinstance(source, Table):
        return source
    return read_table(source, encoding=encoding, sheet_name=sheet_name)


def find_column(table: Table, candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` present (compared without case, spaces or punctuation)."""
    norm = {_norm(str(c)): str(c) for c in table.frame.columns}
    for cand in candidates:
        hit = norm.get(_norm(cand))
        if hit is not None:
            return hit
    return None


def combine(parts: Sequence[Table]) -> Table:
    """Several files read as one table, so every row of each is accounted for.

    The frames are stacked (columns united, missing cells empty); a
    ``source_file`` column names the file of each row, and the row numbers are
    each file's own.
    """
    parts = [p for p in parts if p is not None]
    if len(parts) == 1:
        return parts[0]
    frames = []
    for p in parts:
        f = p.frame.reset_index(drop=True).copy()
        f[SOURCE_FILE] = pd.array([Path(p.name).name] * len(f), dtype="string[pyarrow]")
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    for c in frame.columns:
        if frame[c].dtype == object:
            frame[c] = frame[c].astype("string[pyarrow]")
    rows = np.concatenate([np.asarray(p.rows) for p in parts])
    malformed = [m for p in parts for m in p.malformed]
    notes = [f"{Path(p.name).name}: {n}" for p in parts for n in p.notes]
    word = parts[0].row_word if len({p.row_word for p in parts}) == 1 else "row"
    return Table(
        frame,
        " + ".join(p.name for p in parts),
        rows,
        row_word=word,
        malformed=malformed,
        notes=notes,
    )


def load_json(source: Any) -> tuple[Any, str]:
    """Parsed JSON from a path, bytes, text, file object, or already-parsed data."""
    if isinstance(source, (dict, list)):
        return source, "<JSON>"
    name = source_name(source)
    try:
        if isinstance(source, (str, PathLike)) and not str(source).lstrip().startswith(("{", "[")):
            raw: Any = Path(source).read_bytes()
        elif isinstance(source, str):
            raw, name = source, "<JSON>"
        elif isinstance(source, (bytes, bytearray)):
            raw = bytes(source)
        elif hasattr(source, "read"):
            raw = source.read()
        else:
            raise TypeError(f"cannot read JSON from {type(source).__name__}")
        if isinstance(raw, (bytes, bytearray)):
            raw = raw.decode("utf-8-sig")
        return json.loads(raw), name
    except FileNotFoundError:
        raise FunnelDataError("file not found", file=name) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FunnelDataError(
            f"not valid JSON ({exc})", file=name, rule="unsupported_input"
        ) from None


def looks_like_json(source: Any) -> bool:
    """True for parsed JSON, a ``.json`` path, or bytes / text that start like JSON."""
    if isinstance(source, (dict, list)):
        return True
    if isinstance(source, (str, PathLike)):
        text = str(source)
        if text.lstrip().startswith(("{", "[")):
            return True
        return Path(text).suffix.lower() == ".json"
    if isinstance(source, (bytes, bytearray)):
        return bytes(source).lstrip()[:1] in (b"{", b"[")
    return False


_NOISE = 1e-6


def round_float_noise(values: pd.Series, decimals: int = 2) -> tuple[pd.Series, np.ndarray]:
    """Amount strings with binary floating-point noise rounded to ``decimals``.

    ``16120999.999999998`` (what a float64 round trip writes for 16121000) is
    read as ``16121000.00``. Only values with more decimals than the currency
    has and within 1e-6 of a rounded value are touched; returns the new
    strings and the mask of changed rows.
    """
    pattern = rf"^[+-]?\d+\.\d{{{decimals + 4},}}$"
    s = values.reset_index(drop=True)
    fast = _noise_candidates(s, decimals + 4)
    if fast is not None:  # arrow strings with nothing to strip: only candidates see the regex
        cand = np.flatnonzero(fast)
        long_frac = np.zeros(len(s), dtype=bool)
        if len(cand):
            sub = take_rows(s, cand).astype("string")
            long_frac[cand] = sub.str.contains(pattern, regex=True).to_numpy(
                dtype=bool, na_value=False
            )
    else:
        s = s.astype("string").str.strip()
        long_frac = s.str.contains(pattern, regex=True)
        long_frac = long_frac.to_numpy(dtype=bool, na_value=False)
    if not long_frac.any():
        return s, long_frac
    x = pd.to_numeric(s[long_frac], errors="coerce").to_numpy(dtype=float)
    r = np.round(x, decimals)
    noisy = np.abs(x - r) <= _NOISE * np.maximum(1.0, np.abs(x))
    changed = np.zeros(len(s), dtype=bool)
    changed[np.flatnonzero(long_frac)[noisy]] = True
    out = s.copy()
    out[changed] = pd.Series(r[noisy]).map(lambda v: f"{v:.{decimals}f}").to_numpy()
    return out, changed


def _noise_candidates(s: pd.Series, min_frac: int) -> np.ndarray | None:
    """Rows that may have ``min_frac`` or more decimals, for arrow strings needing no strip.

    A superset (lengths in bytes, the first point) found without a regular expression;
    None when the column is not arrow strings or some value has spaces around it.
    """
    if not (isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"):
        return None
    arr = s.array._pa_array  # type: ignore[attr-defined]
    if _parse.FAST_PATH and printable_words(arr):  # no spaces around any value
        tail = _tail_candidates(arr, min_frac)
        if np.count_nonzero(tail) <= len(tail) // 16:
            return tail
    ends = plain_ends(arr)
    if ends is None or not ends[1].all():
        return None
    lengths = ends[0]
    dot = np.asarray(
        pc.find_substring(arr, ".").fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    return (dot >= 0) & (lengths - dot - 1 >= min_frac)


def _tail_candidates(arr: pa.ChunkedArray, min_frac: int) -> np.ndarray:
    """Values of at least ``min_frac + 2`` bytes without a point among their last
    ``min_frac``: every value with a point and ``min_frac`` or more digits after it (and
    others); read from the last bytes of each value, without a search."""
    out = np.zeros(len(arr), dtype=bool)
    for row, starts, lengths, data in _chunks(arr):
        pos = np.flatnonzero(lengths >= min_frac + 2)
        end = starts[pos] + lengths[pos]
        for j in range(1, min_frac + 1):
            if not len(pos):
                break
            keep = data[end - j] != 0x2E  # "."
            pos, end = pos[keep], end[keep]
        out[pos + row] = True
    return out


def currency_notes(currency: pd.Series | None) -> list[str]:
    """A note when amounts come in several currencies (they are never added up here)."""
    if currency is None:
        return []
    codes = currency.astype("string").str.strip().str.upper().dropna()
    codes = sorted(c for c in codes.unique() if c)
    if len(codes) > 1:
        return [
            f"amounts are in {len(codes)} currencies ({', '.join(codes)}) and are not converted: "
            "the deals table keeps a currency column; compare or add amounts within one "
            "currency (select or by='currency'), or convert them first"
        ]
    return []


def probability_pipeline(
    stage: pd.Series,
    deal: pd.Series,
    at: pd.Series,
    probability: pd.Series | None,
    flags: pd.DataFrame | None,
    *,
    flag_source: str,
    crm: str,
    missing: str = "no stage flags given",
) -> Pipeline:
    """Infer a pipeline from a history with the CRM's stage probabilities.

    Open stages are ordered by the median probability the CRM recorded for
    them (ties by observed precedence); won and lost stages come from
    ``flags`` (columns ``stage, won, closed``) when given, else from names
    (with probabilities of 100 and 0 as a check). Every decision is noted.
    """
    stage = stage.astype("string").str.strip().reset_index(drop=True)
    ok = (stage.notna() & (stage != "")).to_numpy(dtype=bool, na_value=False)
    names = [str(s) for s in stage[ok].unique()]
    d_codes, _ = pd.factorize(deal.reset_index(drop=True)[ok].astype("string"), sort=True)
    s_codes = stage[ok].map({s: i for i, s in enumerate(names)}).to_numpy(dtype=np.int64)
    t = parse_timestamps(at.reset_index(drop=True)[ok]).ns
    order = np.lexsort((t, d_codes))
    base = Pipeline.infer(d_codes[order], s_codes[order], names)
    notes = []
    won, lost = list(base.won), list(base.lost)
    probs: dict[str, float] = {}
    if probability is not None:
        p = pd.to_numeric(
            probability.reset_index(drop=True)[ok].astype("string").str.rstrip("%"),
            errors="coerce",
        )
        med = p.groupby(stage[ok].to_numpy()).median().dropna()
        probs = {str(k): float(v) / 100.0 for k, v in med.items() if 0 <= v <= 100}
    if flags is not None and len(flags):
        g = flags.groupby("stage")[["won", "closed"]].mean()
        won = [s for s in names if s in g.index and g.loc[s, "won"] > 0.5]
        lost = [s for s in names if s in g.index and g.loc[s, "closed"] > 0.5 and s not in won]
        # stages no deal currently sits in keep their name-based reading
        won += [s for s in base.won if s not in g.index and s not in won]
        lost += [s for s in base.lost if s not in g.index and s not in lost]
        notes.append(f"won stage(s) {won} and lost stage(s) {lost} from {flag_source}")
    else:
        by_prob_won = [s for s in names if probs.get(s) == 1.0 and s not in won + lost]
        by_prob_lost = [s for s in names if probs.get(s) == 0.0 and s not in won + lost]
        won += by_prob_won
        lost += by_prob_lost
        how = "by name" + (" and by a probability of 100% / 0%" if probs else "")
        notes.append(
            f"won stage(s) {won} and lost stage(s) {lost} recognised {how} ({crm}: {missing}); "
            "pass pipeline= to fix them"
        )
    open_ = [s for s in base.stages if s not in won and s not in lost]
    if probs:
        pos = {s: i for i, s in enumerate(base.stages)}
        open_.sort(key=lambda s: (probs.get(s, np.inf), pos.get(s, 0)))
        notes.append(
            f"open stages ordered by their {crm} probability: "
            + ", ".join(f"{s} ({probs.get(s, float('nan')):.0%})" for s in open_)
        )
    keep_notes = tuple(
        n
        for n in base.notes
        if not n.startswith(("won stage", "lost stage", "no stage name", "open stage"))
    )
    never_left = [s for s in _never_left(base.notes) if s in open_]
    if never_left:
        keep_notes += (
            f"open stage(s) {never_left} are never left; if they are terminal, give a pipeline",
        )
    return Pipeline(
        open_,
        won,
        lost,
        probabilities={s: v for s, v in probs.items() if s in open_},
        notes=(*notes, *keep_notes, "pipeline inferred; pass pipeline= to fix it"),
    )


def _never_left(notes: Sequence[str]) -> list[str]:
    import ast

    for n in notes:
        m = re.match(r"open stage\(s\) (\[.*\]) are never left", n)
        if m:
            return [str(x) for x in ast.literal_eval(m.group(1))]
    return []


def amounts_or_none(values: pd.Series | None) -> np.ndarray | None:
    """Float amounts of a string column (NaN where not a number), or None."""
    if values is None:
        return None
    return parse_amounts(values.reset_index(drop=True)).values


class ChangeLog:
    """Stage entries and field updates read from a field-change log.

    A change log (Salesforce OpportunityFieldHistory, a Dynamics 365 audit
    export, ...) has one row per changed field: ``deal, field, old, new, at``.
    Rows about a stage field become stage entries (the new value, at the time
    of the change); the stage a deal was in before its first change (the old
    value) is placed at the deal's created time when that is known; rows about
    the amount or close date become field updates; other rows are counted as
    not used.

    Attributes (after construction) are arrays over the mapped rows: ``pos``
    (source row), ``deal``, ``stage``, ``at``, ``amount``, ``close_date``,
    ``update_only``; and source-row masks ``not_used`` and ``first_unknown``.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        deal: str,
        field: str,
        old: str,
        new: str,
        at: str,
        stage_fields: Sequence[str],
        amount_fields: Sequence[str] = (),
        close_fields: Sequence[str] = (),
        created_fields: Sequence[str] = (),
        rows: np.ndarray | None = None,
        created: pd.Series | None = None,
        created_pos: pd.Series | None = None,
    ) -> None:
        """``rows``: positions (in the combined table) of ``frame``'s rows;
        ``created``: created time per deal id (string Series indexed by deal);
        ``created_pos``: the source row that gives it (an Opportunity row)."""
        f = frame.reset_index(drop=True)
        n = len(f)
        src = np.arange(n) if rows is None else np.asarray(rows)
        fld = f[field].astype("string").str.strip().str.casefold()

        def is_field(names: Sequence[str]) -> np.ndarray:
            want = {x.casefold() for x in names}
            return fld.isin(want).to_numpy(dtype=bool, na_value=False)

        is_stage = is_field(stage_fields)
        is_amount = is_field(amount_fields)
        is_close = is_field(close_fields)
        is_created = is_field(created_fields)
        ids = f[deal].astype("string").str.strip()
        t = parse_timestamps(f[at]).ns

        # created time per deal: the given one, else the log's "created" row
        created_at = pd.Series(dtype="string")
        created_src = pd.Series(dtype=np.int64)
        if is_created.any():
            cr = pd.DataFrame({"deal": ids[is_created].to_numpy(), "at": f[at][is_created]})
            cr["src"] = src[is_created]
            cr = cr.drop_duplicates("deal", keep="first").set_index("deal")
            created_at = cr["at"].astype("string")
            created_src = cr["src"]
        if created is not None:
            # the log's own "created" row wins; the given dates fill the others
            given = created.astype("string").dropna()
            given = given[~given.index.isin(created_at.index)]
            created_at = pd.concat([created_at, given])
            if created_pos is not None:
                cp = created_pos.reindex(given.index).dropna().astype(np.int64)
                created_src = pd.concat([created_src, cp])

        # the first stage change of each deal: its old value is the stage at creation
        st = np.flatnonzero(is_stage)
        order = np.lexsort((st, t[st], pd.factorize(ids.iloc[st])[0]))
        st = st[order]
        first_of_deal = np.r_[True, ids.iloc[st[1:]].to_numpy() != ids.iloc[st[:-1]].to_numpy()]
        firsts = st[first_of_deal] if len(st) else st
        old_first = f[old].iloc[firsts].astype("string").str.strip()
        has_old = ~blank(old_first)
        firsts = firsts[has_old]
        cr_for_first = created_at.reindex(ids.iloc[firsts].to_numpy())
        known = ~blank(cr_for_first)
        self.first_unknown = np.zeros(n, dtype=bool)
        self.first_unknown[firsts[~known]] = True
        firsts = firsts[known]
        first_at = cr_for_first[known].to_numpy(dtype=object)
        first_src = created_src.reindex(ids.iloc[firsts].to_numpy())
        first_src = np.where(first_src.isna(), src[firsts], first_src.fillna(-1)).astype(np.int64)

        # amount and close date at creation: the old value of their first change
        def first_old(mask: np.ndarray) -> pd.Series:
            w = np.flatnonzero(mask)
            if not len(w):
                return pd.Series(dtype="string")
            o = np.lexsort((t[w], pd.factorize(ids.iloc[w])[0]))
            sub = pd.DataFrame({"deal": ids.iloc[w[o]].to_numpy(), "v": f[old].iloc[w[o]]})
            return sub.drop_duplicates("deal").set_index("deal")["v"].astype("string")

        self.first_amount = first_old(is_amount)
        self.first_close = first_old(is_close)

        upd = np.flatnonzero(is_amount | is_close)
        na = pd.Series([pd.NA] * len(upd), dtype="string")
        fn = len(firsts)
        self.pos = np.r_[first_src, src[st], src[upd]].astype(np.int64)
        self.deal = pd.concat(
            [ids.iloc[firsts], ids.iloc[st], ids.iloc[upd]], ignore_index=True
        ).astype("string")
        self.stage = pd.concat(
            [
                f[old].iloc[firsts].astype("string"),
                f[new].iloc[st].astype("string"),
                na,
            ],
            ignore_index=True,
        )
        self.at = pd.concat(
            [
                pd.Series(first_at, dtype="string"),
                f[at].iloc[st].astype("string"),
                f[at].iloc[upd].astype("string"),
            ],
            ignore_index=True,
        )
        new_upd = f[new].iloc[upd].astype("string").reset_index(drop=True)
        self.amount = pd.concat(
            [
                self.first_amount.reindex(ids.iloc[firsts].to_numpy()).reset_index(drop=True),
                pd.Series([pd.NA] * len(st), dtype="string"),
                new_upd.where(pd.Series(is_amount[upd])),
            ],
            ignore_index=True,
        ).astype("string")
        self.close_date = pd.concat(
            [
                self.first_close.reindex(ids.iloc[firsts].to_numpy()).reset_index(drop=True),
                pd.Series([pd.NA] * len(st), dtype="string"),
                new_upd.where(pd.Series(is_close[upd])),
            ],
            ignore_index=True,
        ).astype("string")
        self.update_only = np.r_[np.zeros(fn + len(st), dtype=bool), np.ones(len(upd), dtype=bool)]
        used = is_stage | is_amount | is_close | is_created
        # a "created" row that placed no first stage carries nothing used
        self.not_used = ~used | (is_created & ~np.isin(src, first_src))
        self.first_src_pos = first_src
        self.changed_deals = set(ids.iloc[st].dropna())


def carry_forward(
    deal: pd.Series,
    at: pd.Series,
    values: pd.Series,
    update_only: np.ndarray,
    *,
    updates_first: bool = False,
) -> pd.Series:
    """Empty values filled with the deal's previous value in time order.

    For change logs, where a stage row says nothing about the amount: the
    amount at a stage entry is the last amount recorded before it.
    """
    d = deal.reset_index(drop=True).astype("string")
    v = values.reset_index(drop=True).astype("string")
    v = v.where(~blank(v))
    t = parse_timestamps(at.reset_index(drop=True)).ns
    tie = ~np.asarray(update_only) if updates_first else np.asarray(update_only)
    order = np.lexsort((np.arange(len(d)), tie, t, pd.factorize(d)[0]))
    filled = v.iloc[order].groupby(d.iloc[order].to_numpy(), sort=False).ffill()
    out = pd.Series(pd.NA, index=v.index, dtype="string")
    out.iloc[order] = filled.to_numpy()
    return out
