"""The survival API: columns, errors, immutability, and properties that hold for any data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import funnelstats as fs
from funnelstats._estimators import aalen_johansen, event_table

FRAME_COLUMNS = [
    "stage",
    "group",
    "n_entered",
    "n_exited",
    "n_censored",
    "median",
    "median_ci_lower",
    "median_ci_upper",
    "q25",
    "q25_ci_lower",
    "q25_ci_upper",
    "q75",
    "q75_ci_lower",
    "q75_ci_upper",
    "restricted_mean",
    "restricted_mean_ci_lower",
    "restricted_mean_ci_upper",
    "tau",
    "naive_mean_closed",
]


def test_columns(sample):
    r = fs.time_in_stage(sample)
    assert list(r.frame.columns) == FRAME_COLUMNS
    assert list(r.curves.columns) == [
        "stage",
        "group",
        "t",
        "survival",
        "ci_lower",
        "ci_upper",
        "at_risk",
    ]
    assert r.frame["stage"].tolist() == list(sample.pipeline.stages)
    assert (r.frame["group"] == "all").all()
    o = fs.stage_outcomes(sample, "Proposal", by="Segment")
    assert list(o.frame.columns) == [
        "stage",
        "group",
        "outcome",
        "n",
        "t",
        "probability",
        "ci_lower",
        "ci_upper",
        "median",
        "naive_median",
    ]
    assert list(o.curves.columns) == [
        "stage",
        "group",
        "t",
        "outcome",
        "probability",
        "ci_lower",
        "ci_upper",
        "at_risk",
    ]
    c = fs.cycle_time(sample)
    assert list(c.frame.columns) == o.frame.columns.drop("stage").tolist()
    assert c.frame["outcome"].tolist() == ["won", "lost", "open"]


def test_counts_add_up(sample):
    r = fs.time_in_stage(sample, by="Segment")
    f = r.frame
    assert (f["n_exited"] + f["n_censored"] == f["n_entered"]).all()
    o = fs.stage_outcomes(sample, by="Segment")
    n = o.frame.groupby(["stage", "group"], observed=True)["n"].sum()
    np.testing.assert_array_equal(n.to_numpy(), f["n_entered"].to_numpy())
    # the median interval holds the median; the restricted mean interval holds the estimate
    assert (f["median_ci_lower"] <= f["median"]).all()
    assert (f["median"] <= f["median_ci_upper"]).all()
    assert (f["restricted_mean_ci_lower"] < f["restricted_mean"]).all()
    assert (f["q25"] <= f["median"]).all() and (f["median"] <= f["q75"]).all()


def test_stage_selection_and_errors(sample):
    r = fs.time_in_stage(sample, stage=["Negotiation", "Proposal"])
    assert r.frame["stage"].tolist() == ["Proposal", "Negotiation"]  # pipeline order
    with pytest.raises(ValueError, match="did you mean 'Proposal'"):
        fs.time_in_stage(sample, stage="Proposl")
    with pytest.raises(ValueError, match="won or lost stage"):
        fs.stage_outcomes(sample, "Closed Won")
    with pytest.raises(fs.FunnelDataError, match="no deal attribute 'Region'"):
        fs.time_in_stage(sample, by="Region")
    with pytest.raises(ValueError, match="alpha"):
        fs.time_in_stage(sample, alpha=1.5)
    with pytest.raises(ValueError, match="repeats"):
        fs.time_in_stage(sample, repeats="last")
    with pytest.raises(ValueError, match="tau"):
        fs.time_in_stage(sample, tau=-1)
    with pytest.raises(ValueError, match="end must be 'won'"):
        fs.cycle_time(sample, end="lost")
    with pytest.raises(ValueError, match="open stage"):
        fs.cycle_time(sample, start="Closed Won")


def test_hazards_errors(sample):
    with pytest.raises(fs.FunnelDataError, match="no deal attribute 'Region'"):
        fs.stage_hazards(sample, "Proposal", covariates=["Region"])
    with pytest.raises(fs.FunnelDataError, match="levels"):
        fs.stage_hazards(sample, "Proposal", covariates=["Name"])
    with pytest.raises(ValueError, match="reference level 'Gov'"):
        fs.stage_hazards(sample, "Proposal", covariates=["Segment"], reference={"Segment": "Gov"})
    with pytest.raises(ValueError, match="at least one"):
        fs.stage_hazards(sample, "Proposal", covariates=[])


def test_hazards_reference_and_notes(sample):
    r = fs.stage_hazards(
        sample, "Negotiation", covariates=["Segment"], reference={"Segment": "Enterprise"}
    )
    assert r.frame["term"].tolist() == ["Segment[Mid-Market]", "Segment[SMB]"]
    assert set(r.frame["reference"]) == {"Enterprise"}
    assert "reference level of 'Segment': 'Enterprise'" in r.notes
    assert "Proportional-hazards check" in r.summary()
    assert "Proportional-hazards check" in r._repr_html_()
    assert r.n_events == int(r.design["advanced"].sum())


def test_tau_given_is_used(sample):
    r = fs.time_in_stage(sample, tau=30.0)
    assert (r.frame["tau"] == 30.0).all()
    assert (r.frame["restricted_mean"] < 30.0).all()


def test_results_are_frozen_and_inputs_untouched(sample):
    before = sample.events.copy()
    r = fs.time_in_stage(sample, by="Segment")
    fs.stage_outcomes(sample, by="Segment")
    pd.testing.assert_frame_equal(sample.events, before)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.alpha = 0.1  # type: ignore[misc]
    text = r.summary()
    assert "Log-rank test across Segment" in text
    assert "censored at the export date" in r._repr_html_()
    assert "Log-rank test across Segment" in r._repr_html_()


def test_as_of_cuts_what_is_known(sample):
    early = sample.as_of("2024-06-30")
    r = fs.time_in_stage(early, stage="Prospecting").frame.iloc[0]
    full = fs.time_in_stage(sample, stage="Prospecting").frame.iloc[0]
    assert r["n_entered"] < full["n_entered"]
    assert r["tau"] <= (early.exported_at - pd.Timestamp("2024-01-01", tz="UTC")).days


def test_at_reads_the_curves(sample):
    r = fs.time_in_stage(sample, stage="Proposal")
    c = r.curves
    # at an exit time the value is the curve's value there; just before it, the previous one
    t5 = c["t"].iloc[5]
    got = r.at([t5, np.nextafter(t5, 0)])
    assert got["survival"].iloc[0] == c["survival"].iloc[5]
    assert got["survival"].iloc[1] == c["survival"].iloc[4]


@given(
    st.lists(
        st.tuples(st.integers(0, 8), st.integers(0, 3), st.integers(0, 1)),
        min_size=1,
        max_size=40,
    )
)
def test_incidences_and_survival_add_up_to_one(rows):
    # many ties between causes: durations on a coarse grid
    t, cause, group = (np.array(x) for x in zip(*rows))
    tab = event_table(t, cause, groups=group, n_groups=2, n_causes=3)
    aj = aalen_johansen(tab)
    np.testing.assert_allclose(aj.cif.sum(axis=1) + aj.survival, 1.0, atol=1e-12)
    assert (aj.cif >= -1e-15).all()
    assert np.isfinite(aj.variance[tab.at_risk > 0]).all()


def test_naive_median_is_the_plain_median_of_exits(sample):
    from funnelstats import _stays

    s = _stays.stays(sample)
    r = fs.stage_outcomes(sample, by="Segment").frame
    seg = sample.deals["Segment"].astype(str).to_numpy()[s.deal]
    days = s.duration_ns / _stays.NS_PER_DAY
    for code, name in ((1, "advanced"), (2, "lost")):
        for stage in sample.pipeline.stages:
            for g in ("Enterprise", "SMB"):
                m = (s.stage == sample.pipeline.code(stage)) & (seg == g) & (s.outcome == code)
                row = r[(r["stage"] == stage) & (r["group"] == g) & (r["outcome"] == name)]
                assert row["naive_median"].item() == np.median(days[m])


def _tiny(rows):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp", "segment"])
    return fs.read_events(frame, pipeline=fs.Pipeline(["S0", "S1"], won=["Won"], lost=["Lost"]))


def test_stage_hazards_say_what_is_missing_on_degenerate_stays():
    from funnelstats.errors import FunnelDataError, InsufficientHistoryError

    never_advanced = _tiny(
        [
            ("A", "S0", "2024-01-01", "x"),
            ("A", "Lost", "2024-01-05", "x"),
            ("B", "S0", "2024-01-02", "y"),
        ]
    )
    with pytest.raises(InsufficientHistoryError, match="no stay in stage 'S0' has ended by adv"):
        fs.stage_hazards(never_advanced, "S0", covariates=["segment"])
    one_level = _tiny(
        [
            ("A", "S0", "2024-01-01", "x"),
            ("A", "S1", "2024-01-05", "x"),
            ("B", "S0", "2024-01-02", "x"),
        ]
    )
    with pytest.raises(FunnelDataError, match=r"\['segment'\] take a single value") as exc:
        fs.stage_hazards(one_level, "S0", covariates=["segment"])
    assert exc.value.column == "segment"
