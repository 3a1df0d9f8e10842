"""funnelstats: trustworthy sales-funnel statistics and forecasts from CRM exports.

Read an export into :class:`FunnelData` with :func:`read` (or a layout's own
reader), then call the analysis functions on it.
"""

from __future__ import annotations

from .data import FunnelData
from .datasets import load_maven_crm, load_sample, simulate
from .errors import FunnelDataError, InsufficientHistoryError, UnknownLayoutError
from .forecast import (
    backtest,
    forecast_bookings,
    forecast_velocity,
    forecast_win_rate,
    realised_bookings,
    reliability,
    velocity,
    weighted_pipeline,
)
from .ingest import (
    RULES,
    IngestReport,
    detect_layout,
    read,
    read_deals,
    read_dynamics,
    read_events,
    read_hubspot,
    read_pipedrive,
    read_salesforce,
    read_zoho,
)
from .pipeline import Pipeline
from .snapshot import flow, snapshot

__version__ = "0.1.0"

__all__ = [
    "RULES",
    "FunnelData",
    "FunnelDataError",
    "IngestReport",
    "InsufficientHistoryError",
    "Pipeline",
    "UnknownLayoutError",
    "__version__",
    "backtest",
    "detect_layout",
    "flow",
    "forecast_bookings",
    "forecast_velocity",
    "forecast_win_rate",
    "load_maven_crm",
    "load_sample",
    "read",
    "read_deals",
    "read_dynamics",
    "read_events",
    "read_hubspot",
    "read_pipedrive",
    "read_salesforce",
    "read_zoho",
    "realised_bookings",
    "reliability",
    "simulate",
    "snapshot",
    "velocity",
    "weighted_pipeline",
]
