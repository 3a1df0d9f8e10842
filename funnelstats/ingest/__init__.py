"""Reading CRM exports into :class:`~funnelstats.FunnelData`.

Every adapter maps its layout to the same fields and hands the rows to the
shared validation in :mod:`funnelstats.ingest.validate`, so repairs and
quarantines are counted the same way whatever the CRM.
"""

from __future__ import annotations

from typing import Any

from ..data import FunnelData
from ..errors import UnknownLayoutError
from ._crm import load_json, looks_like_json
from ._io import Source, Table, read_table
from .dynamics import read_dynamics
from .generic import (
    AT_CANDIDATES,
    CREATED_CANDIDATES,
    DEAL_CANDIDATES,
    DEAL_STAGE_CANDIDATES,
    STAGE_CANDIDATES,
    read_deals,
    read_events,
)
from .hubspot import hubspot_stage_columns, read_hubspot
from .pipedrive import read_pipedrive
from .report import RULES, IngestReport, Rule
from .salesforce import read_salesforce
from .validate import _norm
from .zoho import read_zoho

__all__ = [
    "RULES",
    "IngestReport",
    "Rule",
    "detect_layout",
    "read",
    "read_deals",
    "read_dynamics",
    "read_events",
    "read_hubspot",
    "read_pipedrive",
    "read_salesforce",
    "read_zoho",
]

_READERS = {
    "salesforce": read_salesforce,
    "hubspot": read_hubspot,
    "pipedrive": read_pipedrive,
    "dynamics": read_dynamics,
    "zoho": read_zoho,
    "generic": read_events,
    "deals": read_deals,
}


def _has(cols: set[str], *names: str) -> bool:
    return all(_norm(n) in cols for n in names)


def _has_any(cols: set[str], names: tuple[str, ...]) -> bool:
    return any(_norm(n) in cols for n in names)


def _hubspot(cols: set[str], raw: list[str]) -> bool:
    return bool(hubspot_stage_columns(raw))


# (layout, what it needs, test) in the order they are tried; tests get the normalised
# column names and the names as written
_DETECTORS: list[tuple[str, str, Any]] = [
    (
        "salesforce",
        "OpportunityId, StageName, CreatedDate (OpportunityHistory) or OpportunityId, Field, "
        "OldValue, NewValue, CreatedDate (OpportunityFieldHistory)",
        lambda c, raw: (
            _has(c, "OpportunityId", "StageName", "CreatedDate")
            or _has(c, "OpportunityId", "Field", "OldValue", "NewValue", "CreatedDate")
        ),
    ),
    (
        "hubspot",
        'Date entered "<Stage> (<Pipeline>)" columns, or hs_v2_date_entered_<stageid> / '
        "hs_date_entered_<stageid>; or JSON deals with propertiesWithHistory.dealstage",
        _hubspot,
    ),
    (
        "dynamics",
        "opportunityid, statecode, createdon (the opportunity entity)",
        lambda c, raw: _has(c, "opportunityid", "statecode", "createdon"),
    ),
    (
        "pipedrive",
        "id, stage_id (or stage), status, add_time; or Deal - ID, Deal - Stage, Deal - Status, "
        "Deal - Deal created",
        lambda c, raw: (
            (_has(c, "id", "status", "add_time") and _has_any(c, ("stage_id", "stage")))
            or _has(c, "Deal - ID", "Deal - Stage", "Deal - Status")
        ),
    ),
    (
        "zoho",
        "Stage, Last Modified Time (or Modified Time), Closing Date or Probability, and a deal id "
        "(Deal Id, Deal Name, Potential Id, Parent Id)",
        lambda c, raw: (
            _has(c, "Stage")
            and _has_any(c, ("Last Modified Time", "Modified Time", "Modified_Time"))
            and _has_any(c, ("Closing Date", "Close_Date", "Closing_Date", "Probability"))
        ),
    ),
    (
        "generic",
        "a deal id, a stage and a timestamp column (deal_id, stage, entered_at/timestamp)",
        lambda c, raw: (
            _has_any(c, DEAL_CANDIDATES)
            and _has_any(c, STAGE_CANDIDATES)
            and _has_any(c, AT_CANDIDATES)
        ),
    ),
    (
        "deals",
        "a deal id, a current stage and a created date (deal_id, deal_stage, created_at)",
        lambda c, raw: (
            _has_any(c, DEAL_CANDIDATES)
            and _has_any(c, DEAL_STAGE_CANDIDATES)
            and _has_any(c, CREATED_CANDIDATES)
        ),
    ),
]


def detect_layout(columns: Any) -> str:
    """The layout name for a set of column names.

    Raises :class:`~funnelstats.UnknownLayoutError` listing the layouts known
    and the columns each needs.

    Examples
    --------
    >>> detect_layout(["Id", "OpportunityId", "CreatedDate", "StageName", "Amount"])
    'salesforce'
    >>> detect_layout(["deal_id", "stage", "timestamp"])
    'generic'
    """
    raw = [str(c) for c in columns]
    cols = {_norm(c) for c in raw}
    for name, _, test in _DETECTORS:
        if test(cols, raw):
            return name
    known = "; ".join(f"{name}: {needs}" for name, needs, _ in _DETECTORS)
    raise UnknownLayoutError(
        f"unrecognised export layout (columns: {sorted(map(str, columns))}). "
        f"Known layouts: {known}. "
        "Name the columns with read_events(deal=, stage=, at=) or read_deals(...)",
        rule="unknown_layout",
    )


def read(source: Source, *, layout: str | None = None, **kwargs: Any) -> FunnelData:
    """Read any supported export, recognising its layout from the header.

    Parameters
    ----------
    source : path, file object, or DataFrame
    layout : str, optional
        Force a layout (``"salesforce"``, ``"hubspot"``, ``"pipedrive"``,
        ``"dynamics"``, ``"zoho"``, ``"generic"``, ``"deals"``) instead of
        detecting it from the header.
    **kwargs
        Passed to the layout's reader (``pipeline=``, ``tz=``, ``strict=``...).

    Examples
    --------
    >>> import funnelstats as fs
    >>> from funnelstats.datasets import sample_path
    >>> fs.read(sample_path()).report.layout
    'salesforce'
    """
    if layout in (None, "hubspot") and looks_like_json(source):
        data, name = load_json(source)
        deals = data.get("results", data) if isinstance(data, dict) else data
        first = deals[0] if isinstance(deals, list) and deals else {}
        if isinstance(first, dict) and "dealstage" in (first.get("propertiesWithHistory") or {}):
            return read_hubspot(data if name == "<JSON>" else source, **kwargs)
        raise UnknownLayoutError(
            "unrecognised JSON: funnelstats reads HubSpot deals with propertiesWithHistory="
            "dealstage ({'results': [{'id', 'properties', 'propertiesWithHistory': {'dealstage': "
            "[{'value', 'timestamp'}]}}]}); convert other JSON to a table first",
            file=name,
            rule="unknown_layout",
        )
    encoding = kwargs.get("encoding")
    table = (
        source
        if isinstance(source, Table)
        else read_table(source, encoding=encoding, sheet_name=kwargs.get("sheet_name"))
    )
    if layout is None:
        try:
            layout = detect_layout(table.frame.columns)
        except UnknownLayoutError as exc:
            raise UnknownLayoutError(exc.reason, file=table.name, rule="unknown_layout") from None
    if layout not in _READERS:
        raise ValueError(f"unknown layout {layout!r}; known: {sorted(_READERS)}")
    return _READERS[layout](table, **kwargs)
