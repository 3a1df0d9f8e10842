"""IngestReport: what ingest read, kept, repaired and quarantined, and why."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["RULES", "IngestReport", "Rule"]


@dataclass(frozen=True)
class Rule:
    """A validation rule.

    Attributes
    ----------
    name : str
        Identifier used in :attr:`IngestReport.findings` and error messages.
    kind : str
        ``"quarantine"`` (the row is set aside), ``"repair"`` (the row is
        changed or merged, and counted), ``"note"`` (the row is kept as it is
        and the fact is counted) or ``"error"`` (ingest stops).
    description : str
        What the rule does, in plain words.
    """

    name: str
    kind: str
    description: str


def _rules(*rules: Rule) -> dict[str, Rule]:
    return {r.name: r for r in rules}


#: Every validation rule, by name (also listed in ``docs/data-quality.md``).
RULES: dict[str, Rule] = _rules(
    # errors: ingest stops
    Rule("empty_file", "error", "The input has no bytes, or no header."),
    Rule("header_only", "error", "The input has a header but no data rows."),
    Rule("missing_column", "error", "A required column is absent; the closest match is suggested."),
    Rule(
        "unknown_stage",
        "error",
        "A stage is not in the given pipeline; near misses are suggested, never guessed.",
    ),
    Rule(
        "ambiguous_date_format",
        "error",
        "Dates like 03/04/2024 could be day-first or month-first; pass dayfirst=.",
    ),
    Rule(
        "unsupported_input",
        "error",
        "The file type or compression cannot be read (zstd, 7z, rar, a zip holding several "
        "files, a damaged archive, binary data such as an image).",
    ),
    Rule(
        "unknown_layout",
        "error",
        "fs.read cannot tell which CRM wrote the export; the error lists each layout's columns.",
    ),
    Rule(
        "no_usable_rows",
        "error",
        "Every row was quarantined (or the export has no dated rows); the error names the "
        "first row and why.",
    ),
    # quarantine: the row is set aside with its reason
    Rule("missing_deal_id", "quarantine", "The deal id is empty."),
    Rule("missing_stage", "quarantine", "The stage is empty."),
    Rule("missing_timestamp", "quarantine", "The time of the stage change is empty."),
    Rule("unparseable_timestamp", "quarantine", "The time of the stage change cannot be read."),
    Rule(
        "malformed_row", "quarantine", "The row has a different number of fields than the header."
    ),
    Rule(
        "unknown_stage_row",
        "quarantine",
        "The stage is not in the pipeline (with on_unknown_stage='quarantine').",
    ),
    Rule("after_export", "quarantine", "The row is dated after the export date given."),
    Rule(
        "far_future",
        "quarantine",
        "With no export date given: a few rows (at most 10, or 1% of the rows) dated more than "
        "a year after all the others. They would move the inferred export date; pass "
        "exported_at= to keep them.",
    ),
    Rule("deleted", "quarantine", "The CRM marks the row as deleted."),
    Rule(
        "update_before_stage",
        "quarantine",
        "A field update comes before the deal's first known stage.",
    ),
    # repairs: the row is changed or merged, and counted
    Rule("duplicate_row", "repair", "An exact duplicate of an earlier row; collapsed into it."),
    Rule(
        "same_instant",
        "repair",
        "Two stage changes of one deal at the same instant; ordered by pipeline order.",
    ),
    Rule("stage_whitespace", "repair", "Leading or trailing spaces removed from a stage name."),
    Rule("deal_id_whitespace", "repair", "Leading or trailing spaces removed from a deal id."),
    Rule(
        "invisible_character",
        "repair",
        "Invisible characters (NUL and other control characters, zero-width spaces, direction "
        "marks) removed from a deal id or stage name.",
    ),
    Rule(
        "stage_unicode_form",
        "repair",
        "A stage name in decomposed Unicode (e + combining accent) written precomposed (NFC), "
        "so it matches the same name typed the usual way.",
    ),
    Rule(
        "stage_case_variant",
        "repair",
        "A stage name that differs only in case or spacing (demo, DEMO for Demo) takes the "
        "pipeline's spelling, or without a pipeline the most frequent one.",
    ),
    Rule(
        "amount_text",
        "repair",
        "An amount written as text ($1,234.50, 1.234,50 €, (500)) read as a number.",
    ),
    Rule("amount_not_numeric", "repair", "An amount that is not a number; set to NaN."),
    Rule("amount_negative", "repair", "A negative amount; set to NaN."),
    Rule("amount_not_finite", "repair", "An infinite amount; set to NaN."),
    Rule(
        "dst_ambiguous",
        "repair",
        "A local time that occurs twice (DST ends); the first occurrence is taken.",
    ),
    Rule(
        "dst_nonexistent",
        "repair",
        "A local time that does not exist (DST starts); moved forward to the first valid time.",
    ),
    Rule(
        "amount_rounded",
        "repair",
        "An amount with floating-point noise (16120999.999999998) rounded to the currency's cents.",
    ),
    Rule(
        "close_date_unparseable",
        "repair",
        "An expected close date that cannot be read; left empty.",
    ),
    # notes: kept as is, counted
    Rule(
        "naive_timestamp",
        "note",
        "A timestamp without a zone; read in the tz= given (default UTC).",
    ),
    Rule("amount_missing", "note", "No amount; kept as NaN."),
    Rule(
        "no_stage_change",
        "note",
        "A row that repeats the deal's current stage: it updates amount or close date only.",
    ),
    Rule(
        "skipped_stage",
        "note",
        "A forward move that skips open stages; the skipped stages count as reached.",
    ),
    Rule("backward_move", "note", "A move to an earlier open stage; kept as an event."),
    Rule("reopened", "note", "A row after a won or lost stage (the deal was reopened); kept."),
    Rule("early_timestamp", "note", "A timestamp before 1990; kept, but check the source."),
    Rule(
        "other_pipeline",
        "quarantine",
        "The deal is in another CRM pipeline than the one asked for (pipeline_name=).",
    ),
    Rule(
        "field_not_used",
        "note",
        "A field-history or change-log row about a field funnelstats does not use (owner, name).",
    ),
    Rule(
        "backfilled_stage",
        "note",
        "A stage the CRM marks as entered at the same instant as the next one with no time in it "
        "(HubSpot writes this for skipped stages); read as a skip, not as a stay.",
    ),
    Rule(
        "first_stage_unknown",
        "note",
        "A change log whose first change has no known start: the stage before it is not placed.",
    ),
    Rule(
        "undated_deal",
        "note",
        "A deal with no created date (deal-level exports): kept in the deals table, "
        "without events.",
    ),
)


@dataclass(frozen=True, repr=False)
class IngestReport:
    """What ingest did with every row.

    ``rows_read == rows_kept + rows_repaired + rows_quarantined`` always holds:
    a row is *kept* as read, *repaired* (changed, merged, or ordered by a rule,
    and counted), or *quarantined* (set aside, with its reason).

    Attributes
    ----------
    source : str
        The file (or ``"<DataFrame>"``).
    layout : str
        The layout read (``"generic"``, ``"salesforce"``, ...).
    rows_read, rows_kept, rows_repaired, rows_quarantined : int
    findings : DataFrame
        One row per rule that fired: ``rule, kind, rows, column, first_row,
        message``.
    quarantined : DataFrame
        The quarantined rows: ``row`` (header = 1), ``rule``, ``column``,
        ``reason``, then the row's original values.
    repairs : DataFrame
        One row per repaired value: ``row, rule, column, original, repaired``.
    notes : tuple of str
        Assumptions made (time zone, export date, pipeline inference, encoding).
    """

    source: str
    layout: str
    rows_read: int
    rows_kept: int
    rows_repaired: int
    rows_quarantined: int
    findings: pd.DataFrame
    quarantined: pd.DataFrame
    repairs: pd.DataFrame
    notes: tuple[str, ...] = field(default_factory=tuple)

    def count(self, rule: str) -> int:
        """Number of rows a rule applied to (0 when it did not fire).

        Raises ``KeyError`` for a rule name that does not exist.
        """
        if rule not in RULES:
            raise KeyError(f"no validation rule named {rule!r}; see funnelstats.RULES")
        hit = self.findings.loc[self.findings["rule"] == rule, "rows"]
        return int(hit.sum()) if len(hit) else 0

    @property
    def counts(self) -> dict[str, int]:
        """Rows per rule that fired (a rule that fired in several places counts once per row)."""
        out: dict[str, int] = {}
        for r, n in zip(self.findings["rule"], self.findings["rows"]):
            out[str(r)] = out.get(str(r), 0) + int(n)
        return out

    @property
    def is_clean(self) -> bool:
        """True when nothing was repaired or quarantined."""
        return self.rows_repaired == 0 and self.rows_quarantined == 0

    def summary(self) -> str:
        """A short plain-text account of the ingest."""
        lines = [
            f"Ingest of {self.source} ({self.layout} layout)",
            f"  rows read        {self.rows_read:>10,}",
            f"  kept as read     {self.rows_kept:>10,}",
            f"  repaired         {self.rows_repaired:>10,}",
            f"  quarantined      {self.rows_quarantined:>10,}",
        ]
        for kind, title in (
            ("quarantine", "Quarantined"),
            ("repair", "Repairs"),
            ("note", "Counted, kept as read"),
        ):
            part = self.findings[self.findings["kind"] == kind]
            if len(part):
                lines.append(f"{title}:")
                for r in part.itertuples(index=False):
                    where = f" [{r.column}]" if isinstance(r.column, str) and r.column else ""
                    lines.append(f"  {r.rows:>8,}  {r.rule}{where}: {r.message}")
        if self.notes:
            lines.append("Notes:")
            lines += [f"  - {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (
            f"<IngestReport {self.source}: {self.rows_read:,} read, {self.rows_kept:,} kept, "
            f"{self.rows_repaired:,} repaired, {self.rows_quarantined:,} quarantined>"
        )

    def _repr_html_(self) -> str:
        e = html.escape
        rows = "".join(
            f"<tr><td>{e(str(r.kind))}</td><td>{e(str(r.rule))}</td><td>{r.rows:,}</td>"
            f"<td>{e(str(r.column or ''))}</td><td>{e(str(r.message))}</td></tr>"
            for r in self.findings.itertuples(index=False)
        )
        notes = "".join(f"<li>{e(n)}</li>" for n in self.notes)
        return (
            f"<div><p><b>Ingest of {e(self.source)}</b> ({e(self.layout)} layout): "
            f"{self.rows_read:,} rows read — {self.rows_kept:,} kept, "
            f"{self.rows_repaired:,} repaired, {self.rows_quarantined:,} quarantined.</p>"
            + (
                "<table><thead><tr><th>kind</th><th>rule</th><th>rows</th><th>column</th>"
                f"<th>what</th></tr></thead><tbody>{rows}</tbody></table>"
                if rows
                else ""
            )
            + (f"<ul>{notes}</ul>" if notes else "")
            + "</div>"
        )
