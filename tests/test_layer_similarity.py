"""The layer-similarity experiment on MiniLM (offline): its table and figure."""

from __future__ import annotations

import json
import sys

import pytest
from experiment_scripts import experiment

import mi_cluster.methods.similarity as S
from mi_cluster.collection.activations import Positions, collect


def test_table_values_and_files(minilm, tmp_path, monkeypatch):
    exp = experiment("layer_similarity")
    acts = collect(minilm, [exp.PASSAGE], "resid_post", Positions.all(), progress=False)
    n_layers, n_tokens, d = acts.tensor.shape
    assert (n_layers, d) == (7, 384) and n_tokens > 300
    rows = exp.layer_table(acts)
    assert [r["layer"] for r in rows] == ["L0", "L1", "L2", "L3", "L4", "L5"]
    x = acts.tensor.double()
    for i, r in enumerate(rows, start=1):
        assert r["ecco_cka"] == r["cka"]  # ecco's cka is biased linear CKA
        assert r["cka"] == pytest.approx(float(S.linear_cka(x[0], x[i])), abs=1e-4)
        for key in exp.COLUMNS:
            assert 0 <= r[key] <= 1
    # similarity to the embeddings falls with depth, by every CKA measure
    assert rows[0]["cka"] > rows[2]["cka"] > rows[5]["cka"]
    assert rows[0]["cka_debiased"] > rows[5]["cka_debiased"]

    monkeypatch.setattr(sys, "argv", ["layer_similarity", "--out", str(tmp_path), "--no-png"])
    exp.main()
    record = json.loads((tmp_path / "layer_similarity.json").read_text())
    assert record["layers"][0] == "embed" and len(record["debiased_cka"]) == 7
    assert record["embeddings_vs_layer"] == rows
    assert (tmp_path / "layer_similarity_cka.html").stat().st_size > 0
    assert record["provenance"]["models"][0]["name"] == "minilm"
    assert "| L5 |" in (tmp_path / "layer_similarity.md").read_text()


def test_similarity_heatmaps_figure():
    import torch

    from mi_cluster.plotting import similarity_heatmaps

    xs = torch.randn(3, 50, 8, dtype=torch.float64).cumsum(0)
    mats = [S.pairwise(xs, metric="linear_cka"), S.pairwise(xs, metric="debiased_cka")]
    fig = similarity_heatmaps(mats, ["embed", "L0", "L1"], title="t")
    assert len(fig.data) == 2
    assert fig.data[0].z.shape == (3, 3) and list(fig.data[1].y) == ["embed", "L0", "L1"]
    assert fig.layout.annotations[1].text == "linear CKA (debiased)"
    with pytest.raises(ValueError, match="3 row and 3 column labels"):
        similarity_heatmaps([S.pairwise(xs[:2], xs, metric="linear_cka")], ["a", "b", "c"])
