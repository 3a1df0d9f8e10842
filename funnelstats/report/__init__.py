"""Reports: the analyses arranged for people, as one HTML file and a PDF.

:func:`make_report` runs the analyses on a :class:`~funnelstats.FunnelData` and returns a
:class:`Report` (nothing is written); :func:`build_report` also writes it, atomically, as
``funnelstats-report-<as-of date>.html`` and ``.pdf`` into a folder.

The HTML file is self-contained: styles inline, charts as PNG data URIs, no script, and a
Content-Security-Policy that forbids any network fetch, so it opens the same offline, in a
mail attachment or on an intranet. Every text taken from the data (deal, stage and attribute
names) is escaped. The PDF has the same sections, one page each.

Reports are reproducible: the same input, as-of date and seed give the same numbers and the
same bytes. The only thing that differs between two runs is the generation time, which the
caller passes (the command line passes the current time); the library never reads the clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .._safe_io import atomic_write_bytes, atomic_write_text, safe_join
from ..data import to_timestamp
from ..errors import FunnelDataError, InsufficientHistoryError
from ._builders import BUILDERS
from ._model import Chart, Header, InputFile, Kpi, Section, Table
from ._render import chart_png, render_html, render_pdf
from ._sections import Context
from ._summary import section_text, summary_text

if TYPE_CHECKING:
    from ..data import FunnelData

__all__ = [
    "FORMATS",
    "PARALLEL_DEALS",
    "Chart",
    "Header",
    "InputFile",
    "Kpi",
    "Report",
    "Section",
    "Table",
    "build_report",
    "make_report",
    "report_filename",
    "section_text",
    "summary_text",
]

log = logging.getLogger(__name__)

#: The formats :func:`build_report` writes.
FORMATS: tuple[str, ...] = ("html", "pdf")

#: ``progress(done, total, label)``: called before each step and once at the end.
Progress = Callable[[int, int, str], None]


def report_filename(as_of: Any, fmt: str) -> str:
    """The file name of a report: ``funnelstats-report-<as-of date>.<fmt>``.

    Examples
    --------
    >>> report_filename("2024-12-31", "html")
    'funnelstats-report-2024-12-31.html'
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose from {list(FORMATS)}")
    return f"funnelstats-report-{to_timestamp(as_of, name='as_of'):%Y-%m-%d}.{fmt}"


@dataclass(frozen=True)
class Report:
    """A report ready to render: a header and its sections.

    Attributes
    ----------
    header : Header
        Input files and checksums, as-of date, version, generation time.
    sections : tuple of Section
        In order; each has a ``title`` (its heading), a ``lead`` sentence, headline
        numbers, a chart and tables. Sections whose analysis cannot run on the data
        (for example time in stage on a deal-level export) are left out.
    left_out : tuple of str
        The sections left out because the data lacks what they need (stage history);
        the first section says so in its notes.

    Examples
    --------
    >>> import funnelstats as fs
    >>> rep = fs.make_report(fs.load_sample(), as_of="2024-12-31")
    >>> [s.title for s in rep.sections][:2]
    ['At a glance', 'Bookings forecast']
    >>> rep.html().startswith("<!DOCTYPE html>")
    True
    """

    header: Header
    sections: tuple[Section, ...]
    left_out: tuple[str, ...] = ()
    #: Draw the charts in two processes (set by :func:`make_report` on large data).
    parallel: bool = dataclasses.field(default=False, compare=False, repr=False)

    @property
    def titles(self) -> tuple[str, ...]:
        """The section headings, in order."""
        return tuple(s.title for s in self.sections)

    def section(self, key: str) -> Section:
        """The section with this key (``"overview"``, ``"data-quality"``, ...)."""
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(f"no section {key!r}; the report has {[s.key for s in self.sections]}")

    @cached_property
    def _charts(self) -> tuple[bytes | None, ...]:
        """Each section's chart as PNG bytes, drawn once for both formats."""
        if not self.parallel:
            return tuple(chart_png(s) for s in self.sections)
        from ._parallel import map_shared

        drawn = [i for i, s in enumerate(self.sections) if s.chart is not None]
        pngs = map_shared(lambda k: chart_png(self.sections[drawn[k]]), len(drawn))
        out: list[bytes | None] = [None] * len(self.sections)
        for i, png in zip(drawn, pngs):
            out[i] = png
        return tuple(out)

    def html(self) -> str:
        """The report as one self-contained HTML document."""
        return render_html(self.header, self.sections, self._charts)

    def pdf(self) -> bytes:
        """The report as PDF bytes (one page per section)."""
        return render_pdf(self.header, self.sections, self._charts)

    def filename(self, fmt: str) -> str:
        """``funnelstats-report-<as-of date>.<fmt>``."""
        return report_filename(self.header.as_of, fmt)

    def write(
        self,
        out_dir: str | PathLike[str],
        *,
        formats: Iterable[str] = FORMATS,
        progress: Progress | None = None,
    ) -> dict[str, Path]:
        """Write the report into ``out_dir`` (created if needed); return the paths by format.

        Each file is first written to a temporary file in ``out_dir`` and then renamed over
        the target, so an interrupted run leaves the previous report as it was.
        """
        fmts = _check_formats(formats)
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for i, fmt in enumerate(fmts):
            if progress is not None:
                progress(i, len(fmts), f"writing {fmt.upper()}")
            target = safe_join(folder, self.filename(fmt))
            if fmt == "html":
                atomic_write_text(target, self.html())
            else:
                atomic_write_bytes(target, self.pdf())
            log.info("wrote %s", target)
            paths[fmt] = target
        if progress is not None:
            progress(len(fmts), len(fmts), "written")
        return paths

    def _repr_html_(self) -> str:
        """A short summary for notebooks: each section's title and lead (all escaped)."""
        import html as _html

        e = _html.escape
        items = "".join(f"<li><b>{e(s.title)}</b>: {e(s.lead)}</li>" for s in self.sections)
        return (
            f"<div><p><b>{e(self.header.title)}</b>, as of {self.header.as_of:%Y-%m-%d} "
            f"({len(self.sections)} sections; <code>.html()</code>, <code>.pdf()</code>, "
            f"<code>.write(folder)</code>)</p><ul>{items}</ul></div>"
        )

    def __repr__(self) -> str:
        return (
            f"<Report as of {self.header.as_of:%Y-%m-%d}: "
            f"{len(self.sections)} sections ({', '.join(self.titles)})>"
        )


