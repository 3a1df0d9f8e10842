"""Every analysis on one FunnelData, and the checks every result must pass.

Shared by the hostile-input corpus (tests/test_hostile_corpus.py) and the property tests
over generated exports (tests/test_properties_analyses.py). The checks are identities and
bounds that hold for any data, so they can fail on any input:

- every figure is finite or NaN (never infinite);
- probabilities and rates lie in [0, 1], inside their intervals;
- Kaplan–Meier curves start at 1 and never increase; Aalen–Johansen probabilities add up
  to 1 at every time, and each cumulative incidence never decreases;
- the flow waterfall balances (opening + changes = closing) in total, per deal and per stage;
- forecast quantiles are ordered; the weighted pipeline is amount × probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

import funnelstats as fs

ANALYSES = (
    "conversion",
    "win_rate",
    "time_in_stage",
    "stage_outcomes",
    "cycle_time",
    "snapshot",
    "flow",
    "forecast_bookings",
    "weighted_pipeline",
)


def flow_period(data: fs.FunnelData) -> tuple[pd.Timestamp, pd.Timestamp]:
    """A period (start, end] inside the data: from the middle of its history to the export."""
    end = data.exported_at
    first = data.history["at"].min()
    start = first + (end - first) / 2
    if start >= end:
        start = end - pd.Timedelta(days=1)
    return start, end


def run_all(data: fs.FunnelData, *, n_sims: int = 100, seed: int = 0) -> dict[str, Any]:
    """Every analysis with its defaults (small simulations)."""
    start, end = flow_period(data)
    return {
        "conversion": fs.conversion(data),
        "win_rate": fs.win_rate(data),
        "time_in_stage": fs.time_in_stage(data),
        "stage_outcomes": fs.stage_outcomes(data),
        "cycle_time": fs.cycle_time(data),
        "snapshot": fs.snapshot(data),
        "flow": fs.flow(data, start, end, scope="open"),
        "forecast_bookings": fs.forecast_bookings(data, n_sims=n_sims, seed=seed),
        "weighted_pipeline": fs.weighted_pipeline(data),
    }


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.select_dtypes(include=[np.number, "boolean"]).astype("float64")


#: Where infinity is a value with a meaning: a Kaplan–Meier quantile the curve never
#: reaches ("not reached", as lifelines reports it; the result's notes say so).
NOT_REACHED = {
    "time_in_stage": (
        "median",
        "median_ci_lower",
        "median_ci_upper",
        *(f"{q}{s}" for q in ("q25", "q75") for s in ("", "_ci_lower", "_ci_upper")),
    )
}


def no_infinities(name: str, frame: pd.DataFrame) -> None:
    num = _numeric(frame).drop(columns=list(NOT_REACHED.get(name, ())), errors="ignore")
    bad = np.isinf(num.to_numpy())
    assert not bad.any(), f"{name}: infinite values in {list(num.columns[bad.any(axis=0)])}"


def in_unit_interval(name: str, values: Any) -> None:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    assert ((v >= -1e-12) & (v <= 1 + 1e-12)).all(), f"{name}: outside [0, 1]: {v}"


def ordered(name: str, lo: Any, mid: Any, hi: Any, tol: float = 1e-9) -> None:
    lo, mid, hi = (np.asarray(x, dtype=float) for x in (lo, mid, hi))
    ok = np.isnan(lo) | np.isnan(mid) | np.isnan(hi) | ((lo <= mid + tol) & (mid <= hi + tol))
    assert ok.all(), f"{name}: not lower <= value <= upper"


def check_rate(name: str, frame: pd.DataFrame, col: str) -> None:
    for c in (col, "ci_lower", "ci_upper"):
        in_unit_interval(f"{name}.{c}", frame[c])
    ordered(name, frame["ci_lower"], frame[col], frame["ci_upper"])


def check_survival(res: fs.TimeInStage) -> None:
    f = res.frame
    assert (f["n_entered"] == f["n_exited"] + f["n_censored"]).all()
    for c in ("median", "q25", "q75", "restricted_mean"):
        v = f[c].to_numpy(dtype=float)
        assert (v[~np.isnan(v)] >= 0).all(), f"time_in_stage.{c} negative"
    ordered("time_in_stage quartiles", f["q25"], f["median"], f["q75"])
    cur = res.curves
    in_unit_interval("time_in_stage.survival", cur["survival"])
    # a quantile is infinite exactly where the curve never falls to its level, and never -inf
    low = cur.groupby(["stage", "group"], observed=True)["survival"].min()
    low = low.reindex(pd.MultiIndex.from_frame(f[["stage", "group"]])).to_numpy()
    for col, level in (("q25", 0.75), ("median", 0.5), ("q75", 0.25)):
        v = f[col].to_numpy(dtype=float)
        np.testing.assert_array_equal(np.isinf(v), low > level, err_msg=f"time_in_stage.{col}")
        assert not np.isneginf(v).any()
    if np.isinf(f["median"]).any():
        assert any("not reached" in n for n in res.notes)
    for _, g in cur.groupby(["stage", "group"], observed=True, sort=False):
        s = g["survival"].to_numpy()
        assert g["t"].iloc[0] == 0.0  # (survival just after 0: below 1 when stays end at 0)
        assert (np.diff(s) <= 1e-12).all(), "a survival curve increases"
        assert (np.diff(g["t"].to_numpy()) >= 0).all()


def check_competing(name: str, res: fs.CompetingOutcomes) -> None:
    f = res.frame
    check_rate(name, f, "probability")
    cur = res.curves
    keys = [c for c in ("stage", "group") if c in cur.columns]
    total = cur.groupby([*keys, "t"], observed=True, sort=False)["probability"].sum()
    np.testing.assert_allclose(total.to_numpy(), 1.0, atol=1e-9, err_msg=f"{name}: sum != 1")
    still = set(res.outcomes[-1:])  # the last outcome is the still-open state
    for key, g in cur.groupby([*keys, "outcome"], observed=True, sort=False):
        p = g["probability"].to_numpy()
        if key[-1] not in still:
            assert (np.diff(p) >= -1e-9).all(), f"{name}: cumulative incidence decreases {key}"


def check_flow(res: Any) -> None:
    t = res.frame.set_index("component")
    change = t[t["role"] == "change"]
    for col in ("count", "amount"):
        assert np.isclose(
            t.loc["open_start", col] + change[col].sum(), t.loc["open_end", col], atol=1e-6
        ), f"flow does not balance in {col}"
    pdl = res.per_deal
    comps = [c for c in change.index if not c.startswith("moved")]
    for col in ("count", "amount"):
        total = pdl[f"open_start_{col}"] + sum(pdl[f"{c}_{col}"] for c in comps)
        np.testing.assert_allclose(total, pdl[f"open_end_{col}"], atol=1e-6)
    bs = res.by_stage
    per_stage = bs.groupby("component", sort=False)["count"].sum()
    moves = per_stage[[c for c in per_stage.index if c.startswith("moved_")]]
    assert moves.sum() == 0, "moves between stages do not net to zero"


def check_all(data: fs.FunnelData, results: dict[str, Any]) -> None:
    """Every check on the results of :func:`run_all`."""
    for name, res in results.items():
        no_infinities(name, res.frame)
    check_rate("conversion", results["conversion"].frame, "conversion")
    check_rate("win_rate", results["win_rate"].frame, "win_rate")
    check_survival(results["time_in_stage"])
    check_competing("stage_outcomes", results["stage_outcomes"])
    check_competing("cycle_time", results["cycle_time"])
    snap = results["snapshot"]
    assert len(snap.frame) == int((data.deals["outcome"] == "open").sum())
    age, in_stage = snap.frame["age_days"], snap.frame["age_in_stage_days"]
    assert (in_stage.dropna() >= 0).all() and (in_stage <= age + 1e-9).all()
    check_flow(results["flow"])
    fb = results["forecast_bookings"].frame
    ordered("forecast quantiles", fb["p10"], fb["p50"], fb["p90"], tol=1e-6)
    assert (fb["expected"].dropna() >= 0).all()
    assert (fb["expected_wins"] <= fb["n_deals"] + 1e-9).all()
    wp = results["weighted_pipeline"].frame
    in_unit_interval("weighted_pipeline.probability", wp["probability"])  # (or NaN, noted)
    np.testing.assert_allclose(
        wp["weighted_amount"].to_numpy(dtype=float),
        (wp["amount"] * wp["probability"]).to_numpy(dtype=float),
    )
