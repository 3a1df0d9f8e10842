"""Backtest of the bookings forecast on simulated funnels with known truth.

Simulates three years of deals at a steady arrival rate, then at monthly cut-offs
over the last two years (each leaving a full horizon before the export) compares
three forecasts of the bookings won in the next ``--horizon``:

- ``forecast_bookings`` (funnelstats), through ``funnelstats.backtest``;
- the weighted pipeline (the CRM's stage probabilities x amount, deals expected to
  close in the horizon), the baseline;
- the *oracle*: the expectation under the simulator's true parameters, given each
  open deal's true segment, stage and days in stage (``benchmarks/_oracle.py``).
  Its error is pure luck, the floor for every method; a forecast's distance from
  it is that forecast's own error.

Per seed: WAPE, bias and P10-P90 coverage of each, and the root mean square
distance of funnelstats and of the baseline from the oracle. Pooled over seeds:
the same, and the per-seed WAPE difference (funnelstats - baseline) with its
standard error across seeds (seeds are independent; the cut-offs of one seed are
not, as their windows overlap and share the fitted history). Calibration of the
per-deal probabilities uses the first seed's open deals at every cut-off against
the simulation's uncensored outcomes. The JSON in benchmarks/results/ is rewritten
after every seed.

    python benchmarks/forecast_backtest.py [--seeds 1 2 ... 40] [--deals 9000] [--days 1095]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _oracle import new_deals_true, p_won_true

import funnelstats as fs
from funnelstats.datasets import simulate


def _oracle(sim, data, cutoffs, h_days, *, paths, n_sims, seed) -> pd.DataFrame:
    rng = np.random.default_rng(10_000 + seed)
    truth = sim.truth
    seg_code = {g.name: i for i, g in enumerate(truth.segments)}
    segment = sim.outcomes.set_index("deal_id")["segment"].map(seg_code)
    new = new_deals_true(truth, h_days, paths=200_000, rng=rng)
    rows = []
    for c in cutoffs:
        snap = fs.snapshot(data, c).frame
        p = p_won_true(
            truth,
            segment.loc[snap["deal_id"]].to_numpy(),
            snap["stage"].cat.codes.to_numpy(),
            snap["age_in_stage_days"].to_numpy(),
            h_days,
            paths=paths,
            rng=rng,
        )
        amt = np.nan_to_num(snap["amount"].to_numpy(dtype=float))
        sims = amt @ (rng.random((len(p), n_sims)) < p[:, None]) + new.sample(n_sims, rng)
        rows.append(
            {
                "oracle": float(amt @ p) + new.expected,
                "oracle_p10": float(np.quantile(sims, 0.1)),
                "oracle_p90": float(np.quantile(sims, 0.9)),
            }
        )
    return pd.DataFrame(rows)


def _metrics(f: pd.DataFrame) -> dict:
    y = f["actual"].to_numpy()
    scale = y.mean()

    def wape(x):
        return float(np.abs(y - f[x]).sum() / y.sum())

    def bias(x):
        return float((f[x] - y).sum() / y.sum())

    def rms(x):
        return float(np.sqrt(np.mean((f[x] - f["oracle"]) ** 2)) / scale)

    return {
        "wape_funnelstats": wape("expected"),
        "wape_weighted_pipeline": wape("baseline"),
        "wape_oracle": wape("oracle"),
        "bias_funnelstats": bias("expected"),
        "bias_weighted_pipeline": bias("baseline"),
        "bias_oracle": bias("oracle"),
        "coverage_funnelstats": float(f["covered"].mean()),
        "coverage_oracle": float(((f["oracle_p10"] <= y) & (y <= f["oracle_p90"])).mean()),
        "rms_to_oracle_funnelstats": rms("expected"),
        "rms_to_oracle_weighted_pipeline": rms("baseline"),
    }


def _paired(per_seed: list[dict], a: str, b: str) -> dict:
    d = np.array([m[a] - m[b] for m in per_seed])
    n = len(d)
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(d.mean()), "se": se, "seeds_below": int((d < 0).sum()), "seeds": n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deals", type=int, default=9000)
    ap.add_argument("--days", type=float, default=1095.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 41)))
    ap.add_argument("--horizon", default="90D")
    ap.add_argument("--n-sims", type=int, default=4000)
    ap.add_argument("--n-boot", type=int, default=20)
    ap.add_argument("--age-classes", type=int, default=1)
    ap.add_argument("--by", default=None)
    ap.add_argument("--amount-bands", type=int, default=5)
    ap.add_argument("--oracle-paths", type=int, default=400)
    ap.add_argument("--no-calibration", action="store_true")
    ap.add_argument("--out", default="forecast_backtest.json")
    args = ap.parse_args()

    h = pd.Timedelta(args.horizon)
    h_days = h / pd.Timedelta(days=1)
    path = Path(__file__).parent / "results" / args.out
    path.parent.mkdir(exist_ok=True)
    per_seed, frames = [], []
    seconds = 0.0
    first = None
    out: dict = {}
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
            age_classes=args.age_classes,
            n_boot=args.n_boot,
            progress=False,
        )
        seconds += time.perf_counter() - t0
        orc = _oracle(
            sim, data, cutoffs, h_days, paths=args.oracle_paths, n_sims=args.n_sims, seed=seed
        )
        f = pd.concat([bt.frame, orc], axis=1).assign(seed=seed)
        m = {"seed": seed, "cutoffs": len(f), **_metrics(f)}
        m["pinball_funnelstats"], m["pinball_weighted_pipeline"] = bt.metrics["pinball"].tolist()
        per_seed.append(m)
        frames.append(f)
        print(
            f"seed {seed:3d}: WAPE funnelstats {m['wape_funnelstats']:.3f}  weighted pipeline "
            f"{m['wape_weighted_pipeline']:.3f}  oracle {m['wape_oracle']:.3f} | coverage "
            f"{m['coverage_funnelstats']:.2f} (oracle {m['coverage_oracle']:.2f}) | bias "
            f"{m['bias_funnelstats']:+.3f} / {m['bias_weighted_pipeline']:+.3f} | rms to oracle "
            f"{m['rms_to_oracle_funnelstats']:.3f} / {m['rms_to_oracle_weighted_pipeline']:.3f}",
            flush=True,
        )
        if first is None:
            first = (sim, data, cutoffs)
        allf = pd.concat(frames, ignore_index=True)
        cov = np.array([s["coverage_funnelstats"] for s in per_seed])
        pooled = {
            **_metrics(allf),
            "cutoffs": len(allf),
            "seeds": len(per_seed),
            "coverage_se_across_seeds": float(cov.std(ddof=1) / np.sqrt(len(cov)))
            if len(cov) > 1
            else float("nan"),
            "wape_difference_funnelstats_minus_baseline": _paired(
                per_seed, "wape_funnelstats", "wape_weighted_pipeline"
            ),
            "wape_difference_oracle_minus_baseline": _paired(
                per_seed, "wape_oracle", "wape_weighted_pipeline"
            ),
            "rms_to_oracle_difference": _paired(
                per_seed, "rms_to_oracle_funnelstats", "rms_to_oracle_weighted_pipeline"
            ),
        }
        out = {
            "deals": args.deals,
            "days": args.days,
            "seeds": args.seeds[: len(per_seed)],
            "horizon": args.horizon,
            "n_sims": args.n_sims,
            "n_boot": args.n_boot,
            "age_classes": args.age_classes,
            "by": args.by,
            "amount_bands": args.amount_bands,
            "seconds_backtest": seconds,
            "pooled": pooled,
            "per_seed": per_seed,
            "per_cutoff": allf.assign(cutoff=allf["cutoff"].astype(str)).to_dict(orient="records"),
        }
        path.write_text(json.dumps(out, indent=2, default=float))

    pooled = out["pooled"]
    print(f"\n== pooled over {pooled['seeds']} seeds, {pooled['cutoffs']} cut-offs")
    for k, v in pooled.items():
        if isinstance(v, dict):
            print(
                f"{k:44s} {v['mean']:+.4f} (SE {v['se']:.4f}; below 0 in "
                f"{v['seeds_below']}/{v['seeds']} seeds)"
            )
        else:
            print(f"{k:44s} {v:.4f}" if isinstance(v, float) else f"{k:44s} {v}")
    n_fc = pooled["cutoffs"]
    print(f"backtest: {n_fc} cut-offs in {seconds:.0f} s ({seconds / n_fc:.2f} s each)")

    if not args.no_calibration:
        sim, data, cutoffs = first
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
                age_classes=args.age_classes,
                n_boot=0,
            )
            t = truth.loc[fc.deals["deal_id"]]
            won = (t["outcome"] == "won") & (t["closed_at"] <= c + h)
            preds.append(fc.deals["p_won"].to_numpy())
            obs.append(won.to_numpy())
        rel = fs.reliability(np.concatenate(preds), np.concatenate(obs))
        print("\nCalibration of per-deal P(won within the horizon), open deals at every cut-off:")
        print(rel.frame.to_string(index=False, float_format="{:.3f}".format))
        print(f"Brier score {rel.brier:.4f}; deals {int(rel.frame['n'].sum()):,}")
        out["reliability"] = rel.frame.to_dict(orient="records")
        out["brier"] = rel.brier
        path.write_text(json.dumps(out, indent=2, default=float))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
