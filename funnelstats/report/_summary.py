"""The report's figures as plain-text tables for a terminal (``funnelstats summary``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._model import Section, Table
from ._sections import Context

if TYPE_CHECKING:
    from ..data import FunnelData

__all__ = ["summary_text"]

#: Sections shown by the terminal summary (the data-quality one has its own command).
_TEXT_SECTIONS = (
    "headline",
    "bookings forecast",
    "funnel and conversion",
    "open pipeline",
    "time in stage",
    "stage outcomes",
)


def _table_text(table: Table) -> str:
    widths = [
        max(len(c), *(len(r[i]) for r in table.rows)) if table.rows else len(c)
        for i, c in enumerate(table.columns)
    ]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, table.numeric)
        ).rstrip()

    out = [line(table.columns), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in table.rows]
    if table.note:
        out.append(table.note)
    head = [table.title.upper()] if table.title else []
    return "\n".join(head + out)


def section_text(section: Section) -> str:
    """One section as text: title, lead, headline numbers, paragraphs, tables."""
    parts = [f"{section.title}\n{'=' * len(section.title)}"]
    if section.lead:
        parts.append(section.lead)
    if section.kpis:
        wl = max(len(k.label) for k in section.kpis)
        wv = max(len(k.value) for k in section.kpis)
        parts.append(
            "\n".join(
                f"  {k.label:<{wl}}  {k.value:>{wv}}" + (f"   {k.detail}" if k.detail else "")
                for k in section.kpis
            )
        )
    parts += list(section.paragraphs)
    parts += [_table_text(t) for t in section.tables]
    parts += [f"- {n}" for n in section.notes]
    return "\n\n".join(parts)


def summary_text(
    data: FunnelData, *, as_of: Any = None, by: str | None = None, seed: int = 0
) -> str:
    """The headline figures of ``data`` as terminal text.

    Examples
    --------
    >>> import funnelstats as fs
    >>> print(summary_text(fs.load_sample()).splitlines()[0])
    <FunnelData: 3,000 deals (522 won, 2,145 lost, 333 open), ...>
    """
    from . import _context, build_sections

    ctx: Context = _context(data, as_of=as_of, by=by, seed=seed)
    parts = [repr(ctx.data), repr(data.report)]
    sections, _ = build_sections(ctx, only=_TEXT_SECTIONS)
    parts += [section_text(s) for s in sections]
    return "\n\n".join(parts) + "\n"
