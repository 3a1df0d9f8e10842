"""Salesforce OpportunityHistory and OpportunityFieldHistory fixtures, tables written by hand.

tests/data/crm/salesforce/OpportunityHistory.csv is Windows-1252 with CRLF line ends, the
newer columns (FromOpportunityStageName, PrevAmount, ..., CurrencyIsoCode), naive
``YYYY-MM-DD HH:MM:SS`` times (Data Loader writes GMT), ``CloseDate`` with a midnight time,
float artefacts, EUR and USD, a deleted row, amount/close-date-only rows and a deal created
directly in Négociation. Stage names are French, so won and lost cannot be read from names.
"""

from __future__ import annotations

import pandas as pd
import pytest
from _expected import CRM, assert_deals, assert_events, balanced

import funnelstats as fs
from funnelstats import FunnelDataError

SF = CRM / "salesforce"
HIST = SF / "OpportunityHistory.csv"
OPP = SF / "Opportunity.csv"
STAGES = SF / "OpportunityStage.csv"
O1, O2, O3, O4 = (f"0061x00000O000{i}" for i in range(1, 5))

EVENTS = [
    (O1, "Prospection", "2024-01-02 09:00", "2024-01-10 11:00", "Qualification", 10000.0),
    # the 01-05 row repeats Prospection: an amount update, no stage entry
    (O1, "Qualification", "2024-01-10 11:00", "2024-01-20 12:00", "Négociation", 12000.0),
    # 16120999.999999998 read as 16121000.00
    (O1, "Négociation", "2024-01-20 12:00", "2024-02-01 13:00", "Gagné", 16121000.0),
    (O1, "Gagné", "2024-02-01 13:00", None, None, 16121000.0),
    # created directly in Négociation: an entry there, not a skip
    (O2, "Négociation", "2024-01-03 08:30", "2024-01-15 16:00", "Perdu", 5000.0),
    (O2, "Perdu", "2024-01-15 16:00", None, None, 5000.0),
    (O3, "Prospection", "2024-01-04 14:00", "2024-01-06 09:15", "Qualification", 700.0),
    # the deleted Proposition row is quarantined; the 01-08 row changes the close date only
    (O3, "Qualification", "2024-01-06 09:15", None, None, 700.0),
    (O4, "Qualification", "2024-01-09 08:00", "2024-01-12 08:00", "Proposition", 3000.0),
    (O4, "Proposition", "2024-01-12 08:00", None, None, 3000.5),
]
DEALS = [
    (O1, "2024-01-02 09:00", "won", "2024-02-01 13:00", 16121000.0, "Gagné", "Gagné", "EUR"),
    (O2, "2024-01-03 08:30", "lost", "2024-01-15 16:00", 5000.0, "Perdu", "Négociation", "USD"),
    (O3, "2024-01-04 14:00", "open", None, 700.0, "Qualification", "Qualification", "USD"),
    (O4, "2024-01-09 08:00", "open", None, 3000.5, "Proposition", "Proposition", "EUR"),
]
ORDER = ("Prospection", "Qualification", "Proposition", "Négociation", "Gagné", "Perdu")


@pytest.fixture(scope="module")
def sf():
    return fs.read_salesforce(HIST, opportunities=OPP, exported_at="2024-02-10")


def test_events_by_hand(sf):
    assert sf.pipeline.order == ORDER
    assert_events(sf, EVENTS)


def test_deals_by_hand(sf):
    assert_deals(sf, DEALS, extra=("currency",))
    assert sf.deals["Name"].tolist()[0] == "Société Générale - renouvellement"


def test_report_by_hand(sf):
    r = balanced(sf.report)
    assert (r.rows_read, r.rows_kept, r.rows_repaired, r.rows_quarantined) == (13, 10, 2, 1)
    assert r.count("deleted") == 1
    assert r.quarantined["row"].tolist() == [11] and r.quarantined["rule"].tolist() == ["deleted"]
    assert r.count("amount_rounded") == 2  # 12000.000000000002 and 16120999.999999998
    rep = r.repairs[r.repairs["rule"] == "amount_rounded"]
    assert rep["original"].tolist() == ["12000.000000000002", "16120999.999999998"]
    assert rep["repaired"].tolist() == ["12000.00", "16121000.00"]
    assert r.count("no_stage_change") == 2  # O1's amount update, O3's close-date update
    assert r.count("skipped_stage") == 1  # O1 Qualification -> Négociation
    assert r.count("naive_timestamp") == 13
    assert any("Windows-1252" in n for n in r.notes)


def test_field_updates_change_history_not_stages(sf):
    h = sf.history[sf.history["deal_id"] == O3]
    assert h["stage"].astype(str).tolist() == ["Prospection", "Qualification", "Qualification"]
    # the close-date update (2024-04-30 -> 2024-05-31) is kept in the history
    assert h["close_date"].dt.strftime("%Y-%m-%d").tolist()[-1] == "2024-05-31"
    assert len(sf.events[sf.events["deal_id"] == O3]) == 2


def test_currency_kept_and_never_mixed(sf):
    assert set(sf.deals["currency"].astype(str)) == {"EUR", "USD"}
    assert any("2 currencies (EUR, USD)" in n for n in sf.report.notes)
    totals = sf.deals.groupby("currency", observed=True)["amount"].sum()
    assert totals.to_dict() == {"EUR": 16121000.0 + 3000.5, "USD": 5700.0}


