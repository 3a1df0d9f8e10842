"""Accuracy of the survival estimators over repeated simulations with known truth.

For ``--reps`` simulated funnels (``simulate(N, seed=i, layout="events")``)
it records, per open stage and segment (where the simulator's truth is what the
estimator targets):

- the Kaplan–Meier median's error and whether its 95% interval covers the true
  median (``SimulationTruth.median_time_in_stage(segment)``);
- whether the restricted mean's 95% interval covers the true restricted mean
  (the integral of the true survival curve up to the same tau);
- whether the 95% intervals of the Aalen–Johansen cumulative incidence of
  advancing and of being lost at 10 and 20 days cover the truth;

and, pooled over segments on one large simulation, the naive mean of closed
stays beside the Kaplan–Meier figures and the truth (the bias the issue asks to
show). Prints the figures and writes ``benchmarks/results/survival_accuracy.json``.

Usage: ``python benchmarks/survival_accuracy.py [--reps 200] [--deals 2000]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import integrate

import funnelstats as fs
from funnelstats.datasets import simulate

RESULTS = Path(__file__).parent / "results"


def one(seed: int, n: int) -> pd.DataFrame:
    sim = simulate(n, seed=seed, layout="events")
    d = sim.funnel()
    f = fs.time_in_stage(d, by="segment").frame
    truth = sim.truth
    rows = []
    for _, r in f.iterrows():
        st, g = str(r["stage"]), str(r["group"])
        med = truth.median_time_in_stage(g)[st]
        rm = integrate.quad(lambda x, s=st, gg=g: truth.survival(s, x, gg), 0, r["tau"])[0]
        rows.append(
            {
                "seed": seed,
                "stage": st,
                "group": g,
                "n": r["n_entered"],
                "median": r["median"],
                "true_median": med,
                "median_covered": r["median_ci_lower"] <= med <= r["median_ci_upper"],
                "rmst_covered": r["restricted_mean_ci_lower"]
                <= rm
                <= r["restricted_mean_ci_upper"],
            }
        )
    a = fs.stage_outcomes(d, by="segment").at([10.0, 20.0])
    cover = []
    for _, r in a.iterrows():
        name = str(r["outcome"])
        if name not in ("advanced", "lost"):
            continue
        tv = truth.cumulative_incidence(
            str(r["stage"]), r["t"], "advance" if name == "advanced" else "lost", str(r["group"])
        ).item()
        cover.append(r["ci_lower"] <= tv <= r["ci_upper"])
    out = pd.DataFrame(rows)
    out["cif_coverage"] = float(np.mean(cover))
    return out


def bias_table(n: int, seed: int) -> pd.DataFrame:
    sim = simulate(n, seed=seed, layout="events")
    d = sim.funnel()
    f = fs.time_in_stage(d).frame.set_index("stage")
    f = f.rename(index=str)
    return pd.DataFrame(
        {
            "true_median": sim.truth.median_time_in_stage(),
            "km_median": f["median"],
            "median_ci_lower": f["median_ci_lower"],
            "median_ci_upper": f["median_ci_upper"],
            "true_mean": sim.truth.mean_time_in_stage(),
            "restricted_mean": f["restricted_mean"],
            "tau": f["tau"],
            "naive_mean_closed": f["naive_mean_closed"],
            "share_open": f["n_censored"] / f["n_entered"],
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--deals", type=int, default=2000)
    ap.add_argument("--big", type=int, default=100_000, help="deals for the bias table")
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs = pd.concat([one(i, args.deals) for i in range(args.reps)], ignore_index=True)
    per = runs.groupby(["stage", "group"], sort=False).agg(
        n_mean=("n", "mean"),
        true_median=("true_median", "first"),
        median_mean=("median", "mean"),
        median_sd=("median", "std"),
        median_coverage=("median_covered", "mean"),
        rmst_coverage=("rmst_covered", "mean"),
    )
    per["median_bias"] = per["median_mean"] - per["true_median"]
    summary = {
        "median_ci_coverage": float(runs["median_covered"].mean()),
        "restricted_mean_ci_coverage": float(runs["rmst_covered"].mean()),
        "cif_ci_coverage": float(runs.groupby("seed")["cif_coverage"].first().mean()),
        "max_abs_median_bias_in_sd": float((per["median_bias"].abs() / per["median_sd"]).max()),
    }
    big = bias_table(args.big, seed=1)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"{args.reps} simulations of {args.deals} deals, per stage and segment:")
        print(per.round(3))
        print({k: round(v, 4) for k, v in summary.items()})
        print(f"\npooled over segments, one simulation of {args.big:,} deals:")
        print(big.round(2))
    RESULTS.mkdir(exist_ok=True)
    out = {
        "benchmark": "survival_accuracy",
        "reps": args.reps,
        "deals": args.deals,
        "nominal_level": 0.95,
        "summary": summary,
        "per_stage_segment": per.reset_index().to_dict(orient="records"),
        "bias_table_deals": args.big,
        "bias_table": big.reset_index(names="stage").to_dict(orient="records"),
        "seconds": time.perf_counter() - t0,
    }
    path = RESULTS / "survival_accuracy.json"
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"written {path} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
