"""funnelstats at scale: ingest and analyses timed against pyarrow and DuckDB.

    python benchmarks/run.py                      # 100k and 1M deals (the full run)
    python benchmarks/run.py --deals 20000 --quick
    python benchmarks/run.py --sizes 100000 --repeat 5 --steps ingest,pyarrow_parse

For each size the data is simulated with ``funnelstats.datasets.simulate`` in
the Salesforce OpportunityHistory layout and cached under ``benchmarks/cache/``.
Each step runs in a fresh process (``_worker.py``): set-up untimed, then the
step ``--repeat`` times; the median wall time and the peak resident memory are
recorded. Steps whose function does not exist yet are marked "not available".
A table is printed and the figures are written to
``benchmarks/results/<date>.json``. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _worker  # noqa: E402

DEFAULT_SIZES = (100_000, 1_000_000)
QUICK_SIZES = (2_000,)
CORE = ("ingest", "conversion", "time_in_stage", "stage_outcomes")
PEAK_LIMIT_MB = 1536.0
TARGET_SIZE = 1_000_000


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": _cpu_model(),
        "memory_gb": _mem_total_gb(),
        "load_avg": _load(),
        "env": {
            k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS") if k in os.environ
        },
    }
    versions = {}
    for pkg in ("funnelstats", "numpy", "pandas", "pyarrow", "duckdb", "scipy", "lifelines"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    info["versions"] = versions
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(HERE), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        info["git_commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------- running


def _rss_tree_mb(pid: int) -> float:
    """Resident memory of a process and its children (Linux; 0 elsewhere)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            todo.extend(int(k) for k in kids)
        except (OSError, ValueError):
            continue
    return total


def _call_worker(
    step: str, ctx: dict[str, Any], timeout: float, max_mb: float | None = None
) -> dict[str, Any]:
    """Run one step in a fresh process; stop it past ``timeout`` s or ``max_mb`` MB resident."""
    with tempfile.TemporaryDirectory(prefix="funnelstats-bench-") as tmp:
        ctx_path = Path(tmp) / "ctx.json"
        res_path = Path(tmp) / "result.json"
        err_path = Path(tmp) / "stderr.txt"
        ctx_path.write_text(json.dumps(ctx), encoding="utf-8")
        cmd = [sys.executable, str(HERE / "_worker.py"), step, str(ctx_path), str(res_path)]
        t0 = time.perf_counter()
        with open(err_path, "w", encoding="utf-8") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
            stopped = None
            while proc.poll() is None:
                time.sleep(0.2)
                if time.perf_counter() - t0 > timeout:
                    stopped = ("timeout", f"over {timeout:.0f} s")
                elif max_mb is not None and _rss_tree_mb(proc.pid) > max_mb:
                    stopped = ("over memory limit", f"over {max_mb:,.0f} MB resident")
                if stopped:
                    proc.kill()
                    proc.wait()
                    return {"step": step, "status": stopped[0], "reason": stopped[1]}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not res_path.exists():
            stderr = err_path.read_text(encoding="utf-8", errors="replace")
            return {
                "step": step,
                "status": "error",
                "reason": f"worker exited {proc.returncode}: {stderr.strip()[-2000:]}",
            }
        out = json.loads(res_path.read_text(encoding="utf-8"))
        out["process_wall_s"] = wall
        return out


def dataset(deals: int, layout: str, cache_dir: Path, timeout: float) -> dict[str, Any]:
    """The cached CSV for ``deals`` (generated on first use)."""
    src = _simulate_source()
    key = hashlib.sha1(
        (src + json.dumps([_worker._SIMULATE, _worker.LAYOUTS[layout]], sort_keys=True)).encode(
            "utf-8"
        )
    ).hexdigest()[:10]
    folder = cache_dir / f"salesforce-{layout}-{deals}-{key}"
    meta_path = folder / "meta.json"
    ctx = {
        "deals": deals,
        "layout": layout,
        "csv": str(folder / "OpportunityHistory.csv"),
        "pipeline": str(folder / "pipeline.toml"),
    }
    if meta_path.exists() and Path(ctx["csv"]).exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return {**meta, **ctx, "cached": True}
    folder.mkdir(parents=True, exist_ok=True)
    print(f"  simulating {deals:,} deals into {folder} ...", flush=True)
    res = _call_worker("generate", ctx, timeout)
    if res.get("status") in ("error", "timeout"):
        raise SystemExit(f"could not generate the data: {res.get('reason')}")
    res.pop("process_wall_s", None)
    meta_path.write_text(json.dumps(res, indent=1), encoding="utf-8")
    return {**res, **ctx, "cached": False}


def _simulate_source() -> str:
    spec = importlib.util.find_spec("funnelstats")
    if spec is None or spec.origin is None:
        raise SystemExit("funnelstats is not installed: pip install -e '.[bench]'")
    return (Path(spec.origin).parent / "datasets" / "_simulate.py").read_text(encoding="utf-8")


