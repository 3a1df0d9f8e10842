"""Render a report model as one self-contained HTML page or as a PDF (one page per section).

Charts are drawn into ``matplotlib.figure.Figure`` objects created here (never pyplot), so
rendering touches no global state. Images are PNG data URIs written without timestamps, and
the PDF carries the generation time as its creation date, so the same report renders to the
same bytes.
"""

from __future__ import annotations

import base64
import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from ._model import Header, Section, Table
from ._style import COLORS, fmt_date

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["render_html", "render_pdf"]

_DPI = 110  # HTML images: rendered at 2x this for sharp text on high-density screens


@dataclass(frozen=True)
class _Image:
    src: str
    width: int
    height: int


def _figure(size: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained", facecolor="white")


def chart_png(section: Section) -> bytes | None:
    """The section's chart as PNG bytes (no timestamp or software metadata)."""
    if section.chart is None:
        return None
    fig = _figure(section.chart.size)
    section.chart.draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=2 * _DPI, metadata={"Software": None})
    return buf.getvalue()


def _image(section: Section, png: bytes | None) -> _Image | None:
    if png is None:
        return None
    assert section.chart is not None
    w, h = section.chart.size
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return _Image(src=src, width=round(w * _DPI), height=round(h * _DPI))


def _timestamp_text(ts: pd.Timestamp | None) -> str:
    if ts is None:
        return "not recorded"
    return f"{ts:%Y-%m-%d %H:%M:%S} UTC"


def _pngs(
    sections: Sequence[Section], pngs: Sequence[bytes | None] | None
) -> Sequence[bytes | None]:
    return [chart_png(s) for s in sections] if pngs is None else pngs


def _environment():  # type: ignore[no-untyped-def]
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("funnelstats.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(
    header: Header, sections: Sequence[Section], pngs: Sequence[bytes | None] | None = None
) -> str:
    """The report as one HTML document: CSS inline, charts as PNG data URIs, no scripts.

    Every text of the model is escaped by the template engine (autoescaping on); the page
    carries a Content-Security-Policy that allows no script and no network fetch.
    """
    template = _environment().get_template("report.html.j2")
    return template.render(
        header=header,
        sections=list(sections),
        images=[_image(s, p) for s, p in zip(sections, _pngs(sections, pngs))],
        as_of_text=fmt_date(header.as_of),
        exported_text=_timestamp_text(header.exported_at),
        generated_text=_timestamp_text(header.generated_at),
    )


# ---------------------------------------------------------------------------- PDF
#
# Pages are laid out top to bottom in inches: a running head, the header (page 1), the
# section title, the lead, the headline numbers, the paragraphs, the chart (the same PNG as
# in the HTML, scaled to the space left), its caption, the tables and the notes.

_PAGE_W, _PAGE_H = 11.69, 8.27  # A4 landscape, inches
_MARGIN = 0.45
_CONTENT_W = _PAGE_W - 2 * _MARGIN
_CHAR_W = 0.56  # average character width in em (DejaVu Sans), a little generous
_MONO_W = 0.60


def _line_h(size: float) -> float:
    return size * 1.32 / 72.0


def _chars(width_in: float, size: float, em: float = _CHAR_W) -> int:
    return max(10, int(width_in * 72.0 / (size * em)))


class _Page:
    """A page figure with a cursor measured in inches from the top."""

    def __init__(self) -> None:
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(_PAGE_W, _PAGE_H), facecolor="white")
        self.y = _MARGIN

    def text(
        self,
        x: float,
        y: float,
        s: str,
        size: float,
        *,
        color: str = COLORS["ink"],
        **kw: object,
    ) -> None:
        self.fig.text(
            x / _PAGE_W,
            1.0 - y / _PAGE_H,
            s,
            fontsize=size,
            color=color,
            va="top",
            ha=kw.pop("ha", "left"),
            **kw,  # type: ignore[arg-type]
        )

    def para(
        self,
        s: str,
        size: float,
        *,
        width: float = _CONTENT_W,
        x: float = _MARGIN,
        gap: float = 0.08,
        **kw: object,
    ) -> None:
        lines = textwrap.wrap(s, _chars(width, size)) or [""]
        self.text(x, self.y, "\n".join(lines), size, linespacing=1.25, **kw)  # type: ignore[arg-type]
        self.y += len(lines) * _line_h(size) * 1.0 + gap

    def rule(self, x0: float, x1: float, y: float, color: str, lw: float = 0.6) -> None:
        from matplotlib.lines import Line2D

        self.fig.add_artist(
            Line2D(
                [x0 / _PAGE_W, x1 / _PAGE_W],
                [1.0 - y / _PAGE_H, 1.0 - y / _PAGE_H],
                transform=self.fig.transFigure,
                color=color,
                linewidth=lw,
            )
        )

    @property
    def left(self) -> float:
        return _PAGE_H - _MARGIN - self.y


