"""The benchmark script runs end to end at a tiny size and writes complete JSON.

Timing is never asserted here: the figures are for ``benchmarks/run.py`` to
print. This only keeps the script from rotting as the analysis modules land.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import _worker  # noqa: E402


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--deals",
            "300",
            "--quick",
            "--n-sims",
            "500",
            "--cache-dir",
            str(tmp / "cache"),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc, out


def test_exits_cleanly_and_prints_the_table(bench):
    proc, out = bench
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "ingest / pyarrow parse" in proc.stdout
    assert f"wrote {out}" in proc.stdout


def test_json_has_every_step_with_positive_figures(bench):
    _, out = bench
    res = json.loads(out.read_text())
    assert res["settings"]["sizes"] == [300]
    assert res["settings"]["repeat"] == 1 and res["settings"]["quick"] is True
    assert res["machine"]["cpus"] >= 1
    assert res["machine"]["versions"]["pyarrow"]
    (size,) = res["sizes"]
    assert size["deals"] == 300
    data = size["data"]
    assert data["rows"] > 300 and data["csv_bytes"] > 0
    assert data["rows"] == data["stage_rows"] + data["update_rows"] + data["deleted_rows"]
    steps = size["steps"]
    assert set(steps) == set(_worker.STEPS)
    for name, r in steps.items():
        assert r["status"] in ("ok", "not available"), (name, r)
        if r["status"] == "ok":
            assert len(r["times_s"]) == r["runs"] == 1
            assert all(t > 0 for t in r["times_s"])
            assert r["median_s"] > 0 and r["min_s"] > 0
            assert r["peak_rss_mb"] >= r["peak_first_run_mb"] > 0
        else:
            assert r["reason"]
    # the references and ingest always exist
    for name in ("pyarrow_parse", "duckdb_query", "ingest"):
        assert steps[name]["status"] == "ok", steps[name]


def test_targets_are_computed(bench):
    _, out = bench
    res = json.loads(out.read_text())
    names = {t["target"] for t in res["targets"]}
    assert "ingest / pyarrow parse" in names
    assert "peak memory (MB, first run, worst funnelstats step)" in names
    for t in res["targets"]:
        assert t["limit"] > 0
        assert t["value"] is None or t["value"] > 0
        assert t["met"] in (True, False, None)
        assert t["headline"] is False  # 300 deals is not the 1M-deal run
    ratio = next(t for t in res["targets"] if t["target"] == "ingest / pyarrow parse")
    assert ratio["value"] is not None
    # the core target times the four steps in one process (the "core" step)
    steps = res["sizes"][0]["steps"]
    core = next(t for t in res["targets"] if t["target"].startswith("ingest+conversion"))
    chain, duck = steps["core"]["median_s"], steps["duckdb_query"]["median_s"]
    assert core["value"] == pytest.approx(chain / duck)
    assert "in its own process" in core["note"]


def test_duckdb_reference_matches_funnelstats_counts(tmp_path):
    """The DuckDB query counts what funnelstats counts (so the ratio compares like with like)."""
    import funnelstats as fs
    from funnelstats._stays import ADVANCE, LOST, stays

    sim = fs.simulate(400, seed=5, deleted_rows=0.01)
    csv = tmp_path / "h.csv"
    sim.export.to_csv(csv, index=False)
    pipe = sim.pipeline()
    toml = tmp_path / "p.toml"
    toml.write_text(pipe.to_toml())
    ctx = {
        "csv": str(csv),
        "pipeline": str(toml),
        "exported_at": str(sim.truth.exported_at),
        "stages": [[s, int(k)] for s, k in zip(pipe.order, pipe.kind_codes())],
    }
    rows = _worker.setup("duckdb_query", ctx)()
    d = _worker._ingest(ctx)
    s = stays(d)
    for stage, entered, exited, advanced, lost, median_days in rows:
        code = pipe.code(stage)
        here = s.stage == code
        assert entered == here.sum()
        assert exited == (here & (s.outcome != 0)).sum()
        assert advanced == (here & (s.outcome == ADVANCE)).sum()
        assert lost == (here & (s.outcome == LOST)).sum()
        ended = s.duration_days[here & (s.outcome != 0)]
        assert median_days == pytest.approx(float(np.median(ended)), rel=1e-9)