def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    out = []
    for f in formats:
        f = f.strip().lower()
        if f not in FORMATS:
            raise ValueError(f"unknown report format {f!r}; choose from {list(FORMATS)}")
        if f not in out:
            out.append(f)
    if not out:
        raise ValueError(f"no report format given; choose from {list(FORMATS)}")
    return tuple(out)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _inputs(
    data: FunnelData, inputs: Sequence[str | PathLike[str]] | None
) -> tuple[InputFile, ...]:
    if inputs is None:
        src = data.report.source
        inputs = [src] if src and os.path.isfile(src) else []
    files = []
    for p in inputs:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"input file {str(path)!r} not found (for its checksum)")
        files.append(InputFile(name=path.name, sha256=_sha256(path), size=path.stat().st_size))
    if not files:
        # in-memory data: a checksum of the history table it holds
        digest = pd.util.hash_pandas_object(data.history, index=False).to_numpy()
        files.append(
            InputFile(
                name=f"{data.report.source} (in memory; checksum of its history table)",
                sha256=hashlib.sha256(digest.tobytes()).hexdigest(),
            )
        )
    return tuple(files)


def make_report(
    data: FunnelData,
    *,
    as_of: Any = None,
    by: str | None = None,
    seed: int = 0,
    horizon: str = "90D",
    n_sims: int = 10_000,
    inputs: Sequence[str | PathLike[str]] | None = None,
    generated_at: Any = None,
    title: str = "Sales funnel report",
    progress: Progress | None = None,
    parallel: bool | None = None,
) -> Report:
    """Run the analyses on ``data`` and arrange them as a report (nothing is written).

    Parameters
    ----------
    data : FunnelData
    as_of : date-like, optional
        Describe the data as it stood on this date (an export taken then); default: the
        export date. Must not be after the export date.
    by : str, optional
        A deal attribute (``data.attributes``) to compare groups by.
    seed : int, default 0
        Seed of every random step; the same seed gives the same numbers.
    horizon : str, default "90D"
        How far forecasts look ahead (a pandas offset: ``"90D"``, ``"13W"``).
    n_sims : int, default 10000
        Simulated totals of the bookings forecast (the backtest uses at most 2,000 per
        cut-off). From 250,000 deals on, the backtest is lighter: 3 past month ends instead
        of 6, each with at most 1,000 simulations and 10 bootstrap refits instead of 2,000
        and 20 (the report says so in the forecast's notes); the headline forecast always
        uses ``n_sims`` and 20 refits.
    inputs : sequence of paths, optional
        The files the data was read from, named in the header with their SHA-256. Default:
        the file named in ``data.report.source`` when it exists; for in-memory data, a
        checksum of its history table.
    generated_at : date-like, optional
        The generation time printed in the header (UTC). The library never reads the
        clock: pass it (the command line passes the current time); None prints
        "not recorded".
    title : str, default "Sales funnel report"
    progress : callable, optional
        ``progress(done, total, label)``, called before each section and at the end.
    parallel : bool, optional
        Use a second process (forked, POSIX only) for the backtest, the cohort table and
        half of the charts, beside the other work: on two cores a large report takes about
        half the time, at the cost of the second process's memory. Default: from
        :data:`PARALLEL_DEALS` deals on. The report is the same either way.

    Returns
    -------
    Report

    Raises
    ------
    FunnelDataError
        When ``by`` is not an attribute of the data.
    ValueError
        When ``as_of`` is after the export date.

    Examples
    --------
    >>> import funnelstats as fs
    >>> rep = fs.make_report(fs.load_sample(), by="Segment", seed=1)
    >>> rep.header.by, f"{rep.header.as_of:%Y-%m-%d}"
    ('Segment', '2024-12-31')
    """
    ctx = _context(
        data, as_of=as_of, by=by, seed=seed, horizon=horizon, n_sims=n_sims, parallel=parallel
    )
    cut = ctx.as_of
    header = Header(
        title=title,
        inputs=_inputs(data, inputs),
        as_of=cut,
        exported_at=data.exported_at,
        version=_version(),
        generated_at=(
            to_timestamp(generated_at, name="generated_at") if generated_at is not None else None
        ),
        seed=int(seed),
        by=by,
    )
    sections, left_out = build_sections(ctx, progress=progress)
    return Report(header=header, sections=sections, left_out=left_out, parallel=ctx.parallel)


