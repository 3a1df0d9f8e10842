"""HubSpot deals exports (labels and internal names) and the API history, by hand.

deals_export.csv: two pipelines; ``Date entered "..."`` and older ``Date entered '...'``
columns in one file; 9002 skipped Qualified To Buy, which HubSpot stamps as entered at the same
instant as Contract Sent with zero time in it; ``Latest time in`` blank for current stages;
time-in values in milliseconds. deals_internal.csv: ``hs_v2_date_entered_<id>`` with a numeric
custom stage id, a stage id that differs in case from the pipelines file, an ``hs_`` (v1)
column as fallback. deals_history.json: ``propertiesWithHistory`` (newest first), with a
backward move and amount history.
"""

from __future__ import annotations

import pandas as pd
import pytest
from _expected import CRM, assert_deals, assert_events, balanced

import funnelstats as fs

HS = CRM / "hubspot"
EXPORT = HS / "deals_export.csv"
PIPES = HS / "pipelines.json"
NAN = float("nan")

SALES_EVENTS = [
    (
        "9001",
        "Appointment Scheduled",
        "2024-01-02 09:00",
        "2024-01-05 10:00",
        "Qualified To Buy",
        5000.0,
    ),
    ("9001", "Qualified To Buy", "2024-01-05 10:00", "2024-01-12 10:00", "Contract Sent", 5000.0),
    ("9001", "Contract Sent", "2024-01-12 10:00", "2024-01-25 14:00", "Closed Won", 5000.0),
    ("9001", "Closed Won", "2024-01-25 14:00", None, None, 5000.0),
    # Qualified To Buy entered and exited at 01-08 09:00 (0 ms in it): a skip, not a stay
    (
        "9002",
        "Appointment Scheduled",
        "2024-01-03 09:00",
        "2024-01-08 09:00",
        "Contract Sent",
        12000.0,
    ),
    ("9002", "Contract Sent", "2024-01-08 09:00", None, None, 12000.0),
    ("9003", "Appointment Scheduled", "2024-01-04 12:00", "2024-01-10 12:00", "Closed Lost", 800.0),
    ("9003", "Closed Lost", "2024-01-10 12:00", None, None, 800.0),
]


def test_one_pipeline_by_hand():
    d = fs.read_hubspot(EXPORT, pipeline_name="Sales Pipeline", exported_at="2024-02-10")
    assert d.pipeline.stages[:2] == ("Appointment Scheduled", "Qualified To Buy")
    assert d.pipeline.won == ("Closed Won",) and d.pipeline.lost == ("Closed Lost",)
    assert_events(d, SALES_EVENTS)
    r = balanced(d.report)
    assert (r.rows_read, r.rows_kept, r.rows_quarantined) == (5, 3, 2)
    assert r.count("other_pipeline") == 2  # the two Renewals deals
    assert r.count("backfilled_stage") == 1
    assert r.count("skipped_stage") == 2  # 9002 AS -> CS; 9003 AS -> Closed Lost
    assert any("default pipeline" in n for n in r.notes)


def q(stage, pipe="Sales Pipeline"):
    return f"{stage} ({pipe})"


def test_two_pipelines_with_pipelines_file_by_hand():
    d = fs.read_hubspot(EXPORT, pipelines=PIPES, exported_at="2024-02-10")
    assert d.pipeline.order == (
        q("Appointment Scheduled"),
        q("Qualified To Buy"),
        q("Contract Sent"),
        q("Renewal Due", "Renewals"),
        q("Closed Won"),
        q("Closed Won", "Renewals"),
        q("Closed Lost"),
        q("Closed Lost", "Renewals"),
    )
    qualified = [
        (deal, q(s), a, b, None if n is None else q(n), amt)
        for deal, s, a, b, n, amt in SALES_EVENTS
    ]
    assert_events(
        d,
        [
            *qualified,
            (
                "9004",
                q("Renewal Due", "Renewals"),
                "2024-01-06 08:00",
                "2024-01-17 08:00",
                q("Closed Won", "Renewals"),
                20000.0,
            ),
            ("9004", q("Closed Won", "Renewals"), "2024-01-17 08:00", None, None, 20000.0),
            ("9005", q("Renewal Due", "Renewals"), "2024-01-09 08:00", None, None, 15000.0),
        ],
    )
    assert_deals(
        d,
        [
            (
                "9001",
                "2024-01-02 09:00",
                "won",
                "2024-01-25 14:00",
                5000.0,
                q("Closed Won"),
                q("Closed Won"),
                "Sales Pipeline",
                "Ana Lima",
            ),
            (
                "9002",
                "2024-01-03 09:00",
                "open",
                None,
                12000.0,
                q("Contract Sent"),
                q("Contract Sent"),
                "Sales Pipeline",
                "Ben Ode",
            ),
            (
                "9003",
                "2024-01-04 12:00",
                "lost",
                "2024-01-10 12:00",
                800.0,
                q("Closed Lost"),
                q("Appointment Scheduled"),
                "Sales Pipeline",
                "Ana Lima",
            ),
            (
                "9004",
                "2024-01-06 08:00",
                "won",
                "2024-01-17 08:00",
                20000.0,
                q("Closed Won", "Renewals"),
                q("Closed Won", "Renewals"),
                "Renewals",
                "Ben Ode",
            ),
            (
                "9005",
                "2024-01-09 08:00",
                "open",
                None,
                15000.0,
                q("Renewal Due", "Renewals"),
                q("Renewal Due", "Renewals"),
                "Renewals",
                "Ana Lima",
            ),
        ],
        extra=("pipeline", "Deal owner"),
    )
    assert balanced(d.report).rows_kept == 5
    renewals = d.select(d.deals["pipeline"] == "Renewals")
    assert renewals.deals["outcome"].astype(str).tolist() == ["won", "open"]


