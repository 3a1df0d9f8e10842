"""Salesforce OpportunityHistory exports (with an optional Opportunity export)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..data import FunnelData
from ..pipeline import Pipeline
from ._io import Source, Table, read_table
from .generic import PipelineLike, _table, as_pipeline
from .validate import Mapped, build_funnel, resolve_column

__all__ = ["SALESFORCE_HISTORY_COLUMNS", "read_salesforce"]

#: Columns of a classic OpportunityHistory export (newer orgs add more).
SALESFORCE_HISTORY_COLUMNS = (
    "Id",
    "OpportunityId",
    "CreatedById",
    "CreatedDate",
    "StageName",
    "Amount",
    "ExpectedRevenue",
    "CloseDate",
    "Probability",
    "ForecastCategory",
    "IsDeleted",
    "SystemModstamp",
)

_TRUE = {"true", "1", "yes", "y", "t"}


def _truthy(s: pd.Series) -> np.ndarray:
    return (
        s.astype("string").str.strip().str.lower().isin(_TRUE).to_numpy(dtype=bool, na_value=False)
    )


def read_salesforce(
    source: Source,
    *,
    opportunities: Source | None = None,
    attributes: Sequence[str] | None = None,
    pipeline: PipelineLike = None,
    tz: str | None = None,
    exported_at: Any = None,
    strict: bool = False,
    on_unknown_stage: str = "error",
    encoding: str | None = None,
) -> FunnelData:
    """Read a Salesforce OpportunityHistory export.

    Salesforce writes a history row on every save that changes the stage,
    amount, probability or close date; rows that repeat the current stage
    update the amount and close-date history only. Rows with ``IsDeleted``
    true are quarantined.

    Parameters
    ----------
    source : path, file object, or DataFrame
        The OpportunityHistory export (``OpportunityId, CreatedDate,
        StageName, Amount, CloseDate, Probability, IsDeleted, ...``).
    opportunities : path, file object, or DataFrame, optional
        The Opportunity export (``Id, StageName, IsClosed, IsWon, CreatedDate,
        ...``). Its ``IsClosed``/``IsWon`` flags say which stages are won and
        lost, and its other columns become deal attributes (``Type``,
        ``LeadSource``, ``OwnerId``, ...).
    attributes : list of str, optional
        Which Opportunity columns to keep as attributes (default: all but the
        ones that duplicate history fields).
    pipeline, tz, exported_at, strict, on_unknown_stage, encoding
        As in :func:`funnelstats.read_events`. ``tz`` defaults to UTC, which is
        what Data Loader and the API write.

    Returns
    -------
    FunnelData

    Notes
    -----
    Without a pipeline, open stages are ordered by the probability Salesforce
    recorded for them (ties by observed order), and the stage probabilities
    are kept for the weighted-pipeline baseline. Won and lost stages come from
    the Opportunity export's flags, else from probabilities of 100 and 0 with
    matching names, else from the names alone; the report says which.

    Examples
    --------
    >>> import funnelstats as fs
    >>> d = fs.load_sample()
    >>> d.report.layout
    'salesforce'
    """
    table = _table(source, encoding, None)
    f = table.frame
    deal_c = resolve_column(table, None, ("OpportunityId",), "deal")
    stage_c = resolve_column(table, None, ("StageName",), "stage")
    at_c = resolve_column(table, None, ("CreatedDate",), "time")
    amount_c = resolve_column(table, None, ("Amount",), "amount", required=False)
    close_c = resolve_column(table, None, ("CloseDate",), "close_date", required=False)
    cur_c = resolve_column(table, None, ("CurrencyIsoCode",), "currency", required=False)
    prob_c = resolve_column(table, None, ("Probability",), "probability", required=False)
    del_c = resolve_column(table, None, ("IsDeleted",), "deleted", required=False)

    pre = []
    if del_c:
        deleted = _truthy(f[del_c])
        if deleted.any():
            pre.append((deleted, "deleted", del_c, "IsDeleted is true"))

    attrs = None
    notes: list[str] = []
    opp_flags: pd.DataFrame | None = None
    created = None
    if opportunities is not None:
        opp_table = (
            opportunities
            if isinstance(opportunities, Table)
            else read_table(opportunities, encoding=encoding)
        )
        attrs, opp_flags, created = _opportunity_columns(opp_table, attributes, f[deal_c])
        notes.append(f"deal attributes and won/lost flags from {opp_table.name}")

    pipe = as_pipeline(pipeline)
    if pipe is None:
        pipe = _infer_pipeline(f, deal_c, stage_c, at_c, prob_c, opp_flags, table)

    mapped = Mapped(
        table=table,
        layout="salesforce",
        deal=f[deal_c],
        stage=f[stage_c],
        at=f[at_c],
        amount=f[amount_c] if amount_c else None,
        close_date=f[close_c] if close_c else None,
        currency=f[cur_c] if cur_c else None,
        attributes=attrs,
        columns={
            "deal": deal_c,
            "stage": stage_c,
            "at": at_c,
            "amount": amount_c or "",
            "close_date": close_c or "",
            "currency": cur_c or "",
        },
        pre_quarantine=pre,
        created=created,
        notes=notes,
    )
    return build_funnel(
        mapped,
        pipeline=pipe,
        tz=tz or "UTC",
        strict=strict,
        exported_at=exported_at,
        on_unknown_stage=on_unknown_stage,
    )


def _opportunity_columns(
    opp: Table, attributes: Sequence[str] | None, history_deals: pd.Series
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, pd.Series | None]:
    o = opp.frame
    id_c = resolve_column(opp, None, ("Id", "OpportunityId"), "deal")
    skip = {
        id_c,
        "StageName",
        "IsClosed",
        "IsWon",
        "Amount",
        "CloseDate",
        "CreatedDate",
        "Probability",
        "ForecastCategory",
        "ForecastCategoryName",
        "ExpectedRevenue",
        "IsDeleted",
        "SystemModstamp",
        "LastModifiedDate",
        "LastModifiedById",
        "CreatedById",
        "LastActivityDate",
        "FiscalQuarter",
        "FiscalYear",
        "Fiscal",
        "HasOpenActivity",
        "HasOverdueTask",
        "LastStageChangeDate",
    }
    names = list(attributes) if attributes is not None else [c for c in o.columns if c not in skip]
    for a in names:
        resolve_column(opp, a, (), "attribute")
    ids = o[id_c].astype("string").str.strip()
    keyed = o.assign(_id=ids.to_numpy()).drop_duplicates("_id", keep="last").set_index("_id")
    row_ids = history_deals.astype("string").str.strip().to_numpy(dtype=object, na_value=None)
    attrs = keyed[names].reindex(row_ids).reset_index(drop=True) if names else None
    flags = None
    if {"StageName", "IsWon", "IsClosed"} <= set(o.columns):
        flags = pd.DataFrame(
            {
                "stage": o["StageName"].astype("string").str.strip(),
                "won": _truthy(o["IsWon"]),
                "closed": _truthy(o["IsClosed"]),
            }
        )
    created = None
    if "CreatedDate" in keyed.columns:
        created = keyed["CreatedDate"].reindex(row_ids).reset_index(drop=True)
    return attrs, flags, created


def _infer_pipeline(
    f: pd.DataFrame,
    deal_c: str,
    stage_c: str,
    at_c: str,
    prob_c: str | None,
    flags: pd.DataFrame | None,
    table: Table,
) -> Pipeline:
    from ._parse import parse_timestamps

    stage = f[stage_c].astype("string").str.strip()
    ok = (stage.notna() & (stage != "")).to_numpy(dtype=bool, na_value=False)
    names = [str(s) for s in stage[ok].unique()]
    d_codes, _ = pd.factorize(f[deal_c][ok], sort=True)
    s_codes = stage[ok].map({s: i for i, s in enumerate(names)}).to_numpy(dtype=np.int64)
    at = parse_timestamps(f[at_c][ok]).ns
    order = np.lexsort((at, d_codes))
    base = Pipeline.infer(d_codes[order], s_codes[order], names)
    notes = []
    won, lost = list(base.won), list(base.lost)
    probs: dict[str, float] = {}
    if prob_c:
        p = pd.to_numeric(f[prob_c][ok], errors="coerce")
        med = p.groupby(stage[ok].to_numpy()).median().dropna()
        probs = {str(k): float(v) / 100.0 for k, v in med.items() if 0 <= v <= 100}
    if flags is not None and len(flags):
        g = flags.groupby("stage")[["won", "closed"]].mean()
        won = [s for s in names if s in g.index and g.loc[s, "won"] > 0.5]
        lost = [s for s in names if s in g.index and g.loc[s, "closed"] > 0.5 and s not in won]
        # stages that no Opportunity currently sits in keep their name-based reading
        won += [s for s in base.won if s not in g.index and s not in won]
        lost += [s for s in base.lost if s not in g.index and s not in lost]
        notes.append(
            f"won stage(s) {won} and lost stage(s) {lost} from the Opportunity IsWon/IsClosed flags"
        )
    else:
        notes.append("won and lost stages recognised by name (no Opportunity export given)")
    open_ = [s for s in base.stages if s not in won and s not in lost]
    if probs:
        pos = {s: i for i, s in enumerate(base.stages)}
        open_.sort(key=lambda s: (probs.get(s, np.inf), pos.get(s, 0)))
        notes.append(
            "open stages ordered by their Salesforce probability: "
            + ", ".join(f"{s} ({probs.get(s, float('nan')):.0%})" for s in open_)
        )
    keep_notes = tuple(
        n
        for n in base.notes
        if not n.startswith(("won stage", "lost stage", "no stage name", "open stages"))
    )
    return Pipeline(
        open_,
        won,
        lost,
        probabilities={s: v for s, v in probs.items() if s in open_},
        notes=(*notes, *keep_notes, "pipeline inferred; pass pipeline= to fix it"),
    )
