"""Zoho CRM: the deals' Stage History export."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data import FunnelData
from ._crm import currency_notes, find_column, probability_pipeline, to_table
from ._io import Source
from .generic import PipelineLike, as_pipeline
from .validate import Mapped, build_funnel, resolve_column

__all__ = ["read_zoho"]

_DEAL = (
    "Deal Id",
    "Deal ID",
    "Potential Id",
    "Parent Id",
    "Deal_Name.id",
    "Deal Name",
    "Potential Name",
    "Deal_Name",
)
_STAGE = ("Stage",)
_AT = ("Last Modified Time", "Modified Time", "Modified_Time", "Last_Modified_Time")
_AMOUNT = ("Amount",)
_CLOSE = ("Closing Date", "Close Date", "Closing_Date", "Close_Date")
_PROB = ("Probability", "Probability (%)")
_CURRENCY = ("Currency",)
_ATTRS = ("Modified By", "Modified_By")


def read_zoho(
    source: Source,
    *,
    deals: Source | None = None,
    attributes: Sequence[str] | None = None,
    pipeline: PipelineLike = None,
    tz: str | None = None,
    exported_at: Any = None,
    strict: bool = False,
    on_unknown_stage: str = "error",
    encoding: str | None = None,
) -> FunnelData:
    """Read a Zoho CRM Stage History export.

    Zoho writes a Stage History record when a deal's stage, amount,
    probability or closing date changes (``Stage, Amount, Probability,
    Expected Revenue, Closing Date, Modified By, Last Modified Time``); records
    that repeat the current stage update the amount and closing date only.
    Times carry their offset (``2019-07-25T15:26:49+05:30``) and are converted
    to UTC.

    Parameters
    ----------
    source : path, file object, or DataFrame
        The Stage History export, one row per record, with the deal it belongs
        to (``Deal Id``, ``Potential Id``, ``Parent Id`` or ``Deal Name``).
    deals : path, file object, or DataFrame, optional
        The Deals export (``Record Id`` or ``Deal Id``, ``Deal Name``, ``Stage``,
        ``Deal Owner``, ``Created Time``, ...): its other columns become deal
        attributes and its ``Created Time`` the created date.
    attributes : list of str, optional
        Which Deals columns to keep (default: all but the history fields).
    pipeline, tz, exported_at, strict, on_unknown_stage, encoding
        As in :func:`funnelstats.read_events`.

    Returns
    -------
    FunnelData

    Notes
    -----
    Without a pipeline, open stages are ordered by their Zoho probability and
    the won and lost stages are the closed ones at 100% and 0% (Zoho's
    ``Closed Won``, ``Closed Lost``, ``Closed-Lost to Competition``), reported.

    Examples
    --------
    >>> import pandas as pd
    >>> import funnelstats as fs
    >>> rows = pd.DataFrame({
    ...     "Deal Id": ["z1", "z1"], "Stage": ["Qualification", "Closed Won"],
    ...     "Probability": ["10", "100"],
    ...     "Last Modified Time": ["2019-07-25T15:26:49+05:30", "2019-08-01T10:00:00+05:30"],
    ... })
    >>> fs.read_zoho(rows).events["entered_at"].dt.strftime("%H:%M").tolist()
    ['09:56', '04:30']
    """
    table = to_table(source, encoding)
    f = table.frame
    deal_c = resolve_column(table, None, _DEAL, "deal")
    stage_c = resolve_column(table, None, _STAGE, "stage")
    at_c = resolve_column(table, None, _AT, "time")
    amount_c = find_column(table, _AMOUNT)
    close_c = find_column(table, _CLOSE)
    prob_c = find_column(table, _PROB)
    cur_c = find_column(table, _CURRENCY)
    notes = [f"{table.name}: Zoho CRM Stage History"]
    attrs = None
    created = None
    if deals is not None:
        dt = to_table(deals, encoding)
        dd = dt.frame
        id_c = resolve_column(dt, None, ("Record Id", "Deal Id", "Id", "Potential Id"), "deal")
        skip = {
            id_c,
            "Stage",
            "Amount",
            "Closing Date",
            "Probability",
            "Probability (%)",
            "Expected Revenue",
            "Created Time",
            "Modified Time",
            "Last Modified Time",
        }
        names = (
            list(attributes) if attributes is not None else [c for c in dd.columns if c not in skip]
        )
        ids = dd[id_c].astype("string").str.strip()
        keyed = dd.assign(_id=ids.to_numpy()).drop_duplicates("_id", keep="last").set_index("_id")
        row_ids = f[deal_c].astype("string").str.strip().to_numpy(dtype=object, na_value=None)
        if names:
            for a in names:
                resolve_column(dt, a, (), "attribute")
            attrs = keyed[names].reindex(row_ids).reset_index(drop=True)
        cr_c = find_column(dt, ("Created Time", "Created_Time"))
        if cr_c:
            created = keyed[cr_c].reindex(row_ids).reset_index(drop=True)
        notes.append(f"deal attributes from {dt.name}")
    elif attributes is not None:
        for a in attributes:
            resolve_column(table, a, (), "attribute")
        attrs = f[list(attributes)]
    else:
        by = find_column(table, _ATTRS)
        attrs = f[[by]].rename(columns={by: "modified_by"}) if by else None
    pipe = as_pipeline(pipeline)
    if pipe is None:
        pipe = probability_pipeline(
            f[stage_c],
            f[deal_c],
            f[at_c],
            f[prob_c] if prob_c else None,
            None,
            flag_source="",
            crm="Zoho",
            missing="stage types not in the export",
        )
    currency = f[cur_c] if cur_c else None
    notes += currency_notes(currency)
    mapped = Mapped(
        table=table,
        layout="zoho",
        deal=f[deal_c],
        stage=f[stage_c],
        at=f[at_c],
        amount=f[amount_c] if amount_c else None,
        close_date=f[close_c] if close_c else None,
        currency=currency,
        attributes=attrs,
        created=created,
        columns={
            "deal": deal_c,
            "stage": stage_c,
            "at": at_c,
            "amount": amount_c or "",
            "close_date": close_c or "",
            "currency": cur_c or "",
        },
        notes=notes,
    )
    return build_funnel(
        mapped,
        pipeline=pipe,
        tz=tz,
        strict=strict,
        exported_at=exported_at,
        on_unknown_stage=on_unknown_stage,
    )