def run_size(deals: int, args: argparse.Namespace, steps: list[str]) -> dict[str, Any]:
    data = dataset(deals, args.layout, args.cache_dir, args.timeout)
    print(
        f"\n{deals:,} deals, {args.layout} layout ({len(data['columns'])} columns): "
        f"{data['rows']:,} rows ({data['stage_rows']:,} stage changes, "
        f"{data['update_rows']:,} field updates, {data['deleted_rows']:,} deleted), "
        f"{data['csv_bytes'] / 1e6:,.0f} MB CSV{' (cached)' if data['cached'] else ''}",
        flush=True,
    )
    print(header(), flush=True)
    ctx = {
        "csv": data["csv"],
        "pipeline": data["pipeline"],
        "exported_at": data["exported_at"],
        "stages": data["stages"],
        "repeat": args.repeat,
        "n_sims": args.n_sims,
    }
    load_before = _load()
    results: dict[str, Any] = {}
    for step in steps:
        res = _call_worker(step, ctx, args.timeout, args.max_memory_gb * 1024)
        if res.get("status") == "ok":
            times = res["times_s"]
            res["median_s"] = statistics.median(times)
            res["min_s"] = min(times)
            res["runs"] = len(times)
        results[step] = res
        print("  " + _row(step, res), flush=True)
    return {
        "deals": deals,
        "data": {k: v for k, v in data.items() if k not in ("csv", "pipeline")},
        "load_avg_before": load_before,
        "load_avg_after": _load(),
        "steps": results,
    }


# --------------------------------------------------------------------------- targets


