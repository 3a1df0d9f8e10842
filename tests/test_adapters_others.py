"""Pipedrive, Dynamics 365 and Zoho fixtures with their tidy tables written by hand."""

from __future__ import annotations

import pandas as pd
import pytest
from _expected import CRM, assert_deals, assert_events, balanced

import funnelstats as fs

PD = CRM / "pipedrive"
DY = CRM / "dynamics"
ZO = CRM / "zoho"
NAN = float("nan")


# ---------------------------------------------------------------- Pipedrive
def test_pipedrive_with_flow_by_hand():
    d = fs.read_pipedrive(
        PD / "deals.csv", flow=PD / "flow.csv", stages=PD / "stages.json", exported_at="2024-02-05"
    )
    assert d.pipeline.order == ("Lead In", "Contact Made", "Proposal Made", "Won", "Lost")
    assert_events(
        d,
        [
            # created in stage 1 (old_value of the first stage_id change), value 6000 then
            ("101", "Lead In", "2024-01-02 10:00", "2024-01-08 10:00", "Contact Made", 6000.0),
            (
                "101",
                "Contact Made",
                "2024-01-08 10:00",
                "2024-01-15 10:00",
                "Proposal Made",
                6000.0,
            ),
            # the value changed to 8000 on 01-12: an amount update, no stage entry
            ("101", "Proposal Made", "2024-01-15 10:00", "2024-01-30 09:00", "Won", 8000.0),
            ("101", "Won", "2024-01-30 09:00", None, None, 8000.0),
            ("102", "Lead In", "2024-01-03 11:00", "2024-01-10 11:00", "Contact Made", 3000.0),
            # no status change in the flow: lost at lost_time (ISO with Z) from the export
            ("102", "Contact Made", "2024-01-10 11:00", "2024-01-20 12:00", "Lost", 3000.0),
            ("102", "Lost", "2024-01-20 12:00", None, None, 3000.0),
            ("103", "Lead In", "2024-01-05 09:00", None, None, 1500.0),
            # 104 is deleted: its deal row and flow row are quarantined
            ("105", "Lead In", "2024-01-08 09:00", "2024-01-10 09:00", "Proposal Made", 5000.0),
            ("105", "Proposal Made", "2024-01-10 09:00", "2024-01-25 09:00", "Lost", 5000.0),
            # reopened (status lost -> open): back in the stage it was in
            ("105", "Lost", "2024-01-25 09:00", "2024-02-01 09:00", "Proposal Made", 5000.0),
            ("105", "Proposal Made", "2024-02-01 09:00", None, None, 5000.0),
        ],
    )
    assert_deals(
        d,
        [
            ("101", "2024-01-02 10:00", "won", "2024-01-30 09:00", 8000.0, "Won", "Won", "", "Ana"),
            (
                "102",
                "2024-01-03 11:00",
                "lost",
                "2024-01-20 12:00",
                3000.0,
                "Lost",
                "Contact Made",
                "Budget",
                "Ben",
            ),
            ("103", "2024-01-05 09:00", "open", None, 1500.0, "Lead In", "Lead In", "", "Ana"),
            (
                "105",
                "2024-01-08 09:00",
                "open",
                None,
                5000.0,
                "Proposal Made",
                "Proposal Made",
                "",
                "Ben",
            ),
        ],
        extra=("lost_reason", "owner_name"),
    )
    r = balanced(d.report)
    assert (r.rows_read, r.rows_kept, r.rows_quarantined) == (15, 13, 2)
    assert r.count("deleted") == 2 and r.count("field_not_used") == 1
    assert r.count("reopened") == 1 and r.count("skipped_stage") == 1
    assert d.deals["pipeline"].astype(str).tolist() == ["Sales"] * 4
    assert d.has_stage_history


def test_pipedrive_without_flow_is_partial():
    d = fs.read_pipedrive(PD / "deals.csv", stages=PD / "stages.json", exported_at="2024-02-05")
    assert not d.has_stage_history
    assert_events(
        d,
        [
            ("101", "Proposal Made", "2024-01-15 10:00", "2024-01-30 09:00", "Won", 8000.0),
            ("101", "Won", "2024-01-30 09:00", None, None, 8000.0),
            ("102", "Contact Made", "2024-01-10 11:00", "2024-01-20 12:00", "Lost", 3000.0),
            ("102", "Lost", "2024-01-20 12:00", None, None, 3000.0),
            ("103", "Lead In", "2024-01-05 09:00", None, None, 1500.0),
            ("105", "Proposal Made", "2024-02-02 09:00", None, None, 5000.0),
        ],
    )
    # created dates still come from add_time
    assert d.deals["created_at"].dt.strftime("%m-%d").tolist() == [
        "01-02",
        "01-03",
        "01-05",
        "01-08",
    ]
    assert any("stage_change_time" in n for n in d.report.notes)


