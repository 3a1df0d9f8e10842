"""Bundled data and a simulator with known truth.

- :func:`load_sample` — a few thousand simulated deals in Salesforce
  OpportunityHistory layout (see ``data/sample/README.md``).
- :func:`simulate` — a semi-Markov funnel whose true parameters are known, for
  checking estimators and forecasts.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from ..data import FunnelData
from ._simulate import (
    DEFAULT_SEGMENTS,
    DEFAULT_STAGES,
    Segment,
    Simulation,
    SimulationTruth,
    simulate,
)

__all__ = [
    "DEFAULT_SEGMENTS",
    "DEFAULT_STAGES",
    "SAMPLE_SEED",
    "Segment",
    "Simulation",
    "SimulationTruth",
    "load_sample",
    "sample_path",
    "sample_pipeline",
    "simulate",
]

#: The seed and settings that wrote the bundled sample (``data/sample/make_sample.py``).
SAMPLE_SEED = 20240101
SAMPLE_SETTINGS: dict[str, Any] = {
    "n_deals": 3000,
    "seed": SAMPLE_SEED,
    "start": "2024-01-01",
    "days": 365.0,
    "deleted_rows": 0.002,
}


def _data_dir() -> Path:
    return Path(str(resources.files("funnelstats.datasets") / "data"))


def sample_path(which: str = "history") -> Path:
    """Path of a bundled sample file: ``"history"`` (OpportunityHistory.csv),
    ``"opportunities"`` (Opportunity.csv) or ``"pipeline"`` (pipeline.toml).

    Examples
    --------
    >>> sample_path().name
    'OpportunityHistory.csv'
    """
    files = {
        "history": "OpportunityHistory.csv",
        "opportunities": "Opportunity.csv",
        "pipeline": "pipeline.toml",
    }
    if which not in files:
        raise ValueError(f"which must be one of {sorted(files)}")
    return _data_dir() / "sample" / files[which]


def sample_pipeline() -> Any:
    """The sample's :class:`~funnelstats.Pipeline` (read from its TOML file)."""
    from ..pipeline import Pipeline

    return Pipeline.from_toml(sample_path("pipeline"))


def load_sample(*, with_pipeline: bool = True) -> FunnelData:
    """The bundled sample: 3,000 simulated deals in Salesforce layout.

    Parameters
    ----------
    with_pipeline : bool, default True
        Use the sample's pipeline file; with False the pipeline is inferred
        from the data (and the inference reported).

    Returns
    -------
    FunnelData

    Examples
    --------
    >>> from funnelstats.datasets import load_sample
    >>> d = load_sample()
    >>> d.n_deals
    3000
    >>> d.pipeline.stages
    ('Prospecting', 'Qualification', 'Proposal', 'Negotiation')
    """
    from ..ingest import read_salesforce

    return read_salesforce(
        sample_path("history"),
        opportunities=sample_path("opportunities"),
        pipeline=sample_pipeline() if with_pipeline else None,
        exported_at="2024-12-31",
    )
