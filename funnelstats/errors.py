"""Exceptions raised by funnelstats."""

from __future__ import annotations

__all__ = ["FunnelDataError", "InsufficientHistoryError", "UnknownLayoutError"]


class FunnelDataError(ValueError):
    """Input data that funnelstats cannot use as it is.

    The message names the file, the row (spreadsheet numbering: the header is
    row 1, the first data row is row 2) and the column where they are known;
    the same facts are kept as attributes.

    Attributes
    ----------
    file : str or None
        The input file (or ``"<DataFrame>"``).
    row : int or None
        Row number in the file, header = 1 (for a DataFrame: the position, from 0).
    column : str or None
        The input column as it is spelled in the file.
    rule : str or None
        The validation rule that failed (see ``docs/data-quality.md``).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        rule: str | None = None,
        row_word: str = "row",
    ) -> None:
        self.file = file
        self.row = row
        self.column = column
        self.rule = rule
        self.reason = message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"{row_word} {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class UnknownLayoutError(FunnelDataError):
    """The layout of an export could not be recognised."""


class InsufficientHistoryError(FunnelDataError):
    """The analysis needs stage history the data does not have."""