def build_sections(
    ctx: Context, *, progress: Progress | None = None, only: Sequence[str] | None = None
) -> tuple[tuple[Section, ...], tuple[str, ...]]:
    """Run the section builders; return the sections and the labels of those left out.

    A builder whose analysis needs stage history the data does not have (a deal-level
    export) is left out, and the first section says which and why.
    """
    builders = [(k, b) for k, b in BUILDERS if only is None or k in only]
    order = list(range(len(builders)))
    if ctx.parallel and ctx.data.has_stage_history and not ctx.pending:
        jobs = [job for label, _ in builders for job in _CHILD_JOBS.get(label, ())]
        if jobs:
            _start_child(ctx, list(dict.fromkeys(jobs)))
            # the sections waiting for the second process are built last
            order.sort(key=lambda i: builders[i][0] in _CHILD_JOBS)
    built: dict[int, Section] = {}
    failed: dict[int, str] = {}
    try:
        for step, i in enumerate(order):
            label, build = builders[i]
            if progress is not None:
                progress(step, len(builders), label)
            log.info("report: %s", label)
            try:
                built[i] = build(ctx)
            except InsufficientHistoryError as exc:
                log.info("report: %s left out: %s", label, exc.reason)
                failed[i] = exc.reason
    finally:  # a builder failed: stop work still running elsewhere
        for pending in ctx.pending.values():
            pending.cancel()
        ctx.pending.clear()
    sections = [built[i] for i in sorted(built)]
    left_out = [builders[i][0] for i in sorted(failed)]
    reasons = [failed[i] for i in sorted(failed)]
    if progress is not None:
        progress(len(builders), len(builders), "analyses done")
    if left_out and sections:
        if not ctx.data.has_stage_history:
            notes = (
                f"Not shown: {', '.join(left_out)}. They need the stage history (one row per "
                "stage change), which this export does not have: it gives each deal's current "
                "stage and outcome only.",
            )
        else:
            notes = tuple(f"Not shown: {lab} ({why})." for lab, why in zip(left_out, reasons))
        sections[0] = dataclasses.replace(sections[0], notes=(*sections[0].notes, *notes))
    return tuple(sections), tuple(left_out)


#: The analyses a second process computes on large data, by the section that reads them:
#: the backtest (the largest single piece of work) and the cohort table with its forecast,
#: which together weigh about what the other sections weigh. The child computes the cohort
#: table first, then the backtest's cut-offs one by one, shared with the parent once its
#: own sections are built (:class:`_SharedBacktest`).
_CHILD_JOBS: dict[str, tuple[str, ...]] = {
    "bookings forecast": ("backtest",),
    "win-rate trend": ("cohorts", "win_rate_forecast"),
    "velocity": ("cohorts",),
}
#: From this many deals on (and where a process can fork), the report uses two processes:
#: the analyses of :data:`_CHILD_JOBS`, then half of the charts, run in a forked child
#: beside the other work.
PARALLEL_DEALS = 20_000


class _Part:
    """One analysis of the child's answer, or its error (re-raised where it is read)."""

    def __init__(self, pending: Any, name: str) -> None:
        self.pending, self.name = pending, name

    def result(self) -> Any:
        ok, value = self.pending.result()[self.name]
        if not ok:
            raise value
        return value

    def cancel(self) -> None:
        self.pending.cancel()


