"""One benchmark step, measured in a fresh process (``run.py`` starts one per step).

Usage (by ``run.py``; not meant to be called by hand)::

    python benchmarks/_worker.py STEP CONTEXT.json RESULT.json

The step's set-up (imports, and for the analysis steps the ingest of the CSV)
runs first and is not timed; then the peak-memory mark is reset (Linux
``/proc/self/clear_refs``) and the step runs ``repeat`` times. The result file
gets the wall time of each run, the resident memory after set-up and the peak
resident memory during the runs (``getrusage`` high-water mark). Set-up memory
is resident during the runs, so the peak is what a user holding the data sees.

``STEP`` is ``generate`` (write the cached data set; not timed) or one of
:data:`STEPS`.
"""

from __future__ import annotations

import copy
import gc
import importlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The measured steps, in the order they run: (name, module, function).
FUNNELSTATS_STEPS: tuple[tuple[str, str, str], ...] = (
    ("ingest", "funnelstats.ingest", "read_salesforce"),
    ("conversion", "funnelstats.conversion", "conversion"),
    ("time_in_stage", "funnelstats.survival", "time_in_stage"),
    ("stage_outcomes", "funnelstats.survival", "stage_outcomes"),
    ("core", "funnelstats.survival", "stage_outcomes"),
    ("snapshot", "funnelstats.snapshot", "snapshot"),
    ("forecast_bookings", "funnelstats.forecast", "forecast_bookings"),
    ("report", "funnelstats.report", ""),
)
REFERENCE_STEPS: tuple[tuple[str, str, str], ...] = (
    ("pyarrow_parse", "pyarrow.csv", "read_csv"),
    ("duckdb_query", "duckdb", "connect"),
)
STEPS = tuple(s[0] for s in REFERENCE_STEPS + FUNNELSTATS_STEPS)

_SIMULATE = {"seed": 20240808, "deleted_rows": 0.001}

#: Columns written per layout. "core" is an OpportunityHistory export with the fields that
#: carry the stage history (about 70 bytes a row: the ~200 MB per 1M deals of the performance
#: issue's reference figures); "full" has all twelve classic columns (about 155 bytes a row).
LAYOUTS: dict[str, tuple[str, ...] | None] = {
    "core": ("OpportunityId", "CreatedDate", "StageName", "Amount", "CloseDate", "IsDeleted"),
    "full": None,
}

# The DuckDB reference: read the CSV, drop deleted rows, collapse field-update
# rows into stage entries (a stage entry starts where the stage changes), then
# per stage: entries, exits, advances (to a later open stage or a won stage)
# and the median time in stage of the stays that ended.
DUCKDB_SQL = """
WITH h AS (
    SELECT OpportunityId AS deal, StageName AS stage, CreatedDate AS ts
    FROM read_csv('{csv}', header = true, types = {{
        'OpportunityId': 'VARCHAR', 'StageName': 'VARCHAR',
        'CreatedDate': 'TIMESTAMPTZ', 'IsDeleted': 'BOOLEAN'}})
    WHERE NOT IsDeleted
),
changes AS (
    SELECT *, lag(stage) OVER (PARTITION BY deal ORDER BY ts) AS prev_stage FROM h
),
entries AS (
    SELECT deal, stage, ts,
           lead(stage) OVER (PARTITION BY deal ORDER BY ts) AS next_stage,
           lead(ts) OVER (PARTITION BY deal ORDER BY ts) AS next_at
    FROM changes
    WHERE prev_stage IS NULL OR prev_stage <> stage
),
stages(name, pos, kind) AS (VALUES {stages})
SELECT e.stage,
       count(*) AS entered,
       count(e.next_stage) AS exited,
       count(*) FILTER (WHERE n.kind = 1 OR (n.kind = 0 AND n.pos > s.pos)) AS advanced,
       count(*) FILTER (WHERE n.kind = 2) AS lost,
       median(epoch(e.next_at) - epoch(e.ts)) / 86400.0 AS median_days_ended
FROM entries e
JOIN stages s ON s.name = e.stage
LEFT JOIN stages n ON n.name = e.next_stage
WHERE s.kind = 0
GROUP BY e.stage, s.pos
ORDER BY s.pos
"""


