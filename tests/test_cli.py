import json
import subprocess
import sys

from mi_cluster.cli import main


def test_help_lists_demo():
    out = subprocess.run(
        [sys.executable, "-m", "mi_cluster.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "demo" in out.stdout


def test_demo_writes_figures(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    scatter = tmp_path / "demo_pca_by_layer.html"
    html = scatter.read_text()
    assert len(html) > 1_000_000  # plotly.js embedded: opens offline
    assert "Plotly.newPlot" in html and "addFrames" in html  # one frame per layer
    for label in ("lamp", "adam", "object in context", "layer L5"):
        assert label in html, label
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["model"] == "minilm" and summary["n_prompts"] == 40
    assert len(summary["separation_alone"]) == len(summary["layers"]) == 7
    assert all(v > 0 for v in summary["separation_alone"])
    assert (tmp_path / "demo_separation_by_layer.html").stat().st_size > 1_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo_pca_by_layer.html",
        "demo_separation_by_layer.html",
        "demo_summary.json",
    ]
    assert "wrote" in capsys.readouterr().out
