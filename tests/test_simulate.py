"""The simulator reproduces its stated parameters (checked with plain pandas on its output)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import funnelstats as fs
from funnelstats.datasets import simulate

N = 40_000


@pytest.fixture(scope="module")
def big():
    # a long window after the last arrival: nearly every deal has finished in `complete`
    return simulate(N, seed=7, days=200, exported_at="2026-01-01", layout="events")


def _paths(complete: pd.DataFrame) -> pd.DataFrame:
    c = complete.copy()
    c["next"] = c.groupby("deal_id")["stage"].shift(-1)
    c["exit"] = c.groupby("deal_id")["entered_at"].shift(-1)
    return c


def test_p_advance_and_reached_conversion(big):
    truth = big.truth
    c = _paths(big.complete)
    order = {s: i for i, s in enumerate(truth.stages)}
    open_rows = c[c["stage"].isin(truth.stages)]
    adv = open_rows["next"].map(lambda s: s != truth.lost_stage)
    p_hat = adv.groupby(open_rows["stage"]).mean().reindex(truth.stages)
    n = open_rows.groupby("stage").size().reindex(truth.stages)
    se = np.sqrt(p_hat * (1 - p_hat) / n)
    assert (np.abs(p_hat - truth.p_advance()) < 5 * se).all(), (p_hat, truth.p_advance())
    # reached semantics: furthest open stage index, won counts as past every stage
    idx = c["stage"].map(lambda s: order.get(s, -1))
    won = c.groupby("deal_id")["stage"].apply(lambda s: (s == truth.won_stage).any())
    furthest = idx.groupby(c["deal_id"]).max()
    furthest[won] = len(truth.stages)
    reached = np.array([(furthest >= k).sum() for k in range(len(truth.stages) + 1)])
    conv = reached[1:] / reached[:-1]
    se = np.sqrt(conv * (1 - conv) / reached[:-1])
    assert (np.abs(conv - truth.conversion().to_numpy()) < 5 * se).all()


def test_median_time_in_stage(big):
    truth = big.truth
    c = _paths(big.complete)
    c = c[c["stage"].isin(truth.stages) & c["exit"].notna()]
    days = (c["exit"] - c["entered_at"]).dt.total_seconds() / 86400
    med = days.groupby(c["stage"]).median().reindex(truth.stages)
    true = truth.median_time_in_stage()
    # standard error of a sample median: 1 / (2 f(m) sqrt(n)), f the true density at m
    n = c.groupby("stage").size().reindex(truth.stages)
    for st in truth.stages:
        m = true[st]
        f = -(truth.survival(st, m + 1e-3) - truth.survival(st, m - 1e-3)) / 2e-3
        se = 1 / (2 * f * np.sqrt(n[st]))
        assert abs(med[st] - m) < 5 * se, (st, med[st], m, se)
    mean = days.groupby(c["stage"]).mean().reindex(truth.stages)
    np.testing.assert_allclose(mean, truth.mean_time_in_stage(), rtol=0.03)


def test_arrivals_segments_amounts(big):
    truth = big.truth
    o = big.outcomes
    created_days = (o["created_at"] - truth.start).dt.total_seconds() / 86400
    # a Poisson process given its count is uniform over the window
    assert stats.kstest(created_days / 200, "uniform").pvalue > 1e-3
    assert truth.arrival_rate == pytest.approx(N / 200)
    share = o["segment"].value_counts(normalize=True)
    for g in truth.segments:
        se = np.sqrt(g.weight * (1 - g.weight) / N)
        assert abs(share[g.name] - g.weight) < 5 * se
        amounts = o.loc[o["segment"] == g.name, "amount"]
        assert np.median(amounts) == pytest.approx(g.amount_median, rel=0.05)
        assert np.log(amounts).std() == pytest.approx(g.amount_sigma, rel=0.05)


def test_same_seed_same_data_and_export_cut():
    a = simulate(300, seed=3)
    b = simulate(300, seed=3)
    pd.testing.assert_frame_equal(a.export, b.export)
    assert not simulate(300, seed=4).export.equals(a.export)
    d = a.funnel()
    assert d.n_deals == 300
    assert (d.events["entered_at"] <= a.truth.exported_at).all()
    closed_by_export = a.outcomes["closed_at"] <= a.truth.exported_at
    expected = a.outcomes["outcome"].where(closed_by_export, "open").value_counts()
    got = d.deals["outcome"].astype(str).value_counts()
    assert got.to_dict() == expected.to_dict()


def test_salesforce_layout_round_trip():
    sim = simulate(200, seed=11, deleted_rows=0.01)
    d = sim.funnel()
    r = d.report
    assert r.count("deleted") == int((sim.export["IsDeleted"] == "true").sum())
    assert r.rows_read == len(sim.export)
    # history rows without a stage change are the amount/close-date updates
    assert r.count("no_stage_change") > 0
    ev = sim.funnel().events
    via_events = sim.complete[sim.complete["entered_at"] <= sim.truth.exported_at]
    assert len(ev) == len(via_events)


def test_bad_segment_parameters():
    bad = fs.datasets.Segment("X", 1.0, (0.5,), (1,), (1,))
    with pytest.raises(ValueError, match="needs 4 values"):
        simulate(10, segments=[bad])


def test_needs_a_deal():
    with pytest.raises(ValueError, match="at least 1"):
        simulate(0)
    assert simulate(1, seed=0).funnel().n_deals == 1
