"""The base of every analysis result: a tidy frame, a text summary, an HTML repr."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["Result", "get_ax"]


@dataclass(frozen=True, repr=False, kw_only=True)
class Result:
    """A frozen analysis result.

    Attributes
    ----------
    frame : DataFrame
        The tidy result table (its columns are listed in the function's
        docstring).
    notes : tuple of str
        Things the reader should know (horizon used, groups too small, ...).
    """

    frame: pd.DataFrame
    notes: tuple[str, ...] = ()
    title: ClassVar[str] = "Result"

    def summary(self) -> str:
        """The result as plain text."""
        with pd.option_context(
            "display.width",
            120,
            "display.max_columns",
            30,
            "display.float_format",
            "{:,.4g}".format,
        ):
            body = self.frame.to_string(index=False)
        notes = "".join(f"\n- {n}" for n in self.notes)
        return f"{self.title}\n{body}{notes}"

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        table = self.frame.to_html(
            index=False, float_format="{:,.4g}".format, escape=True, border=0, classes="funnelstats"
        )
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (
            f"<div><p><b>{html.escape(self.title)}</b></p>{table}"
            + (f"<ul>{notes}</ul>" if notes else "")
            + "</div>"
        )

    def plot(self, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Draw the result on ``ax`` (default: the current Axes) and return it."""
        raise NotImplementedError(f"{type(self).__name__} has no plot")


def get_ax(ax: Axes | None) -> Axes:
    """``ax``, or the current pyplot Axes when None."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.gca()
