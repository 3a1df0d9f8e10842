"""Salesforce OpportunityHistory exports (with an optional Opportunity export)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..data import FunnelData
from ..pipeline import Pipeline
from . import _parse
from ._crm import (
    ChangeLog,
    carry_forward,
    combine,
    currency_notes,
    find_column,
    probability_pipeline,
    round_float_noise,
    to_table,
)
from ._io import Source, Table
from ._parse import _arrow_strings
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
    flags = _true_false(s) if _parse.FAST_PATH else None
    if flags is not None:
        return flags
    # decided once per distinct value: a flag column holds a handful of them
    codes, uniques = pd.factorize(s.reset_index(drop=True), use_na_sentinel=True)
    flags = pd.Series(uniques, dtype=object).astype("string").str.strip().str.lower().isin(_TRUE)
    return np.append(flags.to_numpy(dtype=bool, na_value=False), False)[codes]


def _true_false(s: pd.Series) -> np.ndarray | None:
    """The flags of a column of exactly ``true`` and ``false`` (as Salesforce writes them),
    told by comparing the text (no hashing); None when it holds anything else."""
    arr = _arrow_strings(s)
    if arr is None or arr.null_count:
        return None
    flags = np.empty(len(arr), dtype=bool)
    row = 0
    for chunk in arr.chunks:  # the rows not "false" (a few) must all be "true"
        k = len(chunk)
        np.logical_not(
            pc.equal(chunk, "false").to_numpy(zero_copy_only=False), out=flags[row : row + k]
        )
        row += k
    if flags.any() and not pc.all(pc.equal(arr.filter(pa.array(flags)), "true")).as_py():
        return None
    return flags


def read_salesforce(
    source: Source,
    *,
    opportunities: Source | None = None,
    stages: Source | None = None,
    attributes: Sequence[str] | None = None,
    pipeline: PipelineLike = None,
    tz: str | None = None,
    exported_at: Any = None,
    strict: bool = False,
    on_unknown_stage: str = "error",
    encoding: str | None = None,
) -> FunnelData:
    """Read a Salesforce OpportunityHistory or OpportunityFieldHistory export.

    Salesforce writes an OpportunityHistory row on every save that changes the
    stage, amount, probability or close date; rows that repeat the current
    stage update the amount and close-date history only. Rows with
    ``IsDeleted`` true are quarantined. An OpportunityFieldHistory export (one
    row per changed field) is recognised by its ``Field, OldValue, NewValue``
    columns: ``StageName`` rows are stage changes, ``Amount`` and ``CloseDate``
    rows field updates.

    Parameters
    ----------
    source : path, file object, or DataFrame
        The OpportunityHistory export (``OpportunityId, CreatedDate,
        StageName, Amount, CloseDate, Probability, IsDeleted, ...``;
        ``CurrencyIsoCode`` in multi-currency orgs) or the
        OpportunityFieldHistory export (``OpportunityId, Field, OldValue,
        NewValue, DataType, CreatedDate``).
    opportunities : path, file object, or DataFrame, optional
        The Opportunity export (``Id, StageName, IsClosed, IsWon, Amount,
        CloseDate, CreatedDate, ...``). Its ``IsClosed``/``IsWon`` flags say
        which stages are won and lost, its ``CreatedDate`` places a field
        history's first stage, and its other columns become deal attributes
        (``Type``, ``LeadSource``, ``OwnerId``, ...). With a field history its
        rows are read too (they give the stage of deals that never changed
        stage), so the report accounts for both files.
    stages : path, file object, or DataFrame, optional
        The OpportunityStage table (``ApiName`` or ``MasterLabel, IsClosed,
        IsWon, SortOrder, DefaultProbability``): the stage order, won and lost
        stages and probabilities, as configured in the org.
    attributes : list of str, optional
        Which Opportunity columns to keep as attributes (default: all but the
        ones that duplicate history fields).
    pipeline, tz, exported_at, strict, on_unknown_stage, encoding
        As in :func:`funnelstats.read_events`. ``tz`` defaults to UTC, which is
        what Data Loader and the API write. Files that are not UTF-8 are read
        as Windows-1252 (reported); pass ``encoding=`` to choose.

    Returns
    -------
    FunnelData

    Notes
    -----
    Without a pipeline, the stage order and the won and lost stages come from
    the OpportunityStage table; else open stages are ordered by the
    probability Salesforce recorded for them (ties by observed order) and won
    and lost stages come from the Opportunity export's flags, else from names
    (with probabilities of 100 and 0 as a check); the report says which.
    Amounts keep their ``CurrencyIsoCode``: amounts in different currencies
    are never converted or added up. Amounts with floating-point noise
    (``16120999.999999998``) are rounded to cents (rule ``amount_rounded``).

    Examples
    --------
    >>> import funnelstats as fs
    >>> d = fs.load_sample()
    >>> d.report.layout
    'salesforce'
    """
    table = _table(source, encoding, None)
    opp_table = None if opportunities is None else to_table(opportunities, encoding)
    stage_pipe = None if stages is None else _stage_table_pipeline(to_table(stages, encoding))
    if find_column(table, ("Field",)) and find_column(table, ("NewValue",)):
        return _read_field_history(
            table,
            opp_table,
            stage_pipe,
            attributes=attributes,
            pipeline=pipeline,
            tz=tz,
            exported_at=exported_at,
            strict=strict,
            on_unknown_stage=on_unknown_stage,
        )
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
    currency = f[cur_c] if cur_c else None
    if opp_table is not None:
        attrs, opp_flags, created = _opportunity_columns(opp_table, attributes, f[deal_c])
        notes.append(f"deal attributes and won/lost flags from {opp_table.name}")
        if attrs is not None and "CurrencyIsoCode" in attrs.columns:
            opp_currency = attrs.pop("CurrencyIsoCode")
            if currency is None:
                currency, cur_c = opp_currency, "CurrencyIsoCode"
            attrs = attrs if len(attrs.columns) else None
    pipe = _choose_pipeline(
        pipeline,
        stage_pipe,
        lambda: probability_pipeline(
            f[stage_c],
            f[deal_c],
            f[at_c],
            f[prob_c] if prob_c else None,
            opp_flags,
            flag_source="the Opportunity IsWon/IsClosed flags",
            crm="Salesforce",
            missing="no Opportunity export or OpportunityStage table given",
        ),
    )
    amount = f[amount_c] if amount_c else None
    repairs = []
    if amount is not None:
        amount, noisy = round_float_noise(amount)
        if noisy.any():
            repairs.append((noisy, "amount_rounded", amount_c, _ROUND_MSG, f[amount_c], amount))
    notes += currency_notes(currency)
    mapped = Mapped(
        table=table,
        layout="salesforce",
        deal=f[deal_c],
        stage=f[stage_c],
        at=f[at_c],
        amount=amount,
        close_date=f[close_c] if close_c else None,
        currency=currency,
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
        repairs=repairs,
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


_ROUND_MSG = "floating-point noise in the amount rounded to cents"


def _choose_pipeline(given: PipelineLike, from_stages: Pipeline | None, infer: Any) -> Pipeline:
    pipe = as_pipeline(given)
    if pipe is not None:
        return pipe
    if from_stages is not None:
        return from_stages
    result: Pipeline = infer()
    return result


def _stage_table_pipeline(t: Table) -> Pipeline:
    """A Pipeline from the OpportunityStage table (order, won/lost flags, probabilities)."""
    f = t.frame
    name_c = resolve_column(t, None, ("ApiName", "MasterLabel", "StageName"), "stage")
    closed_c = resolve_column(t, None, ("IsClosed",), "IsClosed")
    won_c = resolve_column(t, None, ("IsWon",), "IsWon")
    sort_c = find_column(t, ("SortOrder",))
    prob_c = find_column(t, ("DefaultProbability",))
    active_c = find_column(t, ("IsActive",))
    names = f[name_c].astype("string").str.strip()
    order = (
        pd.to_numeric(f[sort_c], errors="coerce").to_numpy(dtype=float, na_value=np.inf)
        if sort_c
        else np.arange(len(f), dtype=float)
    )
    o = np.argsort(order, kind="stable")
    closed, won = _truthy(f[closed_c])[o], _truthy(f[won_c])[o]
    names = names.iloc[o].tolist()
    open_ = [s for s, c in zip(names, closed) if not c]
    won_s = [s for s, c, w in zip(names, closed, won) if c and w]
    lost_s = [s for s, c, w in zip(names, closed, won) if c and not w]
    probs: dict[str, float] = {}
    if prob_c:
        p = pd.to_numeric(f[prob_c], errors="coerce").to_numpy(dtype=float)[o]
        probs = {s: float(v) / 100.0 for s, v in zip(names, p) if s in open_ and 0 <= v <= 100}
    notes = [f"stage order, won and lost stages and probabilities from {t.name}"]
    if active_c:
        inactive = [s for s, a in zip(names, _truthy(f[active_c])[o]) if not a]
        if inactive:
            notes.append(f"inactive stage(s) kept for history: {inactive}")
    return Pipeline(open_, won_s, lost_s, probabilities=probs, notes=tuple(notes))


def _read_field_history(
    table: Table,
    opp_table: Table | None,
    stage_pipe: Pipeline | None,
    *,
    attributes: Sequence[str] | None,
    pipeline: PipelineLike,
    tz: str | None,
    exported_at: Any,
    strict: bool,
    on_unknown_stage: str,
) -> FunnelData:
    """OpportunityFieldHistory (+ the Opportunity export) -> FunnelData."""
    hist = table.frame
    deal_c = resolve_column(table, None, ("OpportunityId", "ParentId"), "deal")
    field_c = resolve_column(table, None, ("Field",), "field")
    old_c = resolve_column(table, None, ("OldValue",), "old value")
    new_c = resolve_column(table, None, ("NewValue",), "new value")
    at_c = resolve_column(table, None, ("CreatedDate",), "time")
    del_c = find_column(table, ("IsDeleted",))
    n_hist = len(hist)
    combined = combine([table, opp_table]) if opp_table is not None else table
    n_all = len(combined.frame)

    created = created_pos = None
    opp = None
    if opp_table is not None:
        opp = opp_table.frame.reset_index(drop=True)
        id_c = resolve_column(opp_table, None, ("Id", "OpportunityId"), "deal")
        ids = opp[id_c].astype("string").str.strip()
        cr_c = find_column(opp_table, ("CreatedDate",))
        if cr_c:
            created = pd.Series(opp[cr_c].astype("string").to_numpy(), index=ids.to_numpy())
            created = created[~created.index.duplicated(keep="last")]
            created_pos = pd.Series(np.arange(len(opp)) + n_hist, index=ids.to_numpy())
            created_pos = created_pos[~created_pos.index.duplicated(keep="last")]
    log = ChangeLog(
        hist,
        deal=deal_c,
        field=field_c,
        old=old_c,
        new=new_c,
        at=at_c,
        stage_fields=("StageName",),
        amount_fields=("Amount",),
        close_fields=("CloseDate",),
        created_fields=("created",),
        created=created,
        created_pos=created_pos,
    )
    pos, deal, stage, at = log.pos, log.deal, log.stage, log.at
    amount, close, upd = log.amount, log.close_date, log.update_only
    attrs = None
    flags = None
    notes = [f"{table.name}: OpportunityFieldHistory layout (StageName, Amount, CloseDate rows)"]
    currency = None
    cur_name = ""
    if opp is not None and opp_table is not None:
        # deals whose stage never changed: their Opportunity row is their one entry
        id_c = resolve_column(opp_table, None, ("Id", "OpportunityId"), "deal")
        ids = opp[id_c].astype("string").str.strip()
        stage_oc = find_column(opp_table, ("StageName",))
        cr_c = find_column(opp_table, ("CreatedDate",))
        if stage_oc and cr_c:
            first_placed = set(deal.iloc[: int((~upd).sum())].dropna())
            lone = ~ids.isin(first_placed).to_numpy(dtype=bool, na_value=False)
            lone &= ~ids.isin(log.changed_deals).to_numpy(dtype=bool, na_value=False)
            lp = np.flatnonzero(lone)
            am_oc = find_column(opp_table, ("Amount",))
            cd_oc = find_column(opp_table, ("CloseDate",))

            def col(c: str | None) -> pd.Series:
                if c is None:
                    return pd.Series([pd.NA] * len(lp), dtype="string")
                return opp[c].iloc[lp].astype("string").reset_index(drop=True)

            pos = np.r_[pos, lp + n_hist]
            deal = pd.concat([deal, ids.iloc[lp]], ignore_index=True)
            stage = pd.concat([stage, col(stage_oc)], ignore_index=True)
            at = pd.concat([at, col(cr_c)], ignore_index=True)
            amount = pd.concat([amount, col(am_oc)], ignore_index=True)
            close = pd.concat([close, col(cd_oc)], ignore_index=True)
            upd = np.r_[upd, np.zeros(len(lp), dtype=bool)]
            # the current amount of deals whose amount never changed
            if am_oc:
                cur_amount = pd.Series(opp[am_oc].astype("string").to_numpy(), index=ids)
                cur_amount = cur_amount[~cur_amount.index.duplicated(keep="last")]
                fill = amount.isna().to_numpy() & ~upd
                fill &= ~deal.isin(log.first_amount.index).to_numpy(dtype=bool, na_value=False)
                amount = amount.copy()
                amount[fill] = cur_amount.reindex(deal[fill].to_numpy()).to_numpy()
        a, flags, _ = _opportunity_columns(opp_table, attributes, deal)
        attrs = a
        if attrs is not None and "CurrencyIsoCode" in attrs.columns:
            currency = attrs.pop("CurrencyIsoCode")
            cur_name = "CurrencyIsoCode"
            attrs = attrs if len(attrs.columns) else None
        notes.append(f"deal attributes, created dates and won/lost flags from {opp_table.name}")
    pre = []
    if del_c:
        deleted = np.zeros(n_all, dtype=bool)
        deleted[:n_hist] = _truthy(hist[del_c])
        if deleted.any():
            pre.append((deleted, "deleted", del_c, "IsDeleted is true"))
    source_notes = []
    nu = np.zeros(n_all, dtype=bool)
    nu[:n_hist] = log.not_used
    if nu.any():
        source_notes.append(
            (
                nu,
                "field_not_used",
                field_c,
                "change of a field other than StageName, Amount or CloseDate",
            )
        )
    fu = np.zeros(n_all, dtype=bool)
    fu[:n_hist] = log.first_unknown
    if fu.any():
        source_notes.append(
            (
                fu,
                "first_stage_unknown",
                old_c,
                "no created date for the deal: the stage before "
                "its first change (OldValue) is not placed; pass opportunities=",
            )
        )
    raw_amount = amount.reset_index(drop=True)
    amount, noisy = round_float_noise(raw_amount)
    repairs = []
    if noisy.any():
        repairs.append((noisy, "amount_rounded", new_c, _ROUND_MSG, raw_amount, amount))
    amount = carry_forward(deal, at, amount, upd)
    close = carry_forward(deal, at, close, upd)
    stage_rows = ~upd
    pipe = _choose_pipeline(
        pipeline,
        stage_pipe,
        lambda: probability_pipeline(
            stage[stage_rows],
            deal[stage_rows],
            at[stage_rows],
            None,
            flags,
            flag_source="the Opportunity IsWon/IsClosed flags",
            crm="Salesforce",
            missing="no Opportunity export or OpportunityStage table given",
        ),
    )
    notes += currency_notes(currency)
    mapped = Mapped(
        table=combined,
        layout="salesforce",
        deal=deal,
        stage=stage,
        at=at,
        amount=amount,
        close_date=close,
        currency=currency,
        attributes=attrs,
        pos=pos,
        update_only=upd,
        columns={
            "deal": deal_c,
            "stage": new_c,
            "at": at_c,
            "amount": new_c,
            "close_date": new_c,
            "currency": cur_name,
        },
        pre_quarantine=pre,
        source_notes=source_notes,
        repairs=repairs,
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
