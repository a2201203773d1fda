"""The figure pipeline: static export (sizes, time-out, missing browser), key-frame strips,
the theme, provenance, figures/README.md, `mi-cluster figures`, and figures opened in a
real headless Chromium (not a mock): rendered, not blank, slider and frames present, a
frame step moves the points."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

from mi_cluster.methods.projections import pca_by_layer
from mi_cluster.plotting import FigureExportError, layer_scatter, save_figure, write_experiment
from mi_cluster.plotting.export import chromium_path, figures_index
from mi_cluster.plotting.strips import keyframe_strip
from mi_cluster.plotting.style import apply_paper_style, paper_size

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs a Chromium: apt-get install chromium (Debian package; .ci/run installs it)",
)


def _animation() -> go.Figure:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 12, 16, generator=g, dtype=torch.float64)
    x[1:] += torch.linspace(0, 3, 3)[:, None, None] * torch.randn(
        12, 16, generator=g, dtype=torch.float64
    )
    proj = pca_by_layer(x, 2, basis="aligned")
    groups = ["a"] * 6 + ["b"] * 6
    return layer_scatter(
        proj, [f"w{i}" for i in range(12)], groups, ["embed", "L0", "L1", "L2"], title="test"
    )


def _heatmap() -> go.Figure:
    fig = go.Figure(
        go.Heatmap(z=[[0, 1, 2], [3, 4, 5]], colorscale="Blues", colorbar_title="count")
    )
    return apply_paper_style(fig, 400, 300)


# -- static export ---------------------------------------------------------------------------
@needs_chromium
def test_static_export_sizes_and_formats(tmp_path):
    fig = _heatmap()
    files = save_figure(fig, tmp_path / "h", ("html", "png", "svg", "pdf"))
    assert [p.suffix for p in files] == [".html", ".png", ".svg", ".pdf"]
    from PIL import Image

    assert Image.open(tmp_path / "h.png").size == (800, 600)  # twice the layout's pixels
    svg = (tmp_path / "h.svg").read_text()
    assert re.match(r'<svg[^>]* width="400" height="300"', svg)  # vector: the layout's size
    save_figure(fig, tmp_path / "again", ("svg",))
    assert (tmp_path / "again.svg").read_text() == svg  # the same bytes every time
    assert (tmp_path / "h.pdf").read_bytes()[:4] == b"%PDF"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_stuck_browser_is_killed_at_the_time_out(tmp_path, monkeypatch):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nsleep 120\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    start = time.perf_counter()
    with pytest.raises(FigureExportError, match=r"h\.png not written: .* 3 s time-out"):
        save_figure(_heatmap(), tmp_path / "h.png", timeout=3)
    assert time.perf_counter() - start < 20
    assert not (tmp_path / "h.png").exists()
    time.sleep(0.5)
    alive = subprocess.run(["pgrep", "-f", str(fake)], capture_output=True, text=True).stdout
    assert alive.strip() == ""  # the fake browser was killed with its export process


def test_a_missing_browser_gives_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert chromium_path() is None
    with pytest.raises(FigureExportError, match=r"no Chromium found; .*apt-get install chromium"):
        save_figure(_heatmap(), tmp_path / "h.svg")
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(FigureExportError, match="never downloads a browser"):
        save_figure(_heatmap(), tmp_path / "h.png")


# -- strips and theme ------------------------------------------------------------------------
def test_keyframe_strip_keeps_the_animations_axes():
    anim = _animation()
    strip = keyframe_strip(anim)
    titles = [a.text for a in strip.layout.annotations]
    assert titles[:4] == ["embed", "L0", "L1", "L2"]
    assert strip.layout.xaxis.range == anim.layout.xaxis.range == strip.layout.xaxis4.range
    # per panel: the pair lines and the two groups; one legend entry per group
    assert len(strip.data) == 4 * 3
    assert sum(bool(t.showlegend) for t in strip.data) == 2
    frame2 = anim.frames[2].data[1]
    assert list(strip.data[2 * 3 + 1].x) == list(frame2.x)
    assert keyframe_strip(anim, ["L0", 3]).layout.annotations[0].text == "L0"
    with pytest.raises(ValueError, match="no frame"):
        keyframe_strip(anim, ["L9"])


def test_theme_and_paper_sizes():
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["a", "b"])
    fig.update_layout(title="first line<br><sup>second line</sup>")
    apply_paper_style(fig, 700, 400)
    assert fig.layout.template.layout.colorway[0] == "#0072B2"
    assert fig.layout.margin.t >= 30 + 26 * 2 + 24  # two title lines and the subplot titles
    col = paper_size(fig, "column")
    assert col.layout.width == 312 and col.layout.height == round(400 * 312 / 700)
    assert col.layout.font.size == pytest.approx(8 * 96 / 72)  # 8 pt at 3.25 in
    assert all(a.font.size == pytest.approx(8 * 96 / 72) for a in col.layout.annotations)
    assert paper_size(fig, "full").layout.width == 648
    with pytest.raises(ValueError, match="column"):
        paper_size(fig, "poster")


# -- provenance and the index ----------------------------------------------------------------
def test_write_experiment_provenance_sidecars_and_index(tmp_path, tiny):
    from mi_cluster.core.provenance import prompt_set_hash, provenance, weights_hash

    prov = provenance([tiny], ["a b", "c"], seed=3, command="python x.py")
    assert prov.prompts_sha256 == prompt_set_hash(["a b", "c"]) != prompt_set_hash(["a", "b c"])
    assert prov.models[0]["weights_sha256"] == weights_hash(tiny)
    record = {"value": 1.5, "headline": "value 1.5"}
    files, failed = write_experiment(
        tmp_path, "exp", record, {"heat": _heatmap()}, png=False, provenance=prov
    )
    assert not failed and {p.name for p in files} == {"exp.json", "exp_heat.html", "exp_heat.json"}
    side = json.loads((tmp_path / "exp_heat.json").read_text())
    assert side["data"][0]["z"] == [[0, 1, 2], [3, 4, 5]] and side["headline"] == "value 1.5"
    assert side["provenance"]["seed"] == 3 and side["provenance"]["command"] == "python x.py"
    index = figures_index(tmp_path)
    assert "| `exp_heat` ([html](exp_heat.html))" in index and "`python x.py`" in index
    assert "value 1.5" in index


def test_weights_hash_follows_the_weights(tiny):
    from mi_cluster.core.provenance import weights_hash
    from mi_cluster.models.loading import load_model
    from mi_cluster.models.tiny import TinyConfig

    again = load_model(TinyConfig(n_layers=2, d_model=64, n_heads=4), device="cpu")
    assert weights_hash(again) == weights_hash(tiny)
    other = load_model(TinyConfig(n_layers=2, d_model=64, n_heads=4, seed=1), device="cpu")
    assert weights_hash(other) != weights_hash(tiny)


@pytest.mark.slow  # the demo twice, with static export: about a minute
def test_figures_command_is_deterministic_and_reports_failures(tmp_path):
    out = tmp_path / "figs"
    cmd = [sys.executable, "-m", "mi_cluster.cli", "figures", "--only", "demo", "--out", str(out)]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[1/1] demo ..." in first.stdout and "demo: done in" in first.stdout
    numbers = {p.name: p.read_text() for p in out.glob("*.json")}
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert second.returncode == 0
    assert {p.name: p.read_text() for p in out.glob("*.json")} == numbers  # identical
    readme = (out / "README.md").read_text()
    assert readme.count("| `demo_") == 3 and "mi_cluster.cli demo" in readme
    assert (out / "contact_sheet.png").is_file() and "contact_sheet.png" in first.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "mi_cluster.cli", "figures", "--only", "nonsense"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "invalid choice: 'nonsense'" in bad.stderr


# -- a real browser --------------------------------------------------------------------------
CHECK = """
<script>
window.addEventListener('load', async () => {
  const gd = document.querySelector('.plotly-graph-div');
  const points = () => Array.from(gd.querySelectorAll('.scatterlayer .trace .point'))
      .map(p => p.getAttribute('transform'));
  const out = {
    plotted: !!gd._fullLayout,
    frames: (gd._transitionData && gd._transitionData._frames || []).map(f => f.name),
    slider_steps: gd._fullLayout.sliders && gd._fullLayout.sliders.length
        ? gd._fullLayout.sliders[0].steps.length : 0,
    slider_drawn: gd.querySelectorAll('.slider-container').length,
    cells: gd.querySelectorAll('.hm image, .heatmaplayer image').length,
    lines: gd.querySelectorAll('.scatterlayer .trace path.js-line').length,
    before: points(),
  };
  if (out.frames.length > 1) {
    await Plotly.animate(gd, [out.frames[out.frames.length - 1]],
        {mode: 'immediate', frame: {duration: 0, redraw: true}, transition: {duration: 0}});
    out.after = points();
  }
  const pre = document.createElement('pre');
  pre.id = 'mi-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def _open_in_chromium(html: Path, tmp_path: Path) -> tuple[dict, "object"]:
    """Load ``html`` in headless Chromium: the checks above from the live page, and a
    screenshot as a PIL image."""
    from PIL import Image

    probe = html.with_name(html.stem + "_probe.html")
    probe.write_text(html.read_text().replace("</body>", CHECK + "</body>"))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    dom = subprocess.run(
        [*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    found = re.search(r'<pre id="mi-check">(.*?)</pre>', dom, re.S)
    assert found, "the page never finished its checks"
    shot = tmp_path / f"{html.stem}.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1000,900", html.as_uri()],
        capture_output=True,
        timeout=120,
    )
    checks = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return checks, Image.open(shot).convert("L")


def _not_blank(image) -> None:
    pixels = list(image.getdata())
    dark = sum(p < 200 for p in pixels) / len(pixels)
    mean = sum(pixels) / len(pixels)
    spread = (sum((p - mean) ** 2 for p in pixels) / len(pixels)) ** 0.5
    assert dark > 0.005 and spread > 10, (dark, spread)


@needs_chromium
def test_animation_renders_and_steps_in_a_real_browser(tmp_path):
    (html,) = save_figure(_animation(), tmp_path / "anim.html")
    checks, shot = _open_in_chromium(html, tmp_path)
    assert checks["plotted"] and checks["frames"] == ["0", "1", "2", "3"]
    assert checks["slider_steps"] == 4 and checks["slider_drawn"] == 1
    assert len(checks["before"]) == 12 and len(checks["after"]) == 12
    assert checks["after"] != checks["before"]  # stepping a frame moved the points
    _not_blank(shot)


@needs_chromium
def test_heatmap_and_head_view_render_in_a_real_browser(tmp_path, minilm):
    from mi_cluster.methods.attention import attention_patterns
    from mi_cluster.plotting.attention import plot_head_view

    (heat,) = save_figure(_heatmap(), tmp_path / "heat.html")
    checks, shot = _open_in_chromium(heat, tmp_path)
    assert checks["plotted"] and checks["cells"] >= 1
    _not_blank(shot)
    p = attention_patterns(minilm, "The cat sat on the mat")
    (head,) = save_figure(plot_head_view(p, 2, heads=[0, 1]), tmp_path / "head.html")
    checks, shot = _open_in_chromium(head, tmp_path)
    assert checks["plotted"] and checks["lines"] >= 2
    _not_blank(shot)