def test_pipedrive_flow_json():
    flow = {
        "data": [
            {"object": "activity", "timestamp": "2024-01-09 10:00:00", "data": {"id": 9}},
            {
                "object": "dealChange",
                "timestamp": "2024-01-08 10:00:00",
                "data": {
                    "item_id": 101,
                    "field_key": "stage_id",
                    "old_value": "1",
                    "new_value": "2",
                    "log_time": "2024-01-08 10:00:00",
                    "additional_data": {
                        "old_value_formatted": "Lead In",
                        "new_value_formatted": "Contact Made",
                    },
                },
            },
        ]
    }
    deals = pd.read_csv(PD / "deals.csv", dtype=str).iloc[:1].assign(stage_id="2", status="open")
    d = fs.read_pipedrive(deals, flow=flow, exported_at="2024-02-05")
    assert d.events["stage"].astype(str).tolist() == ["Lead In", "Contact Made"]


# ---------------------------------------------------------------- Dynamics 365
D1, D2, D3 = (f"6f1e0a3c-000{i}-ef11-a4e6-000d3a5b1c01" for i in (1, 2, 3))


def test_dynamics_bpf_by_hand():
    d = fs.read_dynamics(
        DY / "opportunity.csv", stages=DY / "opportunitysalesprocess.csv", exported_at="2024-03-01"
    )
    assert d.pipeline.order == ("1-Qualify", "2-Develop", "3-Propose", "Won", "Lost")
    assert_events(
        d,
        [
            (D1, "1-Qualify", "2024-01-03 09:00", "2024-01-10 09:00", "2-Develop", 50000.0),
            (D1, "2-Develop", "2024-01-10 09:00", "2024-02-01 09:00", "3-Propose", 50000.0),
            # statecode 1: won on actualclosedate (a date), at its actualvalue
            (D1, "3-Propose", "2024-02-01 09:00", "2024-02-20", "Won", 50000.0),
            (D1, "Won", "2024-02-20", None, None, 48000.5),
            # the GUID is upper case in the opportunity export, lower case in the BPF records
            (D2, "1-Qualify", "2024-01-04 10:00", "2024-01-25 10:00", "2-Develop", 12000.0),
            (D2, "2-Develop", "2024-01-25 10:00", "2024-02-10", "Lost", 12000.0),
            (D2, "Lost", "2024-02-10", None, None, 12000.0),
            (D3, "1-Qualify", "2024-01-05 11:00", None, None, 7000.0),
        ],
    )
    assert d.deals["status_reason"].astype(str).tolist() == ["Won", "Out-Sold", "In Progress"]
    assert d.deals["outcome"].astype(str).tolist() == ["won", "lost", "open"]
    r = balanced(d.report)
    assert r.rows_read == 8 and r.rows_kept == 8
    assert any("currencies" in n for n in r.notes)


def test_dynamics_audit_by_hand():
    d = fs.read_dynamics(DY / "opportunity.csv", stages=DY / "audit.csv", exported_at="2024-03-01")
    assert_events(
        d,
        [
            # estimatedvalue went 40000 -> 50000 on 01-15
            (D1, "1-Qualify", "2024-01-03 09:00", "2024-01-10 09:00", "2-Develop", 40000.0),
            (D1, "2-Develop", "2024-01-10 09:00", "2024-02-01 09:00", "3-Propose", 40000.0),
            (D1, "3-Propose", "2024-02-01 09:00", "2024-02-20", "Won", 50000.0),
            (D1, "Won", "2024-02-20", None, None, 48000.5),
            (D2, "1-Qualify", "2024-01-04 10:00", "2024-01-25 10:00", "2-Develop", 12000.0),
            (D2, "2-Develop", "2024-01-25 10:00", "2024-02-10", "Lost", 12000.0),
            (D2, "Lost", "2024-02-10", None, None, 12000.0),
            (D3, "1-Qualify", "2024-01-05 11:00", None, None, 7000.0),
        ],
    )
    r = balanced(d.report)
    assert r.rows_read == 8 and r.count("field_not_used") == 1