def test_encoding_given_or_detected(tmp_path):
    given = fs.read_salesforce(HIST, encoding="cp1252", opportunities=OPP, exported_at="2024-02-10")
    assert not any("UTF-8" in n for n in given.report.notes)
    assert_events(given, EVENTS)
    with pytest.raises(FunnelDataError, match="cannot decode as utf-8"):
        fs.read_salesforce(HIST, encoding="utf-8")
    # a byte Windows-1252 leaves undefined still reads (as Latin-1), never crashes
    raw = HIST.read_bytes().replace(b"Prospection", b"Prospecti\x81n", 1)
    p = tmp_path / "odd.csv"
    p.write_bytes(raw)
    d = fs.read_salesforce(p, opportunities=OPP, exported_at="2024-02-10")
    assert "Prospecti\x81n" in d.pipeline.order
    assert any("Latin-1" in n for n in d.report.notes)


def test_won_lost_from_stage_table():
    d = fs.read_salesforce(HIST, stages=STAGES, exported_at="2024-02-10")
    assert d.pipeline.order == ORDER
    assert d.pipeline.probabilities["Négociation"] == 0.8
    assert any("OpportunityStage.csv" in n for n in d.pipeline.notes)
    assert_events(d, EVENTS)


def test_won_lost_inferred_and_reported_without_flags():
    d = fs.read_salesforce(HIST, exported_at="2024-02-10")
    assert d.pipeline.won == ("Gagné",) and d.pipeline.lost == ("Perdu",)
    assert any("probability of 100% / 0%" in n for n in d.report.notes)
    p = fs.Pipeline(
        ["Prospection", "Qualification", "Proposition", "Négociation"], "Gagné", "Perdu"
    )
    given = fs.read_salesforce(HIST, pipeline=p, exported_at="2024-02-10")
    assert_events(given, EVENTS)


FH = SF / "OpportunityFieldHistory.csv"
FH_OPP = SF / "OpportunityFH_Opportunity.csv"
F1, F2, F3, F4 = (f"0061x00000F000{i}" for i in range(1, 5))
FH_EVENTS = [
    # first stage = OldValue of the first StageName change, at the "created" row
    (F1, "Prospection", "2024-03-01 09:00", "2024-03-05 10:00", "Qualification", 1000.0),
    # the amount changed on 03-06 (1000 -> 1500): entries carry the amount known then
    (F1, "Qualification", "2024-03-05 10:00", "2024-03-20 10:00", "Gagné", 1000.0),
    (F1, "Gagné", "2024-03-20 10:00", None, None, 1500.0),
    # never changed stage: its Opportunity row places it
    (F2, "Proposition", "2024-03-02 08:00", None, None, 2500.0),
    # created in Négociation (Opportunity CreatedDate), lost on 03-10
    (F3, "Négociation", "2024-03-03 12:00", "2024-03-10 15:30", "Perdu", 4000.0),
    (F3, "Perdu", "2024-03-10 15:30", None, None, 4000.0),
    # no created date known: the stage before its first change is not placed
    (F4, "Qualification", "2024-03-08 11:00", None, None, float("nan")),
]


def test_field_history_by_hand():
    d = fs.read_salesforce(FH, opportunities=FH_OPP, stages=STAGES, exported_at="2024-03-31")
    assert d.pipeline.order == ORDER
    assert_events(d, FH_EVENTS)
    assert d.deals["outcome"].astype(str).tolist() == ["won", "open", "lost", "open"]
    r = balanced(d.report)
    # 8 history rows + 3 Opportunity rows, all accounted for
    assert (r.rows_read, r.rows_kept, r.rows_repaired, r.rows_quarantined) == (11, 9, 1, 1)
    assert r.count("deleted") == 1  # the deleted F4 Proposition change
    assert r.count("field_not_used") == 1  # the Owner change
    assert r.count("first_stage_unknown") == 1  # F4
    assert r.count("amount_rounded") == 1  # 1500.0000000000002
    assert r.count("no_stage_change") == 1  # the Amount change row
    assert "source_file" in r.quarantined.columns
    assert fs.detect_layout(pd.read_csv(FH, nrows=1).columns) == "salesforce"


def test_field_history_without_opportunities():
    d = fs.read_salesforce(FH, stages=STAGES, exported_at="2024-03-31")
    assert d.deals["deal_id"].tolist() == [F1, F3, F4]
    assert d.report.count("first_stage_unknown") == 2  # F3 and F4 have no "created" row
    assert_events(
        d,
        [
            *FH_EVENTS[:3],
            (F3, "Perdu", "2024-03-10 15:30", None, None, float("nan")),
            FH_EVENTS[-1],
        ],
    )


def test_results_that_add_amounts_say_when_currencies_are_mixed():
    """EUR and USD deals are never added silently: every result that sums amounts notes it,
    and the note goes away once one currency is selected."""
    import pandas as pd

    d = fs.read_salesforce(SF / "OpportunityHistory.csv", opportunities=SF / "Opportunity.csv")
    assert sorted(d.deals["currency"].dropna().unique()) == ["EUR", "USD"]

    def results(data):
        start = data.history["at"].min() - pd.Timedelta(days=1)
        return {
            "weighted_pipeline": fs.weighted_pipeline(data),
            "snapshot": fs.snapshot(data),
            "forecast_bookings": fs.forecast_bookings(data, n_sims=50, seed=0),
            "velocity": fs.velocity(data),
            "flow": fs.flow(data, start, data.exported_at, scope="open"),
        }

    for name, res in results(d).items():
        assert any("2 currencies (EUR, USD)" in n for n in res.notes), name
    eur = d.select(d.deals["currency"] == "EUR")
    for name, res in results(eur).items():
        assert not any("currencies" in n for n in res.notes), name
