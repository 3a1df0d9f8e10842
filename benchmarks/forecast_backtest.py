"""Backtest of the bookings forecast on a simulated funnel with known truth.

Simulates three years of deals at a steady arrival rate, then at monthly cut-offs
over the last two years (each leaving a full horizon before the export):

- P10–P90 coverage of realised bookings and WAPE, for ``forecast_bookings`` and the
  weighted-pipeline baseline (``funnelstats.backtest``);
- calibration of the per-deal win probabilities: the open deals at every cut-off,
  predicted P(won within the horizon) against the simulation's uncensored truth
  (``Simulation.outcomes``), in deciles.

Prints the figures and writes JSON to benchmarks/results/forecast_backtest.json.

    python benchmarks/forecast_backtest.py [--deals 9000] [--days 1095] [--seed 7]
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
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--horizon", default="90D")
    ap.add_argument("--n-sims", type=int, default=4000)
    ap.add_argument("--by", default=None)
    ap.add_argument("--amount-bands", type=int, default=5)
    args = ap.parse_args()

    sim = simulate(args.deals, seed=args.seed, days=args.days)
    data = sim.funnel()
    h = pd.Timedelta(args.horizon)
    start = sim.truth.start + pd.Timedelta(days=365)
    last = data.exported_at - h
    cutoffs = pd.date_range(start, last, freq="30D")
    t0 = time.perf_counter()
    bt = fs.backtest(
        data,
        cutoffs=cutoffs,
        horizon=h,
        n_sims=args.n_sims,
        seed=args.seed,
        by=args.by,
        amount_bands=args.amount_bands,
    )
    seconds = time.perf_counter() - t0
    print(bt.summary())
    print(f"\n{len(cutoffs)} cut-offs in {seconds:.1f} s ({seconds / len(cutoffs):.2f} s each)")

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
        "seed": args.seed,
        "horizon": args.horizon,
        "n_sims": args.n_sims,
        "by": args.by,
        "amount_bands": args.amount_bands,
        "cutoffs": len(cutoffs),
        "seconds": seconds,
        "metrics": bt.metrics.to_dict(orient="records"),
        "per_cutoff": bt.frame.assign(cutoff=bt.frame["cutoff"].astype(str)).to_dict(
            orient="records"
        ),
        "reliability": rel.frame.to_dict(orient="records"),
        "brier": rel.brier,
    }
    path = Path(__file__).parent / "results" / "forecast_backtest.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
