"""What a report is made of: a header and sections of figures, words, charts and tables.

The model holds only text that is already formatted and charts as drawing functions, so the
HTML and the PDF renderers show the same content from the same objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import FigureBase

__all__ = ["Chart", "Header", "InputFile", "Kpi", "Section", "Table"]


@dataclass(frozen=True)
class Kpi:
    """A headline number: ``value`` in large type, ``label`` above it, ``detail`` below.

    ``tone`` picks the accent colour: ``"open"`` (blue), ``"won"`` (green), ``"lost"``
    (red) or ``"accent"`` (amber).
    """

    label: str
    value: str
    detail: str = ""
    tone: str = "open"


@dataclass(frozen=True)
class Chart:
    """A chart, drawn on demand into a matplotlib Figure or SubFigure.

    Attributes
    ----------
    draw : callable
        ``draw(fig)`` adds Axes to ``fig`` and draws on them (never pyplot).
    size : (float, float)
        Width and height in inches for the stand-alone HTML image.
    alt : str
        Text alternative for screen readers (and the HTML ``alt``).
    """

    draw: Callable[[FigureBase], None]
    size: tuple[float, float] = (9.0, 3.6)
    alt: str = ""


@dataclass(frozen=True)
class Table:
    """A small table of formatted cells, plus the raw numbers it shows.

    Attributes
    ----------
    columns : tuple of str
    rows : tuple of tuple of str
        Formatted cells, row by row.
    numeric : tuple of bool
        Per column: right-align (numbers).
    title : str
    note : str
        Shown under the table (for example how many rows were left out).
    frame : DataFrame or None
        The unformatted values, for programs that read the report object.
    """

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]
    title: str = ""
    note: str = ""
    frame: pd.DataFrame | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_records(
        cls,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        numeric: Sequence[bool] | None = None,
        title: str = "",
        note: str = "",
        frame: pd.DataFrame | None = None,
        max_rows: int | None = None,
        what: str = "rows",
    ) -> Table:
        """Build a table, keeping at most ``max_rows`` rows (and saying how many were cut)."""
        rows = [tuple(str(c) for c in r) for r in rows]
        if max_rows is not None and len(rows) > max_rows:
            cut = len(rows) - max_rows
            rows = rows[:max_rows]
            extra = f"{cut:,} more {what} not shown."
            note = f"{note} {extra}".strip()
        num = tuple(numeric) if numeric is not None else (False,) * len(columns)
        if len(num) != len(columns):
            raise ValueError("numeric must have one flag per column")
        return cls(tuple(columns), tuple(rows), num, title, note, frame)


@dataclass(frozen=True)
class Section:
    """One section of the report (one page of the PDF).

    Attributes
    ----------
    key : str
        Identifier, used as the HTML anchor.
    title : str
        The heading.
    lead : str
        The one-sentence takeaway, in plain words.
    kpis : tuple of Kpi
        Headline numbers.
    paragraphs : tuple of str
        Plain-language explanation.
    chart : Chart or None
    caption : str
        What the chart shows and how to read it.
    tables : tuple of Table
    notes : tuple of str
        Method notes and caveats, in small print.
    """

    key: str
    title: str
    lead: str = ""
    kpis: tuple[Kpi, ...] = ()
    paragraphs: tuple[str, ...] = ()
    chart: Chart | None = None
    caption: str = ""
    tables: tuple[Table, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class InputFile:
    """An input file named in the header: its name, size and SHA-256 checksum."""

    name: str
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class Header:
    """What the report is about and how it was made.

    Attributes
    ----------
    title : str
    inputs : tuple of InputFile
    as_of : Timestamp
        The date the figures describe (the data was cut there).
    exported_at : Timestamp
        When the export was taken.
    version : str
        The funnelstats version that made the report.
    generated_at : Timestamp or None
        When the report was made (given by the caller; the library never reads the clock).
    seed : int
        Seed of every random step (bootstrap, simulation).
    by : str or None
        The attribute groups are compared by.
    """

    title: str
    inputs: tuple[InputFile, ...]
    as_of: pd.Timestamp
    exported_at: pd.Timestamp
    version: str
    generated_at: pd.Timestamp | None
    seed: int
    by: str | None = None