# --------------------------------------------------------------------------- memory


def cached_export(cache_dir: Path, layout: str, deals: int) -> tuple[Path, dict[str, Any]]:
    """The folder of the cached export of ``deals`` deals (newest hash) and its meta.json;
    exits with a hint when ``run.py`` has not made it yet."""
    folders = sorted(Path(cache_dir).glob(f"salesforce-{layout}-{deals}-*/meta.json"))
    if not folders:
        raise SystemExit(f"no cached data for {deals} deals; run run.py --sizes {deals}")
    folder = folders[-1].parent
    return folder, json.loads((folder / "meta.json").read_text())


def rss_mb() -> float | None:
    """Current resident memory in MB (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def settle() -> None:
    """Hand memory freed during set-up back to the OS, so the step starts from its data.

    Freed memory otherwise stays with the allocators (pyarrow's pool purges it
    after a delay, glibc keeps it in its heap) and would count as the step's.
    """
    gc.collect()
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _maxrss_mb(who: int) -> float:
    kb = resource.getrusage(who).ru_maxrss
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


# --------------------------------------------------------------------------- steps


class NotAvailable(Exception):
    """The function a step measures does not exist (yet)."""


def _resolve(module: str, name: str) -> Any:
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        raise NotAvailable(f"{module} not found")
    mod = importlib.import_module(module)
    if not name:
        return mod
    if not hasattr(mod, name):
        raise NotAvailable(f"{module} has no {name}")
    return getattr(mod, name)


def _ingest(ctx: dict[str, Any]) -> Any:
    import funnelstats as fs

    pipe = fs.Pipeline.from_toml(ctx["pipeline"])
    data = fs.read_salesforce(ctx["csv"], pipeline=pipe, exported_at=ctx["exported_at"])
    data.arrays  # the derived events and deals tables: every analysis needs them  # noqa: B018
    return data


def _fresh(data: Any, state: dict[str, Any]) -> Any:
    """The data as ingest left it: caches added by earlier runs are dropped."""
    out = copy.copy(data)
    out.__dict__.clear()
    out.__dict__.update({k: v for k, v in state.items() if k != "_cache"})
    return out


def _core(ctx: dict[str, Any]) -> Any:
    """Ingest, then conversion, time in stage and stage outcomes on the same data."""
    import funnelstats as fs

    data = _ingest(ctx)
    fs.conversion(data)
    fs.time_in_stage(data)
    fs.stage_outcomes(data)
    return data


def _analysis(ctx: dict[str, Any], call: Callable[[Any], Any]) -> Callable[[], Any]:
    data = _ingest(ctx)
    state = dict(data.__dict__)
    return lambda: call(_fresh(data, state))


def _report_runner(ctx: dict[str, Any]) -> Callable[[], Any]:
    out = tempfile.mkdtemp(prefix="funnelstats-bench-report-")
    cmd = [
        sys.executable,
        "-c",
        "from funnelstats.cli import main; main()",
        "-q",
        "report",
        ctx["csv"],
        "--out",
        out,
        "--pipeline",
        ctx["pipeline"],
        "--exported-at",
        ctx["exported_at"],
        "--n-sims",
        str(int(ctx["n_sims"])),
        "--generated-at",
        "2025-01-01T00:00:00Z",
    ]

    def run() -> Any:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"funnelstats report exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
            )
        return None

    return run


def setup(step: str, ctx: dict[str, Any]) -> Callable[[], Any]:
    """Import and prepare ``step``; return the callable to time."""
    table = {s[0]: s for s in REFERENCE_STEPS + FUNNELSTATS_STEPS}
    _, module, name = table[step]
    fn = _resolve(module, name)
    if step == "pyarrow_parse":
        return lambda: fn(ctx["csv"])
    if step == "duckdb_query":
        con = fn()
        stages = ", ".join(
            "(" + ", ".join([_sql_str(s), str(pos), str(kind)]) + ")"
            for pos, (s, kind) in enumerate(ctx["stages"])
        )
        sql = DUCKDB_SQL.format(csv=ctx["csv"].replace("'", "''"), stages=stages)
        return lambda: con.execute(sql).fetchall()
    if step == "ingest":
        return lambda: _ingest(ctx)
    if step == "conversion":
        return _analysis(ctx, fn)
    if step == "time_in_stage":
        return _analysis(ctx, fn)
    if step == "stage_outcomes":
        return _analysis(ctx, fn)  # every open stage (the default)
    if step == "core":
        return lambda: _core(ctx)
    if step == "snapshot":
        import pandas as pd

        as_of = pd.Timestamp(ctx["exported_at"]) - pd.Timedelta(days=90)
        return _analysis(ctx, lambda d: fn(d, as_of=as_of))
    if step == "forecast_bookings":
        n_sims = int(ctx["n_sims"])
        return _analysis(ctx, lambda d: fn(d, n_sims=n_sims, seed=1))
    if step == "report":
        return _report_runner(ctx)
    raise ValueError(f"unknown step {step!r}")


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def measure(step: str, ctx: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"step": step}
    t0 = time.perf_counter()
    try:
        run = setup(step, ctx)
    except NotAvailable as exc:
        return {**out, "status": "not available", "reason": str(exc)}
    except Exception as exc:
        return {**out, "status": "error", "reason": _why(exc), "traceback": _tb()}
    out["setup_s"] = time.perf_counter() - t0
    settle()
    out["setup_rss_mb"] = rss_mb()
    out["peak_reset"] = reset_peak()
    times = []
    first_peak = None
    try:
        for _ in range(int(ctx["repeat"])):
            gc.collect()
            t = time.perf_counter()
            result = run()
            times.append(time.perf_counter() - t)
            del result
            if first_peak is None:
                first_peak = _maxrss_mb(resource.RUSAGE_SELF)
    except Exception as exc:
        return {**out, "status": "error", "reason": _why(exc), "traceback": _tb()}
    peak = _maxrss_mb(resource.RUSAGE_SELF)
    if step == "report":  # the work happens in child processes
        peak = max(peak, _maxrss_mb(resource.RUSAGE_CHILDREN))
    if step == "report":
        first_peak = peak
    return {
        **out,
        "status": "ok",
        "times_s": times,
        "peak_rss_mb": peak,
        "peak_first_run_mb": first_peak,
    }


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _tb() -> str:
    return traceback.format_exc()[-4000:]


# --------------------------------------------------------------------------- data


def generate(ctx: dict[str, Any]) -> dict[str, Any]:
    """Simulate ``ctx['deals']`` deals and write the CSV, the pipeline and a description."""
    import numpy as np

    import funnelstats as fs

    t0 = time.perf_counter()
    sim = fs.simulate(int(ctx["deals"]), **_SIMULATE)
    export = sim.export
    columns = LAYOUTS[ctx["layout"]]
    csv = Path(ctx["csv"])
    tmp = csv.with_suffix(".tmp")
    (export if columns is None else export[list(columns)]).to_csv(tmp, index=False)
    os.replace(tmp, csv)
    pipe = sim.pipeline()
    Path(ctx["pipeline"]).write_text(pipe.to_toml(), encoding="utf-8")
    deal = export["OpportunityId"].to_numpy()
    stage = export["StageName"].to_numpy()
    deleted = export["IsDeleted"].eq("true").to_numpy()
    live_deal, live_stage = deal[~deleted], stage[~deleted]
    same = np.r_[False, (live_deal[1:] == live_deal[:-1]) & (live_stage[1:] == live_stage[:-1])]
    return {
        "deals": int(ctx["deals"]),
        "layout": ctx["layout"],
        "columns": list(columns or export.columns),
        "rows": len(export),
        "stage_rows": int((~same).sum()),
        "update_rows": int(same.sum()),
        "deleted_rows": int(deleted.sum()),
        "csv_bytes": csv.stat().st_size,
        "exported_at": str(sim.truth.exported_at),
        "stages": [[s, int(k)] for s, k in zip(pipe.order, pipe.kind_codes())],
        "simulate": {"n_deals": int(ctx["deals"]), **_SIMULATE},
        "generate_s": time.perf_counter() - t0,
    }


def main(argv: list[str]) -> int:
    step, ctx_path, result_path = argv
    ctx = json.loads(Path(ctx_path).read_text(encoding="utf-8"))
    result = generate(ctx) if step == "generate" else measure(step, ctx)
    Path(result_path).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
