"""Speed of the survival analyses on a large simulated funnel.

Times, on ``simulate(N, layout="events")`` read into FunnelData:

- ``time_in_stage(data)`` and ``stage_outcomes(data)`` over every open stage
  (the issue's figure: both together), and the same with ``by="segment"``;
- building the tidy ``.curves`` tables (done on first access, timed apart);
- ``cycle_time(data)``.

The simulated export is cached in ``benchmarks/cache/`` (git-ignored). Prints
the figures and writes them to ``benchmarks/results/survival_speed.json``.

Usage: ``python benchmarks/survival_speed.py [--deals 1000000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import pandas as pd

import funnelstats as fs
from funnelstats.datasets import simulate

HERE = Path(__file__).parent
CACHE = HERE / "cache"
RESULTS = HERE / "results"
SEED = 20240501


def load(n: int) -> tuple[fs.FunnelData, float, float]:
    """The simulated funnel (from the cache when there), with simulate and ingest seconds."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"survival_sim_{n}_{SEED}.parquet"
    blank = simulate(1, layout="events")  # same defaults: the pipeline and the export date
    t0 = time.perf_counter()
    if path.exists():
        export = pd.read_parquet(path)
    else:
        export = simulate(n, seed=SEED, layout="events").export
        export.to_parquet(path)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = fs.read_events(export, pipeline=blank.pipeline(), exported_at=blank.truth.exported_at)
    _ = data.arrays, data.deals  # derive the tables once, as any analysis would
    t_ingest = time.perf_counter() - t0
    return data, t_sim, t_ingest


def timed(fn, repeat: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deals", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    data, t_sim, t_ingest = load(args.deals)
    print(f"{data!r}")
    print(f"simulate/load {t_sim:.1f} s, ingest {t_ingest:.1f} s (not part of the figures below)")

    cases = {
        "time_in_stage + stage_outcomes (all stages)": lambda: (
            fs.time_in_stage(data),
            fs.stage_outcomes(data),
        ),
        "time_in_stage + stage_outcomes (all stages, by segment)": lambda: (
            fs.time_in_stage(data, by="segment"),
            fs.stage_outcomes(data, by="segment"),
        ),
        "time_in_stage (all stages)": lambda: fs.time_in_stage(data),
        "stage_outcomes (all stages)": lambda: fs.stage_outcomes(data),
        "cycle_time": lambda: fs.cycle_time(data),
    }
    results = {}
    keep = None
    for name, fn in cases.items():
        times, out = timed(fn, args.repeat)
        if keep is None:
            keep = out
        results[name] = {"best_s": min(times), "median_s": statistics.median(times)}
        print(f"{name:58s} best {min(times):6.2f} s   median {statistics.median(times):6.2f} s")

    tis, so = keep  # type: ignore[misc]
    t0 = time.perf_counter()
    n_curve = len(tis.curves)
    t_curves_km = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_inc = len(so.curves)
    t_curves_aj = time.perf_counter() - t0
    results["time_in_stage .curves (first access)"] = {"s": t_curves_km, "rows": n_curve}
    results["stage_outcomes .curves (first access)"] = {"s": t_curves_aj, "rows": n_inc}
    print(f"{'time_in_stage .curves (first access)':58s} {t_curves_km:6.2f} s  ({n_curve:,} rows)")
    print(f"{'stage_outcomes .curves (first access)':58s} {t_curves_aj:6.2f} s  ({n_inc:,} rows)")
    print(tis.frame[["stage", "n_entered", "n_censored", "median", "naive_mean_closed"]])

    RESULTS.mkdir(exist_ok=True)
    out = {
        "benchmark": "survival_speed",
        "deals": data.n_deals,
        "stage_entries": len(data.events),
        "seed": SEED,
        "repeat": args.repeat,
        "simulate_or_load_s": t_sim,
        "ingest_s": t_ingest,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "timings": results,
    }
    path = RESULTS / "survival_speed.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