def targets(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, evaluated at every size (the 1M figures are the ones that count)."""
    out: list[dict[str, Any]] = []
    for s in sizes:
        st = s["steps"]
        n = s["deals"]
        ing, arrow, duck = (_med(st, k) for k in ("ingest", "pyarrow_parse", "duckdb_query"))
        out.append(
            _target(
                "ingest / pyarrow parse",
                n,
                ing / arrow if ing and arrow else None,
                3.0,
                "x",
            )
        )
        core = [_med(st, k) for k in CORE]
        missing = [k for k, v in zip(CORE, core) if v is None]
        total = sum(v for v in core if v is not None)
        chain = _med(st, "core")
        sum_of_steps = total if not missing else None
        if chain is not None:  # the four steps in one process, as a user runs them
            total, missing = chain, []
        t = _target(
            "ingest+conversion+time_in_stage+stage_outcomes / DuckDB",
            n,
            total / duck if duck and not missing else None,
            1.5,
            "x",
        )
        if missing and duck and total:
            t["partial_value"] = total / duck
            t["note"] = "not available: " + ", ".join(missing)
        elif chain is not None and sum_of_steps is not None and duck:
            t["note"] = (
                f"the four steps in one process; each in its own process: "
                f"{sum_of_steps:.2f} s = {sum_of_steps / duck:.2f}x"
            )
        out.append(t)
        peaks = {
            k: v.get("peak_first_run_mb") or v["peak_rss_mb"]
            for k, v in st.items()
            if v.get("status") == "ok" and k not in ("pyarrow_parse", "duckdb_query")
        }
        if peaks:
            worst = max(peaks, key=lambda k: peaks[k])
            t = _target(
                "peak memory (MB, first run, worst funnelstats step)",
                n,
                peaks[worst],
                PEAK_LIMIT_MB,
                "",
            )
            over_runs = st[worst]["peak_rss_mb"]
            t["note"] = f"worst step: {worst}; {over_runs:,.0f} MB over all runs"
            out.append(t)
        rep = _med(st, "report")
        out.append(_target("whole report (s)", n, rep, 30.0, "", strict=True))
    by_n = sorted(sizes, key=lambda s: s["deals"])
    for small, large in itertools.pairwise(by_n):
        factor = large["deals"] / small["deals"]
        for what in ("ingest", "core", "report"):
            a, b = _cost(small["steps"], what), _cost(large["steps"], what)
            t = _target(
                f"{what} cost {large['deals']:,} / {small['deals']:,} deals",
                large["deals"],
                b / a if a and b else None,
                1.2 * factor,
                "x",
            )
            out.append(t)
    return out


def _cost(steps: dict[str, Any], what: str) -> float | None:
    if what == "core":
        if _med(steps, "core") is not None:
            return _med(steps, "core")
        vals = [_med(steps, k) for k in CORE]
        return None if any(v is None for v in vals) else sum(vals)  # type: ignore[misc]
    return _med(steps, what)


def _med(steps: dict[str, Any], name: str) -> float | None:
    r = steps.get(name)
    return r["median_s"] if r and r.get("status") == "ok" else None


def _target(
    name: str, deals: int, value: float | None, limit: float, unit: str, *, strict: bool = False
) -> dict[str, Any]:
    met = None if value is None else (value < limit if strict else value <= limit)
    return {
        "target": name,
        "deals": deals,
        "value": value,
        "limit": limit,
        "unit": unit,
        "met": met,
        "headline": deals >= TARGET_SIZE,
    }


# --------------------------------------------------------------------------- printing


def _row(step: str, r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return f"{step:<18} {r.get('status')}: {r.get('reason', '')}"[:160]

    def mb(x: float | None) -> str:
        return f"{x:8.0f}" if x is not None else "       -"

    return (
        f"{step:<18} {r['median_s']:9.3f} {r['min_s']:9.3f} {r['runs']:5d} "
        f"{mb(r.get('peak_first_run_mb'))} {mb(r.get('peak_rss_mb'))} {mb(r.get('setup_rss_mb'))}"
    )


def header() -> str:
    return (
        f"  {'step':<18} {'median s':>9} {'min s':>9} {'runs':>5} {'peak 1st':>8} "
        f"{'peak MB':>8} {'held MB':>8}"
    )


def print_targets(ts: list[dict[str, Any]]) -> None:
    print("\ntargets (the 1M-deal rows are the ones the issue sets):")
    print(f"  {'target':<58} {'deals':>10} {'value':>9} {'limit':>9}  verdict")
    for t in ts:
        v = t["value"]
        shown = "-" if v is None else f"{v:.2f}{t['unit']}"
        if v is None and "partial_value" in t:
            shown = f"({t['partial_value']:.2f}x)"
        verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        note = f"  [{t['note']}]" if t.get("note") else ""
        print(
            f"  {t['target']:<58} {t['deals']:>10,} {shown:>9} "
            f"{t['limit']:>8.1f}{t['unit']}  {verdict}{note}"
        )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deals", type=int, nargs="+", help="deal counts (overrides --sizes)")
    p.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="comma-separated deal counts (default: %(default)s)",
    )
    p.add_argument("--repeat", type=int, help="runs per step (default 3; 1 with --quick)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"one run per step; default size {QUICK_SIZES[0]:,} deals (for CI)",
    )
    p.add_argument(
        "--layout",
        choices=sorted(_worker.LAYOUTS),
        default="core",
        help="columns of the simulated export: core (6, ~200 MB at 1M deals) or full (12)",
    )
    p.add_argument("--n-sims", type=int, default=10_000, help="forecast_bookings simulations")
    p.add_argument(
        "--steps", help=f"comma-separated subset of steps (default all: {','.join(_worker.STEPS)})"
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per step process")
    p.add_argument(
        "--max-memory-gb",
        type=float,
        default=8.0,
        help="stop a step whose process tree holds more than this (default %(default)s GB)",
    )
    p.add_argument("--cache-dir", type=Path, default=HERE / "cache")
    p.add_argument("--results-dir", type=Path, default=HERE / "results")
    p.add_argument(
        "--output", type=Path, help="JSON file to write (default RESULTS_DIR/<date>.json)"
    )
    args = p.parse_args(argv)
    if args.deals:
        args.sizes_list = list(args.deals)
    elif args.quick and "--sizes" not in (argv if argv is not None else sys.argv[1:]):
        args.sizes_list = list(QUICK_SIZES)
    else:
        args.sizes_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    if any(n <= 0 for n in args.sizes_list):
        p.error("deal counts must be positive")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    steps = list(_worker.STEPS)
    if args.steps:
        steps = [s.strip() for s in args.steps.split(",") if s.strip()]
        unknown = [s for s in steps if s not in _worker.STEPS]
        if unknown:
            p.error(f"unknown step(s) {unknown}; steps: {list(_worker.STEPS)}")
    args.step_list = steps
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    info = machine()
    print(
        f"funnelstats benchmark: {info['cpus']} cores, {info['memory_gb']} GB, "
        f"load average {info['load_avg']}, commit {info['git_commit']}"
    )
    print(f"repeat {args.repeat}, forecast simulations {args.n_sims:,}")
    sizes = [run_size(n, args, args.step_list) for n in args.sizes_list]
    ts = targets(sizes)
    print_targets(ts)
    result = {
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "load_avg_end": _load(),
        "settings": {
            "sizes": args.sizes_list,
            "repeat": args.repeat,
            "quick": args.quick,
            "layout": args.layout,
            "n_sims": args.n_sims,
            "steps": args.step_list,
            "simulate": _worker._SIMULATE,
        },
        "sizes": sizes,
        "targets": ts,
    }
    out = args.output or args.results_dir / f"{started.date().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    failed = [
        f"{s['deals']}:{k}"
        for s in sizes
        for k, r in s["steps"].items()
        if r.get("status") not in ("ok", "not available")
    ]
    if failed:
        print(f"steps that failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
