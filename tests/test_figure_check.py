"""Figures a reviewer accepts at a glance: the figure check itself (each class of defect
it must catch, in the real headless Chromium), every figure `make figures` wrote passing
it, the font pinned and embedded, stated colour scales, labels that never overlap,
responsive HTML, and the contact sheet."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

from mi_cluster.plotting import save_figure, value_scatter
from mi_cluster.plotting.check import spec_problems, svg_problems
from mi_cluster.plotting.export import figure_record, static_figure
from mi_cluster.plotting.font import FONT_FAMILY, plain_text, text_width
from mi_cluster.plotting.heads import head_maps
from mi_cluster.plotting.html import MODEBAR_PX, html_layout
from mi_cluster.plotting.labels import place_labels
from mi_cluster.plotting.scales import NOISE_FLOOR, colour_scale
from mi_cluster.plotting.style import apply_paper_style, wrap_text

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs a Chromium: apt-get install chromium (Debian package; .ci/run installs it)",
)


def _line(**layout) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[0, 1, 4], name="y"))
    fig.update_xaxes(title_text="x")
    fig.update_yaxes(title_text="y")
    fig.update_layout(**layout)
    return apply_paper_style(fig, 500, 360)


def _problems(fig: go.Figure, tmp_path: Path, name: str) -> list[str]:
    (svg,) = save_figure(fig, tmp_path / f"{name}.svg")
    return svg_problems([svg])[str(svg)]


# -- the check catches each class --------------------------------------------------------------
@needs_chromium
def test_a_clean_figure_passes(tmp_path):
    assert _problems(_line(title="a clean figure"), tmp_path, "clean") == []


@needs_chromium
def test_overlapping_texts_are_caught(tmp_path):
    fig = _line(title="overlap")
    fig.add_annotation(x=1, y=2, text="first label here", showarrow=False)
    fig.add_annotation(x=1.05, y=2.05, text="second label here", showarrow=False)
    found = _problems(fig, tmp_path, "overlap")
    assert any("overlap" in p and "first label" in p for p in found), found


@needs_chromium
def test_rotated_labels_overlap_only_when_they_do(tmp_path):
    fig = go.Figure(go.Bar(x=[f"category {k}" for k in range(8)], y=list(range(8))))
    fig.update_xaxes(tickangle=-45, title_text="category")
    fig.update_yaxes(title_text="count")
    assert _problems(apply_paper_style(fig, 700, 400), tmp_path, "rotated") == []


@needs_chromium
def test_text_off_the_canvas_and_over_a_plot_are_caught(tmp_path):
    fig = _line(title="off the canvas")
    fig.add_annotation(x=1.2, xref="paper", y=0.5, yref="paper", text="far right", showarrow=False)
    assert any("far right" in p and "leaves the canvas" in p for p in _problems(fig, tmp_path, "a"))
    grid = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]], colorbar_title="v", x=["a", "b"]))
    grid.update_yaxes(
        tickvals=[0, 1], ticktext=["a very long label", "b"], ticklabelposition="inside"
    )
    found = _problems(apply_paper_style(grid, 400, 300), tmp_path, "b")
    assert any("lies over a plot area" in p for p in found), found


@needs_chromium
def test_heatmap_without_colour_bar_untitled_axes_and_controls_are_caught(tmp_path):
    import plotly.io as pio

    heat = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]], showscale=False))
    heat.update_xaxes(title_text="x")
    heat.update_yaxes(title_text="y")
    assert "1 heatmap(s) and no colour bar" in _problems(heat, tmp_path, "heat")
    bare = go.Figure(go.Scatter(x=[0, 1], y=[0, 1]))
    found = _problems(bare, tmp_path, "bare")
    assert any(p.startswith("axis x carries numbers") for p in found), found
    assert any(p.startswith("axis y carries numbers") for p in found), found
    animated = _line(
        sliders=[{"steps": [{"label": "L0", "method": "animate", "args": [["0"]]}]}],
        updatemenus=[{"type": "buttons", "buttons": [{"label": "play", "method": "animate"}]}],
    )
    raw = tmp_path / "controls.svg"
    pio.write_image(animated, raw, format="svg")  # straight through kaleido: controls kept
    found = svg_problems([raw])[str(raw)]
    assert any("animation controls" in p for p in found), found
    (ours,) = save_figure(animated, tmp_path / "ours.svg")  # the writer takes them off
    assert not any("animation" in p for p in svg_problems([ours])[str(ours)])


def test_spec_problems_before_drawing():
    heat = go.Figure(go.Heatmap(z=[[1, 2]], showscale=False, name="h"))
    assert spec_problems(heat) == ["heatmap 'h' has its own colour scale and no colour bar"]
    shared = go.Figure(go.Heatmap(z=[[1, 2]], coloraxis="coloraxis"))
    shared.update_layout(coloraxis_showscale=False)
    assert "uses coloraxis, whose colour bar is hidden" in spec_problems(shared)[0]
    untitled = go.Figure(go.Heatmap(z=[[1, 2]], x=["a", "b"], y=["r"]))
    assert spec_problems(untitled) == ["the colour bar of heatmap 'trace 0' has no title"]
    numbers = go.Figure(go.Scatter(x=[0, 1], y=[2, 3]))
    assert spec_problems(numbers) == [
        "xaxis carries numbers but has no title",
        "yaxis carries numbers but has no title",
    ]
    categories = go.Figure(go.Bar(x=["a", "b"], y=[1, 2])).update_yaxes(title_text="count")
    assert spec_problems(categories) == []


def test_write_experiment_refuses_a_figure_a_reviewer_would_send_back(tmp_path):
    from mi_cluster.plotting import write_experiment

    bad = go.Figure(go.Heatmap(z=[[1, 2]], showscale=False))
    with pytest.raises(ValueError, match="no colour bar"):
        write_experiment(tmp_path, "exp", {}, {"heat": bad}, png=False)
    assert list(tmp_path.iterdir()) == []  # nothing written


# -- every figure make figures wrote -----------------------------------------------------------
@needs_chromium
def test_every_figure_in_figures_passes_the_check():
    svgs = sorted(FIGURES.glob("*.svg"))
    assert len(svgs) >= 60, "figures/ is missing its SVGs: run make figures"
    found = {Path(k).name: v for k, v in svg_problems(svgs).items() if v}
    assert found == {}, json.dumps(found, indent=1, ensure_ascii=False)


def test_every_static_figure_has_its_svg_png_and_html_and_the_contact_sheet_shows_them():
    from PIL import Image

    pngs = sorted(p for p in FIGURES.glob("*.png") if p.name != "contact_sheet.png")
    for png in pngs:
        assert png.with_suffix(".svg").is_file(), png.name
        if not png.stem.endswith("_strip"):  # a strip stands for its animation's HTML
            assert png.with_suffix(".html").is_file(), png.name
    sheet = Image.open(FIGURES / "contact_sheet.png")
    rows = -(-len(pngs) // 6)
    assert sheet.width == 6 * (320 + 12) + 12
    assert sheet.height >= rows * (320 * 0.2 + 23 + 12)  # every row there
    for svg in FIGURES.glob("*.svg"):
        head = svg.read_text(encoding="utf-8")[:3000]
        assert f"font-family:'{FONT_FAMILY}'" in head and "base64," in head, svg.name
        assert "Arial" not in svg.read_text(encoding="utf-8"), svg.name


def test_figures_readme_keeps_a_less_than_sign():
    fig = _line(title="supported where p < 0.05 <br><sup>and <b>bold</b></sup>")
    assert figure_record(fig)["title"] == "supported where p < 0.05 and bold"
    assert plain_text("a &lt; b<br>c") == "a < b c"


# -- the font, its metrics and wrapping --------------------------------------------------------
@needs_chromium
def test_svg_embeds_the_font_and_is_the_same_bytes_each_time(tmp_path):
    fig = _line(title="Wombat <b>bold</b>")
    (a,) = save_figure(fig, tmp_path / "a.svg")
    (b,) = save_figure(fig, tmp_path / "b.svg")
    assert a.read_bytes() == b.read_bytes()
    faces = re.findall(r"@font-face\{[^}]*\}", a.read_text(encoding="utf-8"))
    assert len(faces) == 2 and all("data:font/ttf;base64," in f for f in faces)  # with bold
    (plain,) = save_figure(_line(title="Wombat"), tmp_path / "plain.svg")
    assert plain.read_text(encoding="utf-8").count("@font-face") == 1  # no bold, no bold face
    assert a.stat().st_size < 60_000  # subsets, not the whole font (290 KB a weight)


def test_text_width_and_wrapping():
    assert text_width("iiii", 10) < text_width("WWWW", 10)
    assert text_width("<b>x</b>", 20) > text_width("x", 20)
    assert text_width("a<br>bb", 10) == pytest.approx(text_width("bb", 10))
    title = "toy-ioi: attention by layer and head (queries down, keys across)"
    wrapped = wrap_text(title, 300, 18)
    assert wrapped.replace("<br>", " ") == title
    assert all(text_width(line, 18) <= 300 for line in wrapped.split("<br>"))
    fig = apply_paper_style(go.Figure(layout_title_text=title * 2), 400, 300)
    assert fig.layout.title.text.count("<br>") >= 2


# -- stated colour scales -----------------------------------------------------------------------
def test_colour_scales_are_stated_and_never_stretch_noise():
    noise = torch.full((2, 3), 4e-18)
    assert colour_scale("attention", [noise]).high == NOISE_FLOOR
    signed = colour_scale("effect", [torch.tensor([[-0.5, 2.0]]), torch.tensor([[1.0]])])
    assert (signed.low, signed.high, signed.diverging) == (-2.0, 2.0, True)
    positive = colour_scale("fraction", [torch.tensor([[0.2, 0.6]])])
    assert (positive.low, positive.diverging) == (0.0, False)
    assert positive.high == pytest.approx(0.6)
    assert colour_scale("attention", [noise], stated=(0, 1)).high == 1.0
    with pytest.raises(ValueError, match="low to high"):
        colour_scale("x", [noise], stated=(1, 0))


def test_head_maps_share_a_scale_per_unit_with_a_colour_bar_each():
    z = torch.zeros(3, 4)
    z[1, :2] = torch.tensor([2.0, -0.5])
    noise = torch.rand(3, 4, generator=torch.Generator().manual_seed(0)) * 1e-17
    fig = head_maps(
        [z, z, noise, torch.rand(3, 4)],
        ["effect a", "effect b", "attention noise", "attention"],
        ["logit diff", "logit diff", "attention", "attention"],
        stated={"attention": (0.0, 1.0)},
    )
    assert spec_problems(fig) == []
    axes = [t.coloraxis for t in fig.data]
    assert axes == ["coloraxis", "coloraxis", "coloraxis2", "coloraxis2"]
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (-2.0, 2.0)
    assert (fig.layout.coloraxis2.cmin, fig.layout.coloraxis2.cmax) == (0.0, 1.0)  # not 1e-17
    assert fig.layout.coloraxis2.colorbar.title.text == "attention"
    assert "-0.00" not in json.dumps([t.text for t in fig.data])


# -- labels and points --------------------------------------------------------------------------
def test_labels_are_placed_without_overlap_or_left_off():
    g = torch.Generator().manual_seed(1)
    pts = (torch.rand(60, 2, generator=g) * 300).tolist()
    texts = [f"word{k}" for k in range(60)]
    places = place_labels([tuple(p) for p in pts], texts, size=10, marker=8, canvas=(300, 300))
    assert any(p is None for p in places) and sum(p is not None for p in places) > 10
    same = place_labels([(100.0, 100.0)] * 19, ["lamp"] * 19, size=10, marker=8, canvas=(300, 300))
    assert sum(p is not None for p in same) == 1  # 19 labels on one spot: one is drawn


def test_coinciding_points_are_said_not_hidden():
    x = [0.0] * 20 + [1.0] * 15 + [2.0] * 5
    fig = value_scatter(x, x, "attention", "logit diff", title="t")
    (trace,) = fig.data
    assert list(trace.x) == [0.0, 1.0, 2.0]
    assert trace.marker.size[0] > trace.marker.size[2]
    assert "40 points at 3 distinct places" in fig.layout.title.text


# -- HTML and still images -----------------------------------------------------------------------
def test_html_is_responsive_with_the_toolbar_clear_of_the_title(tmp_path):
    (page,) = save_figure(_line(title="responsive"), tmp_path / "r.html")
    text = page.read_text(encoding="utf-8")
    assert '"responsive": true' in text and '"displaylogo": false' in text
    assert "height:360px; width:100%;" in text
    laid = html_layout(_line(title="responsive")).layout
    assert laid.width is None and laid.autosize is True
    assert laid.modebar.orientation == "v" and laid.margin.r == 30 + MODEBAR_PX
    assert '"orientation":"v"' in text and '"autosize":true' in text
    assert "@font-face" in text and (tmp_path / "SourceSansPro-Regular.ttf").is_file()
    assert "Open Font License" in (tmp_path / "SourceSansPro-LICENSE.txt").read_text()
    assert "cdn" not in text.lower()


def test_still_images_carry_no_animation_controls():
    fig = _line(sliders=[{"steps": []}], updatemenus=[{"buttons": []}])
    still = static_figure(fig)
    assert not still.layout.sliders and not still.layout.updatemenus
    assert fig.layout.sliders  # the figure itself keeps them (the HTML plays)
