"""The ``funnelstats`` command line: the same public functions a notebook calls.

Exit codes
----------
``validate``: 0 the input is clean; 1 rows were repaired (and used); 2 rows were
quarantined, or the input cannot be used. Every other command: 0 done; 2 the input cannot be
used or an argument is wrong.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import pandas as pd

from . import __version__
from .errors import FunnelDataError

__all__ = ["main"]

log = logging.getLogger("funnelstats")

F = TypeVar("F", bound=Callable[..., Any])

#: Exit codes (documented in ``--help`` and the README).
EXIT_OK, EXIT_REPAIRED, EXIT_UNUSABLE = 0, 1, 2


class _State:
    def __init__(self, verbosity: int) -> None:
        self.verbosity = verbosity


# ------------------------------------------------------------------------ logging, progress


def _configure_logging(verbosity: int) -> None:
    """Log to stderr: -q errors only, default warnings, -v info, -vv debug."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        max(-1, min(verbosity, 2)), logging.DEBUG
    )
    for h in list(log.handlers):
        if getattr(h, "_funnelstats_cli", False):
            log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._funnelstats_cli = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


class _Progress:
    """A one-line progress indicator on stderr, shown only when stderr is a terminal.

    Under cron, in CI or when piped, stderr is not a terminal and nothing is printed.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._width = 0

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled:
            return
        bar_w = 24
        filled = round(bar_w * done / total) if total else bar_w
        line = f"\r[{'#' * filled}{'.' * (bar_w - filled)}] {label}"
        pad = max(0, self._width - len(line))
        sys.stderr.write(line + " " * pad)
        sys.stderr.flush()
        self._width = len(line)

    def close(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()


def _now_utc() -> pd.Timestamp:
    """The generation time: $SOURCE_DATE_EPOCH when set (reproducible builds), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return pd.Timestamp(int(epoch), unit="s", tz="UTC")
        except ValueError:
            raise click.UsageError(f"SOURCE_DATE_EPOCH={epoch!r} is not an integer") from None
    return pd.Timestamp.now(tz="UTC").floor("s")


# ---------------------------------------------------------------------------- input


