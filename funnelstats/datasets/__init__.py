"""Bundled data and a simulator with known truth.

- :func:`load_sample` — a few thousand simulated deals in Salesforce
  OpportunityHistory layout (see ``data/sample/README.md``).
- :func:`load_maven_crm` — the public Maven Analytics "CRM Sales Opportunities" deal-level
  data (8,800 real-format deals; see ``data/maven/SOURCE.md``).
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
    "load_maven_crm",
    "load_sample",
    "maven_path",
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


#: The Maven CRM pipeline: deals are prospected, then engaged, then won or lost.
MAVEN_STAGES = {"stages": ["Prospecting", "Engaging"], "won": ["Won"], "lost": ["Lost"]}


def maven_path(which: str = "pipeline") -> Path:
    """Path of a bundled Maven CRM file: ``"pipeline"`` (sales_pipeline.csv),
    ``"accounts"``, ``"products"``, ``"teams"`` or ``"source"`` (SOURCE.md).

    Examples
    --------
    >>> maven_path().name
    'sales_pipeline.csv'
    """
    files = {
        "pipeline": "sales_pipeline.csv",
        "accounts": "accounts.csv",
        "products": "products.csv",
        "teams": "sales_teams.csv",
        "source": "SOURCE.md",
    }
    if which not in files:
        raise ValueError(f"which must be one of {sorted(files)}")
    return _data_dir() / "maven" / files[which]


def load_maven_crm(*, join: bool = True) -> FunnelData:
    """The Maven Analytics "CRM Sales Opportunities" data: 8,800 deals, deal level.

    A public-domain deal-level export (one row per deal: ``opportunity_id,
    sales_agent, product, account, deal_stage, engage_date, close_date,
    close_value``) read with :func:`funnelstats.read_deals`. Deals enter
    ``Engaging`` on their engage date and end ``Won`` or ``Lost`` on their close
    date; the 500 ``Prospecting`` deals have no engage date and are kept in the
    deals table without events (rule ``undated_deal``); the 1,589 ``Engaging``
    deals are open (censored at the export date, 2017-12-31). Only the current
    stage is known (``has_stage_history`` is False): win rates and cycle times
    can be computed, time in each stage cannot.

    Parameters
    ----------
    join : bool, default True
        Add the sales team (``manager``, ``regional_office``), the product
        ``series`` and the account ``sector`` as attributes for ``by=``.

    Returns
    -------
    FunnelData

    Examples
    --------
    >>> from funnelstats.datasets import load_maven_crm
    >>> d = load_maven_crm()
    >>> {k: int(v) for k, v in d.deals["outcome"].value_counts().sort_index().items()}
    {'won': 4238, 'lost': 2473, 'open': 2089}
    >>> d.report.rows_read == d.report.rows_kept + d.report.rows_repaired
    True
    """
    import numpy as np
    import pandas as pd

    from ..ingest import read_deals
    from ..ingest._io import Table, read_table

    base = read_table(maven_path("pipeline"))
    frame = base.frame
    if join:
        teams = pd.read_csv(maven_path("teams"), dtype=str)
        products = pd.read_csv(maven_path("products"), dtype=str)[["product", "series"]]
        accounts = pd.read_csv(maven_path("accounts"), dtype=str)[["account", "sector"]]
        # the pipeline spells "GTXPro" what the products table calls "GTX Pro"
        products["product"] = products["product"].replace({"GTX Pro": "GTXPro"})
        n = len(frame)
        frame = (
            frame.merge(teams, on="sales_agent", how="left", validate="many_to_one")
            .merge(products, on="product", how="left", validate="many_to_one")
            .merge(accounts, on="account", how="left", validate="many_to_one")
        )
        if len(frame) != n:  # pragma: no cover - the joins are many-to-one
            raise RuntimeError("joining the Maven tables changed the number of deals")
        frame = frame.astype("string[pyarrow]")
    table = Table(frame, str(maven_path("pipeline")), np.asarray(base.rows), notes=base.notes)
    return read_deals(
        table,
        deal="opportunity_id",
        stage="deal_stage",
        created="engage_date",
        closed="close_date",
        amount="close_value",
        created_stage="Engaging",
        pipeline=MAVEN_STAGES,
        exported_at="2017-12-31",
    )
