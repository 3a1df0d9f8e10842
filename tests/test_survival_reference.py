"""The survival analyses against lifelines and statsmodels on the same data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import AalenJohansenFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test, proportional_hazard_test
from lifelines.utils import (
    median_survival_times,
    qth_survival_times,
    restricted_mean_survival_time,
)
from statsmodels.duration.hazard_regression import PHReg
from statsmodels.duration.survfunc import CumIncidenceRight, survdiff

import funnelstats as fs
from funnelstats import _stays

NS_PER_DAY = _stays.NS_PER_DAY


def _stage_data(data: fs.FunnelData, stage: str, segment: str | None = None):
    """Durations (days), outcome codes and segments of the stays in ``stage``."""
    s = _stays.stays(data)
    code = data.pipeline.code(stage)
    m = s.stage == code
    seg = data.deals["Segment"].astype(str).to_numpy()[s.deal]
    if segment is not None:
        m &= seg == segment
    return s.duration_ns[m] / NS_PER_DAY, s.outcome[m].astype(int), seg[m]


def _sel(frame: pd.DataFrame, **where: str) -> pd.DataFrame:
    m = np.ones(len(frame), dtype=bool)
    for k, v in where.items():
        m &= (frame[k].astype(str) == v).to_numpy()
    return frame[m]


@pytest.mark.filterwarnings("ignore:Approximating using")
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_kaplan_meier_equals_lifelines(sample, alpha):
    r = fs.time_in_stage(sample, by="Segment", alpha=alpha)
    for stage in sample.pipeline.stages:
        for seg in ("Enterprise", "Mid-Market", "SMB"):
            t, outcome, _ = _stage_data(sample, stage, seg)
            kmf = KaplanMeierFitter(alpha=alpha).fit(t, outcome != 0)
            c = _sel(r.curves, stage=stage, group=seg)
            sf = kmf.survival_function_.iloc[:, 0]
            np.testing.assert_allclose(c["survival"], sf.reindex(c["t"]).to_numpy(), atol=1e-9)
            ci = kmf.confidence_interval_.reindex(c["t"])
            pos = c["survival"].to_numpy() > 0
            np.testing.assert_allclose(
                c["ci_lower"].to_numpy()[pos], ci.iloc[:, 0].to_numpy()[pos], atol=1e-9
            )
            np.testing.assert_allclose(
                c["ci_upper"].to_numpy()[pos], ci.iloc[:, 1].to_numpy()[pos], atol=1e-9
            )
            et = kmf.event_table.reindex(c["t"])
            np.testing.assert_array_equal(c["at_risk"].to_numpy(), et["at_risk"].to_numpy())
            f = _sel(r.frame, stage=stage, group=seg).iloc[0]
            # medians and quartiles exact
            assert f["median"] == kmf.median_survival_time_
            lo, hi = median_survival_times(kmf.confidence_interval_).iloc[0]
            assert f["median_ci_lower"] == lo
            assert f["median_ci_upper"] == hi
            assert f["q25"] == kmf.percentile(0.75)
            assert f["q75"] == kmf.percentile(0.25)
            # quartile intervals: lifelines' quantile of each confidence curve
            for col, q in (("q25", 0.75), ("q75", 0.25)):
                lo_q, hi_q = qth_survival_times(q, kmf.confidence_interval_).iloc[0]
                assert (f[f"{col}_ci_lower"], f[f"{col}_ci_upper"]) == (lo_q, hi_q)
            assert f["restricted_mean"] == pytest.approx(
                restricted_mean_survival_time(kmf, t=f["tau"]), abs=1e-9
            )
            assert f["n_entered"] == len(t)
            assert f["n_exited"] == int((outcome != 0).sum())


def _rmst_variance_by_loop(t, observed, tau):
    """Klein & Moeschberger (2003) eq. 4.5.1, written out step by step."""
    times = np.unique(t[observed & (t <= tau)])
    s, surv = 1.0, []
    rows = []
    for u in times:
        n = int((t >= u).sum())
        d = int(((t == u) & observed).sum())
        s *= 1 - d / n
        surv.append(s)
        rows.append((u, n, d))
    var = 0.0
    for j, (_u, n, d) in enumerate(rows):
        # area under S from u to tau
        knots = [*times[j:], tau]
        area = sum(surv[j + i] * (knots[i + 1] - knots[i]) for i in range(len(knots) - 1))
        if n > d:
            var += area**2 * d / (n * (n - d))
    return var


def test_restricted_mean_interval_by_loop(sample):
    r = fs.time_in_stage(sample, stage="Negotiation", by="Segment", tau=40.0)
    z = 1.959963984540054
    for seg in ("Enterprise", "SMB"):
        t, outcome, _ = _stage_data(sample, "Negotiation", seg)
        var = _rmst_variance_by_loop(t, outcome != 0, 40.0)
        f = _sel(r.frame, group=seg).iloc[0]
        half = (f["restricted_mean_ci_upper"] - f["restricted_mean_ci_lower"]) / 2
        assert half == pytest.approx(z * np.sqrt(var), rel=1e-9)


def test_logrank_equals_lifelines_and_statsmodels(sample):
    r = fs.time_in_stage(sample, by="Segment")
    assert r.logrank is not None
    for stage in sample.pipeline.stages:
        t, outcome, seg = _stage_data(sample, stage)
        ref = multivariate_logrank_test(t, seg, outcome != 0)
        got = r.logrank[r.logrank["stage"] == stage].iloc[0]
        assert got["statistic"] == pytest.approx(ref.test_statistic, rel=1e-9)
        assert got["p_value"] == pytest.approx(ref.p_value, rel=1e-6, abs=1e-300)
        assert got["df"] == ref.degrees_of_freedom == 2
        stat, _ = survdiff(t, (outcome != 0).astype(int), seg)
        assert got["statistic"] == pytest.approx(stat, rel=1e-9)


def test_aalen_johansen_equals_lifelines_without_ties(sample):
    r = fs.stage_outcomes(sample, "Qualification")
    t, outcome, _ = _stage_data(sample, "Qualification")
    assert len(np.unique(t[outcome != 0])) == int((outcome != 0).sum())  # no ties
    c = r.curves
    for code, name in ((1, "advanced"), (2, "lost")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ajf = AalenJohansenFitter(calculate_variance=True, seed=0).fit(
                t, outcome, event_of_interest=code
            )
        ref = ajf.cumulative_density_.iloc[:, 0]
        ours = c[c["outcome"] == name]
        np.testing.assert_allclose(
            ours["probability"].to_numpy(), ref.reindex(ours["t"]).to_numpy(), atol=1e-9
        )
        ci = ajf.confidence_interval_.reindex(ours["t"])
        # lifelines' interval is NaN where the incidence is 0 and (0 * inf) where the last
        # stay leaves; ours is 0 and finite there
        finite = np.isfinite(ci.to_numpy()).all(axis=1)
        odd = np.flatnonzero(~finite)
        assert set(odd) <= {len(finite) - 1} | set(np.flatnonzero(ours["probability"] == 0))
        pos = (ours["probability"].to_numpy() > 0) & finite
        np.testing.assert_allclose(
            ours["ci_lower"].to_numpy()[pos], ci.iloc[:, 0].to_numpy()[pos], atol=1e-7
        )
        np.testing.assert_allclose(
            ours["ci_upper"].to_numpy()[pos], ci.iloc[:, 1].to_numpy()[pos], atol=1e-7
        )


def test_aalen_johansen_with_ties_equals_statsmodels(hand10, sample):
    # hand10's Lead has an advance and a loss tied at 4 days; statsmodels keeps ties
    for data, stage in ((hand10, "Lead"), (hand10, "Qualified"), (sample, "Proposal")):
        s = _stays.stays(data)
        m = s.stage == data.pipeline.code(stage)
        t = s.duration_ns[m] / NS_PER_DAY
        status = s.outcome[m].astype(int)
        ref = CumIncidenceRight(t, status)
        got = fs.stage_outcomes(data, stage).at(ref.times)
        for j, name in enumerate(("advanced", "lost", "moved back")):
            if j >= len(ref.cinc):
                continue
            ours = got[got["outcome"] == name]["probability"].to_numpy()
            np.testing.assert_allclose(ours, ref.cinc[j], atol=1e-12)


def test_cycle_time_equals_statsmodels_and_lifelines(sample):
    r = fs.cycle_time(sample, by="Segment")
    deals = sample.deals
    created = pd.DatetimeIndex(deals["created_at"]).asi8
    closed = pd.DatetimeIndex(deals["closed_at"]).asi8
    outcome = deals["outcome"].astype(str).to_numpy()
    status = np.select([outcome == "won", outcome == "lost"], [1, 2], 0)
    end = np.where(status > 0, closed, sample.exported_at.value)
    t = (end - created) / NS_PER_DAY
    seg = deals["Segment"].astype(str).to_numpy()
    for g in ("Enterprise", "SMB"):
        m = seg == g
        ref = CumIncidenceRight(t[m], status[m])
        got = r.at(ref.times)
        got = got[got["group"] == g]
        for j, name in enumerate(("won", "lost")):
            np.testing.assert_allclose(
                got[got["outcome"] == name]["probability"].to_numpy(), ref.cinc[j], atol=1e-12
            )
        kmf = KaplanMeierFitter().fit(t[m], status[m] > 0)
        op = got[got["outcome"] == "open"]
        np.testing.assert_allclose(
            op["probability"].to_numpy(), kmf.survival_function_at_times(ref.times), atol=1e-12
        )


def test_cox_equals_statsmodels(sample):
    r = fs.stage_hazards(sample, "Proposal", covariates=["Segment", "amount", "LeadSource"])
    d = r.design
    names = r.frame["term"].tolist()
    ref = PHReg(d["duration"], d[names], status=d["advanced"], ties="efron").fit()
    np.testing.assert_allclose(r.frame["coef"], ref.params, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(r.frame["se"], ref.bse, rtol=1e-4)
    np.testing.assert_allclose(r.frame["hazard_ratio"], np.exp(ref.params), rtol=1e-5)
    ci = np.exp(ref.conf_int(alpha=0.05))
    np.testing.assert_allclose(r.frame["ci_lower"], ci[:, 0], rtol=1e-4)
    np.testing.assert_allclose(r.frame["ci_upper"], ci[:, 1], rtol=1e-4)
    # the design: advance is the event, every other ending is censored
    t, outcome, _ = _stage_data(sample, "Proposal")
    assert d["advanced"].sum() == (outcome == 1).sum()
    np.testing.assert_allclose(np.sort(d["duration"]), np.sort(t))
    # the reported check is lifelines' test on the same fit
    ph = proportional_hazard_test(r.model, d, time_transform="rank").summary
    np.testing.assert_allclose(r.ph_test["p_value"], ph.loc[names, "p"].to_numpy())


def test_restricted_mean_interval_when_the_last_stays_all_leave(sample):
    # with tau at the longest stay the last row has n == d: its term is 0 (the area after
    # it is 0), not 0 * inf
    r = fs.time_in_stage(sample)
    f = r.frame
    assert np.isfinite(f["restricted_mean_ci_lower"]).all()
    assert np.isfinite(f["restricted_mean_ci_upper"]).all()
    row = f[f["stage"] == "Prospecting"].iloc[0]
    t, outcome, _ = _stage_data(sample, "Prospecting")
    assert row["tau"] == t.max()
    var = _rmst_variance_by_loop(t, outcome != 0, row["tau"])
    half = (row["restricted_mean_ci_upper"] - row["restricted_mean_ci_lower"]) / 2
    assert half == pytest.approx(1.959963984540054 * np.sqrt(var), rel=1e-9)
