"""The report's sections, in order."""

from __future__ import annotations

from collections.abc import Callable

from ._model import Section
from ._sections import Context, data_quality, open_pipeline, overview
from ._sections_conversion import funnel_conversion
from ._sections_forecast import bookings_forecast, pipeline_flow, velocity_trend, win_rate_trend
from ._sections_survival import competing_outcomes, time_in_stage_section

__all__ = ["BUILDERS"]

#: Section builders in report order: (label, builder). A builder that raises
#: :class:`~funnelstats.InsufficientHistoryError` (deal-level data) is left out, and the
#: headline says which sections were left out and why.
BUILDERS: tuple[tuple[str, Callable[[Context], Section]], ...] = (
    ("headline", overview),
    ("bookings forecast", bookings_forecast),
    ("funnel and conversion", funnel_conversion),
    ("open pipeline", open_pipeline),
    ("pipeline flow", pipeline_flow),
    ("win-rate trend", win_rate_trend),
    ("time in stage", time_in_stage_section),
    ("stage outcomes", competing_outcomes),
    ("velocity", velocity_trend),
    ("data quality", data_quality),
)
