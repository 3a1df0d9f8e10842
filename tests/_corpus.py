"""The hostile-input corpus (tests/data/hostile): its cases and how to read each one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HOSTILE = Path(__file__).parent / "data" / "hostile"
with open(HOSTILE / "EXPECTED.toml", "rb") as _fh:
    CASES = tomllib.load(_fh)["case"]
READABLE = [c for c in CASES if "error" not in c]


# ----------------------------------------------------------------- generated files


def one_deal_50000_events(path: Path) -> None:
    """One deal going Lead, Demo, Proposal, Lead, ... (49 999 rows, a minute apart), then Won."""
    n = 49_999
    stages = np.array(["Lead", "Demo", "Proposal"])[np.arange(n) % 3]
    at = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n + 1), unit="min")
    frame = pd.DataFrame(
        {
            "deal_id": "BIG",
            "stage": np.r_[stages, ["Won"]],
            "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "amount": "1000",
        }
    )
    frame.to_csv(path, index=False)


GENERATE = {"one_deal_50000_events.csv": one_deal_50000_events}


def source(case: dict, tmp_path: Path) -> Path:
    if "generate" in case:
        path = tmp_path / case["generate"]
        GENERATE[case["generate"]](path)
        return path
    return HOSTILE / case["file"]


def kwargs(case: dict) -> dict:
    kw = dict(case.get("kwargs", {}))
    pipe = kw.pop("pipeline", "pipeline.toml")
    if isinstance(pipe, str):
        if pipe != "infer":
            kw["pipeline"] = HOSTILE / pipe
    else:
        kw["pipeline"] = pipe
    return kw
