"""The ``funnelstats`` command line: the same public functions a notebook calls."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import FunnelDataError

__all__ = ["main"]


def _load(input_path: str | None, sample: bool, pipeline: str | None, source: str | None):
    from .datasets import load_sample
    from .ingest import read

    if sample:
        return load_sample()
    if not input_path:
        raise click.UsageError("give an INPUT file, or --sample for the bundled sample")
    kwargs = {}
    if pipeline:
        kwargs["pipeline"] = pipeline
    return read(input_path, layout=source, **kwargs)


@click.group()
@click.version_option(__version__, prog_name="funnelstats")
def main() -> None:
    """Sales-funnel statistics and forecasts from CRM stage-history exports."""


@main.command()
@click.argument("input_path", required=False)
@click.option("--sample", is_flag=True, help="Use the bundled sample.")
@click.option(
    "--pipeline", type=click.Path(exists=True, dir_okay=False), help="Pipeline TOML file."
)
@click.option("--source", help="Force the export layout (salesforce, generic, deals, ...).")
def validate(
    input_path: str | None, sample: bool, pipeline: str | None, source: str | None
) -> None:
    """Read INPUT and print what ingest kept, repaired and quarantined.

    Exit codes: 0 clean, 1 repairs made, 2 rows quarantined or the input unusable.
    """
    try:
        data = _load(input_path, sample, pipeline, source)
    except FunnelDataError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    r = data.report
    click.echo(r.summary())
    sys.exit(2 if r.rows_quarantined else 1 if r.rows_repaired else 0)


@main.command()
@click.argument("input_path", required=False)
@click.option("--sample", is_flag=True, help="Use the bundled sample.")
@click.option(
    "--out",
    "out_dir",
    default="reports",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output folder.",
)
@click.option(
    "--pipeline", type=click.Path(exists=True, dir_okay=False), help="Pipeline TOML file."
)
@click.option("--source", help="Force the export layout.")
def report(
    input_path: str | None, sample: bool, out_dir: str, pipeline: str | None, source: str | None
) -> None:
    """Write a report on INPUT into --out."""
    try:
        data = _load(input_path, sample, pipeline, source)
    except FunnelDataError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"funnelstats-summary-{data.exported_at:%Y-%m-%d}.txt"
    text = f"{data!r}\n\n{data.report.summary()}\n"
    tmp = out / f".{name}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out / name)
    click.echo(text)
    click.echo(f"wrote {out / name}")