def test_dynamics_without_stage_records():
    d = fs.read_dynamics(DY / "opportunity.csv", exported_at="2024-03-01")
    assert not d.has_stage_history
    assert d.events["stage"].astype(str).tolist() == [
        "3-Propose",
        "Won",
        "2-Develop",
        "Lost",
        "1-Qualify",
    ]


def test_dynamics_bad_statecode():
    opp = pd.read_csv(DY / "opportunity.csv", dtype=str).assign(statecode="7")
    with pytest.raises(fs.FunnelDataError, match="statecode '7'"):
        fs.read_dynamics(opp)


# ---------------------------------------------------------------- Zoho
Z1, Z2, Z3 = (f"zcrm_415086800000{i}" for i in (1, 2, 3))


def test_zoho_by_hand():
    d = fs.read_zoho(ZO / "Stage_History.csv", exported_at="2019-09-01")
    assert d.pipeline.order == (
        "Qualification",
        "Needs Analysis",
        "Proposal/Price Quote",
        "Negotiation/Review",
        "Closed Won",
        "Closed-Lost to Competition",
    )
    assert_events(
        d,
        [
            # +05:30 offsets converted to UTC
            (
                Z1,
                "Qualification",
                "2019-07-25 09:56:49",
                "2019-07-29 04:30",
                "Needs Analysis",
                10000.0,
            ),
            # the 08-02 record repeats Needs Analysis: amount 12500 and closing date only
            (
                Z1,
                "Needs Analysis",
                "2019-07-29 04:30",
                "2019-08-10 04:00",
                "Proposal/Price Quote",
                10000.0,
            ),
            (
                Z1,
                "Proposal/Price Quote",
                "2019-08-10 04:00",
                "2019-08-20 11:30",
                "Closed Won",
                12500.0,
            ),
            (Z1, "Closed Won", "2019-08-20 11:30", None, None, 12500.0),
            # -07:00
            (
                Z2,
                "Negotiation/Review",
                "2019-07-26 16:00",
                "2019-08-15 23:00",
                "Closed-Lost to Competition",
                4000.0,
            ),
            (Z2, "Closed-Lost to Competition", "2019-08-15 23:00", None, None, 4000.0),
            (Z3, "Qualification", "2019-08-01 11:00", None, None, 2200.0),
        ],
    )
    r = balanced(d.report)
    assert r.rows_read == 8 and r.rows_kept == 8 and r.count("no_stage_change") == 1
    assert r.count("naive_timestamp") == 0
    assert d.history["close_date"].dt.strftime("%Y-%m-%d").tolist()[2] == "2019-10-15"
    assert any("probability of 100% / 0%" in n for n in r.notes)


# ---------------------------------------------------------------- detection
@pytest.mark.parametrize(
    ("path", "layout", "kwargs"),
    [
        (CRM / "salesforce" / "OpportunityHistory.csv", "salesforce", {}),
        (CRM / "salesforce" / "OpportunityFieldHistory.csv", "salesforce", {}),
        (CRM / "hubspot" / "deals_export.csv", "hubspot", {}),
        (CRM / "hubspot" / "deals_internal.csv", "hubspot", {}),
        (CRM / "hubspot" / "deals_history.json", "hubspot", {}),
        (PD / "deals.csv", "pipedrive", {}),
        (DY / "opportunity.csv", "dynamics", {}),
        (ZO / "Stage_History.csv", "zoho", {}),
        (fs.datasets.maven_path(), "deals", {"pipeline": fs.datasets.MAVEN_STAGES}),
    ],
)
def test_read_picks_the_adapter(path, layout, kwargs):
    d = fs.read(path, **kwargs)
    assert d.report.layout == layout
    balanced(d.report)


def test_unknown_layout_lists_layouts_and_columns():
    with pytest.raises(fs.UnknownLayoutError) as e:
        fs.read(pd.DataFrame({"foo": ["1"], "bar": ["2"]}))
    msg = str(e.value)
    for name, needs in [
        ("salesforce", "OpportunityId, StageName, CreatedDate"),
        ("hubspot", "hs_v2_date_entered_<stageid>"),
        ("pipedrive", "stage_id"),
        ("dynamics", "opportunityid, statecode, createdon"),
        ("zoho", "Last Modified Time"),
        ("generic", "deal_id"),
        ("deals", "deal_stage"),
    ]:
        assert f"{name}: " in msg and needs in msg, name
    with pytest.raises(fs.UnknownLayoutError, match="unrecognised JSON"):
        fs.read(b'{"results": [{"id": 1}]}')
