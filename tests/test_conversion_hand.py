"""Conversion and win rate on the hand-made 10-deal export, every figure worked out by hand.

The export (tests/data/hand10.csv, exported 2024-02-10; stages Lead, Qualified,
Proposal, Negotiation, then Won / Lost) holds every special case: a skipped stage
(D03 Lead -> Proposal, D07 Proposal -> Won, D10 Qualified -> Won), a backward move
(D06 Proposal -> Qualified -> Proposal), a reopened deal (D08 Lost -> Qualified), a
deal created past the first stage (D06 starts in Qualified), two entries at the
same instant (D09 Lead and Qualified at 10:00), an open deal never moved (D04).

Episodes by hand, skips="reached" (days from first arrival to the end):

Lead        D01 adv 4, D02 adv 4, D03 adv 5 (skips Qualified), D04 open 37, D05 lost 4,
            D07 adv 3, D08 adv 4, D09 adv 0 (same instant), D10 adv 6.      D06 never here.
Qualified   D01 adv 5, D02 lost 9, D03 adv 0 (skipped through on 01-08), D06 adv 6,
            D07 adv 5, D08 open 29 (lost 01-20, reopened 01-28: not a loss),
            D09 adv 4.5833 (01-09 10:00 -> 01-14), D10 adv 20 (to Won).
Proposal    D01 adv 10, D03 adv 10, D06 open 29 (moved back 01-15, back in 01-22: the
            episode runs on from 01-12), D07 adv 10 (to Won), D09 lost 16,
            D10 adv 0 (skipped through on 02-05).
Negotiation D01 adv 12, D03 open 23, D07 adv 0 and D10 adv 0 (skipped through).

skips="strict" (only deals that started in Lead and entered every stage in order):

Lead        as above but D03 skipped_out at 5 (jumped to Proposal).
Qualified   D01 adv 5, D02 lost 9, D07 adv 5, D08 open 29, D09 adv 4.5833,
            D10 skipped_out 20 (Qualified -> Won).          (D03 and D06 not counted)
Proposal    D01 adv 10, D07 skipped_out 10 (Proposal -> Won), D09 lost 16.
Negotiation D01 adv 12.

Aalen–Johansen by hand, e.g. Qualified (reached): at 0 one of 8 advances, F = 1/8,
S = 7/8; at 4.58 one of 7, F = 2/8, S = 6/8; at 5 two of 6, F = 4/8, S = 4/8; at 6
one of 4, F = 5/8, S = 3/8; at 9 one of 3 is lost, S = 2/8; at 20 one of 2 advances,
F = 6/8, S = 1/8; D08 is censored at 29. So F = 3/4, undecided 1/8, holding at 29 days.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import funnelstats as fs

STAGES = ["Lead", "Qualified", "Proposal", "Negotiation"]
COUNT_COLUMNS = [
    "entered",
    "advanced",
    "lost",
    "skipped_out",
    "open",
    "skipped_through",
    "moved_back",
    "reopened",
]

# stage: entered, advanced, lost, skipped_out, open, skipped_through, moved_back, reopened
REACHED_COUNTS = {
    "Lead": (9, 7, 1, 0, 1, 0, 0, 0),
    "Qualified": (8, 6, 1, 0, 1, 1, 0, 1),
    "Proposal": (6, 4, 1, 0, 1, 1, 1, 0),
    "Negotiation": (4, 3, 0, 0, 1, 2, 0, 0),
}
STRICT_COUNTS = {
    "Lead": (9, 6, 1, 1, 1, 0, 0, 0),
    "Qualified": (6, 3, 1, 1, 1, 0, 0, 1),
    "Proposal": (3, 1, 1, 1, 0, 0, 0, 0),
    "Negotiation": (1, 1, 0, 0, 0, 0, 0, 0),
}
# Aalen–Johansen at the plateau: (conversion, undecided, horizon_days)
REACHED_AJ = {
    "Lead": (7 / 9, 1 / 9, 37.0),
    "Qualified": (6 / 8, 1 / 8, 29.0),
    "Proposal": (4 / 6, 1 / 6, 29.0),
    "Negotiation": (3 / 4, 1 / 4, 23.0),
}
# strict Lead: 0 adv (9 at risk), 3 adv (8), 4: 3 adv + 1 lost (7), 5 skipped out (3),
# 6 adv (2): F = 1/9 + 1/9 + 3/9 + 1/9 = 6/9. Qualified: 4.58 adv (6), 5 two adv (5),
# 9 lost (3), 20 skipped out (2): F = 1/6 + 2/6 = 1/2. Proposal: 10 adv + skip (3), 16 lost.
STRICT_AJ = {
    "Lead": (6 / 9, 1 / 9, 37.0),
    "Qualified": (3 / 6, 1 / 6, 29.0),
    "Proposal": (1 / 3, 0.0, 16.0),
    "Negotiation": (1.0, 0.0, 12.0),
}


def _by_stage(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index(frame["stage"].astype(str))


@pytest.mark.parametrize("skips, counts", [("reached", REACHED_COUNTS), ("strict", STRICT_COUNTS)])
def test_counts_by_hand(hand10, skips, counts):
    f = _by_stage(fs.conversion(hand10, skips=skips).frame)
    assert list(f.index) == STAGES
    for stage, expected in counts.items():
        assert tuple(int(v) for v in f.loc[stage, COUNT_COLUMNS]) == expected, stage
    # the split of entered is complete
    parts = f[["advanced", "lost", "skipped_out", "open"]].sum(axis=1)
    assert (parts == f["entered"]).all()


@pytest.mark.parametrize("skips, expected", [("reached", REACHED_AJ), ("strict", STRICT_AJ)])
def test_aalen_johansen_by_hand(hand10, skips, expected):
    f = _by_stage(fs.conversion(hand10, skips=skips).frame)
    for stage, (conv, undecided, days) in expected.items():
        assert f.loc[stage, "conversion"] == pytest.approx(conv, abs=1e-12), stage
        assert f.loc[stage, "undecided"] == pytest.approx(undecided, abs=1e-12), stage
        assert f.loc[stage, "horizon_days"] == pytest.approx(days, abs=1e-9), stage
        assert f.loc[stage, "horizon_rule"] == "plateau"
    assert (f["method"] == "aalen-johansen").all()


def test_variance_by_hand(hand10):
    # Lead (reached): the only censoring is the last time, so the Aalen–Johansen
    # estimate is the plain proportion 7/9 and its delta-method variance p (1 - p) / n.
    f = _by_stage(fs.conversion(hand10).frame)
    p = 7 / 9
    assert f.loc["Lead", "std_error"] == pytest.approx(np.sqrt(p * (1 - p) / 9), rel=1e-12)


@pytest.mark.parametrize("skips, counts", [("reached", REACHED_COUNTS), ("strict", STRICT_COUNTS)])
def test_naive_methods_by_hand(hand10, skips, counts):
    resolved = _by_stage(fs.conversion(hand10, skips=skips, method="resolved").frame)
    entered = _by_stage(fs.conversion(hand10, skips=skips, method="entered").frame)
    for stage, (n, adv, lost, out, *_rest) in counts.items():
        assert resolved.loc[stage, "conversion"] == pytest.approx(adv / (adv + lost + out))
        assert entered.loc[stage, "conversion"] == pytest.approx(adv / n)
    assert (resolved["method"] == "resolved").all()
    assert (resolved["horizon_rule"] == "none").all()
    # the naive figures differ from the censoring-aware ones in the expected direction
    aj = _by_stage(fs.conversion(hand10, skips=skips).frame)
    assert (entered["conversion"] <= aj["conversion"] + 1e-12).all()


def test_horizon_by_hand(hand10):
    # Qualified (reached) by 5 days: F = 4/8 (see module docstring); Lead by 3.5 days:
    # D09 at 0 and D07 at 3, F = 2/9; Lead by 4 days: 5/9.
    f = _by_stage(fs.conversion(hand10, horizon=5).frame)
    assert f.loc["Qualified", "conversion"] == pytest.approx(4 / 8)
    assert f.loc["Qualified", "undecided"] == pytest.approx(4 / 8)
    assert f.loc["Qualified", "horizon_days"] == 5.0
    assert f.loc["Qualified", "horizon_rule"] == "fixed"
    assert bool(f.loc["Qualified", "mature"])  # follow-up (29 days) reaches 5 days
    assert _by_stage(fs.conversion(hand10, horizon=3.5).frame).loc["Lead", "conversion"] == (
        pytest.approx(2 / 9)
    )
    assert _by_stage(fs.conversion(hand10, horizon=4).frame).loc["Lead", "conversion"] == (
        pytest.approx(5 / 9)
    )
    # beyond follow-up: the value holds where follow-up ends, and is not mature
    g = _by_stage(fs.conversion(hand10, horizon=60).frame)
    assert g.loc["Negotiation", "horizon_days"] == pytest.approx(23.0)
    assert not bool(g.loc["Negotiation", "mature"])


def test_win_rate_by_hand(hand10):
    wr = _by_stage(fs.win_rate(hand10).frame)
    # deals reaching each stage and their state now (reached):
    # Lead: won D01 D07 D10, lost D02 D05 D09, open D03 D04 D08
    # Qualified: won D01 D07 D10, lost D02 D09, open D03 D06 D08
    # Proposal: won D01 D07 D10, lost D09, open D03 D06; Negotiation: won D01 D07 D10, open D03
    expected = {
        "Lead": (9, 3, 3, 3),
        "Qualified": (8, 3, 2, 3),
        "Proposal": (6, 3, 1, 2),
        "Negotiation": (4, 3, 0, 1),
    }
    for stage, counts in expected.items():
        assert tuple(int(v) for v in wr.loc[stage, ["entered", "won", "lost", "open"]]) == counts
    # product of the stage conversions from the stage on
    c = [7 / 9, 6 / 8, 4 / 6, 3 / 4]
    # conversion + undecided per stage: 8/9, 7/8, 5/6, 4/4 -- the eventual win rate
    # can rise at most to their product
    u = [8 / 9, 7 / 8, 5 / 6, 1.0]
    for i, stage in enumerate(STAGES):
        assert wr.loc[stage, "win_rate"] == pytest.approx(np.prod(c[i:]), abs=1e-12)
        assert wr.loc[stage, "undecided"] == pytest.approx(
            np.prod(u[i:]) - np.prod(c[i:]), abs=1e-12
        )
        assert not bool(wr.loc[stage, "mature"])
    resolved = _by_stage(fs.win_rate(hand10, method="resolved").frame)
    assert resolved.loc["Lead", "win_rate"] == pytest.approx(3 / 6)
    entered = _by_stage(fs.win_rate(hand10, method="entered").frame)
    assert entered.loc["Qualified", "win_rate"] == pytest.approx(3 / 8)


def test_win_rate_strict_by_hand(hand10):
    wr = _by_stage(fs.win_rate(hand10, skips="strict").frame)
    # Lead: won in order D01 only; lost D02 D05 D09; skipped out D03 D07 D10; open D04 D08
    assert tuple(
        int(v) for v in wr.loc["Lead", ["entered", "won", "lost", "skipped_out", "open"]]
    ) == (9, 1, 3, 3, 2)
    c = [6 / 9, 3 / 6, 1 / 3, 1.0]
    for i, stage in enumerate(STAGES):
        assert wr.loc[stage, "win_rate"] == pytest.approx(np.prod(c[i:]), abs=1e-12)


def test_reopened_deal_counts_as_lost_until_reopened(hand10):
    # Before D08 was reopened (01-28) its loss on 01-20 is its last word: lost after
    # 8 days in Qualified. After the reopening it is undecided again (module docstring).
    early = _by_stage(fs.conversion(hand10.as_of("2024-01-25")).frame)
    late = _by_stage(fs.conversion(hand10).frame)
    assert early.loc["Qualified", "reopened"] == 0
    assert late.loc["Qualified", "reopened"] == 1
    # as of 01-25, Qualified: D01 adv 5, D02 lost 9, D03 adv 0, D06 adv 6, D07 adv 5,
    # D08 lost 8, D09 adv 4.58, D10 open (entered 01-16, 9 days)
    assert tuple(
        int(v) for v in early.loc["Qualified", ["entered", "advanced", "lost", "open"]]
    ) == (8, 5, 2, 1)
    # at 0: 1/8; 4.58: 1/7 of 7/8; 5: 2/6 of 6/8; 6: 1/4 of 4/8; 8 and 9 lost; D10 censored
    assert early.loc["Qualified", "conversion"] == pytest.approx(5 / 8)


def test_backward_move_keeps_the_episode_running(hand10):
    # D06 reached Proposal on 01-12, moved back on 01-15 and came back on 01-22:
    # one episode from 01-12, still open at the export (29 days), not a loss.
    f = _by_stage(fs.conversion(hand10).frame)
    assert f.loc["Proposal", "moved_back"] == 1
    assert f.loc["Proposal", "open"] == 1
    # D06's second stay in Qualified (01-15 to 01-22) is after it got past Qualified:
    # it does not count again there
    assert f.loc["Qualified", "entered"] == 8
    # cut before D06 came back to Proposal: the episode is still the same (open, from 01-12)
    cut = _by_stage(fs.conversion(hand10.as_of("2024-01-20")).frame)
    assert cut.loc["Proposal", "moved_back"] == 1
    assert cut.loc["Proposal", "lost"] == 0


def test_same_instant_entries_are_a_zero_length_stay(hand10):
    # D09 entered Lead and Qualified at the same instant: it passed Lead in no time
    from funnelstats._conversion_records import stage_records

    r = stage_records(hand10)
    d09 = int(np.flatnonzero(hand10.deals["deal_id"] == "D09")[0])
    sel = (r.deal == d09) & (r.stage == 0)
    assert r.duration_ns[sel].tolist() == [0]
    assert r.cause[sel].tolist() == [1]


def test_by_segment_by_hand(hand10):
    f = fs.conversion(hand10, by="segment").frame
    g = f.set_index(["segment", f["stage"].astype(str)])
    # Enterprise: D02, D06, D08, D10. Lead: D02 adv, D08 adv, D10 adv -> 3 of 3
    assert tuple(int(v) for v in g.loc[("Enterprise", "Lead"), ["entered", "advanced"]]) == (3, 3)
    assert g.loc[("Enterprise", "Lead"), "conversion"] == pytest.approx(1.0)
    # SMB Lead: D01 adv 4, D03 adv 5, D04 open 37, D05 lost 4, D07 adv 3, D09 adv 0:
    # at 0 1/6; at 3 1/5 of 5/6; at 4 (D01 adv, D05 lost) 1/4 of 4/6; at 5 1/2 of 2/6
    assert g.loc[("SMB", "Lead"), "conversion"] == pytest.approx(4 / 6)
    assert list(f.columns[:2]) == ["segment", "stage"]
