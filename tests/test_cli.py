import json
import subprocess
import sys

from mi_cluster.cli import main


def test_help_lists_demo():
    out = subprocess.run(
        [sys.executable, "-m", "mi_cluster.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "demo" in out.stdout


def test_demo_writes_figures_and_reports_the_effect_with_its_ci(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    scatter = (tmp_path / "demo_pca_by_layer.html").read_text()
    # plotly.js from a local copy beside the figures: opens offline, never a CDN
    assert 'src="plotly.min.js"' in scatter and "cdn.plot" not in scatter
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    assert "Plotly.newPlot" in scatter and "addFrames" in scatter  # one frame per layer
    for label in ("lamp", "Adam", "object \\u00b7 subject", "layer L5", "Procrustes"):
        assert label in scatter, label
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["model"] == "minilm" and summary["n_names"] >= 30 and summary["n_objects"] >= 30
    for scope in ("these templates", "templates in general"):
        inter = summary["shifts"]["interaction"][scope]
        assert len(inter["estimate"]) == len(summary["layers"]) == 7
        for i in range(7):  # every estimate sits inside its interval
            low, high = inter["ci"][0][i], inter["ci"][1][i]
            assert low - 1e-9 <= inter["estimate"][i] <= high + 1e-9
    assert summary["answer"].startswith("Model minilm")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "SourceSansPro-Bold.ttf",  # the font and its licence, beside the pages like plotly.js
        "SourceSansPro-LICENSE.txt",
        "SourceSansPro-Regular.ttf",
        "demo.json",
        "demo_pca_by_layer.html",
        "demo_pca_by_layer.json",
        "demo_separation_by_layer.html",
        "demo_separation_by_layer.json",
        "demo_shift_by_layer.html",
        "demo_shift_by_layer.json",
        "plotly.min.js",
    ]
    # provenance: the weights, the prompts, the seed, the command and the versions
    prov = summary["provenance"]
    assert prov["models"][0]["name"] == "minilm" and len(prov["models"][0]["weights_sha256"]) == 64
    assert prov["n_prompts"] == summary["n_prompts"] and prov["seed"] == 0
    assert prov["versions"]["transformer_lens"].startswith("4.")
    sidecar = json.loads((tmp_path / "demo_pca_by_layer.json").read_text())
    assert sidecar["provenance"] == prov and len(sidecar["frames"]) == 7
    assert sidecar["headline"] == summary["headline"] and sidecar["title"]
    out = capsys.readouterr().out
    assert "95% CI" in out and "templates in general:" in out
    assert "interaction" in out and "wrote" in out
