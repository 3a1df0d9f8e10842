"""Accuracy, interval coverage and speed of funnelstats.conversion on young exports.

Simulates three-month exports (``simulate(n, days=90)``: deals created over 90
days and exported on day 90, so many are still open) over many seeds and
compares each estimate with the simulator's truth:

- ``default``: the simulator's three segments (what a pooled funnel looks like);
- ``homogeneous``: one segment (the Mid-Market parameters), so the pooled estimand
  does not depend on which deals had time to reach a stage;
- ``by_segment``: the default funnel estimated per segment (``by="segment"``),
  against each segment's truth;
- ``bootstrap``: deal-bootstrap intervals (smaller size: they cost n_boot fits).

For each: mean estimate, bias, the spread of the estimate over seeds (one
export's sampling error), the mean reported standard error, and the share of
95% intervals covering the truth; for the naive formulas ("resolved" =
won/(won+lost), "entered" = advanced/entered) their mean and bias. Then the
time of ``conversion`` and ``win_rate`` on a large export.

Prints the figures and writes them to ``benchmarks/results/conversion_coverage.json``.

    python benchmarks/conversion_coverage.py                 # 100 seeds x 20,000 deals
    python benchmarks/conversion_coverage.py --n 5000 --seeds 50 --timing-n 0
    python benchmarks/conversion_coverage.py --seeds 0 --boot-seeds 0 --timing-n 1000000 \
        --out benchmarks/results/conversion_timing_1m.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import funnelstats as fs
from funnelstats.datasets import DEFAULT_SEGMENTS, simulate

RESULTS = Path(__file__).parent / "results"


def _summary(est: np.ndarray, se: np.ndarray, lo: np.ndarray, hi: np.ndarray, truth: np.ndarray):
    cover = (lo <= truth) & (truth <= hi)
    return {
        "truth": truth.round(4).tolist(),
        "mean": np.nanmean(est, axis=0).round(4).tolist(),
        "bias": (np.nanmean(est, axis=0) - truth).round(4).tolist(),
        "sd_over_seeds": np.nanstd(est, axis=0, ddof=1).round(4).tolist(),
        "mean_std_error": np.nanmean(se, axis=0).round(4).tolist(),
        "coverage": cover.mean(axis=0).round(3).tolist(),
    }


def run_scenario(
    name: str,
    n: int,
    seeds: int,
    days: float,
    *,
    segments=None,
    by=None,
    ci_method=None,
    n_boot=200,
) -> dict:
    kw = {"segments": segments} if segments is not None else {}
    conv, conv_se, conv_lo, conv_hi = [], [], [], []
    win, win_se, win_lo, win_hi = [], [], [], []
    resolved, entered, open_share, undecided = [], [], [], []
    truth_c = truth_w = None
    t0 = time.perf_counter()
    for seed in range(seeds):
        sim = simulate(n, seed=seed, days=days, layout="events", **kw)
        data = sim.funnel()
        opts = {"ci_method": ci_method, "n_boot": n_boot, "seed": seed} if ci_method else {}
        c = fs.conversion(data, by=by, **opts).frame
        open_share.append(float((data.deals["outcome"] == "open").mean()))
        if by is None:
            truth_c = sim.truth.conversion().to_numpy()
            truth_w = sim.truth.win_rate().to_numpy()
            w = fs.win_rate(data, **opts).frame
            win.append(w["win_rate"].to_numpy())
            win_se.append(w["std_error"].to_numpy())
            win_lo.append(w["ci_lower"].to_numpy())
            win_hi.append(w["ci_upper"].to_numpy())
            resolved.append(fs.conversion(data, method="resolved").frame["conversion"].to_numpy())
            entered.append(fs.conversion(data, method="entered").frame["conversion"].to_numpy())
        else:
            groups = list(c[by].drop_duplicates())
            truth_c = np.concatenate([sim.truth.conversion(g).to_numpy() for g in groups])
        conv.append(c["conversion"].to_numpy())
        conv_se.append(c["std_error"].to_numpy())
        conv_lo.append(c["ci_lower"].to_numpy())
        conv_hi.append(c["ci_upper"].to_numpy())
        undecided.append(c["undecided"].to_numpy())
    elapsed = time.perf_counter() - t0
    stages = list(sim.truth.stages)
    out = {
        "scenario": name,
        "n_deals": n,
        "seeds": seeds,
        "days": days,
        "ci_method": ci_method or "delta",
        "open_share_at_export": round(float(np.mean(open_share)), 3),
        "rows": stages if by is None else [f"{g}/{s}" for g in groups for s in stages],
        "conversion": _summary(*map(np.vstack, (conv, conv_se, conv_lo, conv_hi)), truth_c),
        "mean_undecided_at_plateau": np.nanmean(np.vstack(undecided), axis=0).round(4).tolist(),
        "seconds": round(elapsed, 1),
    }
    if by is None:
        out["win_rate"] = _summary(*map(np.vstack, (win, win_se, win_lo, win_hi)), truth_w)
        for key, vals in (("naive_resolved", resolved), ("naive_entered", entered)):
            m = np.vstack(vals).mean(axis=0)
            out[key] = {"mean": m.round(4).tolist(), "bias": (m - truth_c).round(4).tolist()}
    return out


def timing(n: int, repeat: int = 3) -> dict:
    sim = simulate(n, seed=1, days=365, layout="events")
    data = sim.funnel()
    _ = data.arrays  # derive the tables once, outside the timings
    out = {"n_deals": n, "stage_entries": len(data.events)}
    cases = {
        "conversion": lambda: fs.conversion(data),
        "conversion_by_segment": lambda: fs.conversion(data, by="segment"),
        "conversion_by_segment_cohort_M": lambda: fs.conversion(data, by="segment", cohort="M"),
        "win_rate": lambda: fs.win_rate(data),
        "win_rate_cohort_M": lambda: fs.win_rate(data, cohort="M"),
        "conversion_bootstrap_200": lambda: fs.conversion(
            data, ci_method="bootstrap", n_boot=200, seed=1
        ),
    }
    for name, fn in cases.items():
        best = float("inf")
        for _ in range(repeat if "bootstrap" not in name else 1):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[f"{name}_s"] = round(best, 3)
    return out


def _print(res: dict) -> None:
    print(
        f"\n== {res['scenario']}: {res['seeds']} seeds x {res['n_deals']:,} deals, "
        f"{res['days']:g}-day export ({res['open_share_at_export']:.0%} of deals open), "
        f"{res['ci_method']} intervals, {res['seconds']} s"
    )
    rows = res["rows"]
    c = res["conversion"]
    print(
        f"{'stage':<28}{'truth':>8}{'mean':>8}{'bias':>8}{'sd':>8}{'se':>8}{'cover':>8}"
        f"{'undec':>8}" + ("" if "naive_resolved" not in res else f"{'resolved':>10}{'entered':>9}")
    )
    for i, r in enumerate(rows):
        line = (
            f"{r:<28}{c['truth'][i]:>8.3f}{c['mean'][i]:>8.3f}{c['bias'][i]:>+8.3f}"
            f"{c['sd_over_seeds'][i]:>8.3f}{c['mean_std_error'][i]:>8.3f}"
            f"{c['coverage'][i]:>8.2f}{res['mean_undecided_at_plateau'][i]:>8.3f}"
        )
        if "naive_resolved" in res:
            line += (
                f"{res['naive_resolved']['mean'][i]:>10.3f}{res['naive_entered']['mean'][i]:>9.3f}"
            )
        print(line)
    if "win_rate" in res:
        w = res["win_rate"]
        print(
            "win rate from stage: truth", w["truth"], "mean", w["mean"], "coverage", w["coverage"]
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="deals per simulated export")
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--days", type=float, default=90.0)
    p.add_argument("--boot-n", type=int, default=1_500, help="deals per export, bootstrap run")
    p.add_argument("--boot-seeds", type=int, default=100)
    p.add_argument("--timing-n", type=int, default=100_000, help="0 to skip the timings")
    p.add_argument("--out", type=Path, default=RESULTS / "conversion_coverage.json")
    args = p.parse_args()

    mid_market = (replace(DEFAULT_SEGMENTS[1], weight=1.0),)
    results = []
    scenarios = (
        ("default", {}),
        ("homogeneous", {"segments": mid_market}),
        ("by_segment", {"by": "segment"}),
    )
    for name, kw in scenarios if args.seeds else ():
        res = run_scenario(name, args.n, args.seeds, args.days, **kw)
        _print(res)
        results.append(res)
    if args.boot_seeds:
        res = run_scenario(
            "bootstrap", args.boot_n, args.boot_seeds, args.days, ci_method="bootstrap"
        )
        _print(res)
        results.append(res)
    timings = timing(args.timing_n) if args.timing_n else None
    if timings:
        print("\n== timings (best of 3, seconds):", json.dumps(timings, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "python": platform.python_version(),
                "funnelstats": fs.__version__,
                "scenarios": results,
                "timings": timings,
            },
            indent=1,
        )
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