def _input_options(func: F) -> F:
    """INPUT, --sample, --pipeline, --source, --tz: how every command reads its data."""
    options = [
        click.argument("input_path", metavar="INPUT", required=False),
        click.option("--sample", is_flag=True, help="Use the bundled sample instead of INPUT."),
        click.option(
            "--pipeline",
            type=click.Path(exists=True, dir_okay=False),
            help="Pipeline TOML file: stage order, won and lost stages.",
        ),
        click.option(
            "--source",
            metavar="LAYOUT",
            help="The export's layout: salesforce, hubspot, pipedrive, dynamics, zoho, generic "
            "or deals; default: recognised from the header.",
        ),
        click.option(
            "--with",
            "companions",
            metavar="NAME=FILE",
            multiple=True,
            help="A companion file for the reader, e.g. opportunities=Opportunity.csv "
            "(Salesforce), pipelines=pipelines.json (HubSpot), flow=flow.csv (Pipedrive), "
            "stages=..., deals=... Repeatable.",
        ),
        click.option(
            "--exported-at",
            "exported_at",
            metavar="DATE",
            help="When the export was taken (open deals are censored there); default: the "
            "reader's rule, usually the latest timestamp.",
        ),
        click.option(
            "--tz",
            metavar="ZONE",
            help="Time zone of timestamps written without one (default UTC).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _sample_inputs() -> list[Path]:
    from .datasets import sample_path

    return [sample_path("history"), sample_path("opportunities"), sample_path("pipeline")]


_COMPANIONS = ("opportunities", "stages", "pipelines", "flow", "deals")


def _companions(values: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values:
        name, sep, file = v.partition("=")
        name = name.strip()
        if not sep or name not in _COMPANIONS:
            raise click.BadParameter(
                f"{v!r}: expected NAME=FILE with NAME one of {', '.join(_COMPANIONS)}",
                param_hint="--with",
            )
        path = Path(file)
        if not path.is_file():
            raise click.BadParameter(f"{file!r} is not a file", param_hint="--with")
        out[name] = path
    return out


def _load(
    input_path: str | None,
    sample: bool,
    pipeline: str | None,
    source: str | None,
    tz: str | None,
    companions: tuple[str, ...] = (),
    exported_at: str | None = None,
) -> tuple[Any, list[Path]]:
    """The data and the files it came from (for checksums)."""
    from .datasets import load_sample
    from .ingest import read

    if sample:
        if input_path or companions:
            raise click.UsageError("give either INPUT (and --with files) or --sample, not both")
        log.info("reading the bundled sample")
        return load_sample(), _sample_inputs()
    if not input_path:
        raise click.UsageError("give an INPUT file, or --sample for the bundled sample")
    path = Path(input_path)
    if not path.is_file():
        raise click.BadParameter(f"{input_path!r} is not a file", param_hint="INPUT")
    kwargs: dict[str, Any] = {}
    if pipeline:
        kwargs["pipeline"] = pipeline
    if tz:
        kwargs["tz"] = tz
    if exported_at:
        kwargs["exported_at"] = exported_at
    extra = _companions(companions)
    kwargs.update(extra)
    log.info("reading %s", path)
    try:
        data = read(path, layout=source, **kwargs)
    except FunnelDataError:
        raise
    except TypeError as exc:
        if extra and "unexpected keyword" in str(exc):
            raise click.BadParameter(
                f"{exc}; this layout does not take that companion file", param_hint="--with"
            ) from None
        raise
    except ValueError as exc:
        if source and "layout" in str(exc):
            raise click.BadParameter(str(exc), param_hint="--source") from None
        raise FunnelDataError(str(exc), file=str(path)) from None
    inputs = [path, *extra.values()] + ([Path(pipeline)] if pipeline else [])
    return data, inputs


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_UNUSABLE)


# ---------------------------------------------------------------------------- commands


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=(
        "Exit codes: validate returns 0 when the input is clean, 1 when rows were repaired, "
        "2 when rows were quarantined or the input cannot be used; every other command "
        "returns 0 when done and 2 when the input cannot be used or an argument is wrong."
    ),
)
@click.version_option(__version__, prog_name="funnelstats")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only on stderr; no progress bar.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Sales-funnel statistics and forecasts from CRM stage-history exports.

    Run any command on the bundled sample with --sample, for example
    `funnelstats report --sample --out reports`.
    """
    verbosity = -1 if quiet else verbose
    _configure_logging(verbosity)
    ctx.obj = _State(verbosity)


@main.command()
@_input_options
@click.option(
    "--quarantined",
    "quarantined_out",
    type=click.Path(dir_okay=False),
    help="Also write the quarantined rows to this .csv or .xlsx file.",
)
def validate(
    input_path: str | None,
    sample: bool,
    pipeline: str | None,
    source: str | None,
    tz: str | None,
    companions: tuple[str, ...],
    exported_at: str | None,
    quarantined_out: str | None,
) -> None:
    """Read INPUT and print what was kept, repaired and quarantined, and why.

    \b
    Exit codes:
      0  clean: every row used as read
      1  rows were repaired (and used); nothing quarantined
      2  rows were quarantined, or the input cannot be used
    """
    try:
        data, _ = _load(input_path, sample, pipeline, source, tz, companions, exported_at)
    except FunnelDataError as exc:
        _fail(exc)
    r = data.report
    click.echo(r.summary())
    if quarantined_out:
        from ._safe_io import write_table

        path = write_table(r.quarantined, quarantined_out)
        click.echo(f"wrote {path}")
    code = EXIT_UNUSABLE if r.rows_quarantined else EXIT_REPAIRED if r.rows_repaired else EXIT_OK
    sys.exit(code)


@main.command()
@_input_options
@click.option("--as-of", "as_of", metavar="DATE", help="Describe the data as it stood then.")
@click.option("--by", metavar="ATTR", help="A deal attribute to compare groups by.")
def summary(
    input_path: str | None,
    sample: bool,
    pipeline: str | None,
    source: str | None,
    tz: str | None,
    companions: tuple[str, ...],
    exported_at: str | None,
    as_of: str | None,
    by: str | None,
) -> None:
    """Print the headline figures of INPUT as terminal tables."""
    from .report import summary_text

    try:
        data, _ = _load(input_path, sample, pipeline, source, tz, companions, exported_at)
        text = summary_text(data, as_of=as_of, by=by)
    except (FunnelDataError, ValueError) as exc:
        _fail(exc)
    click.echo(text)


def _formats(value: str) -> tuple[str, ...]:
    from .report import FORMATS

    out = tuple(dict.fromkeys(f.strip().lower() for f in value.split(",") if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise click.BadParameter(
            f"{value!r}: choose from {', '.join(FORMATS)} (comma-separated)",
            param_hint="--format",
        )
    return out


@main.command()
@_input_options
@click.option(
    "--out",
    "out_dir",
    default="reports",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder the report is written into (created if needed).",
)
@click.option(
    "--format",
    "formats",
    default="html,pdf",
    show_default=True,
    help="Comma-separated formats: html, pdf.",
)
@click.option("--as-of", "as_of", metavar="DATE", help="Report as of this date (default: export).")
@click.option("--by", metavar="ATTR", help="A deal attribute to compare groups by.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of random steps.")
@click.option("--horizon", default="90D", show_default=True, help="Forecast horizon.")
@click.option(
    "--n-sims",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Simulated totals of the bookings forecast (fewer: faster on large exports).",
)
@click.option(
    "--generated-at",
    "generated_at",
    metavar="TIME",
    help="Generation time printed in the header (default: now, or $SOURCE_DATE_EPOCH).",
)
@click.option(
    "--one-process",
    "one_process",
    is_flag=True,
    help="Keep the work in one process (large exports otherwise use a second one: faster "
    "on two cores, more memory). The report is the same.",
)
@click.pass_obj
def report(
    state: _State,
    input_path: str | None,
    sample: bool,
    pipeline: str | None,
    source: str | None,
    tz: str | None,
    companions: tuple[str, ...],
    exported_at: str | None,
    out_dir: str,
    formats: str,
    as_of: str | None,
    by: str | None,
    seed: int,
    horizon: str,
    n_sims: int,
    generated_at: str | None,
    one_process: bool,
) -> None:
    """Write the HTML and PDF report on INPUT into --out.

    Files are named funnelstats-report-<as-of date>.html/.pdf and replaced atomically: an
    interrupted run leaves the previous report intact. The same input, as-of date and seed
    give the same figures; only the generation time differs between runs.
    """
    from .report import build_report

    fmts = _formats(formats)
    stamp = pd.Timestamp(generated_at) if generated_at else _now_utc()
    progress = _Progress(enabled=state.verbosity >= 0)
    try:
        data, inputs = _load(input_path, sample, pipeline, source, tz, companions, exported_at)
        paths = build_report(
            data,
            out_dir=out_dir,
            formats=fmts,
            as_of=as_of,
            by=by,
            seed=seed,
            horizon=horizon,
            n_sims=n_sims,
            inputs=inputs,
            generated_at=stamp,
            progress=progress,
            parallel=False if one_process else None,
        )
    except (FunnelDataError, ValueError, OSError) as exc:
        progress.close()
        _fail(exc)
    progress.close()
    for path in paths.values():
        click.echo(f"wrote {path}")


@main.command()
@_input_options
@click.option("--horizon", default="90D", show_default=True, help="How far ahead: 90D, 13W, ...")
@click.option("--as-of", "as_of", metavar="DATE", help="Forecast from this date (default: export).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the simulation.")
@click.option(
    "--n-sims",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Simulated totals.",
)
@click.option(
    "--new/--no-new",
    "include_new",
    default=True,
    show_default=True,
    help="Include deals not yet created (arrivals at the recent rate).",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False),
    help="Write the per-deal forecast to this .csv or .xlsx file.",
)
def forecast(
    input_path: str | None,
    sample: bool,
    pipeline: str | None,
    source: str | None,
    tz: str | None,
    companions: tuple[str, ...],
    exported_at: str | None,
    horizon: str,
    as_of: str | None,
    seed: int,
    n_sims: int,
    include_new: bool,
    out_file: str | None,
) -> None:
    """Forecast bookings from INPUT's open pipeline over --horizon.

    Prints the expected bookings with their P10-P90 range next to the CRM weighted pipeline;
    --out writes one row per open deal (its chance of being won in the horizon and its
    expected amount), sorted by expected amount, with spreadsheet formulas neutralised.
    """
    from ._safe_io import write_table
    from .forecast import forecast_bookings, weighted_pipeline

    try:
        data, _ = _load(input_path, sample, pipeline, source, tz, companions, exported_at)
        fc = forecast_bookings(
            data, as_of=as_of, horizon=horizon, n_sims=n_sims, seed=seed, include_new=include_new
        )
        wp = weighted_pipeline(data, as_of, horizon=horizon)
    except (FunnelDataError, ValueError) as exc:
        _fail(exc)
    click.echo(fc.summary())
    click.echo("")
    click.echo(wp.summary())
    if out_file:
        deals = fc.deals.copy()
        names = _deal_names(data, deals["deal_id"])
        if names is not None:
            deals.insert(1, "deal_name", names)
        try:
            path = write_table(deals, out_file)
        except (OSError, ValueError) as exc:
            _fail(exc)
        click.echo(f"wrote {path}")


def _deal_names(data: Any, ids: pd.Series) -> pd.Series | None:
    """The deals' names where the export has a name column."""
    from .report._sections import _NAME_COLUMNS

    deals = data.deals
    for col in _NAME_COLUMNS:
        if col in deals.columns:
            lookup = pd.Series(deals[col].astype(object).to_numpy(), index=deals["deal_id"])
            return ids.map(lookup).to_numpy()
    return None


if __name__ == "__main__":  # pragma: no cover - python -m funnelstats.cli
    main()
