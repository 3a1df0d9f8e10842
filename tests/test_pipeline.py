from __future__ import annotations

import numpy as np
import pytest

import funnelstats as fs
from funnelstats import FunnelDataError, Pipeline
from funnelstats.pipeline import suggest_stage


def test_order_dtype_codes():
    p = Pipeline(["A", "B"], won=["W"], lost=["L1", "L2"])
    assert p.order == ("A", "B", "W", "L1", "L2")
    assert list(p.dtype.categories) == list(p.order) and p.dtype.ordered
    assert p.kind_codes().tolist() == [0, 0, 1, 2, 2]
    assert p.outcome_of("L2") == "lost"
    with pytest.raises(KeyError, match="did you mean 'B'"):
        p.code("b ")


def test_invalid_pipelines():
    with pytest.raises(ValueError, match="listed twice"):
        Pipeline(["A", "A"])
    with pytest.raises(ValueError, match="did you mean 'Won'"):
        Pipeline(["A"], won=["Won"], probabilities={"won": 1})
    with pytest.raises(ValueError, match="within 0-1"):
        Pipeline(["A", "B"], probabilities={"A": 0.5, "B": -0.2})


def test_percent_probabilities_scaled():
    p = Pipeline(["A", "B"], won=["W"], lost=["L"], probabilities={"A": 10, "B": 60})
    assert dict(p.probabilities) == {"A": 0.1, "B": 0.6}
    np.testing.assert_allclose(p.probability_array(), [0.1, 0.6, 1.0, 0.0])


def test_toml_round_trip(tmp_path):
    p = Pipeline(
        ["Lead", 'Say "hi"'], won=["Won"], lost=["Lost"], probabilities={"Lead": 0.2}, name="NB"
    )
    f = tmp_path / "p.toml"
    f.write_text(p.to_toml())
    q = Pipeline.from_toml(f)
    assert (q.stages, q.won, q.lost, dict(q.probabilities), q.name) == (
        p.stages,
        p.won,
        p.lost,
        dict(p.probabilities),
        p.name,
    )


def test_toml_errors_name_the_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[pipeline]\nstages = [\n")
    with pytest.raises(FunnelDataError, match="not valid TOML") as e:
        Pipeline.from_toml(f)
    assert e.value.file == str(f)
    f.write_text('[pipeline]\nstages = ["A"]\nwon = "W"\ncolour = "red"\n')
    with pytest.raises(FunnelDataError, match="unknown pipeline keys"):
        Pipeline.from_toml(f)
    with pytest.raises(FunnelDataError, match="not found"):
        Pipeline.from_toml(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "name, expect",
    [
        ("Closed-Won", "Closed Won"),
        ("closed won", "Closed Won"),
        ("Closed Wonn", "Closed Won"),
        ("Negotiation", None),
    ],
)
def test_suggestions(name, expect):
    assert suggest_stage(name, ["Prospecting", "Closed Won", "Closed Lost"]) == expect


def test_inference_orders_by_precedence_and_reports():
    # deals mostly go A -> B -> C, some skip B, one created in C, one goes back
    seqs = [
        ["A", "B", "C", "Won"],
        ["A", "C", "Lost"],
        ["C", "Won"],
        ["A", "B", "A", "B"],
        ["B", "C"],
        ["A", "B", "Closed Lost"],
    ]
    names = ["C", "Won", "B", "A", "Lost", "Closed Lost"]
    code = {s: i for i, s in enumerate(names)}
    deal = np.concatenate([[i] * len(s) for i, s in enumerate(seqs)])
    stage = np.array([code[x] for s in seqs for x in s])
    p = Pipeline.infer(deal, stage, names)
    assert p.stages == ("A", "B", "C")
    assert set(p.won) == {"Won"} and set(p.lost) == {"Lost", "Closed Lost"}
    assert any("recognised by name" in n for n in p.notes)


def test_inferred_pipeline_on_sample_matches_the_file():
    d = fs.load_sample(with_pipeline=False)
    truth = fs.datasets.sample_pipeline()
    assert d.pipeline.stages == truth.stages
    assert d.pipeline.won == truth.won and d.pipeline.lost == truth.lost
    assert dict(d.pipeline.probabilities) == pytest.approx(dict(truth.probabilities))
    assert any("inferred" in n for n in d.report.notes)


def test_case_twins_reported_when_inferring():
    import pandas as pd

    df = pd.DataFrame(
        {
            "deal_id": ["a", "a", "b", "c"],
            "stage": ["Demo", "Won", "De-mo", "demo"],
            "timestamp": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"],
        }
    )
    d = fs.read_events(df)
    # names differing in punctuation are kept apart and reported ...
    assert any("'Demo' ~ 'De-mo'" in n for n in d.report.notes)
    # ... names differing only in case are one stage (a counted repair)
    assert d.report.count("stage_case_variant") == 1
    assert "demo" not in d.pipeline.order
