"""The survival plots draw the numbers of their results."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

import funnelstats as fs


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_survival_curve_lines_are_the_km_steps(hand10, ax):
    r = fs.time_in_stage(hand10, stage="Lead")
    fs.plot_survival(r, ax=ax, ci=False)
    (line,) = ax.get_lines()
    assert line.get_label() == "Lead"
    assert line.get_drawstyle() == "steps-post"
    # (0, 8/9) from the zero-length stay, the steps, then flat to the longest stay (37 days)
    np.testing.assert_allclose(line.get_xdata(), [0, 0, 3, 4, 5, 6, 37])
    np.testing.assert_allclose(
        line.get_ydata(), [1, 8 / 9, 7 / 9, 1 / 3, 2 / 9, 1 / 9, 1 / 9], atol=1e-12
    )


def test_survival_ci_band_and_at_risk_table(sample, ax):
    r = fs.time_in_stage(sample, stage="Proposal", by="Segment")
    fs.plot_survival(r, ax=ax, times=[0, 20, 40, 60])
    assert [line.get_label() for line in ax.get_lines()] == ["Enterprise", "Mid-Market", "SMB"]
    assert len(ax.collections) == 3  # one band per curve
    band = ax.collections[0].get_paths()[0].vertices
    c = r.curves[r.curves["group"] == "Enterprise"]
    assert band[:, 1].min() == pytest.approx(c["ci_lower"].min())
    assert band[:, 1].max() == pytest.approx(1.0)
    texts = [t for t in ax.texts if t.get_gid() == "at_risk"]
    table = r.at_risk_table([0, 20, 40, 60])
    assert [int(t.get_text().replace(",", "")) for t in texts] == table["at_risk"].tolist()
    assert [t.xy[0] for t in texts] == table["t"].tolist()
    np.testing.assert_array_equal(ax.get_xticks(), [0, 20, 40, 60])


def test_survival_plot_needs_one_stage_with_groups(sample, ax):
    r = fs.time_in_stage(sample, by="Segment")
    with pytest.raises(ValueError, match="stage="):
        fs.plot_survival(r, ax=ax)
    fs.plot_survival(r, ax=ax, stage="Negotiation", at_risk=False)
    assert len(ax.get_lines()) == 3
    with pytest.raises(ValueError, match="Closing"):
        fs.plot_survival(r, ax=ax, stage="Closing")


def test_stacked_outcomes_fill_to_one(hand10, ax):
    r = fs.stage_outcomes(hand10, "Proposal")
    out = fs.plot_stage_outcomes(r, ax=ax)
    assert out is ax
    labels = [c.get_label() for c in ax.collections]
    assert labels == ["advanced", "lost", "moved back", "in stage"]
    tops = [c.get_paths()[0].vertices[:, 1].max() for c in ax.collections]
    # bottom up: advanced reaches 1/2, + lost 1/6 -> 2/3, + moved back 1/6 -> 5/6, + in stage -> 1
    np.testing.assert_allclose(tops, [1 / 2, 2 / 3, 5 / 6, 1.0], atol=1e-12)
    # the moved-back band is 1/6 thick from t=3 on
    v = ax.collections[2].get_paths()[0].vertices
    assert v[:, 1].min() == pytest.approx(0.0)


def test_cycle_time_plot_draws_won_lines(hand10, ax):
    r = fs.cycle_time(hand10)
    r.plot(ax=ax)
    (line,) = ax.get_lines()
    y = line.get_ydata()
    assert y.max() == pytest.approx(0.3)
    assert ax.get_xlabel() == "days since created"
    np.testing.assert_allclose(np.unique(np.round(y, 12)), [0, 0.1, 0.2, 0.3])


def test_hazard_ratio_forest(sample, ax):
    r = fs.stage_hazards(sample, "Proposal", covariates=["Segment", "amount"])
    r.plot(ax=ax)
    (bars,) = ax.containers
    x = bars.lines[0].get_xdata()
    np.testing.assert_allclose(x, r.frame["hazard_ratio"])
    assert ax.get_xscale() == "log"
