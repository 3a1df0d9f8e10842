"""Tables derived once per FunnelData and shared by the analyses (``FunnelData._cache``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import funnelstats as fs
from funnelstats import _stays
from funnelstats._conversion_records import stage_records
from funnelstats._survival_fit import select_stays


def _analyses(data: fs.FunnelData) -> list[pd.DataFrame]:
    return [
        fs.flow(data, "2024-04-01", "2024-06-30").frame,
        fs.snapshot(data).frame,
        fs.stage_outcomes(data, by="Segment").frame,
        fs.time_in_stage(data).frame,
        fs.time_in_stage(data, by="Segment", repeats="first").frame,
        fs.stage_outcomes(data).frame,
        fs.stage_outcomes(data, "Proposal").at([10, 30]),
        fs.time_in_stage(data, stage="Proposal").curves,
        fs.conversion(data).frame,
        fs.conversion(data, skips="strict").frame,
        fs.win_rate(data).frame,
        fs.conversion(data, by="Segment").frame,
    ]


def test_shared_tables_give_the_results_of_fresh_data():
    """Each analysis on data that earlier analyses filled equals it on brand-new data."""
    warm = fs.load_sample()
    results = _analyses(warm)
    assert warm._cache  # the analyses did share something
    for i, got in enumerate(_analyses(warm)):  # all from the cache now
        pd.testing.assert_frame_equal(got, results[i])
    for i, expected in enumerate(_analyses(fs.load_sample())):
        # a new object for each analysis: nothing shared with the ones before
        pd.testing.assert_frame_equal(results[i], expected)
    for i, fn in enumerate(
        [
            lambda d: fs.stage_outcomes(d, by="Segment").frame,
            lambda d: fs.time_in_stage(d).frame,
            lambda d: fs.time_in_stage(d, by="Segment", repeats="first").frame,
        ]
    ):
        pd.testing.assert_frame_equal(fn(fs.load_sample()), results[i + 2])


def test_shared_arrays_are_read_only(sample):
    s = _stays.stays(sample)
    assert _stays.stays(sample) is s
    with pytest.raises(ValueError, match="read-only"):
        s.duration_ns[0] = 0
    r = stage_records(sample)
    assert stage_records(sample) is r
    with pytest.raises(ValueError, match="read-only"):
        r.cause[0] = 0
    from funnelstats._forecast_history import history_state

    hs = history_state(sample)
    assert history_state(sample) is hs
    with pytest.raises(ValueError, match="read-only"):
        hs.amount[0] = 0.0
    sel = select_stays(sample, None, "Segment", "all", "test")
    assert select_stays(sample, None, "Segment", "all", "test") is sel
    assert select_stays(sample, None, None, "all", "test") is not sel
    with pytest.raises(ValueError, match="read-only"):
        sel.group[0] = 0


def test_a_cut_has_its_own_tables(sample):
    cut = sample.as_of("2024-09-30")
    full = _stays.stays(sample)
    part = _stays.stays(cut)
    assert len(part) < len(full)
    assert cut._cache is not sample._cache
    fresh = fs.load_sample().as_of("2024-09-30")
    pd.testing.assert_frame_equal(fs.time_in_stage(cut).frame, fs.time_in_stage(fresh).frame)


def test_a_failed_selection_keeps_nothing(sample):
    before = set(sample._cache)
    with pytest.raises(fs.FunnelDataError, match="no deal attribute"):
        fs.time_in_stage(sample, by="NoSuchColumn")
    assert set(sample._cache) - before <= {"stays"}
    assert np.all(np.diff(_stays.stays(sample).deal) >= 0)
