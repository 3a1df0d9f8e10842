"""docs/data-quality.md lists every validation rule, as the catalogue (funnelstats.RULES) has it."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import funnelstats as fs

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "data-quality.md"
TABLE = runpy.run_path(str(ROOT / "docs" / "rules_table.py"))


def test_doc_holds_the_generated_table():
    text = DOC.read_text(encoding="utf-8")
    assert TABLE["current"](text) == TABLE["render"](), (
        "docs/data-quality.md is out of date: run python docs/rules_table.py"
    )


def test_doc_lists_every_rule_once_with_its_description():
    text = DOC.read_text(encoding="utf-8")
    listed = re.findall(r"^\| `([a-z_]+)` \| (.*) \|$", text, flags=re.M)
    by_kind = [r.name for kind, _ in TABLE["KINDS"] for r in fs.RULES.values() if r.kind == kind]
    assert [name for name, _ in listed] == by_kind and sorted(by_kind) == sorted(fs.RULES)
    for name, description in listed:
        assert description == fs.RULES[name].description.replace("|", "\\|")


def test_every_rule_the_package_raises_is_in_the_catalogue():
    used = set()
    for path in (ROOT / "funnelstats").rglob("*.py"):
        used |= set(re.findall(r'rule="([a-z_]+)"', path.read_text(encoding="utf-8")))
    assert used and used <= set(fs.RULES), used - set(fs.RULES)


def test_doc_says_how_to_be_strict():
    text = DOC.read_text(encoding="utf-8")
    assert "strict=True" in text and "## Making ingest strict" in text
