"""Ingest a cached benchmark CSV once, for a profiler.

    python benchmarks/profile_ingest.py 1000000 [--repeat 1] [--layout core]

Generate the data first with ``python benchmarks/run.py --sizes N --steps ingest``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _worker  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("deals", type=int)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--layout", default="core")
    p.add_argument("--cache-dir", type=Path, default=HERE / "cache")
    args = p.parse_args()
    folder, meta = _worker.cached_export(args.cache_dir, args.layout, args.deals)
    ctx = {
        "csv": str(folder / "OpportunityHistory.csv"),
        "pipeline": str(folder / "pipeline.toml"),
        "exported_at": meta["exported_at"],
    }
    for _ in range(args.repeat):
        t = time.perf_counter()
        _worker._ingest(ctx)
        print(f"ingest {time.perf_counter() - t:.3f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
