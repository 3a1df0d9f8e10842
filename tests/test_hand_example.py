"""The hand-made 10-deal export: its tidy tables written out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt

ORDER = ["Lead", "Qualified", "Proposal", "Negotiation", "Won", "Lost"]
T = "2024-01-{:02d}"

# (deal, stage, entered, exited, next, amount) — worked out from tests/data/hand10.csv
EXPECTED_EVENTS = [
    ("D01", "Lead", "2024-01-01", "2024-01-05", "Qualified", 1000.0),
    ("D01", "Qualified", "2024-01-05", "2024-01-10", "Proposal", 1000.0),
    ("D01", "Proposal", "2024-01-10", "2024-01-20", "Negotiation", 1200.0),
    ("D01", "Negotiation", "2024-01-20", "2024-02-01", "Won", 1200.0),
    ("D01", "Won", "2024-02-01", None, None, 1100.0),
    ("D02", "Lead", "2024-01-02", "2024-01-06", "Qualified", 5000.0),
    ("D02", "Qualified", "2024-01-06", "2024-01-15", "Lost", 5000.0),
    ("D02", "Lost", "2024-01-15", None, None, 5000.0),
    ("D03", "Lead", "2024-01-03", "2024-01-08", "Proposal", 2000.0),
    ("D03", "Proposal", "2024-01-08", "2024-01-18", "Negotiation", 2000.0),
    ("D03", "Negotiation", "2024-01-18", None, None, 2500.0),
    ("D04", "Lead", "2024-01-04", None, None, np.nan),
    ("D05", "Lead", "2024-01-05", "2024-01-09", "Lost", 700.0),
    ("D05", "Lost", "2024-01-09", None, None, 700.0),
    ("D06", "Qualified", "2024-01-06", "2024-01-12", "Proposal", 9000.0),
    ("D06", "Proposal", "2024-01-12", "2024-01-15", "Qualified", 9000.0),
    ("D06", "Qualified", "2024-01-15", "2024-01-22", "Proposal", 9000.0),
    ("D06", "Proposal", "2024-01-22", None, None, 9500.0),
    ("D07", "Lead", "2024-01-07", "2024-01-10", "Qualified", 3000.0),
    ("D07", "Qualified", "2024-01-10", "2024-01-15", "Proposal", 3000.0),
    ("D07", "Proposal", "2024-01-15", "2024-01-25", "Won", 3000.0),
    ("D07", "Won", "2024-01-25", None, None, 3000.0),
    ("D08", "Lead", "2024-01-08", "2024-01-12", "Qualified", 4000.0),
    ("D08", "Qualified", "2024-01-12", "2024-01-20", "Lost", 4000.0),
    ("D08", "Lost", "2024-01-20", "2024-01-28", "Qualified", 4000.0),
    ("D08", "Qualified", "2024-01-28", None, None, 4000.0),
    # same instant: ordered by pipeline order, Lead before Qualified, zero time in Lead
    ("D09", "Lead", "2024-01-09 10:00", "2024-01-09 10:00", "Qualified", 1500.0),
    ("D09", "Qualified", "2024-01-09 10:00", "2024-01-14", "Proposal", 1500.0),
    ("D09", "Proposal", "2024-01-14", "2024-01-30", "Lost", 1500.0),
    ("D09", "Lost", "2024-01-30", None, None, 1500.0),
    ("D10", "Lead", "2024-01-10", "2024-01-16", "Qualified", 6000.0),
    # the 2024-01-18 row repeats Qualified: an amount update, not a stage entry
    ("D10", "Qualified", "2024-01-16", "2024-02-05", "Won", 6000.0),
    ("D10", "Won", "2024-02-05", None, None, 6500.0),
]

# (deal, created, outcome, closed, latest amount, stage, furthest, segment)
EXPECTED_DEALS = [
    ("D01", "2024-01-01", "won", "2024-02-01", 1100.0, "Won", "Won", "SMB"),
    ("D02", "2024-01-02", "lost", "2024-01-15", 5000.0, "Lost", "Qualified", "Enterprise"),
    ("D03", "2024-01-03", "open", None, 2500.0, "Negotiation", "Negotiation", "SMB"),
    ("D04", "2024-01-04", "open", None, np.nan, "Lead", "Lead", "SMB"),
    ("D05", "2024-01-05", "lost", "2024-01-09", 700.0, "Lost", "Lead", "SMB"),
    ("D06", "2024-01-06", "open", None, 9500.0, "Proposal", "Proposal", "Enterprise"),
    ("D07", "2024-01-07", "won", "2024-01-25", 3000.0, "Won", "Won", "SMB"),
    ("D08", "2024-01-08", "open", None, 4000.0, "Qualified", "Qualified", "Enterprise"),
    ("D09", "2024-01-09 10:00", "lost", "2024-01-30", 1500.0, "Lost", "Proposal", "SMB"),
    ("D10", "2024-01-10", "won", "2024-02-05", 6500.0, "Won", "Won", "Enterprise"),
]


def _ts(values):
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")


def _cat(values):
    return pd.Categorical(values, categories=ORDER, ordered=True)


def test_events_table_by_hand(hand10):
    deal, stage, entered, exited, nxt, amount = zip(*EXPECTED_EVENTS)
    expected = pd.DataFrame(
        {
            "deal_id": pd.array(deal, dtype="string[pyarrow]"),
            "stage": _cat(stage),
            "entered_at": _ts(entered),
            "exited_at": _ts(exited),
            "next_stage": _cat(nxt),
            "amount": np.array(amount, dtype=float),
        }
    )
    pdt.assert_frame_equal(hand10.events, expected, check_dtype=True)


def test_deals_table_by_hand(hand10):
    deal, created, outcome, closed, amount, stage, furthest, seg = zip(*EXPECTED_DEALS)
    got = hand10.deals
    assert got["deal_id"].tolist() == list(deal)
    pdt.assert_series_equal(got["created_at"], _ts(created), check_names=False)
    assert got["outcome"].astype(str).tolist() == list(outcome)
    pdt.assert_series_equal(got["closed_at"], _ts(closed), check_names=False)
    np.testing.assert_array_equal(got["amount"].to_numpy(), np.array(amount))
    assert got["stage"].astype(str).tolist() == list(stage)
    assert got["furthest_stage"].astype(str).tolist() == list(furthest)
    assert got["segment"].astype(str).tolist() == list(seg)


def test_report_counts_by_hand(hand10):
    r = hand10.report
    assert r.rows_read == 34
    # D09's Qualified row was ordered after Lead by pipeline order: the one repair
    assert r.rows_repaired == 1
    assert r.count("same_instant") == 1
    assert r.rows_quarantined == 0
    assert r.rows_kept == 33
    assert (
        r.count("skipped_stage") == 3
    )  # D03 Lead->Proposal, D07 Proposal->Won, D10 Qualified->Won
    assert r.count("backward_move") == 1  # D06 Proposal->Qualified
    assert r.count("reopened") == 1  # D08 Lost->Qualified
    assert r.count("no_stage_change") == 1  # D10's second Qualified row
    assert r.count("amount_missing") == 1  # D04
    assert r.count("naive_timestamp") == 34


def test_history_keeps_every_kept_row(hand10):
    assert len(hand10.history) == 34
    assert hand10.history["source_row"].min() == 2


def test_as_of_reopens_what_happened_later(hand10):
    cut = hand10.as_of("2024-01-20")
    d = cut.deals.set_index("deal_id")
    # D01 entered Negotiation on 01-20 (inclusive) and won only on 02-01
    assert d.loc["D01", "outcome"] == "open"
    assert d.loc["D01", "stage"] == "Negotiation"
    # D08 was lost on 01-20 (on the cut) and reopened on 01-28 (after it)
    assert d.loc["D08", "outcome"] == "lost"
    # D10 not yet won; its amount update on 01-18 is visible
    assert d.loc["D10", "amount"] == 6500.0
    assert d.loc["D10", "outcome"] == "open"
    ev = cut.events
    d01 = ev[ev["deal_id"] == "D01"]
    assert d01["exited_at"].isna().tolist() == [False, False, False, True]
    assert cut.exported_at == pd.Timestamp("2024-01-20", tz="UTC")
    early = hand10.as_of("2024-01-04 12:00")
    assert early.deals["deal_id"].tolist() == ["D01", "D02", "D03", "D04"]
