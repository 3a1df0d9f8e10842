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


def test_thinned_step_curve_draws_the_same_to_within_a_slice():
    """A long monotone step curve is drawn from a few thousand rows, and the thinned steps
    never leave the band the full curve spans within one slice of the axis."""
    from funnelstats._survival_plots import PLOT_BINS, _thin

    rng = np.random.default_rng(3)
    t = np.sort(rng.exponential(20.0, 200_000))
    s = 1.0 - np.arange(1, len(t) + 1) / len(t)  # a survival curve falling at every time
    hi = 120.0
    keep = _thin(t, hi)
    assert len(t[keep]) <= 2 * PLOT_BINS + 2
    assert t[keep][0] == t[0] and t[keep][-1] == t[-1]
    x = np.linspace(0.0, hi, 50_001)
    thin = np.searchsorted(t[keep], x, side="right") - 1
    width = hi / PLOT_BINS
    lo = np.searchsorted(t, x - width, side="right") - 1
    up = np.searchsorted(t, x + width, side="right") - 1
    value = np.where(thin >= 0, s[keep][np.maximum(thin, 0)], 1.0)
    band_hi = np.where(lo >= 0, s[np.maximum(lo, 0)], 1.0)
    band_lo = np.where(up >= 0, s[np.maximum(up, 0)], 1.0)
    assert np.all((value <= band_hi) & (value >= band_lo))
    # a short curve is drawn whole
    assert _thin(t[:100], hi) == slice(None)


def test_plot_of_a_long_curve_draws_few_points():
    """Time in stage on a large export: the drawn line is thinned, its ends kept."""
    import funnelstats as fs
    from funnelstats._survival_plots import PLOT_BINS

    big = fs.datasets.simulate(20_000, seed=5, layout="events").funnel()
    res = fs.time_in_stage(big, stage="Prospecting")
    n_rows = len(res.curves)
    fig, ax = plt.subplots()
    try:
        fs.plot_survival(res, ax=ax, at_risk=False)
        (line,) = ax.get_lines()
        x, y = line.get_data()
        assert n_rows > 2 * PLOT_BINS  # the case worth thinning
        assert len(x) <= 2 * (2 * PLOT_BINS + 4)  # steps drawn as pairs of points at most
        assert y[0] == 1.0 and y[-1] == pytest.approx(res.curves["survival"].iloc[-1])
    finally:
        plt.close(fig)