def _header_lines(header: Header) -> list[str]:
    lines = []
    for f in header.inputs:
        size = f" ({f.size:,} bytes)" if f.size is not None else ""
        lines.append(f"Input {f.name}{size}   SHA-256 {f.sha256}")
    by = f"   compared by {header.by}" if header.by else ""
    lines.append(
        f"Export taken {_timestamp_text(header.exported_at)}   As of {fmt_date(header.as_of)}"
        f"   funnelstats {header.version} (seed {header.seed})"
        f"   Generated {_timestamp_text(header.generated_at)}{by}"
    )
    return lines


def _kpis(page: _Page, section: Section) -> None:
    """Headline numbers in rows of at most four (six make two rows of three)."""
    kpis = list(section.kpis)
    per_row = 3 if len(kpis) in (5, 6) else min(4, len(kpis))
    for start in range(0, len(kpis), per_row):
        _kpi_row(page, kpis[start : start + per_row], per_row)


def _kpi_row(page: _Page, kpis: list, per_row: int) -> None:
    gap = 0.18
    w = (_CONTENT_W - gap * (per_row - 1)) / per_row
    top = page.y
    height = 0.0
    for i, k in enumerate(kpis):
        x = _MARGIN + i * (w + gap)
        page.rule(x, x + w, top, COLORS.get(k.tone, COLORS["open"]), lw=2.5)
        label = textwrap.shorten(k.label.upper(), _chars(w, 7), placeholder="…")
        page.text(x, top + 0.08, label, 7, color=COLORS["muted"])
        page.text(x, top + 0.24, k.value, 17, weight="bold")
        h = 0.62
        if k.detail:
            lines = textwrap.wrap(k.detail, _chars(w, 8))
            page.text(x, top + 0.62, "\n".join(lines), 8, color=COLORS["muted"])
            h += len(lines) * _line_h(8)
        height = max(height, h)
    page.y = top + height + 0.12


def _table_widths(table: Table, size: float) -> list[float]:
    em = size / 72.0
    widths = []
    for c, name in enumerate(table.columns):
        body = max((len(str(r[c])) for r in table.rows), default=0) * _CHAR_W
        head = len(name) * 0.62  # bold
        widths.append(max(body, head) * em + 0.2)
    return widths


def _table_height(table: Table, size: float) -> float:
    h = (len(table.rows) + 1) * _line_h(size) * 1.25
    if table.title:
        h += _line_h(8) + 0.04
    if table.note:
        h += _line_h(7) + 0.04
    return h + 0.06


def _draw_table(page: _Page, table: Table, x: float, y: float, width: float, size: float) -> None:
    widths = _table_widths(table, size)
    total = sum(widths)
    if total > width:  # squeeze the widest text column
        scale = width / total
        widths = [w * scale for w in widths]
    row_h = _line_h(size) * 1.25
    if table.title:
        page.text(x, y, table.title.upper(), 8, color=COLORS["muted"], weight="bold")
        y += _line_h(8) + 0.04
    rows = [table.columns, *table.rows]
    for r, row in enumerate(rows):
        cx = x
        for c, cell in enumerate(row):
            w = widths[c]
            text = textwrap.shorten(str(cell), max(4, _chars(w - 0.12, size)), placeholder="…")
            if table.numeric[c]:
                page.text(
                    cx + w - 0.06,
                    y,
                    text,
                    size,
                    ha="right",
                    color=COLORS["muted"] if r == 0 else COLORS["ink"],
                    weight="bold" if r == 0 else "normal",
                )
            else:
                page.text(
                    cx + 0.06,
                    y,
                    text,
                    size,
                    color=COLORS["muted"] if r == 0 else COLORS["ink"],
                    weight="bold" if r == 0 else "normal",
                )
            cx += w
        page.rule(x, x + sum(widths), y + row_h - 0.03, COLORS["grid"], lw=1.2 if r == 0 else 0.5)
        y += row_h
    if table.note:
        page.text(x, y + 0.02, table.note, 7, color=COLORS["muted"])


