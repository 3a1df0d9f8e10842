"""The PDF report: one page per section, page 1 not blank, the same words as the HTML.

Needs poppler-utils (``pdftoppm``, ``pdfinfo``, ``pdftotext``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import funnelstats as fs

POPPLER = all(shutil.which(t) for t in ("pdftoppm", "pdfinfo", "pdftotext"))
pytestmark = pytest.mark.skipif(
    not POPPLER, reason="poppler-utils is not installed (pdftoppm; .ci/run installs it)"
)

GENERATED = pd.Timestamp("2025-01-06 07:00:00", tz="UTC")


@pytest.fixture(scope="module")
def pdf_report(tmp_path_factory) -> tuple[Path, fs.report.Report]:
    out = tmp_path_factory.mktemp("pdf-report")
    rep = fs.make_report(fs.load_sample(), by="Segment", generated_at=GENERATED)
    return rep.write(out, formats=["pdf"])["pdf"], rep


def _pages(path: Path) -> int:
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True)
    return int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.M).group(1))


def _png_pixels(png: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(png)


def test_page_count_matches_sections(pdf_report):
    path, rep = pdf_report
    assert _pages(path) == len(rep.sections) >= 3


def test_first_page_is_not_blank(pdf_report, tmp_path):
    path, _ = pdf_report
    subprocess.run(
        ["pdftoppm", "-f", "1", "-l", "1", "-r", "50", "-png", str(path), str(tmp_path / "p")],
        check=True,
    )
    (png,) = tmp_path.glob("p*.png")
    px = _png_pixels(png)[..., :3]
    ink = (px < 0.9).any(axis=-1).mean()  # share of pixels that are not near-white
    assert ink > 0.03, f"page 1 is nearly blank ({ink:.1%} ink)"
    assert np.unique(px.reshape(-1, 3).round(2), axis=0).shape[0] > 20  # colours: a chart


def test_blank_page_detector_can_fail(tmp_path):
    """The blank check rejects a blank page."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    blank = tmp_path / "blank.pdf"
    with PdfPages(blank) as pdf:
        pdf.savefig(Figure(figsize=(11.69, 8.27)))
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(blank), str(tmp_path / "b")], check=True)
    (png,) = tmp_path.glob("b*.png")
    px = _png_pixels(png)[..., :3]
    assert (px < 0.9).any(axis=-1).mean() < 0.001


def test_pdf_has_the_same_words_as_the_html(pdf_report):
    path, rep = pdf_report
    text = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout
    pages = text.split("\f")
    for i, section in enumerate(rep.sections):
        flat = " ".join(pages[i].split())
        assert section.title in flat, section.title
        for kpi in section.kpis:
            assert kpi.value in flat
        for table in section.tables:
            for cell in table.rows[0]:
                short = cell if len(cell) < 20 else cell[:15]
                assert short in flat, (section.title, cell)
    header = " ".join(pages[0].split())
    for f in rep.header.inputs:
        assert f.sha256 in header
    assert "2025-01-06 07:00:00 UTC" in header
    assert f"funnelstats {fs.__version__}" in header
