"""Backtest of the bookings forecast on a simulated funnel with known truth.

Simulates three years of deals at a steady arrival rate, then at monthly cut-offs
over the last two years (each leaving a full horizon before the export):

- P10–P90 coverage of realised bookings and WAPE, for ``forecast_bookings`` and the
  weighted-pipeline baseline (``funnelstats.backtest``);
- calibration of the per-deal win probabilities: the open deals at every cut-off,
  predicted P(won within the horizon) against the simulation's uncensored truth
  (``Simulation.outcomes``), in deciles.

Prints the figures and writes JSON to benchmarks/results/forecast_backtest.json.

    python benchmarks/forecast_backtest.py [--deals 9000] [--days 1095] [--seeds 7 11 13 17 19]

With several seeds, each simulated data set is backtested on its own and the metrics are
also pooled (WAPE and bias over all cut-offs of all seeds); calibration uses the first seed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

import funnelstats as fs
from funnelstats.datasets import simulate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deals", type=int, default=9000)
    ap.add_argument("--days", type=float, default=1095.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 13, 17, 19])
    ap.add_argument("--horizon", default="90D")
    ap.add_argument("--n-sims", type=int, default=4000)
    ap.add_argument("--by", default=None)
    ap.add_argument("--amount-bands", type=int, default=5)
    args = ap.parse_args()

    h = pd.Timedelta(args.horizon)
    per_seed, frames = [], []
    seconds = 0.0
    first = None
    for seed in args.seeds:
        sim = simulate(args.deals, seed=seed, days=args.days)
        data = sim.funnel()
        start = sim.truth.start + pd.Timedelta(days=365)
        cutoffs = pd.date_range(start, data.exported_at - h, freq="30D")
        t0 = time.perf_counter()
        bt = fs.backtest(
            data,
            cutoffs=cutoffs,
            horizon=h,
            n_sims=args.n_sims,
            seed=seed,
            by=args.by,
            amount_bands=args.amount_bands,
        )
        seconds += time.perf_counter() - t0
        print(f"== seed {seed}: {len(cutoffs)} cut-offs")
        print(bt.metrics.to_string(index=False, float_format="{:.3f}".format))
        per_seed.append({"seed": seed, "metrics": bt.metrics.to_dict(orient="records")})
        frames.append(bt.frame.assign(seed=seed))
        if first is None:
            first = (sim, data, cutoffs)
    allf = pd.concat(frames, ignore_index=True)
    y = allf["actual"].to_numpy()
    pooled = {
        "wape_funnelstats": float(np.abs(y - allf["expected"]).sum() / y.sum()),
        "wape_weighted_pipeline": float(np.abs(y - allf["baseline"]).sum() / y.sum()),
        "bias_funnelstats": float((allf["expected"] - y).sum() / y.sum()),
        "bias_weighted_pipeline": float((allf["baseline"] - y).sum() / y.sum()),
        "coverage_80": float(allf["covered"].mean()),
        "cutoffs": len(allf),
        "seeds_where_wape_below_baseline": int(
            sum(m["metrics"][0]["wape"] < m["metrics"][1]["wape"] for m in per_seed)
        ),
    }
    print("\n== pooled over seeds")
    for k, v in pooled.items():
        print(f"{k:32s} {v:.3f}" if isinstance(v, float) else f"{k:32s} {v}")
    print(f"{len(allf)} cut-offs in {seconds:.1f} s ({seconds / len(allf):.2f} s each)")
    sim, data, cutoffs = first

    # calibration against the uncensored truth
    truth = sim.outcomes.set_index("deal_id")
    preds, obs = [], []
    for c in cutoffs:
        fc = fs.forecast_bookings(
            data,
            as_of=c,
            horizon=h,
            n_sims=1,
            seed=0,
            include_new=False,
            by=args.by,
            amount_bands=args.amount_bands,
        )
        t = truth.loc[fc.deals["deal_id"]]
        won = (t["outcome"] == "won") & (t["closed_at"] <= c + h)
        preds.append(fc.deals["p_won"].to_numpy())
        obs.append(won.to_numpy())
    rel = fs.reliability(np.concatenate(preds), np.concatenate(obs))
    print("\nCalibration of per-deal P(won within the horizon), open deals at every cut-off:")
    print(rel.frame.to_string(index=False, float_format="{:.3f}".format))
    print(f"Brier score {rel.brier:.4f}; deals {int(rel.frame['n'].sum()):,}")

    out = {
        "deals": args.deals,
        "days": args.days,
        "seeds": args.seeds,
        "horizon": args.horizon,
        "n_sims": args.n_sims,
        "by": args.by,
        "amount_bands": args.amount_bands,
        "seconds": seconds,
        "pooled": pooled,
        "per_seed": per_seed,
        "per_cutoff": allf.assign(cutoff=allf["cutoff"].astype(str)).to_dict(orient="records"),
        "reliability": rel.frame.to_dict(orient="records"),
        "brier": rel.brier,
    }
    path = Path(__file__).parent / "results" / "forecast_backtest.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
