"""Amounts in several currencies: results that add amounts say so.

funnelstats never converts currencies (it has no exchange rates) and never adds across them
silently: every result that sums amounts carries :func:`mixed_currency_note` in its notes
when the deals it sums are in more than one currency.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import _columns as C

if TYPE_CHECKING:
    from .data import FunnelData

__all__ = ["currencies", "mixed_currency_note"]


def currencies(data: FunnelData, deal_ids: Iterable[object] | None = None) -> list[str]:
    """The distinct currency codes of the deals (of ``deal_ids`` when given), sorted."""
    deals = data.deals
    if C.CURRENCY not in deals.columns:
        return []
    codes = deals[C.CURRENCY]
    if deal_ids is not None:
        codes = codes[deals[C.DEAL_ID].isin(list(deal_ids))]
    return sorted(codes.dropna().astype(str).unique().tolist())


def mixed_currency_note(
    data: FunnelData, deal_ids: Iterable[object] | None = None
) -> tuple[str, ...]:
    """A note for a result that adds amounts, when they are in several currencies; else ()."""
    codes = currencies(data, deal_ids)
    if len(codes) < 2:
        return ()
    return (
        f"amounts are in {len(codes)} currencies ({', '.join(codes)}) and are added as "
        "recorded, without conversion: select one currency first (data.select(data.deals"
        f"['currency'] == {codes[0]!r})) or convert the amounts",
    )