class _SharedBacktest:
    """The backtest's cut-offs, shared: the child takes them one by one after its other
    analyses, and the parent, once its own sections are built, takes those not yet taken
    instead of waiting (each cut-off is independent: its own cut, seed and draws, so the
    result is the one a single process gives)."""

    def __init__(self, pending: Any, plan: Any, counter: Any) -> None:
        self.pending, self.plan, self.counter = pending, plan, counter

    def result(self) -> Any:
        mine = self.counter.drain(self.plan.run)
        ok, theirs = self.pending.result()["backtest"]
        if not ok:
            raise theirs
        done = {**theirs, **mine}
        # a cut-off taken by a child that died without an answer is computed here
        runs = [done[i] if i in done else self.plan.run(i) for i in range(self.plan.n)]
        return self.plan.result(runs)

    def cancel(self) -> None:
        self.pending.cancel()


def _start_child(ctx: Context, names: list[str]) -> None:
    """Compute the Context analyses ``names`` in a forked child; the Context's properties
    collect them (see :attr:`Context.pending`). The backtest goes last, one cut-off at a
    time, shared with the parent (:class:`_SharedBacktest`)."""
    from ._parallel import SharedCounter, run_forked
    from ._sections_forecast import backtest_plan

    ctx.data.arrays  # derived once here, shared with the child  # noqa: B018
    plan = counter = None
    if "backtest" in names:
        try:
            plan = backtest_plan(ctx)
        except Exception:  # raised again where the section reads the backtest
            plan = None
    if plan is not None:
        counter = SharedCounter(plan.n)
        names = [n for n in names if n != "backtest"]

    def work() -> dict[str, tuple[bool, Any]]:
        out: dict[str, tuple[bool, Any]] = {}
        for name in names:
            try:
                out[name] = (True, getattr(ctx, name))
            except Exception as exc:  # re-raised in the parent where the section reads it
                out[name] = (False, exc)
        if counter is not None:
            try:
                out["backtest"] = (True, counter.drain(plan.run))
            except Exception as exc:
                out["backtest"] = (False, exc)
        return out

    pending = run_forked(work)
    for name in names:
        ctx.pending[name] = _Part(pending, name)
    if counter is not None:
        ctx.pending["backtest"] = _SharedBacktest(pending, plan, counter)


def _context(
    data: FunnelData,
    *,
    as_of: Any = None,
    by: str | None = None,
    seed: int = 0,
    horizon: str = "90D",
    n_sims: int = 10_000,
    parallel: bool | None = None,
) -> Context:
    """Check the options and cut the data at ``as_of``."""
    if by is not None and by not in data.attributes:
        raise FunnelDataError(
            f"by={by!r} is not a deal attribute; the data has {list(data.attributes)}",
            column=by,
        )
    try:
        pd.tseries.frequencies.to_offset(horizon)
    except ValueError:
        raise ValueError(f"horizon={horizon!r} is not a duration such as '90D' or '13W'") from None
    cut = to_timestamp(as_of, name="as_of") if as_of is not None else data.exported_at
    view = data if cut == data.exported_at else data.as_of(cut)
    if int(n_sims) < 1:
        raise ValueError(f"n_sims must be at least 1, got {n_sims}")
    from ._parallel import can_fork

    return Context(
        data=view,
        as_of=cut,
        by=by,
        seed=int(seed),
        horizon=horizon,
        n_sims=int(n_sims),
        parallel=(view.n_deals >= PARALLEL_DEALS if parallel is None else bool(parallel))
        and can_fork(),
    )


def _version() -> str:
    from .. import __version__

    return __version__


def build_report(
    data: FunnelData,
    *,
    out_dir: str | PathLike[str],
    formats: Iterable[str] = FORMATS,
    as_of: Any = None,
    by: str | None = None,
    seed: int = 0,
    horizon: str = "90D",
    n_sims: int = 10_000,
    inputs: Sequence[str | PathLike[str]] | None = None,
    generated_at: Any = None,
    title: str = "Sales funnel report",
    progress: Progress | None = None,
    parallel: bool | None = None,
) -> dict[str, Path]:
    """Make the report and write it into ``out_dir``; return the written paths by format.

    Files are named ``funnelstats-report-<as-of date>.<format>`` and written atomically (a
    temporary file in ``out_dir``, then a rename): a crash never leaves a half-written
    report, and the previous one survives. See :func:`make_report` for the parameters.

    Examples
    --------
    >>> import tempfile, funnelstats as fs
    >>> paths = fs.build_report(fs.load_sample(), out_dir=tempfile.mkdtemp(), formats=["html"])
    >>> paths["html"].name
    'funnelstats-report-2024-12-31.html'
    """
    fmts = _check_formats(formats)
    report = make_report(
        data,
        as_of=as_of,
        by=by,
        seed=seed,
        horizon=horizon,
        n_sims=n_sims,
        inputs=inputs,
        generated_at=generated_at,
        title=title,
        progress=progress,
        parallel=parallel,
    )
    return report.write(out_dir, formats=fmts, progress=progress)
