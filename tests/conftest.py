from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest
from hypothesis import HealthCheck, settings

import funnelstats as fs

matplotlib.use("Agg")

DATA = Path(__file__).parent / "data"

# A fixed profile keeps CI time bounded; HYPOTHESIS_PROFILE=thorough explores more.
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def hand10() -> fs.FunnelData:
    """The hand-made 10-deal export (tests/data/hand10.csv)."""
    return fs.read_events(
        DATA / "hand10.csv", pipeline=DATA / "hand10.toml", exported_at="2024-02-10"
    )


@pytest.fixture(scope="session")
def sample() -> fs.FunnelData:
    return fs.load_sample()
