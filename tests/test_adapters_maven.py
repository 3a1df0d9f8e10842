"""The bundled Maven CRM data: every row accounted for; figures checked with plain pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import funnelstats as fs
from funnelstats.datasets import maven_path


@pytest.fixture(scope="module")
def maven():
    return fs.load_maven_crm()


@pytest.fixture(scope="module")
def raw():
    return pd.read_csv(maven_path(), parse_dates=["engage_date", "close_date"])


def test_every_row_accounted_for(maven, raw):
    r = maven.report
    assert r.rows_read == len(raw) == 8800
    assert r.rows_read == r.rows_kept + r.rows_repaired + r.rows_quarantined
    assert r.rows_quarantined == 0
    assert r.count("undated_deal") == (raw["deal_stage"] == "Prospecting").sum() == 500
    assert maven.n_deals == 8800 and not maven.has_stage_history


def test_win_rate_matches_pandas(maven, raw):
    closed = raw[raw["deal_stage"].isin(["Won", "Lost"])]
    pandas_rate = (closed["deal_stage"] == "Won").mean()
    out = maven.deals["outcome"].astype(str)
    fs_rate = (out == "won").sum() / out.isin(["won", "lost"]).sum()
    assert fs_rate == pytest.approx(pandas_rate, abs=1e-12)
    assert round(pandas_rate, 4) == 0.6315  # 4238 / 6711


def test_open_deals_are_open_not_lost(maven, raw):
    out = maven.deals.set_index("deal_id")["outcome"].astype(str)
    stage = raw.set_index("opportunity_id")["deal_stage"]
    expected = stage.map({"Won": "won", "Lost": "lost", "Engaging": "open", "Prospecting": "open"})
    assert out.sort_index().to_dict() == expected.sort_index().to_dict()
    assert maven.deals["closed_at"].isna().sum() == 1589 + 500


def test_cycle_time_matches_pandas(maven, raw):
    closed = raw[raw["deal_stage"].isin(["Won", "Lost"])]
    days = (closed["close_date"] - closed["engage_date"]).dt.days
    d = maven.deals
    fs_days = (d["closed_at"] - d["created_at"]).dt.total_seconds() / 86400
    fs_days = fs_days[d["outcome"].isin(["won", "lost"])]
    assert fs_days.mean() == pytest.approx(days.mean())
    assert fs_days.median() == pytest.approx(days.median())
    won = closed["deal_stage"] == "Won"
    fs_won = fs_days[d.loc[fs_days.index, "outcome"] == "won"]
    assert fs_won.mean() == pytest.approx(days[won].mean())
    # the same figures from the event table: time from Engaging entry to the outcome
    ev = maven.events
    eng = ev[ev["stage"] == "Engaging"].set_index("deal_id")
    done = eng["exited_at"].notna()
    ev_days = (eng.loc[done, "exited_at"] - eng.loc[done, "entered_at"]).dt.total_seconds() / 86400
    assert np.sort(ev_days.to_numpy()) == pytest.approx(np.sort(days.to_numpy(dtype=float)))


def test_amounts_and_attributes(maven, raw):
    d = maven.deals.set_index("deal_id")
    won = raw[raw["deal_stage"] == "Won"]
    assert d.loc[won["opportunity_id"], "amount"].sum() == won["close_value"].sum()
    # the joins: team, product series (GTXPro spelled two ways), sector
    assert d["regional_office"].notna().all() and d["series"].notna().all()
    assert set(d["manager"].dropna()) == set(pd.read_csv(maven_path("teams"))["manager"])
    assert d["sector"].isna().sum() == raw["account"].isna().sum()


def test_win_rate_and_cycle_time_from_the_raw_file_by_hand(maven, raw):
    """The censoring-aware figures on Maven, against the Aalen–Johansen formula written out
    with plain pandas on durations computed from the raw CSV (Engaging deals censored at the
    export date; undated Prospecting rows have no start and are left out). Durations are
    whole days with many ties, which lifelines' fitter breaks by random jitter, so the
    formula is written here: F_won(t) = sum over days u <= t of S(u-) * won(u) / at_risk(u)."""
    dated = raw[raw["engage_date"].notna()]
    export = maven.exported_at.tz_localize(None)
    end = dated["close_date"].where(dated["deal_stage"].isin(["Won", "Lost"]), export)
    table = pd.DataFrame(
        {
            "days": (end - dated["engage_date"]).dt.days,
            "won": dated["deal_stage"].eq("Won"),
            "closed": dated["deal_stage"].isin(["Won", "Lost"]),
        }
    )
    assert len(table) == 8300
    per_day = table.groupby("days").agg(n=("won", "size"), won=("won", "sum"), d=("closed", "sum"))
    at_risk = len(table) - per_day["n"].cumsum().shift(fill_value=0)
    surv_before = (1 - per_day["d"] / at_risk).cumprod().shift(fill_value=1.0)
    cif = (surv_before * per_day["won"] / at_risk).cumsum()

    cyc = fs.cycle_time(maven)
    won = cyc.curves[cyc.curves["outcome"] == "won"].set_index("t")["probability"]
    ref = cif.reindex(won.index.to_numpy(), method="ffill").fillna(0.0)
    np.testing.assert_allclose(won.to_numpy(), ref.to_numpy(), atol=1e-12)
    wr = fs.win_rate(maven).frame.iloc[0]
    assert wr["win_rate"] == pytest.approx(float(cif.iloc[-1]), abs=1e-12)
    # far from the naive won / closed of the same file, which ignores the open deals
    assert abs(wr["win_rate"] - 0.6315) > 0.1
