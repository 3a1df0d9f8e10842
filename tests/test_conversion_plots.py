"""Plots of conversion results: the drawn artists carry the result's values."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

import funnelstats as fs


def _ax():
    return Figure().subplots()


def _bars(ax):
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def test_funnel_bar_widths_are_the_running_product(hand10):
    res = fs.conversion(hand10)
    before = plt.get_fignums()
    ax = _ax()
    out = fs.plot_funnel(res, ax=ax, naive="resolved")
    assert out is ax
    assert plt.get_fignums() == before  # nothing drawn on pyplot's figures
    conv = res.frame["conversion"].to_numpy()
    main, naive = _bars(ax)
    expected = np.r_[1.0, np.cumprod(conv)]
    np.testing.assert_allclose(main.datavalues, expected)
    # centred bars
    np.testing.assert_allclose([p.get_x() for p in main.patches], -expected / 2)
    f = res.frame
    resolved = f["advanced"] / (f["advanced"] + f["lost"] + f["skipped_out"])
    np.testing.assert_allclose(naive.datavalues, np.r_[1.0, np.cumprod(resolved)])
    texts = [t.get_text() for t in ax.texts]
    # Lead: 78% [36%–94%], not final (11% undecided): marked as a lower bound
    assert "≥78% [36%–94%]" in texts
    assert "naive 88%" in texts
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "Lead",
        "Qualified",
        "Proposal",
        "Negotiation",
        "won",
    ]


def test_funnel_of_one_group_and_side_by_side_groups(sample):
    res = fs.conversion(sample, by="Segment")
    ax = fs.plot_funnel(res, ax=_ax(), group="SMB")
    smb = res.frame[res.frame["Segment"] == "SMB"]["conversion"].to_numpy()
    np.testing.assert_allclose(_bars(ax)[0].datavalues, np.r_[1.0, np.cumprod(smb)])
    # no group: each group's conversions side by side
    ax = res.plot(ax=_ax())
    bars = _bars(ax)
    assert len(bars) == 3
    for bar, (_, part) in zip(bars, res.frame.groupby("Segment", sort=True)):
        np.testing.assert_allclose(bar.datavalues, part["conversion"])
    with pytest.raises(ValueError, match="no group"):
        fs.plot_funnel(res, ax=_ax(), group="Nope")
    with pytest.raises(ValueError, match="plot_funnel draws a conversion"):
        fs.plot_funnel(fs.win_rate(sample), ax=_ax())
    with pytest.raises(ValueError, match="naive must be one of"):
        fs.plot_funnel(fs.conversion(sample), ax=_ax(), naive="crm")


def test_rates_with_interval_bars(sample):
    res = fs.win_rate(sample)
    ax = res.plot(ax=_ax())
    (bar,) = _bars(ax)
    np.testing.assert_allclose(bar.datavalues, res.frame["win_rate"])
    err = next(c for c in ax.containers if not isinstance(c, BarContainer))
    segs = err.lines[2][0].get_segments()
    np.testing.assert_allclose([s[0][0] for s in segs], res.frame["ci_lower"])
    np.testing.assert_allclose([s[1][0] for s in segs], res.frame["ci_upper"])


def test_cohort_heatmap_values_and_immature_cells(sample):
    res = fs.conversion(sample, cohort="Q")
    ax = res.plot(ax=_ax())  # a cohort result without by draws the heat map
    img = ax.images[0].get_array()
    grid = res.frame.pivot(index="cohort", columns="stage", values="conversion")
    np.testing.assert_allclose(np.ma.filled(img, np.nan), grid.to_numpy(dtype=float))
    n_immature = int((~res.frame["mature"].astype(bool)).sum())
    hatched = [p for p in ax.patches if p.get_hatch() == "//"]
    assert len(hatched) == n_immature
    marked = [t.get_text() for t in ax.texts if t.get_text().startswith("≥")]
    assert len(marked) == n_immature
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2024Q1", "2024Q2", "2024Q3", "2024Q4"]
    with pytest.raises(ValueError, match="cohort="):
        fs.plot_cohort_heatmap(fs.conversion(sample), ax=_ax())
    wr = fs.win_rate(sample, cohort="Q", by="Segment")
    ax = fs.plot_cohort_heatmap(wr, ax=_ax(), group="SMB", colorbar=False)
    part = wr.frame[wr.frame["Segment"] == "SMB"]
    grid = part.pivot(index="cohort", columns="stage", values="win_rate")
    np.testing.assert_allclose(np.ma.filled(ax.images[0].get_array(), np.nan), grid.to_numpy())


def test_cohort_curves_are_the_step_functions(sample):
    res = fs.win_rate(sample, cohort="Q", from_stage="Prospecting")
    ax = res.plot(ax=_ax())
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["2024Q1", "2024Q2", "2024Q3", "2024Q4"]
    for ln, (_, part) in zip(lines, res.curves.groupby("cohort", sort=True)):
        x, y = ln.get_data()
        np.testing.assert_allclose(x[1:], part["age_days"])
        np.testing.assert_allclose(y[1:], part["win_rate"])
        assert (x[0], y[0]) == (0.0, 0.0)
    # the youngest cohort's curve stops earliest
    assert lines[-1].get_data()[0].max() < lines[0].get_data()[0].max()
    with pytest.raises(ValueError, match="no curves"):
        fs.plot_cohort_curves(fs.win_rate(sample), ax=_ax())


def test_comparison_plot(sample):
    cmp = fs.conversion(sample, by="Segment").compare()
    ax = cmp.plot(ax=_ax())
    (bar,) = _bars(ax)
    np.testing.assert_allclose(bar.datavalues, -np.log10(cmp.frame["p_adj"]))
    assert ax.get_lines()[0].get_xdata()[0] == pytest.approx(-np.log10(0.05))
