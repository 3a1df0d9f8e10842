"""Build hand-written expected tables for the adapter tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt

CRM = Path(__file__).parent / "data" / "crm"


def _ts(values):
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")


def events_frame(rows, order):
    """(deal, stage, entered, exited, next, amount) tuples -> the tidy event table."""
    deal, stage, entered, exited, nxt, amount = zip(*rows)
    cat = pd.CategoricalDtype(list(order), ordered=True)
    return pd.DataFrame(
        {
            "deal_id": pd.array(deal, dtype="string[pyarrow]"),
            "stage": pd.Categorical(stage, dtype=cat),
            "entered_at": _ts(entered),
            "exited_at": _ts(exited),
            "next_stage": pd.Categorical(nxt, dtype=cat),
            "amount": np.array(amount, dtype=float),
        }
    )


def assert_events(data, rows):
    """The data's event table equals the hand-written rows."""
    pdt.assert_frame_equal(data.events, events_frame(rows, data.pipeline.order))


def assert_deals(data, rows, extra=()):
    """(deal, created, outcome, closed, amount, stage, furthest, *extra) tuples."""
    got = data.deals
    cols = list(zip(*rows))
    assert got["deal_id"].tolist() == list(cols[0])
    pdt.assert_series_equal(got["created_at"], _ts(cols[1]), check_names=False)
    assert got["outcome"].astype(str).tolist() == list(cols[2])
    pdt.assert_series_equal(got["closed_at"], _ts(cols[3]), check_names=False)
    np.testing.assert_array_equal(got["amount"].to_numpy(), np.array(cols[4], dtype=float))
    assert got["stage"].astype(str).tolist() == list(cols[5])
    assert got["furthest_stage"].astype(str).tolist() == list(cols[6])
    for i, name in enumerate(extra):
        assert got[name].astype(object).where(got[name].notna(), None).tolist() == list(
            cols[7 + i]
        ), name


def balanced(report):
    assert report.rows_read == report.rows_kept + report.rows_repaired + report.rows_quarantined
    return report
