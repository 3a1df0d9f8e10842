"""One test per validation rule: its count and message; rows in = kept + repaired + quarantined."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import funnelstats as fs
from funnelstats import FunnelDataError, Pipeline

PIPE = Pipeline(["Lead", "Demo", "Proposal"], won=["Won"], lost=["Lost"])
HEADER = "deal_id,stage,timestamp,amount\n"


def read_csv_text(tmp_path, body, name="export.csv", **kw):
    p = tmp_path / name
    p.write_text(HEADER + body if not body.startswith(("deal", "Deal")) else body, encoding="utf-8")
    kw.setdefault("pipeline", PIPE)
    return fs.read_events(p, **kw), p


def balanced(r):
    assert r.rows_read == r.rows_kept + r.rows_repaired + r.rows_quarantined
    return r


# ------------------------------------------------------------------ errors


def test_empty_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_bytes(b"")
    with pytest.raises(FunnelDataError, match="empty") as e:
        fs.read_events(p)
    assert e.value.rule == "empty_file" and e.value.file == str(p)


def test_header_only(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text(HEADER)
    with pytest.raises(FunnelDataError, match="header but no data rows") as e:
        fs.read_events(p)
    assert e.value.rule == "header_only"


def test_missing_column_lists_columns_and_closest(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("deal_id,stgae,timestamp\nA,Lead,2024-01-01\n")
    with pytest.raises(FunnelDataError) as e:
        fs.read_events(p)
    msg = str(e.value)
    assert "no stage column" in msg and "['deal_id', 'stgae', 'timestamp']" in msg
    assert "closest match: 'stgae'" in msg
    assert e.value.rule == "missing_column"


def test_unknown_stage_is_an_error_with_suggestion(tmp_path):
    with pytest.raises(FunnelDataError) as e:
        read_csv_text(
            tmp_path,
            "A,Lead,2024-01-01,1\nA,Closed-Won,2024-01-05,1\n",
            pipeline=Pipeline(["Lead"], won=["Closed Won"], lost=["Closed Lost"]),
        )
    msg = str(e.value)
    assert "'Closed-Won'" in msg and "did you mean 'Closed Won'?" in msg
    assert e.value.row == 3 and e.value.column == "stage" and e.value.rule == "unknown_stage"


def test_unknown_stage_quarantine_and_add(tmp_path):
    body = "A,Lead,2024-01-01,1\nA,Pilot,2024-01-05,1\n"
    d, _ = read_csv_text(tmp_path, body, on_unknown_stage="quarantine")
    assert balanced(d.report).count("unknown_stage_row") == 1
    assert d.report.quarantined["row"].tolist() == [3]
    d2, _ = read_csv_text(tmp_path, body, on_unknown_stage="add")
    assert "Pilot" in d2.pipeline.stages
    assert d2.report.rows_kept == 2


def test_ambiguous_slash_dates_are_not_guessed(tmp_path):
    with pytest.raises(FunnelDataError, match="dayfirst") as e:
        read_csv_text(tmp_path, "A,Lead,03/04/2024,1\nA,Demo,05/06/2024,1\n")
    assert e.value.rule == "ambiguous_date_format" and e.value.row == 2
    d, _ = read_csv_text(tmp_path, "A,Lead,03/04/2024,1\nA,Demo,05/06/2024,1\n", dayfirst=True)
    assert d.events["entered_at"].iloc[0] == pd.Timestamp("2024-04-03", tz="UTC")
    # a day above 12 settles it, and is reported
    d, _ = read_csv_text(tmp_path, "A,Lead,03/04/2024,1\nA,Demo,25/06/2024,1\n")
    assert d.events["entered_at"].iloc[1] == pd.Timestamp("2024-06-25", tz="UTC")
    assert any("day-first" in n for n in d.report.notes)


# ------------------------------------------------------------- quarantine


def test_missing_deal_id(tmp_path):
    d, _p = read_csv_text(tmp_path, "A,Lead,2024-01-01,1\n,Lead,2024-01-02,1\n")
    r = balanced(d.report)
    assert r.count("missing_deal_id") == 1
    q = r.quarantined.iloc[0]
    assert q["row"] == 3 and q["rule"] == "missing_deal_id" and q["column"] == "deal_id"


def test_missing_stage(tmp_path):
    d, _ = read_csv_text(tmp_path, "A,Lead,2024-01-01,1\nA,,2024-01-02,1\n")
    assert balanced(d.report).count("missing_stage") == 1


def test_missing_and_unparseable_timestamp(tmp_path):
    d, _ = read_csv_text(tmp_path, "A,Lead,2024-01-01,1\nA,Demo,,1\nA,Proposal,next tuesday,1\n")
    r = balanced(d.report)
    assert r.count("missing_timestamp") == 1
    assert r.count("unparseable_timestamp") == 1
    reason = r.quarantined.set_index("row").loc[4, "reason"]
    assert "next tuesday" in reason


def test_strict_names_file_row_column(tmp_path):
    with pytest.raises(FunnelDataError) as e:
        read_csv_text(tmp_path, "A,Lead,2024-01-01,1\nA,Demo,2024-13-45,1\n", strict=True)
    err = e.value
    assert err.row == 3 and err.column == "timestamp" and err.rule == "unparseable_timestamp"
    assert str(err).startswith(f"{err.file}, row 3, column 'timestamp':")


def test_malformed_row_quarantined_with_exact_row(tmp_path):
    d, _ = read_csv_text(tmp_path, 'A,Lead,2024-01-01,1\nA,Demo\n"B",Lead,2024-01-02,"1\n000"\n')
    r = balanced(d.report)
    assert r.count("malformed_row") == 1
    assert r.quarantined["row"].tolist() == [3]
    assert d.n_deals == 2  # B's quoted newline did not break its row


def test_after_export(tmp_path):
    d, _ = read_csv_text(
        tmp_path, "A,Lead,2024-01-01,1\nA,Demo,2030-01-02,1\n", exported_at="2024-06-01"
    )
    assert balanced(d.report).count("after_export") == 1
    assert d.exported_at == pd.Timestamp("2024-06-01", tz="UTC")


# ----------------------------------------------------------------- repairs


def test_exact_duplicate_collapsed(tmp_path):
    d, _ = read_csv_text(
        tmp_path, "A,Lead,2024-01-01,1\nA,Lead,2024-01-01,1\nA,Demo,2024-01-03,1\n"
    )
    r = balanced(d.report)
    assert r.count("duplicate_row") == 1 and r.rows_repaired == 1
    assert len(d.events) == 2 and len(d.history) == 2


def test_same_instant_ordered_by_pipeline(tmp_path):
    d, _ = read_csv_text(tmp_path, "A,Demo,2024-01-01T10:00:00Z,1\nA,Lead,2024-01-01T10:00:00Z,1\n")
    assert balanced(d.report).count("same_instant") == 1
    assert d.events["stage"].astype(str).tolist() == ["Lead", "Demo"]


def test_whitespace_in_stage_and_id(tmp_path):
    d, _ = read_csv_text(tmp_path, 'A,Lead ,2024-01-01,1\n" A",Demo,2024-01-02,1\n')
    r = balanced(d.report)
    assert r.count("stage_whitespace") == 1 and r.count("deal_id_whitespace") == 1
    assert d.n_deals == 1
    rep = r.repairs.set_index("rule")
    assert rep.loc["stage_whitespace", "original"] == "Lead "


@pytest.mark.parametrize(
    "text, rule, value",
    [
        ('"$1,234.50"', "amount_text", 1234.5),
        ('"1.234,50 €"', "amount_text", 1234.5),
        ("abc", "amount_not_numeric", np.nan),
        ("-5", "amount_negative", np.nan),
        ("1e309", "amount_not_finite", np.nan),
    ],
)
def test_amount_repairs(tmp_path, text, rule, value):
    d, _ = read_csv_text(tmp_path, f"A,Lead,2024-01-01,{text}\n")
    r = balanced(d.report)
    assert r.count(rule) == 1 and r.rows_repaired == 1
    got = d.events["amount"].iloc[0]
    assert (np.isnan(got) and np.isnan(value)) or got == value


def test_amount_missing_is_a_note(tmp_path):
    d, _ = read_csv_text(tmp_path, "A,Lead,2024-01-01,\nA,Demo,2024-01-02,NaN\n")
    r = balanced(d.report)
    assert r.count("amount_missing") == 2 and r.rows_kept == 2


def test_dst_ambiguous_and_nonexistent(tmp_path):
    # Europe/Berlin: 2024-10-27 02:30 occurs twice; 2024-03-31 02:30 does not exist
    d, _ = read_csv_text(
        tmp_path, "A,Lead,2024-03-31 02:30,1\nA,Demo,2024-10-27 02:30,1\n", tz="Europe/Berlin"
    )
    r = balanced(d.report)
    assert r.count("dst_ambiguous") == 1 and r.count("dst_nonexistent") == 1
    ev = d.events["entered_at"]
    assert ev.iloc[0] == pd.Timestamp("2024-03-31 03:00", tz="Europe/Berlin")
    assert ev.iloc[1] == pd.Timestamp("2024-10-27 00:30", tz="UTC")  # first occurrence (CEST)


def test_close_date_unparseable(tmp_path):
    body = "deal_id,stage,timestamp,close_date\nA,Lead,2024-01-01,soon\n"
    d, _ = read_csv_text(tmp_path, body)
    assert balanced(d.report).count("close_date_unparseable") == 1


# ------------------------------------------------------------------- notes


def test_naive_timestamps_take_tz(tmp_path):
    d, _ = read_csv_text(
        tmp_path,
        "A,Lead,2024-01-01 09:00,1\nA,Demo,2024-01-02T09:00:00+02:00,1\n",
        tz="America/New_York",
    )
    r = balanced(d.report)
    assert r.count("naive_timestamp") == 1
    assert d.events["entered_at"].iloc[0] == pd.Timestamp("2024-01-01 14:00", tz="UTC")
    assert d.events["entered_at"].iloc[1] == pd.Timestamp("2024-01-02 07:00", tz="UTC")


def test_default_utc_is_reported(tmp_path):
    d, _ = read_csv_text(tmp_path, "A,Lead,2024-01-01 09:00,1\n")
    assert any("read as UTC" in n for n in d.report.notes)


def test_no_stage_change_skip_backward_reopen(tmp_path):
    body = (
        "A,Lead,2024-01-01,1\nA,Lead,2024-01-02,2\nA,Proposal,2024-01-03,2\n"
        "A,Demo,2024-01-04,2\nA,Lost,2024-01-05,2\nA,Demo,2024-01-06,2\n"
    )
    d, _ = read_csv_text(tmp_path, body)
    r = balanced(d.report)
    assert r.count("no_stage_change") == 1
    assert r.count("skipped_stage") == 1
    assert r.count("backward_move") == 1
    assert r.count("reopened") == 1
    assert d.deals["outcome"].tolist() == ["open"]


def test_created_in_late_stage_is_not_a_skip(tmp_path):
    d, _ = read_csv_text(tmp_path, "A,Proposal,2024-01-01,1\nA,Won,2024-01-05,1\n")
    assert d.report.count("skipped_stage") == 0


def test_early_timestamp_note(tmp_path):
    d, _ = read_csv_text(tmp_path, "A,Lead,1970-01-02,1\nA,Demo,2024-01-05,1\n")
    assert balanced(d.report).count("early_timestamp") == 1


def test_deleted_rows_salesforce(tmp_path):
    df = pd.DataFrame(
        {
            "OpportunityId": ["006A", "006A"],
            "StageName": ["Prospecting", "Closed Won"],
            "CreatedDate": ["2024-01-01T00:00:00.000Z", "2024-01-09T00:00:00.000Z"],
            "Amount": ["10", "10"],
            "IsDeleted": ["false", "true"],
        }
    )
    d = fs.read(df)
    r = balanced(d.report)
    assert r.layout == "salesforce" and r.count("deleted") == 1
    assert d.deals["outcome"].tolist() == ["open"]


def test_leading_zeros_kept(tmp_path):
    d, _ = read_csv_text(tmp_path, "00123,Lead,2024-01-01,1\n123,Lead,2024-01-02,1\n")
    assert d.deals["deal_id"].tolist() == ["00123", "123"]


def test_undated_deal_note():
    df = pd.DataFrame(
        {
            "deal_id": ["a", "b"],
            "stage": ["Lead", "Won"],
            "created": [None, "2024-01-01"],
            "close_date": [None, "2024-01-09"],
        }
    )
    d = fs.read_deals(df, pipeline=PIPE, exported_at="2024-02-01")
    r = balanced(d.report)
    assert r.count("undated_deal") == 1 and r.rows_kept == 2
    assert d.deals.set_index("deal_id").loc["a", "outcome"] == "open"
    assert d.as_of("2024-01-31").n_deals == 1


def test_far_future_rows_do_not_move_the_export_date(tmp_path):
    days = "".join(f"D{i},Lead,2024-01-{i + 1:02d},1\n" for i in range(30))
    d, _ = read_csv_text(tmp_path, days + "D0,Demo,2099-12-31,1\n")
    r = balanced(d.report)
    assert r.count("far_future") == 1 and r.quarantined["row"].tolist() == [32]
    assert d.exported_at == pd.Timestamp("2024-01-30", tz="UTC")
    assert "'2099-12-31'" in r.quarantined["reason"].iloc[0]
    # less than a year after the rest: a real row, kept
    d, _ = read_csv_text(tmp_path, days + "D0,Demo,2024-12-31,1\n")
    assert d.report.count("far_future") == 0
    assert d.exported_at == pd.Timestamp("2024-12-31", tz="UTC")
    # many rows after the gap (more than 10 and 1%): a period of its own, kept
    late = "".join(f"D{i},Demo,2026-01-{i + 1:02d},1\n" for i in range(12))
    d, _ = read_csv_text(tmp_path, days + late)
    assert d.report.count("far_future") == 0
    # with exported_at= the caller decides: after it is after_export, before it is kept
    d, _ = read_csv_text(tmp_path, days + "D0,Demo,2099-12-31,1\n", exported_at="2100-01-01")
    assert d.report.count("far_future") == 0 and len(d.history) == 31


def test_invisible_characters_removed_from_ids_and_stages(tmp_path):
    body = "A\u200b1,Lead,2024-01-01,1\nA1,Demo\u202e,2024-01-02,1\nA1,Won,2024-01-03,1\n"
    d, _ = read_csv_text(tmp_path, body)
    r = balanced(d.report)
    assert r.count("invisible_character") == 2 and r.rows_repaired == 2
    assert d.deals["deal_id"].tolist() == ["A1"] and d.deals["outcome"].tolist() == ["won"]
    assert r.repairs.loc[r.repairs["row"] == 2, "original"].iloc[0] == "A\u200b1"


def test_stage_unicode_form(tmp_path):
    import unicodedata

    nfd = unicodedata.normalize("NFD", "Démo")
    pipe = Pipeline(["Lead", "Démo"], won=["Won"], lost=["Lost"])
    d, _ = read_csv_text(tmp_path, f"A,Lead,2024-01-01,1\nA,{nfd},2024-01-02,1\n", pipeline=pipe)
    assert balanced(d.report).count("stage_unicode_form") == 1
    assert d.events["stage"].astype(str).tolist() == ["Lead", "Démo"]


def test_stage_case_variant(tmp_path):
    body = "A,lead,2024-01-01,1\nA,DEMO,2024-01-02,1\nB,Lead,2024-01-01,1\nB,won,2024-01-03,1\n"
    d, _ = read_csv_text(tmp_path, body)
    assert balanced(d.report).count("stage_case_variant") == 3
    assert d.events["stage"].astype(str).tolist() == ["Lead", "Demo", "Lead", "Won"]
    # without a pipeline, the most frequent spelling wins
    d, _ = read_csv_text(tmp_path, body + "C,lead,2024-01-01,1\n", pipeline=None)
    assert d.report.count("stage_case_variant") == 1 and "Lead" not in d.pipeline.order
    # punctuation is not a case variant: suggested, never merged
    with pytest.raises(FunnelDataError, match="did you mean 'Demo'"):
        read_csv_text(tmp_path, "A,Lead,2024-01-01,1\nA,De-mo,2024-01-02,1\n")


def test_no_usable_rows_names_the_first_reason(tmp_path):
    with pytest.raises(FunnelDataError) as e:
        read_csv_text(tmp_path, "A,Lead,someday,1\nB,Lead,,1\n")
    err = e.value
    assert err.rule == "no_usable_rows" and err.row == 2 and err.column == "timestamp"
    assert "'someday'" in str(err)


def test_counts_add_up_a_rule_that_fired_twice(tmp_path):
    d, _ = read_csv_text(tmp_path, "A,Lead,2024-01-01,1\nA,Demo\nA,Won\nA,Lost,2024-01-05,1\n")
    assert d.report.counts["malformed_row"] == d.report.count("malformed_row") == 2


def test_every_rule_is_tested():
    import pathlib

    text = (
        pathlib.Path(__file__).read_text()
        + (pathlib.Path(__file__).parent / "test_io.py").read_text()
        # CRM-specific rules are tested with their adapter
        + "".join(p.read_text() for p in pathlib.Path(__file__).parent.glob("test_adapters_*.py"))
    )
    untested = [name for name in fs.RULES if f'"{name}"' not in text]
    assert not untested, f"rules without a test: {untested}"


def test_update_only_rows_take_current_stage_or_are_quarantined():
    """Adapters with field-update rows (Pipedrive, Zoho, field history) rely on this."""
    from funnelstats.ingest._io import read_table
    from funnelstats.ingest.validate import Mapped, build_funnel

    df = pd.DataFrame(
        {
            "deal": ["A", "A", "A", "B"],
            "stage": [None, "Lead", None, None],
            "at": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"],
            "amount": ["1", "2", "3", "4"],
        }
    )
    t = read_table(df)
    m = Mapped(
        table=t,
        layout="test",
        deal=df["deal"],
        stage=df["stage"],
        at=df["at"],
        amount=df["amount"],
        columns={"deal": "deal", "stage": "stage", "at": "at"},
        update_only=np.array([True, False, True, True]),
    )
    d = build_funnel(m, pipeline=PIPE)
    r = balanced(d.report)
    assert r.count("update_before_stage") == 2  # A's first row and B's only row
    assert d.history["stage"].astype(str).tolist() == ["Lead", "Lead"]
    assert d.deals["amount"].tolist() == [3.0]
