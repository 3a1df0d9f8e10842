"""Make the report of a cached benchmark export once, for a profiler or a comparison.

    python benchmarks/profile_report.py 1000000 [--layout core] [--html out.html] [--sections]

Ingests the cached CSV (generate it first with ``python benchmarks/run.py --sizes N``), makes
the report, renders the HTML and the PDF, and prints the time of each part, the peak resident
memory and a SHA-256 of the HTML (the generation time is not recorded, so the same code, data
and seed give the same digest). ``--html`` also writes the HTML; ``--sections`` prints each
section's build time; ``--sequential`` keeps the report in one process.

    .venv/bin/pyinstrument -r text -o report.txt benchmarks/profile_report.py 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _worker  # noqa: E402


def _pss_mb(pid: int) -> float:
    """Proportional set size of ``pid`` and its descendants (Linux; 0 elsewhere): memory
    shared between a process and its forked child is counted once."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) / 1024
                break
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _pss_mb(int(child))
    except (OSError, ValueError):
        pass
    return total


class _PssPeak(threading.Thread):
    """Samples :func:`_pss_mb` of this process tree every ``every`` seconds."""

    def __init__(self, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.every, self.peak, self.stop = every, 0.0, threading.Event()
        self.label = "ingest"
        self.peaks: dict[str, float] = {}

    def run(self) -> None:
        while not self.stop.wait(self.every):
            now = _pss_mb(os.getpid())
            self.peak = max(self.peak, now)
            self.peaks[self.label] = max(self.peaks.get(self.label, 0.0), now)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("deals", type=int)
    p.add_argument("--layout", default="core")
    p.add_argument("--cache-dir", type=Path, default=HERE / "cache")
    p.add_argument("--html", type=Path, default=None)
    p.add_argument("--n-sims", type=int, default=10_000)
    p.add_argument("--sections", action="store_true", help="time each section")
    p.add_argument("--sequential", action="store_true", help="one process, whatever the size")
    args = p.parse_args()
    folder, meta = _worker.cached_export(args.cache_dir, args.layout, args.deals)

    import funnelstats as fs

    if args.sequential:
        import funnelstats.report

        funnelstats.report.PARALLEL_DEALS = 10**18

    pss = _PssPeak()
    pss.start()
    t0 = time.perf_counter()
    pipe = fs.Pipeline.from_toml(folder / "pipeline.toml")
    data = fs.read_salesforce(
        folder / "OpportunityHistory.csv", pipeline=pipe, exported_at=meta["exported_at"]
    )
    t1 = time.perf_counter()
    progress = None
    if args.sections:
        marks: list[tuple[str, float]] = []

        def progress(done: int, total: int, label: str) -> None:
            now = time.perf_counter()
            if marks:
                print(f"  {marks[-1][0]:<24} {now - marks[-1][1]:6.2f} s", file=sys.stderr)
            marks.append((label, now))
            pss.label = label

    rep = fs.make_report(data, n_sims=args.n_sims, progress=progress)
    t2 = time.perf_counter()
    pss.label = "charts and html"
    html = rep.html()
    t3 = time.perf_counter()
    pss.label = "pdf"
    rep.pdf()
    t4 = time.perf_counter()
    pss.stop.set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"ingest {t1 - t0:.2f} s, analyses {t2 - t1:.2f} s, html {t3 - t2:.2f} s, "
        f"pdf {t4 - t3:.2f} s, total {t4 - t0:.2f} s; peak {peak:,.0f} MB "
        f"(children {peak_children:,.0f} MB; process tree PSS sampled every 0.1 s: "
        f"{pss.peak:,.0f} MB)",
        file=sys.stderr,
    )
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    print(f"cpu {cpu:.2f} s (children {kids.ru_utime + kids.ru_stime:.2f} s)", file=sys.stderr)
    if args.sections:
        print(
            "peak PSS (MB) by step: " + ", ".join(f"{k} {v:,.0f}" for k, v in pss.peaks.items()),
            file=sys.stderr,
        )
    print(f"html sha256 {hashlib.sha256(html.encode()).hexdigest()}", file=sys.stderr)
    if args.html is not None:
        args.html.write_text(html, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
