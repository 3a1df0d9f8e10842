"""The public surface of conversion and win_rate: arguments, errors, result objects, shrinkage."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import funnelstats as fs
from funnelstats._conversion_stats import shrink_beta_binomial

CONVERSION_COLUMNS = [
    "stage",
    "entered",
    "advanced",
    "lost",
    "skipped_out",
    "open",
    "skipped_through",
    "moved_back",
    "reopened",
    "conversion",
    "std_error",
    "ci_lower",
    "ci_upper",
    "undecided",
    "horizon_days",
    "horizon_rule",
    "mature",
    "method",
]
WIN_COLUMNS = [
    "stage",
    "entered",
    "won",
    "lost",
    "skipped_out",
    "open",
    "win_rate",
    "std_error",
    "ci_lower",
    "ci_upper",
    "undecided",
    "horizon_days",
    "horizon_rule",
    "mature",
    "method",
]


def test_columns_are_fixed(sample):
    assert list(fs.conversion(sample).frame.columns) == CONVERSION_COLUMNS
    assert list(fs.conversion(sample, method="entered").frame.columns) == CONVERSION_COLUMNS
    assert list(fs.win_rate(sample).frame.columns) == WIN_COLUMNS
    assert list(fs.win_rate(sample, horizon=30).frame.columns) == WIN_COLUMNS
    by = fs.conversion(sample, by="Segment", shrink=True).frame
    assert list(by.columns) == [
        "Segment",
        *CONVERSION_COLUMNS,
        "shrunk",
        "shrunk_ci_lower",
        "shrunk_ci_upper",
    ]
    both = fs.conversion(sample, by="Segment", cohort="Q").frame
    assert list(both.columns[:3]) == ["Segment", "cohort", "stage"]
    assert isinstance(both["cohort"].dtype, pd.PeriodDtype)
    assert both["stage"].cat.ordered
    assert list(both["stage"].cat.categories) == list(sample.pipeline.stages)


def test_result_object(sample):
    res = fs.conversion(sample)
    assert isinstance(res, fs.ConversionResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.method = "entered"  # type: ignore[misc]
    text = res.summary()
    assert text.startswith("Stage conversion") and "plateau" in text
    assert repr(res) == text
    html = res._repr_html_()
    assert "<table" in html and "Stage conversion" in html
    assert res.ci_method == "delta" and res.horizon is None and res.skips == "reached"
    wr = fs.win_rate(sample, horizon=pd.Timedelta(days=30))
    assert wr.horizon == 30.0
    assert wr.estimator == "direct"
    assert fs.win_rate(sample).estimator == "product"
    assert fs.win_rate(sample, method="resolved").estimator == "proportion"


def test_does_not_touch_the_data(hand10):
    events = hand10.events.copy()
    deals = hand10.deals.copy()
    fs.conversion(hand10, by="segment", cohort="M", shrink=True)
    fs.win_rate(hand10, cohort="M")
    pd.testing.assert_frame_equal(hand10.events, events)
    pd.testing.assert_frame_equal(hand10.deals, deals)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "kaplan-meier"}, "method must be one of"),
        ({"skips": "loose"}, "skips must be one of"),
        ({"alpha": 0.0}, "alpha must be in"),
        ({"alpha": "five"}, "alpha must be a number"),
        ({"horizon": -1}, "horizon must be a finite"),
        ({"horizon": "soon"}, "horizon must be a number of days"),
        ({"horizon": 30, "method": "resolved"}, "horizon applies to"),
        ({"ci_method": "wilson"}, "ci_method for method='aalen-johansen'"),
        ({"ci_method": "bootstrap", "method": "entered"}, "must be one of"),
        ({"ci_method": "bootstrap", "n_boot": 1}, "n_boot must be"),
        ({"cohort": "fortnight"}, "cohort must be a pandas period frequency"),
    ],
)
def test_argument_errors(hand10, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fs.conversion(hand10, **kwargs)


def test_unknown_attribute_and_stage(hand10):
    with pytest.raises(fs.FunnelDataError, match="no deal attribute 'region'"):
        fs.conversion(hand10, by="region")
    with pytest.raises(ValueError, match="did you mean 'Proposal'"):
        fs.win_rate(hand10, from_stage="proposal")
    with pytest.raises(ValueError, match="needs a result computed with by="):
        fs.conversion(hand10).compare()


def test_missing_attribute_values_form_their_own_group():
    ev = pd.DataFrame(
        {
            "deal_id": ["a", "a", "b", "c"],
            "stage": ["Lead", "Won", "Lead", "Lead"],
            "entered_at": ["2024-01-01", "2024-01-05", "2024-01-02", "2024-01-03"],
            "owner": ["x", "x", None, "x"],
        }
    )
    data = fs.FunnelData.from_events(
        ev, pipeline=fs.Pipeline(["Lead"], won=["Won"], lost=["Lost"]), exported_at="2024-02-01"
    )
    f = fs.conversion(data, by="owner").frame
    assert f["owner"].tolist() == ["x", "(missing)"]
    assert f["entered"].tolist() == [2, 1]


def test_cohort_rows_and_compare_within_cohorts(sample):
    res = fs.conversion(sample, by="Segment", cohort="Q")
    f = res.frame
    assert len(f) == 3 * 4 * 4
    cmp = res.compare().frame
    assert list(cmp.columns[:2]) == ["stage", "cohort"]
    assert len(cmp) == 4 * 4
    # cohorts alone: compared with each other, per stage
    only = fs.conversion(sample, cohort="Q").compare().frame
    assert len(only) == 4 and (only["df"] == 3).all()


def test_compare_pairwise_and_reject(sample):
    cmp = fs.conversion(sample, by="Segment").compare(pairwise=True)
    f = cmp.frame
    assert len(f) == 4 * 3
    assert set(f["comparison"]) == {
        "Enterprise vs Mid-Market",
        "Enterprise vs SMB",
        "Mid-Market vs SMB",
    }
    assert (f["reject"] == (f["p_adj"] <= 0.05)).all()
    # the simulation's largest gap (0.45 vs 0.60 at Prospecting) is found
    first = f[(f["stage"] == "Prospecting") & (f["comparison"] == "Enterprise vs SMB")]
    assert first["reject"].all()
    assert cmp.summary().startswith("Group comparison")


def test_shrinkage_keeps_a_three_deal_rep_off_the_top():
    # reps A (24 of 40 advance) and B (18 of 40), and C with 3 of 3
    rows = []
    for rep, n, k in (("A", 40, 24), ("B", 40, 18), ("C", 3, 3)):
        for i in range(n):
            deal = f"{rep}{i:02d}"
            rows.append((deal, "Lead", "2024-01-01", rep))
            rows.append((deal, "Demo" if i < k else "Lost", "2024-01-10", rep))
            if i < k:
                rows.append((deal, "Lost", "2024-01-20", rep))
    ev = pd.DataFrame(rows, columns=["deal_id", "stage", "entered_at", "rep"])
    data = fs.FunnelData.from_events(
        ev,
        pipeline=fs.Pipeline(["Lead", "Demo"], won=["Won"], lost=["Lost"]),
        exported_at="2024-03-01",
    )
    for method in ("resolved", "aalen-johansen"):
        f = fs.conversion(data, by="rep", method=method, shrink=True).frame
        lead = f[f["stage"] == "Lead"].set_index("rep")
        assert lead["conversion"].idxmax() == "C"
        assert lead["shrunk"].idxmax() == "A"
        pooled = 45 / 83
        # each shrunk value lies between the raw value and the pooled rate
        for rep in "ABC":
            lo, hi = sorted([lead.loc[rep, "conversion"], pooled])
            assert lo - 1e-9 <= lead.loc[rep, "shrunk"] <= hi + 1e-9
        # the small group moves most
        move = (lead["shrunk"] - lead["conversion"]).abs()
        assert move.idxmax() == "C"
        assert (lead["shrunk_ci_lower"] < lead["shrunk"]).all()
        assert (lead["shrunk"] < lead["shrunk_ci_upper"]).all()


def test_shrinkage_lowers_error_on_heterogeneous_groups():
    rng = np.random.default_rng(12)
    raw_err, shrunk_err = [], []
    for _ in range(60):
        n = rng.integers(3, 60, size=15)
        p = rng.beta(8, 6, size=15)
        k = rng.binomial(n, p)
        est, *_ = shrink_beta_binomial(k, n, alpha=0.05)
        raw_err.append(np.mean((k / n - p) ** 2))
        shrunk_err.append(np.mean((est - p) ** 2))
    assert np.mean(shrunk_err) < 0.8 * np.mean(raw_err)


def test_horizon_zero_and_bootstrap_on_win_rate(hand10):
    f = fs.conversion(hand10, horizon=0).frame.set_index("stage")
    # only the zero-length episodes (same instant, skipped through) are decided at 0
    assert f.loc["Lead", "conversion"] == pytest.approx(1 / 9)
    assert f.loc["Negotiation", "conversion"] == pytest.approx(2 / 4)
    wr = fs.win_rate(hand10, horizon=10, ci_method="bootstrap", n_boot=50, seed=3).frame
    assert np.isfinite(wr["win_rate"]).all()
    assert (wr["ci_lower"] <= wr["win_rate"] + 1e-12).all()


def test_notes_say_what_was_done(hand10):
    notes = " ".join(fs.conversion(hand10, skips="strict").notes)
    assert "skips='strict'" in notes and "1 deal(s) did not start in the first stage" in notes
    assert "plateau" in notes
    assert "not final" in notes
    naive = " ".join(fs.conversion(hand10, method="resolved").notes)
    assert "naive" in naive and "overstates" in naive


def test_degenerate_estimates_get_the_wilson_interval(hand10):
    from statsmodels.stats.proportion import proportion_confint

    # strict Negotiation: one deal, advanced -> estimate 1, Wilson interval of 1 of 1
    lo, hi = proportion_confint(1, 1, alpha=0.05, method="wilson")
    for ci in ("delta", "bootstrap"):
        f = fs.conversion(hand10, skips="strict", ci_method=ci, n_boot=100, seed=1).frame
        row = f.set_index("stage").loc["Negotiation"]
        assert row["conversion"] == 1.0
        assert (row["ci_lower"], row["ci_upper"]) == pytest.approx((lo, hi))
