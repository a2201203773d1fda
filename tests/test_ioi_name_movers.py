"""The IOI experiment end to end: on the compiled model it recovers the construction, on
the toy model what its card documents, and it writes its numbers and figures."""

from __future__ import annotations

import json

import pytest
from experiment_scripts import experiment


@pytest.fixture(scope="module")
def ioi():
    return experiment("ioi_name_movers")


def test_recovers_the_compiled_construction(ioi, tmp_path):
    record = ioi.run("ioi-compiled", tmp_path, n=12, png=False, progress=False)
    agreement = record["agreement"]
    assert all(agreement["checks"].values()), agreement
    assert agreement["found"]["name_movers"] == ["L2H0", "L2H1"]
    assert record["behaviour"]["clean_logit_difference"] == pytest.approx(3.0, abs=1e-4)
    assert record["behaviour"]["name_flip_logit_difference"] == pytest.approx(-3.0, abs=1e-4)
    saved = json.loads((tmp_path / "ioi_name_movers_ioi-compiled.json").read_text())
    assert saved["candidates"]["backup_name_movers"] == ["L3H0"]
    assert {c["role"] for c in saved["claims"]} >= {"name movers", "negative name movers"}
    for kind in ("patching", "resid", "upstream", "heads", "scatter", "claims"):
        assert (tmp_path / f"ioi_name_movers_ioi-compiled_{kind}.html").stat().st_size > 1000
    report = ioi.report(record)
    assert "agreement with the construction: all checks pass" in report


def test_agrees_with_the_toy_model_card(ioi, tmp_path):
    record = ioi.run("toy-ioi", tmp_path, n=40, png=False, progress=False)
    checks = record["agreement"]["checks"]
    assert all(checks.values()), checks
    # the candidates the discovery prompts suggest are not confirmed on fresh prompts
    direct = [c for c in record["claims"] if c["claim"].startswith("direct effect")]
    assert any(not c["supported"] for c in direct if c["role"] == "name movers")
    per_head = record["per_head"]
    # the final LayerNorm matters here: recomputing it credits L1H0 with four times the
    # direct effect it has when the clean run's scale is kept (what its output writes)
    assert (
        per_head["direct_effect_ln_recomputed"][1][0]
        > 3 * per_head["direct_effect_path_drop"][1][0]
    )
