"""The generic long format (one row per stage change) and deal-level exports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _columns as C
from ..data import FunnelData
from ..pipeline import Pipeline
from ._io import Source, Table, read_table
from .validate import Mapped, build_funnel, resolve_column

__all__ = ["read_deals", "read_events"]

PipelineLike = Pipeline | Mapping[str, Any] | str | PathLike[str] | None

DEAL_CANDIDATES = (
    "deal_id",
    "deal",
    "opportunity_id",
    "opportunityid",
    "deal id",
    "record id",
    "id",
)
STAGE_CANDIDATES = ("stage", "stage_name", "stagename", "deal_stage", "dealstage")
AT_CANDIDATES = (
    "entered_at",
    "timestamp",
    "changed_at",
    "change_date",
    "event_time",
    "at",
    "time",
    "date",
    "createddate",
)
AMOUNT_CANDIDATES = ("amount", "value", "deal_value", "deal_amount")
CLOSE_CANDIDATES = ("close_date", "closedate", "expected_close_date", "expected_close")
CURRENCY_CANDIDATES = ("currency", "currency_code", "currencyisocode")


def as_pipeline(pipeline: PipelineLike) -> Pipeline | None:
    """A Pipeline from a Pipeline, a mapping, or a TOML path (None stays None)."""
    if pipeline is None or isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, Mapping):
        return Pipeline.from_dict(pipeline)
    if isinstance(pipeline, (str, PathLike)):
        return Pipeline.from_toml(Path(pipeline))
    raise TypeError("pipeline= takes a Pipeline, a dict, or the path of a TOML file")


def _table(source: Source | Table, encoding: str | None, sheet_name: Any) -> Table:
    if isinstance(source, Table):
        return source
    return read_table(source, encoding=encoding, sheet_name=sheet_name)


def _attributes(
    table: Table, attributes: Sequence[str] | None, used: set[str]
) -> pd.DataFrame | None:
    cols = [str(c) for c in table.frame.columns]
    if attributes is None:
        names = [c for c in cols if c not in used]
    else:
        names = list(attributes)
        for a in names:
            resolve_column(table, a, (), "attribute")
    return table.frame[names] if names else None


def read_events(
    source: Source,
    *,
    deal: str | None = None,
    stage: str | None = None,
    at: str | None = None,
    amount: str | None = None,
    close_date: str | None = None,
    currency: str | None = None,
    attributes: Sequence[str] | None = None,
    pipeline: PipelineLike = None,
    tz: str | None = None,
    exported_at: Any = None,
    strict: bool = False,
    on_unknown_stage: str = "error",
    dayfirst: bool | None = None,
    encoding: str | None = None,
    sheet_name: str | int | None = None,
) -> FunnelData:
    """Read a long export: one row per stage change.

    Parameters
    ----------
    source : path, file object, or DataFrame
        CSV (any of ``, ; tab |`` as delimiter), Parquet or XLSX, optionally
        gzip / bz2 / xz / zip compressed; or a DataFrame.
    deal, stage, at : str, optional
        The columns holding the deal id, the stage entered and the time of the
        change. When not given, common names are looked for (``deal_id``,
        ``opportunity_id``; ``stage``, ``stage_name``; ``entered_at``,
        ``timestamp``, ``date``, ...).
    amount, close_date, currency : str, optional
        Optional columns: the deal amount at the time of the row, the expected
        close date, the currency code. Looked for by name when not given.
    attributes : list of str, optional
        Deal attribute columns (owner, segment, source...) kept for ``by=``.
        Default: every column not used above. Each deal takes the last non-empty
        value in time.
    pipeline : Pipeline, dict, or path of a TOML file, optional
        The stage order and the won/lost stages. Inferred from the data when not
        given (the inference is reported in ``data.report.notes``).
    tz : str, optional
        Time zone of timestamps written without one (default UTC, reported).
    exported_at : str or Timestamp, optional
        When the export was taken; open deals are censored there. Default: the
        latest timestamp in the data (reported).
    strict : bool, default False
        Raise :class:`~funnelstats.FunnelDataError` (naming file, row and
        column) at the first row that would be repaired or quarantined.
    on_unknown_stage : {"error", "quarantine", "add"}
        What to do with a stage that is not in the given pipeline.
    dayfirst : bool, optional
        For dates written with slashes (``03/04/2024``): day first or month
        first. Needed when the data cannot tell.
    encoding : str, optional
        Text encoding; by default UTF-8, falling back to Windows-1252 (reported).
    sheet_name : str or int, optional
        The sheet of an XLSX workbook (default: the first).

    Returns
    -------
    FunnelData

    Examples
    --------
    >>> import pandas as pd
    >>> import funnelstats as fs
    >>> rows = pd.DataFrame({
    ...     "deal_id": ["001", "001", "001", "002"],
    ...     "stage": ["Lead", "Demo", "Won", "Lead"],
    ...     "timestamp": ["2024-01-02", "2024-01-09", "2024-02-01", "2024-01-05"],
    ... })
    >>> d = fs.read_events(rows, pipeline=fs.Pipeline(["Lead", "Demo"], won=["Won"], lost=["Lost"]))
    >>> d.events[["deal_id", "stage", "next_stage"]]
      deal_id stage next_stage
    0     001  Lead       Demo
    1     001  Demo        Won
    2     001   Won        NaN
    3     002  Lead        NaN
    >>> d.report.rows_read, d.report.rows_kept
    (4, 4)
    """
    table = _table(source, encoding, sheet_name)
    deal_c = resolve_column(table, deal, DEAL_CANDIDATES, "deal")
    stage_c = resolve_column(table, stage, STAGE_CANDIDATES, "stage")
    at_c = resolve_column(table, at, AT_CANDIDATES, "time")
    amount_c = resolve_column(table, amount, AMOUNT_CANDIDATES, "amount", required=False)
    close_c = resolve_column(table, close_date, CLOSE_CANDIDATES, "close_date", required=False)
    cur_c = resolve_column(table, currency, CURRENCY_CANDIDATES, "currency", required=False)
    used = {c for c in (deal_c, stage_c, at_c, amount_c, close_c, cur_c) if c}
    f = table.frame
    mapped = Mapped(
        table=table,
        layout="generic",
        deal=f[deal_c],
        stage=f[stage_c],
        at=f[at_c],
        amount=f[amount_c] if amount_c else None,
        close_date=f[close_c] if close_c else None,
        currency=f[cur_c] if cur_c else None,
        attributes=_attributes(table, attributes, used),
        columns={
            "deal": deal_c,
            "stage": stage_c,
            "at": at_c,
            "amount": amount_c or "",
            "close_date": close_c or "",
            "currency": cur_c or "",
        },
    )
    return build_funnel(
        mapped,
        pipeline=as_pipeline(pipeline),
        tz=tz,
        strict=strict,
        exported_at=exported_at,
        on_unknown_stage=on_unknown_stage,
        dayfirst=dayfirst,
    )


DEAL_STAGE_CANDIDATES = ("deal_stage", "stage", "stage_name", "stagename", "dealstage", "status")
CREATED_CANDIDATES = (
    "created_at",
    "created",
    "created_date",
    "createddate",
    "create_date",
    "createdon",
    "add_time",
    "engage_date",
)
CLOSED_CANDIDATES = (
    "closed_at",
    "close_date",
    "closed_date",
    "closedate",
    "actual_close_date",
    "actualclosedate",
    "close_time",
)
VALUE_CANDIDATES = ("amount", "value", "close_value", "deal_value", "actualvalue")


def read_deals(
    source: Source,
    *,
    deal: str | None = None,
    stage: str | None = None,
    created: str | None = None,
    closed: str | None = None,
    amount: str | None = None,
    currency: str | None = None,
    created_stage: str | None = None,
    attributes: Sequence[str] | None = None,
    pipeline: PipelineLike = None,
    tz: str | None = None,
    exported_at: Any = None,
    strict: bool = False,
    on_unknown_stage: str = "error",
    dayfirst: bool | None = None,
    encoding: str | None = None,
    sheet_name: str | int | None = None,
) -> FunnelData:
    """Read a deal-level export: one row per deal with its current stage.

    Many CRMs' standard deal reports (and public datasets) give only the
    current stage, a created (or engaged) date, a close date and a value. The
    result holds, per deal, the entry into the created stage and the outcome:
    win rate and cycle time can be computed, time in each stage cannot
    (``data.has_stage_history`` is False and those analyses say so).

    Parameters
    ----------
    deal, stage, created, closed, amount, currency : str, optional
        Column names; looked for by common names when not given.
    created_stage : str, optional
        The stage a deal is in on its created date (default: the first open
        stage of the pipeline). Open deals are placed in their current stage.
    attributes, pipeline, tz, exported_at, strict, on_unknown_stage, dayfirst, encoding, sheet_name
        As in :func:`read_events`.

    Notes
    -----
    Open deals without a created date (e.g. prospects never engaged) are kept
    in the deals table with ``created_at`` NaT and no events, and counted in the
    report (rule ``undated_deal``). Won or lost deals without a close date are
    quarantined.

    Examples
    --------
    >>> import pandas as pd
    >>> import funnelstats as fs
    >>> deals = pd.DataFrame({
    ...     "deal_id": ["a", "b", "c"],
    ...     "stage": ["Won", "Lost", "Demo"],
    ...     "created": ["2024-01-01", "2024-01-03", "2024-02-01"],
    ...     "close_date": ["2024-02-01", "2024-01-20", None],
    ... })
    >>> p = fs.Pipeline(["Lead", "Demo"], won=["Won"], lost=["Lost"])
    >>> d = fs.read_deals(deals, pipeline=p, exported_at="2024-03-01")
    >>> d.deals[["deal_id", "outcome", "stage"]]
      deal_id outcome stage
    0       a     won   Won
    1       b    lost  Lost
    2       c    open  Demo
    """
    table = _table(source, encoding, sheet_name)
    deal_c = resolve_column(table, deal, DEAL_CANDIDATES, "deal")
    stage_c = resolve_column(table, stage, DEAL_STAGE_CANDIDATES, "stage")
    created_c = resolve_column(table, created, CREATED_CANDIDATES, "created")
    closed_c = resolve_column(table, closed, CLOSED_CANDIDATES, "closed", required=False)
    amount_c = resolve_column(table, amount, VALUE_CANDIDATES, "amount", required=False)
    cur_c = resolve_column(table, currency, CURRENCY_CANDIDATES, "currency", required=False)
    used = {c for c in (deal_c, stage_c, created_c, closed_c, amount_c, cur_c) if c}
    f = table.frame
    len(f)
    pipe = as_pipeline(pipeline)
    stages = f[stage_c].astype("string").str.strip()
    if pipe is None:
        names = [str(s) for s in stages.dropna().unique() if s]
        pipe = Pipeline.infer(np.zeros(0, np.int64), np.zeros(0, np.int64), names)
        pipe = pipe.with_notes(
            "deal-level export: open stages kept in order of first appearance; pass pipeline= "
            "to order them"
        )
    start = created_stage or (pipe.stages[0] if pipe.stages else None)
    if start is not None and start not in pipe.order:
        pipe.code(start)  # raises a KeyError with a suggestion
    terminal = stages.isin(pipe.terminal).to_numpy(dtype=bool, na_value=False)
    created_raw = f[created_c].astype("string").str.strip()
    no_created = (created_raw.isna() | (created_raw == "")).to_numpy(dtype=bool, na_value=True)
    deal_raw = f[deal_c].astype("string").str.strip()
    has_id = ~(deal_raw.isna() | (deal_raw == "")).to_numpy(dtype=bool, na_value=True)
    known_stage = stages.isin(pipe.order).to_numpy(dtype=bool, na_value=False)
    undated = no_created & ~terminal & has_id & known_stage
    attrs = _attributes(table, attributes, used)

    # mapped rows: the created entry for every dated deal, the outcome for closed ones
    first_pos = np.flatnonzero(~undated)
    close_pos = np.flatnonzero(terminal & ~undated)
    pos = np.r_[first_pos, close_pos]
    first_stage = np.where(
        terminal[first_pos],
        start if start else stages.iloc[first_pos],
        stages.iloc[first_pos].to_numpy(dtype=object, na_value=None),
    )
    closed_vals = (
        f[closed_c].iloc[close_pos].to_numpy(dtype=object, na_value=None)
        if closed_c
        else np.full(len(close_pos), None, dtype=object)
    )
    at_vals = np.r_[f[created_c].iloc[first_pos].to_numpy(dtype=object, na_value=None), closed_vals]
    # a closed deal without its created date: the outcome is all that is known
    first_missing = no_created[first_pos]
    first_at = at_vals[: len(first_pos)].copy()
    fill = {p: v for p, v in zip(close_pos, closed_vals)}
    for i in np.flatnonzero(first_missing):
        first_at[i] = fill.get(first_pos[i])
    at_vals[: len(first_pos)] = first_at

    def take(col: str | None) -> pd.Series | None:
        return None if col is None else f[col].iloc[pos].reset_index(drop=True)

    mapped = Mapped(
        table=table,
        layout="deals",
        deal=f[deal_c].iloc[pos].reset_index(drop=True),
        stage=pd.Series(
            np.r_[first_stage, stages.iloc[close_pos].to_numpy(dtype=object, na_value=None)],
            dtype="string[pyarrow]",
        ),
        at=pd.Series(at_vals, dtype="string[pyarrow]"),
        amount=take(amount_c),
        currency=take(cur_c),
        attributes=None if attrs is None else attrs.iloc[pos].reset_index(drop=True),
        pos=pos,
        columns={
            "deal": deal_c,
            "stage": stage_c,
            "at": f"{created_c}/{closed_c}" if closed_c else created_c,
            "amount": amount_c or "",
            "currency": cur_c or "",
        },
        has_stage_history=False,
    )
    if undated.any():
        und = pd.DataFrame(
            {
                C.DEAL_ID: deal_raw[undated].astype("string[pyarrow]").to_numpy(),
                C.CREATED_AT: pd.NaT,
                C.OUTCOME: C.OPEN,
                C.CLOSED_AT: pd.NaT,
                C.AMOUNT: np.nan,
                C.STAGE: stages[undated].to_numpy(dtype=object),
                C.FURTHEST_STAGE: stages[undated].to_numpy(dtype=object),
            }
        )
        und[C.CREATED_AT] = pd.to_datetime(und[C.CREATED_AT], utc=True)
        und[C.CLOSED_AT] = pd.to_datetime(und[C.CLOSED_AT], utc=True)
        if amount_c:
            from ._parse import parse_amounts

            und[C.AMOUNT] = parse_amounts(f[amount_c][undated]).values
        if attrs is not None:
            for c in attrs.columns:
                und[c] = attrs[c][undated].to_numpy(dtype=object, na_value=None)
        mapped.undated = und
        mapped.source_notes.append(
            (undated, "undated_deal", created_c, "open deal without a created date: no events")
        )
        mapped.notes.append(
            f"{int(undated.sum())} open deal(s) have no {created_c!r}: kept in the deals table "
            "without events (rule undated_deal)"
        )
    if (terminal & no_created).any() and closed_c:
        mapped.notes.append(
            f"{int((terminal & no_created).sum())} closed deal(s) have no {created_c!r}: "
            "created date taken as the close date"
        )
    data = build_funnel(
        mapped,
        pipeline=pipe,
        tz=tz,
        strict=strict,
        exported_at=exported_at,
        on_unknown_stage=on_unknown_stage,
        dayfirst=dayfirst,
    )
    return data
