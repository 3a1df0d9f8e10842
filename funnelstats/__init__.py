"""funnelstats: trustworthy sales-funnel statistics and forecasts from CRM exports.

Read an export into :class:`FunnelData` with :func:`read` (or a layout's own
reader), then call the analysis functions on it.
"""

from __future__ import annotations

from .conversion import (
    ConversionResult,
    GroupComparison,
    WinRateResult,
    conversion,
    win_rate,
)
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
from .plotting_conversion import (
    plot_cohort_curves,
    plot_cohort_heatmap,
    plot_comparison,
    plot_funnel,
    plot_rates,
)
from .report import build_report, make_report
from .snapshot import flow, snapshot
from .survival import (
    CompetingOutcomes,
    StageHazards,
    TimeInStage,
    cycle_time,
    plot_hazard_ratios,
    plot_stage_outcomes,
    plot_survival,
    stage_hazards,
    stage_outcomes,
    time_in_stage,
)

__version__ = "0.1.0"

__all__ = [
    "RULES",
    "CompetingOutcomes",
    "ConversionResult",
    "FunnelData",
    "FunnelDataError",
    "GroupComparison",
    "IngestReport",
    "InsufficientHistoryError",
    "Pipeline",
    "StageHazards",
    "TimeInStage",
    "UnknownLayoutError",
    "WinRateResult",
    "__version__",
    "backtest",
    "build_report",
    "conversion",
    "cycle_time",
    "detect_layout",
    "flow",
    "forecast_bookings",
    "forecast_velocity",
    "forecast_win_rate",
    "load_maven_crm",
    "load_sample",
    "make_report",
    "plot_cohort_curves",
    "plot_cohort_heatmap",
    "plot_comparison",
    "plot_funnel",
    "plot_hazard_ratios",
    "plot_rates",
    "plot_stage_outcomes",
    "plot_survival",
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
    "stage_hazards",
    "stage_outcomes",
    "time_in_stage",
    "velocity",
    "weighted_pipeline",
    "win_rate",
]
