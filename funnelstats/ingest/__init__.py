"""Reading CRM exports into :class:`~funnelstats.FunnelData`.

Every adapter maps its layout to the same fields and hands the rows to the
shared validation in :mod:`funnelstats.ingest.validate`, so repairs and
quarantines are counted the same way whatever the CRM.
"""

from __future__ import annotations

from typing import Any

from ..data import FunnelData
from ..errors import UnknownLayoutError
from ._io import Source, Table, read_table
from .generic import (
    AT_CANDIDATES,
    CREATED_CANDIDATES,
    DEAL_CANDIDATES,
    DEAL_STAGE_CANDIDATES,
    STAGE_CANDIDATES,
    read_deals,
    read_events,
)
from .report import RULES, IngestReport, Rule
from .salesforce import read_salesforce
from .validate import _norm

__all__ = [
    "RULES",
    "IngestReport",
    "Rule",
    "detect_layout",
    "read",
    "read_deals",
    "read_events",
    "read_salesforce",
]

_READERS = {
    "salesforce": read_salesforce,
    "generic": read_events,
    "deals": read_deals,
}


def _has(cols: set[str], *names: str) -> bool:
    return all(_norm(n) in cols for n in names)


def _has_any(cols: set[str], names: tuple[str, ...]) -> bool:
    return any(_norm(n) in cols for n in names)


# (layout, what it needs, test) in the order they are tried
_DETECTORS: list[tuple[str, str, Any]] = [
    (
        "salesforce",
        "OpportunityId, StageName, CreatedDate",
        lambda c: _has(c, "OpportunityId", "StageName", "CreatedDate"),
    ),
    (
        "generic",
        "a deal id, a stage and a timestamp column (deal_id, stage, entered_at/timestamp)",
        lambda c: (
            _has_any(c, DEAL_CANDIDATES)
            and _has_any(c, STAGE_CANDIDATES)
            and _has_any(c, AT_CANDIDATES)
        ),
    ),
    (
        "deals",
        "a deal id, a current stage and a created date (deal_id, deal_stage, created_at)",
        lambda c: (
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
    cols = {_norm(str(c)) for c in columns}
    for name, _, test in _DETECTORS:
        if test(cols):
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
        Force a layout (``"salesforce"``, ``"generic"``, ``"deals"``, ...)
        instead of detecting it.
    **kwargs
        Passed to the layout's reader (``pipeline=``, ``tz=``, ``strict=``...).

    Examples
    --------
    >>> import funnelstats as fs
    >>> from funnelstats.datasets import sample_path
    >>> fs.read(sample_path()).report.layout
    'salesforce'
    """
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