def test_portal_time_zone():
    d = fs.read_hubspot(EXPORT, pipeline_name="Sales Pipeline", tz="Europe/Berlin")
    first = d.events["entered_at"].iloc[0]
    assert first == pd.Timestamp("2024-01-02 08:00", tz="UTC")  # 09:00 CET


def test_without_pipelines_file_won_lost_by_name_reported():
    d = fs.read_hubspot(EXPORT, exported_at="2024-02-10")
    assert set(d.pipeline.won) == {q("Closed Won"), q("Closed Won", "Renewals")}
    assert any("recognised by name" in n for n in d.report.notes)


def test_internal_names_by_hand():
    d = fs.read_hubspot(
        HS / "deals_internal.csv", pipelines=HS / "pipelines_custom.json", exported_at="2024-02-28"
    )
    assert d.pipeline.order == ("Discovery", "Demo", "Proposal", "Won", "Lost")
    assert_events(
        d,
        [
            ("301", "Discovery", "2024-02-01 10:00", "2024-02-03 10:00", "Demo", 4000.0),
            # "qualifiedtobuy" in the column, "QualifiedToBuy" in the pipelines file
            ("301", "Demo", "2024-02-03 10:00", "2024-02-07 10:00", "Proposal", 4000.0),
            # 33355501 is the custom Proposal stage
            ("301", "Proposal", "2024-02-07 10:00", "2024-02-20 10:00", "Won", 4000.0),
            ("301", "Won", "2024-02-20 10:00", None, None, 4000.0),
            ("302", "Discovery", "2024-02-02 10:00", "2024-02-09 10:00", "Proposal", 9000.0),
            ("302", "Proposal", "2024-02-09 10:00", None, None, 9000.0),
            # hs_v2_ empty: the hs_date_entered_ (v1) value is used
            ("303", "Discovery", "2024-02-04 10:00", "2024-02-05 10:00", "Demo", NAN),
            ("303", "Demo", "2024-02-05 10:00", "2024-02-15 10:00", "Lost", NAN),
            ("303", "Lost", "2024-02-15 10:00", None, None, NAN),
        ],
    )
    assert d.deals["pipeline"].astype(str).tolist() == ["New Business"] * 3
    assert d.deals["currency"].astype(str).tolist() == ["USD", "GBP", "USD"]
    assert any("2 currencies" in n for n in d.report.notes)
    # hs_v2_date_entered_current_stage is not a stage
    assert "current_stage" not in d.pipeline.order


def test_api_history_by_hand():
    d = fs.read_hubspot(
        HS / "deals_history.json", pipelines=HS / "pipelines_custom.json", exported_at="2024-03-31"
    )
    assert_events(
        d,
        [
            ("401", "Discovery", "2024-03-01 09:00", "2024-03-04 09:00", "Proposal", 5000.0),
            ("401", "Proposal", "2024-03-04 09:00", "2024-03-05 09:00", "Demo", 5000.0),
            ("401", "Demo", "2024-03-05 09:00", "2024-03-10 09:00", "Proposal", 5000.0),
            ("401", "Proposal", "2024-03-10 09:00", "2024-03-20 09:00", "Won", 5000.0),
            ("401", "Won", "2024-03-20 09:00", None, None, 7500.0),
            ("402", "Discovery", "2024-03-02 09:00", None, None, 1200.0),
        ],
    )
    r = balanced(d.report)
    assert r.rows_read == 9 and r.rows_kept == 9
    assert r.count("backward_move") == 1
    assert d.deals["pipeline"].astype(str).tolist() == ["New Business"] * 2
    assert fs.read(HS / "deals_history.json", pipelines=HS / "pipelines_custom.json").n_deals == 2


def test_stage_columns_parsed():
    from funnelstats.ingest.hubspot import hubspot_stage_columns

    found = hubspot_stage_columns(pd.read_csv(EXPORT, nrows=0).columns)
    assert found[("Sales Pipeline", "Contract Sent")]["entered"] == [
        "Date entered 'Contract Sent (Sales Pipeline)'"
    ]
    assert ("Renewals", "Renewal Due") in found
    with pytest.raises(fs.FunnelDataError, match="no HubSpot stage columns"):
        fs.read_hubspot(pd.DataFrame({"Record ID": ["1"], "Amount": ["3"]}))


def test_per_stage_conversion_of_one_pipeline_counts_only_its_own_stages():
    """Two pipelines in one file: the merged read says its stage order mixes pipelines, and
    reading one pipeline with pipeline_name= gives conversion over that pipeline's stages
    only (no Sales deal is counted as passing the Renewals stage)."""
    merged = fs.read_hubspot(EXPORT, pipelines=PIPES, exported_at="2024-02-10")
    assert any(
        "2 pipelines in one file" in n and "pipeline_name=" in n for n in merged.report.notes
    )
    renewals = fs.read_hubspot(
        EXPORT, pipelines=PIPES, pipeline_name="Renewals", exported_at="2024-02-10"
    )
    sales = fs.read_hubspot(
        EXPORT, pipelines=PIPES, pipeline_name="Sales Pipeline", exported_at="2024-02-10"
    )
    for d in (renewals, sales):
        assert not any("pipelines in one file" in n for n in d.report.notes)
    ren = fs.conversion(renewals, method="entered").frame.set_index("stage")
    assert ren["entered"].to_dict() == {"Renewal Due": 2}  # 9004 and 9005, nothing else
    sal = fs.conversion(sales, method="entered").frame.set_index("stage")
    assert "Renewal Due" not in sal.index
    assert sal.loc["Appointment Scheduled", "entered"] == 3