def _section_page(
    section: Section,
    header: Header | None,
    page_no: int,
    pages: int,
    title: str,
    png: bytes | None,
) -> Figure:
    page = _Page()
    page.text(_MARGIN, 0.22, title, 7, color=COLORS["muted"])
    page.text(
        _PAGE_W - _MARGIN, 0.22, f"page {page_no} of {pages}", 7, color=COLORS["muted"], ha="right"
    )
    page.y = _MARGIN
    if header is not None:
        for line in _header_lines(header):
            page.para(line, 6.5, gap=0.0, color=COLORS["muted"], family="monospace")
        page.y += 0.12
    page.text(_MARGIN, page.y, section.title, 17, weight="bold")
    page.y += _line_h(17) + 0.06
    if section.lead:
        page.para(section.lead, 11, gap=0.12)
    if section.kpis:
        _kpis(page, section)
    for p in section.paragraphs:
        page.para(p, 9, gap=0.06)
    # space the tables and notes need, then the chart takes what is left
    size = 7.5
    side_by_side = (
        len(section.tables) == 2
        and sum(min(sum(_table_widths(t, size)), _CONTENT_W) for t in section.tables) + 0.3
        <= _CONTENT_W
    )
    if side_by_side:
        tables_h = max(_table_height(t, size) for t in section.tables) + 0.1
    else:
        tables_h = sum(_table_height(t, size) + 0.1 for t in section.tables)
    foot = "  ·  ".join(n.rstrip(".") for n in section.notes)
    foot_h = (len(textwrap.wrap(foot, _chars(_CONTENT_W, 7))) * _line_h(7) + 0.05) if foot else 0
    cap_h = (
        len(textwrap.wrap(section.caption, _chars(_CONTENT_W, 8))) * _line_h(8) + 0.12
        if section.caption
        else 0
    )
    if png is not None and section.chart is not None:
        import matplotlib.image as mpimg

        avail = page.left - tables_h - foot_h - cap_h - 0.1
        w_in, h_in = section.chart.size
        scale = min(_CONTENT_W / w_in, max(avail, 0.5) / h_in)
        w, h = w_in * scale, h_in * scale
        img = mpimg.imread(io.BytesIO(png), format="png")
        ax = page.fig.add_axes(
            (_MARGIN / _PAGE_W, 1.0 - (page.y + h) / _PAGE_H, w / _PAGE_W, h / _PAGE_H)
        )
        ax.imshow(img, interpolation="none")  # embedded as is; the viewer scales it
        ax.set_axis_off()
        page.y += h + 0.06
        if section.caption:
            page.para(section.caption, 8, gap=0.12, color=COLORS["muted"])
    if side_by_side:
        x = _MARGIN
        w_each = (_CONTENT_W - 0.3) / 2
        for t in section.tables:
            _draw_table(page, t, x, page.y, w_each, size)
            x += w_each + 0.3
        page.y += tables_h
    else:
        for t in section.tables:
            _draw_table(page, t, _MARGIN, page.y, _CONTENT_W, size)
            page.y += _table_height(t, size) + 0.1
    if foot:
        page.para(foot, 7, gap=0.0, color=COLORS["muted"])
    return page.fig


def render_pdf(
    header: Header, sections: Sequence[Section], pngs: Sequence[bytes | None] | None = None
) -> bytes:
    """The report as a PDF: one landscape A4 page per section, the header on page 1.

    Drawn with matplotlib's PDF backend (pure Python, no system libraries); the charts are
    the same images as in the HTML. The generation time is the document's creation date
    (none when not given), so the same report gives the same bytes.
    """
    from matplotlib.backends.backend_pdf import PdfPages

    created = header.generated_at.to_pydatetime() if header.generated_at is not None else None
    buf = io.BytesIO()
    metadata = {
        "Title": f"{header.title} — as of {fmt_date(header.as_of)}",
        "Creator": f"funnelstats {header.version}",
        "Producer": f"funnelstats {header.version}",
        "CreationDate": created,
    }
    running = f"{header.title} · as of {fmt_date(header.as_of)}"
    images = _pngs(sections, pngs)
    with PdfPages(buf, metadata=metadata) as pdf:
        n = len(sections)
        for i, section in enumerate(sections):
            fig = _section_page(section, header if i == 0 else None, i + 1, n, running, images[i])
            pdf.savefig(fig)
    return buf.getvalue()
