"""The survival analyses on the hand-made 10-deal export, worked out by hand.

Stays in open stages (export date 2024-02-10; d = days, A advanced, L lost,
B moved back, C still open):

Lead (9 stays): D01 4A, D02 4A, D03 5A (skips to Proposal), D04 37C, D05 4L,
D07 3A, D08 4A, D09 0A (same instant), D10 6A.
Kaplan–Meier: n=9; t=0 d=1 -> 8/9; t=3 n=8 d=1 -> 7/9; t=4 n=7 d=4 -> 1/3;
t=5 n=3 d=1 -> 2/9; t=6 n=2 d=1 -> 1/9. Median 4 (first S <= 1/2).
Aalen–Johansen: advanced 1/9 (t=0) + 8/9*1/8 (t=3) + 7/9*3/7 (t=4) + 1/3*1/3
(t=5) + 2/9*1/2 (t=6) = 7/9; lost 7/9*1/7 = 1/9 (t=4); in stage 1/9.

Proposal (6 stays): D01 10A, D03 10A, D06 3B, D06 19C (second entry), D07 10A
(to Won), D09 16L. t=3 n=6 B=1 -> S=5/6, back 1/6; t=10 n=5 A=3 -> advanced
5/6*3/5 = 1/2, S=1/3; t=16 n=2 L=1 -> lost 1/3*1/2 = 1/6, S=1/6.

Cycle time from creation: D05 4L, D02 13L, D07 18W, D09 20.583L, D10 26W,
D01 31W, then open D08 33C, D06 35C, D04 37C, D03 38C. S: .9, .8, .7 (won
.8/8 = .1), .6 (lost .7/7 = .1), .5 (won .6/6 = .1), .4 (won .5/5 = .1).
Won by day 30: .2; by the end .3; lost .3; open .4. Median time to win
among winners: first t with F_won >= .3/2 -> 26; plain median of the three
winners' times (18, 26, 31) -> 26.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import funnelstats as fs

D = 1.0  # days


def _row(frame: pd.DataFrame, **where: str) -> pd.Series:
    m = np.ones(len(frame), dtype=bool)
    for k, v in where.items():
        m &= (frame[k].astype(str) == v).to_numpy()
    assert m.sum() == 1, where
    return frame[m].iloc[0]


def test_lead_kaplan_meier_by_hand(hand10):
    r = fs.time_in_stage(hand10, stage="Lead")
    c = r.curves
    np.testing.assert_allclose(c["t"], [0, 3, 4, 5, 6])
    np.testing.assert_allclose(c["survival"], [8 / 9, 7 / 9, 1 / 3, 2 / 9, 1 / 9], atol=1e-12)
    np.testing.assert_array_equal(c["at_risk"], [9, 8, 7, 3, 2])
    f = r.frame.iloc[0]
    assert (f["n_entered"], f["n_exited"], f["n_censored"]) == (9, 8, 1)
    assert f["median"] == 4.0
    assert f["q75"] == 5.0  # S <= 1/4 first at t=5 (2/9)
    # restricted mean to tau = 37 (the only stage's longest stay): area under S
    area = 8 / 9 * 3 + 7 / 9 * 1 + 1 / 3 * 1 + 2 / 9 * 1 + 1 / 9 * (37 - 6)
    assert f["tau"] == 37.0
    assert f["restricted_mean"] == pytest.approx(area, abs=1e-12)
    # naive mean of the 8 closed stays
    assert f["naive_mean_closed"] == pytest.approx((4 + 4 + 5 + 4 + 3 + 4 + 0 + 6) / 8)


def test_lead_q25_by_hand(hand10):
    # S after t=3 is 7/9 = 0.778 > 0.75; after t=4 it is 1/3: the 25% point is t=4
    f = fs.time_in_stage(hand10, stage="Lead").frame.iloc[0]
    assert f["q25"] == 4.0


def test_lead_outcomes_by_hand(hand10):
    r = fs.stage_outcomes(hand10, "Lead")
    f = r.frame
    assert _row(f, outcome="advanced")["probability"] == pytest.approx(7 / 9, abs=1e-12)
    assert _row(f, outcome="lost")["probability"] == pytest.approx(1 / 9, abs=1e-12)
    assert _row(f, outcome="moved back")["probability"] == 0.0
    assert _row(f, outcome="in stage")["probability"] == pytest.approx(1 / 9, abs=1e-12)
    assert f["n"].tolist() == [7, 1, 0, 1]
    at = r.at([4.0]).set_index("outcome")["probability"]
    # by t=4: advanced 1/9 + 1/9 + 3/9, lost 1/9, in stage 1/3
    assert at["advanced"] == pytest.approx(5 / 9)
    assert at["lost"] == pytest.approx(1 / 9)
    assert at["in stage"] == pytest.approx(1 / 3)


def test_proposal_outcomes_by_hand(hand10):
    r = fs.stage_outcomes(hand10, "Proposal")
    p = r.frame.set_index("outcome")["probability"]
    assert p["moved back"] == pytest.approx(1 / 6)
    assert p["advanced"] == pytest.approx(1 / 2)
    assert p["lost"] == pytest.approx(1 / 6)
    assert p["in stage"] == pytest.approx(1 / 6)
    assert r.frame["n"].tolist() == [3, 1, 1, 1]
    # D06 entered Proposal twice: two stays, the note says so
    assert any("second or later entry" in n for n in r.notes)
    first = fs.stage_outcomes(hand10, "Proposal", repeats="first")
    assert first.frame["n"].sum() == 5


def test_proposal_curves_by_hand(hand10):
    c = fs.stage_outcomes(hand10, "Proposal").curves
    wide = c.pivot_table(index="t", columns="outcome", values="probability", observed=True)
    np.testing.assert_allclose(wide.index, [0, 3, 10, 16])
    np.testing.assert_allclose(wide["moved back"], [0, 1 / 6, 1 / 6, 1 / 6], atol=1e-12)
    np.testing.assert_allclose(wide["advanced"], [0, 0, 1 / 2, 1 / 2], atol=1e-12)
    np.testing.assert_allclose(wide["lost"], [0, 0, 0, 1 / 6], atol=1e-12)
    np.testing.assert_allclose(wide["in stage"], [1, 5 / 6, 1 / 3, 1 / 6], atol=1e-12)


def test_repeats_first_drops_second_entries(hand10):
    # Qualified: D06 and D08 entered twice; first entries only leaves 7 stays
    all_ = fs.time_in_stage(hand10, stage="Qualified").frame.iloc[0]
    first = fs.time_in_stage(hand10, stage="Qualified", repeats="first").frame.iloc[0]
    assert all_["n_entered"] == 9
    assert first["n_entered"] == 7


def test_cycle_time_by_hand(hand10):
    r = fs.cycle_time(hand10)
    f = r.frame.set_index("outcome")
    assert f.loc["won", "probability"] == pytest.approx(0.3)
    assert f.loc["lost", "probability"] == pytest.approx(0.3)
    assert f.loc["open", "probability"] == pytest.approx(0.4)
    assert f["n"].tolist() == [3, 3, 4]
    assert f.loc["won", "median"] == 26.0
    assert f.loc["won", "naive_median"] == 26.0
    assert f.loc["lost", "naive_median"] == 13.0
    assert f.loc["won", "t"] == 38.0
    at = r.at([18.0, 30.0]).set_index(["t", "outcome"])["probability"]
    assert at[(18.0, "won")] == pytest.approx(0.1)
    assert at[(30.0, "won")] == pytest.approx(0.2)
    assert at[(30.0, "lost")] == pytest.approx(0.2 + 0.1)
    assert at[(30.0, "open")] == pytest.approx(0.5)


def test_cycle_time_from_a_stage_by_hand(hand10):
    # reached Proposal: D01 01-10, D03 01-08, D06 01-12, D07 01-15, D09 01-14 and
    # D10, which skipped from Qualified to Won on 02-05 (reached Proposal then)
    r = fs.cycle_time(hand10, start="Proposal")
    f = r.frame.set_index("outcome")
    assert f["n"].sum() == 6
    # won: D10 at 0 days, D07 10, D01 22; lost: D09 16; open: D03 33, D06 29
    assert f.loc["won", "naive_median"] == 10.0
    c = r.at([0.0, 10.0, 16.0, 22.0]).set_index(["t", "outcome"])["probability"]
    assert c[(0.0, "won")] == pytest.approx(1 / 6)
    assert c[(10.0, "won")] == pytest.approx(2 / 6)
    assert c[(16.0, "lost")] == pytest.approx(1 / 6)
    assert c[(22.0, "won")] == pytest.approx(3 / 6)


def test_at_risk_table_by_hand(hand10):
    r = fs.time_in_stage(hand10, stage="Lead")
    t = r.at_risk_table([0, 4, 10, 40])
    assert t["at_risk"].tolist() == [8, 3, 1, 0]  # duration > t: D09 left at 0; D03, D04, D10
    assert t["exited"].tolist() == [1, 6, 8, 8]
    assert t["censored"].tolist() == [0, 0, 0, 1]
    assert ((t["at_risk"] + t["exited"] + t["censored"]) == 9).all()


def test_by_group_by_hand(hand10):
    r = fs.time_in_stage(hand10, stage="Lead", by="segment")
    f = r.frame.set_index("group")
    # Enterprise Lead stays: D02 4A, D08 4A, D10 6A; SMB: D01 4, D03 5, D04 37C, D05 4, D07 3,
    # D09 0
    assert f.loc["Enterprise", "n_entered"] == 3
    assert f.loc["SMB", "n_entered"] == 6
    assert f.loc["Enterprise", "median"] == 4.0
    assert f.loc["SMB", "median"] == 4.0
    # common tau: the shorter group's longest stay (Enterprise: 6 days)
    assert (f["tau"] == 6.0).all()
    assert r.logrank is not None and r.logrank["df"].item() == 1


def test_deal_level_data(hand10):
    deals = pd.DataFrame(
        {
            "deal_id": ["a", "b", "c", "d"],
            "stage": ["Won", "Lost", "Demo", "Won"],
            "created": ["2024-01-01", "2024-01-03", "2024-02-01", "2024-01-10"],
            "close_date": ["2024-02-01", "2024-01-20", None, "2024-01-20"],
        }
    )
    p = fs.Pipeline(["Lead", "Demo"], won=["Won"], lost=["Lost"])
    d = fs.read_deals(deals, pipeline=p, exported_at="2024-03-01")
    with pytest.raises(fs.InsufficientHistoryError, match="stage history"):
        fs.time_in_stage(d)
    with pytest.raises(fs.InsufficientHistoryError):
        fs.stage_outcomes(d, "Demo")
    with pytest.raises(fs.InsufficientHistoryError):
        fs.stage_hazards(d, "Demo", covariates=["amount"])
    with pytest.raises(fs.InsufficientHistoryError):
        fs.cycle_time(d, start="Demo")
    # from creation it works: won at 31 and 10 days, lost at 17, c open 29 days
    r = fs.cycle_time(d)
    f = r.frame.set_index("outcome")
    assert f["n"].tolist() == [2, 1, 1]
    # S: t=10 n=4 won -> .75; t=17 lost -> .5; t=29 censored; t=31 n=1 won -> 0
    assert f.loc["won", "probability"] == pytest.approx(0.25 + 0.5)
    assert f.loc["lost", "probability"] == pytest.approx(0.25)
