"""snapshot and flow: hand-worked figures on the 10-deal export, and the balance identity."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import funnelstats as fs
from funnelstats.snapshot import plot_waterfall


def _t(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


# ----------------------------------------------------------------- snapshot


def test_snapshot_hand10_by_hand(hand10):
    snap = fs.snapshot(hand10, "2024-01-20").frame.set_index("deal_id")
    # open on 01-20: D02, D05 lost earlier; D08 lost on 01-20 itself (reopened only on 01-28)
    assert list(snap.index) == ["D01", "D03", "D04", "D06", "D07", "D09", "D10"]
    expected = {
        # deal: (stage, entered, age in stage, age, amount)
        "D01": ("Negotiation", "2024-01-20", 0.0, 19.0, 1200.0),
        "D03": ("Negotiation", "2024-01-18", 2.0, 17.0, 2500.0),
        "D04": ("Lead", "2024-01-04", 16.0, 16.0, np.nan),
        "D06": ("Qualified", "2024-01-15", 5.0, 14.0, 9000.0),
        "D07": ("Proposal", "2024-01-15", 5.0, 13.0, 3000.0),
        "D09": ("Proposal", "2024-01-14", 6.0, 10 + 14 / 24, 1500.0),
        "D10": ("Qualified", "2024-01-16", 4.0, 10.0, 6500.0),
    }
    for deal, (stage, entered, age_stage, age, amount) in expected.items():
        row = snap.loc[deal]
        assert row["stage"] == stage
        assert row["entered_stage_at"] == _t(entered)
        assert row["age_in_stage_days"] == pytest.approx(age_stage)
        assert row["age_days"] == pytest.approx(age)
        np.testing.assert_equal(row["amount"], amount)
    assert snap["close_date"].isna().all()  # the hand export has no close dates
    assert snap["segment"].tolist() == [
        "SMB",
        "SMB",
        "SMB",
        "Enterprise",
        "SMB",
        "SMB",
        "Enterprise",
    ]


def test_snapshot_counts_match_deals_table_of_cut(sample):
    for cut in ("2024-03-15", "2024-07-01 12:00", "2024-12-31"):
        snap = fs.snapshot(sample, cut)
        deals = sample.as_of(cut).deals
        open_ids = deals.loc[deals["outcome"] == "open", "deal_id"]
        assert snap.frame["deal_id"].tolist() == open_ids.tolist()
        assert (snap.frame["age_in_stage_days"] >= 0).all()
        # close dates: the last one recorded by the cut, never one recorded later
        h = sample.history
        h = h[h["at"] <= _t(cut)]
        last_cd = h.groupby("deal_id", observed=True)["close_date"].last()
        got = snap.frame.set_index("deal_id")["close_date"]
        pd.testing.assert_series_equal(got, last_cd.reindex(got.index), check_names=False)


def test_snapshot_plot_bars(sample):
    snap = fs.snapshot(sample, "2024-06-30")
    fig, ax = plt.subplots()
    snap.plot(ax=ax)
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, snap.by_stage()["amount"].to_numpy())
    plt.close(fig)


# --------------------------------------------------------------------- flow


def test_flow_hand10_totals_by_hand(hand10):
    f = fs.flow(hand10, "2024-01-10", "2024-01-25")
    assert f.scope == "open"  # no close dates in the hand export
    t = f.frame.set_index("component")
    # open at 01-10: D01 1200, D02 5000, D03 2000, D04 (no amount), D06 9000, D07 3000,
    # D08 4000, D09 1500, D10 6000
    assert (t.loc["open_start", "count"], t.loc["open_start", "amount"]) == (9, 31700.0)
    # +500 D03 (Negotiation at 2500), +500 D06 (Proposal at 9500), +500 D10 (update on 01-18)
    assert (t.loc["amount_increased", "amount"], t.loc["amount_increased", "n_deals"]) == (1500, 3)
    assert t.loc["amount_decreased", "amount"] == 0
    assert (t.loc["won", "count"], t.loc["won", "amount"]) == (-1, -3000.0)  # D07 on 01-25
    assert (t.loc["lost", "count"], t.loc["lost", "amount"]) == (-2, -9000.0)  # D02, D08
    assert t.loc["created", "count"] == 0 and t.loc["reopened", "count"] == 0
    # D01 1, D03 1, D06 2, D07 1, D08 1, D09 1, D10 1 forward moves; D06 once back
    assert (t.loc["moved_forward", "count"], t.loc["moved_forward", "n_deals"]) == (8, 7)
    assert (t.loc["moved_backward", "count"], t.loc["moved_backward", "amount"]) == (1, 9000.0)
    # open at 01-25: D01 1200, D03 2500, D04, D06 9500, D09 1500, D10 6500
    assert (t.loc["open_end", "count"], t.loc["open_end", "amount"]) == (6, 21200.0)


def test_flow_hand10_proposal_stage_by_hand(hand10):
    f = fs.flow(hand10, "2024-01-10", "2024-01-25")
    bs = f.by_stage
    p = bs[bs["stage"] == "Proposal"].set_index("component")
    assert (p.loc["open_start", "count"], p.loc["open_start", "amount"]) == (2, 3200.0)  # D01, D03
    # in: D06 01-12 (9000), D09 01-14 (1500), D07 01-15 (3000), D06 01-22 (9500)
    assert (p.loc["moved_in_forward", "count"], p.loc["moved_in_forward", "amount"]) == (4, 23000)
    # out: D03 01-18 at 2500 (after its +500 here), D01 01-20 at 1200
    assert (p.loc["moved_out_forward", "count"], p.loc["moved_out_forward", "amount"]) == (
        -2,
        -3700.0,
    )
    assert (p.loc["moved_out_backward", "count"], p.loc["moved_out_backward", "amount"]) == (
        -1,
        -9000.0,
    )
    assert p.loc["amount_increased", "amount"] == 500.0  # D03's increase booked in Proposal
    assert (p.loc["won", "count"], p.loc["won", "amount"]) == (-1, -3000.0)
    assert (p.loc["open_end", "count"], p.loc["open_end", "amount"]) == (2, 11000.0)  # D06, D09
    # D06's +500 on 01-22 is booked in Qualified, the stage it left
    q = bs[bs["stage"] == "Qualified"].set_index("component")
    assert q.loc["amount_increased", "amount"] == 1000.0  # D06 +500, D10 +500


def test_flow_hand10_reopened_and_created(hand10):
    f = fs.flow(hand10, "2024-01-20", "2024-02-10")
    t = f.frame.set_index("component")
    # D08 lost on 01-20 (on the opening date) and back in Qualified on 01-28
    assert (t.loc["reopened", "count"], t.loc["reopened", "amount"]) == (1, 4000.0)
    # D01 won at 1100 after 1200 in Negotiation: -100 change, then won at 1100
    assert t.loc["amount_decreased", "amount"] == -100.0
    # won: D07 3000 (01-25), D01 1100 (02-01), D10 6500 (02-05); lost: D09 1500 (01-30)
    assert (t.loc["won", "count"], t.loc["won", "amount"]) == (-3, -10600.0)
    assert (t.loc["lost", "count"], t.loc["lost", "amount"]) == (-1, -1500.0)
    early = fs.flow(hand10, "2024-01-02", "2024-01-06").frame.set_index("component")
    # created in (01-02, 01-06]: D03 2000, D04 (no amount), D05 700, D06 9000
    assert (early.loc["created", "count"], early.loc["created", "amount"]) == (4, 11700.0)


def _check_identity(f: fs.snapshot.FlowResult) -> None:
    t = f.frame
    groups = [t] if "group" not in t.columns else [g for _, g in t.groupby("group")]
    for g in groups:
        g = g.set_index("component")
        ch = g[g["role"] == "change"]
        for col in ("count", "amount"):
            assert g.loc["open_start", col] + ch[col].sum() == pytest.approx(
                g.loc["open_end", col], abs=1e-6
            )
    # per stage
    bs = f.by_stage
    keys = ["stage"] if "group" not in bs.columns else ["group", "stage"]
    for _, s in bs.groupby(keys, observed=True):
        s = s.set_index("component")
        change = s.drop(["open_start", "open_end"])
        for col in ("count", "amount"):
            assert s.loc["open_start", col] + change[col].sum() == pytest.approx(
                s.loc["open_end", col], abs=1e-6
            )
    # per deal
    pdl = f.per_deal
    comps = [c for c in t["component"].unique() if c not in ("open_start", "open_end")]
    comps = [c for c in comps if not c.startswith("moved")]
    for col in ("count", "amount"):
        total = pdl[f"open_start_{col}"] + sum(pdl[f"{c}_{col}"] for c in comps)
        np.testing.assert_allclose(total, pdl[f"open_end_{col}"], atol=1e-6)


@pytest.mark.parametrize("scope", ["open", "closing"])
def test_flow_balance_identity_on_sample(sample, scope):
    f = fs.flow(sample, "2024-04-01", "2024-06-30", scope=scope)
    _check_identity(f)
    _check_identity(fs.flow(sample, "2024-04-01", "2024-06-30", scope=scope, by="Segment"))
    # the balances equal the snapshots (built independently through as_of)
    t = f.frame.set_index("component")
    for comp, when in (("open_start", "2024-04-01"), ("open_end", "2024-06-30")):
        snap = fs.snapshot(sample, when).frame
        if scope == "closing":
            limit = _t("2024-06-30")
            snap = snap[snap["close_date"].isna() | (snap["close_date"] <= limit)]
        assert t.loc[comp, "count"] == len(snap)
        assert t.loc[comp, "amount"] == pytest.approx(snap["amount"].sum())
    # the won line equals the deals won in the period as the deals table sees them
    d = sample.deals
    won = d[(d["outcome"] == "won") & (d["closed_at"] > _t("2024-04-01"))]
    won = won[won["closed_at"] <= _t("2024-06-30")]
    if scope == "open":
        assert -t.loc["won", "count"] == len(won)
        assert -t.loc["won", "amount"] == pytest.approx(won["amount"].sum())


def test_flow_hand10_identity_and_groups_add_up(hand10):
    f = fs.flow(hand10, "2024-01-05", "2024-02-01", by="segment")
    _check_identity(f)
    total = fs.flow(hand10, "2024-01-05", "2024-02-01").frame.set_index("component")
    summed = f.frame.groupby("component", sort=False)[["count", "amount"]].sum()
    pd.testing.assert_frame_equal(summed, total[["count", "amount"]], check_dtype=False)


def test_flow_closing_scope_pushes_and_pulls(sample):
    f = fs.flow(sample, "2024-04-01", "2024-06-30")
    assert f.scope == "closing"  # the sample has close-date history
    t = f.frame.set_index("component")
    assert t.loc["pushed", "count"] < 0  # some deals had their close date moved out
    pd_ = f.per_deal
    pushed = pd_[pd_["pushed_count"] < 0]
    # a pushed deal is open at the end, with its close date after the period end
    snap = fs.snapshot(sample, "2024-06-30").frame.set_index("deal_id")
    pushed_open = pushed[pushed["deal_id"].isin(snap.index)]
    assert len(pushed_open)
    assert (snap.loc[pushed_open["deal_id"], "close_date"] > _t("2024-06-30")).all()


def test_flow_errors(hand10):
    with pytest.raises(ValueError, match="after start"):
        fs.flow(hand10, "2024-01-20", "2024-01-10")
    with pytest.raises(ValueError, match="export date"):
        fs.flow(hand10, "2024-01-20", "2024-03-10")
    with pytest.raises(ValueError, match="close dates"):
        fs.flow(hand10, "2024-01-10", "2024-01-20", scope="closing")
    with pytest.raises(ValueError, match="scope"):
        fs.flow(hand10, "2024-01-10", "2024-01-20", scope="everything")


def test_waterfall_plot_bars(hand10):
    f = fs.flow(hand10, "2024-01-10", "2024-01-25")
    fig, ax = plt.subplots()
    plot_waterfall(f, ax=ax)
    bars = ax.patches
    # open_start, created, reopened, +, -, won, lost, open_end
    assert len(bars) == 8
    assert bars[0].get_height() == 31700.0 and bars[0].get_y() == 0
    assert bars[3].get_height() == 1500.0 and bars[3].get_y() == 31700.0  # increase floats
    assert bars[5].get_height() == 3000.0 and bars[5].get_y() == 33200.0 - 3000.0  # won
    assert bars[6].get_height() == 9000.0 and bars[6].get_y() == 30200.0 - 9000.0  # lost
    assert bars[7].get_height() == 21200.0 and bars[7].get_y() == 0
    ax.clear()
    f.plot(ax=ax, value="count")
    assert [b.get_height() for b in ax.patches][-1] == 6
    plt.close(fig)
