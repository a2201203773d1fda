"""HTML figures: offline, responsive, in the figures' font.

A page fills its window's width at the figure's height, redraws when the window changes,
keeps plotly's toolbar in a strip of its own at the right edge (never over the title) and
loads plotly.js and the font (with its licence) from files beside it, written once for
all figures in a folder (never from a CDN); or carries both inside it (``embed=True``)."""

from __future__ import annotations

import base64
from pathlib import Path

import plotly.graph_objects as go

from mi_cluster.core.atomic import atomic_path
from mi_cluster.plotting.font import (
    FONT_FAMILY,
    FONT_LICENSE,
    font_face_css,
    font_files,
    font_license,
)

__all__ = ["MODEBAR_PX", "PLOTLY_JS", "html_layout", "write_html"]

PLOTLY_JS = "plotly.min.js"
MODEBAR_PX = 44  # the vertical toolbar's strip, added to the right margin
_CONFIG = {"responsive": True, "displaylogo": False}
# After the font has loaded, plotly lays the text out again with its real widths (plotly
# puts the page's div id in place of {plot_id}).
_AFTER_FONT = (
    "document.fonts.load(\"13px '" + FONT_FAMILY + "'\").then(function () {"
    " Plotly.Plots.resize(document.getElementById('{plot_id}')); });"
)


def _asset(directory: Path, name: str, data: bytes) -> None:
    """Write ``data`` as ``directory/name`` unless that file holds it already (atomically:
    a reader never sees half a file)."""
    target = directory / name
    if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def _local_assets(directory: Path) -> None:
    from plotly.offline import get_plotlyjs

    directory.mkdir(parents=True, exist_ok=True)
    _asset(directory, PLOTLY_JS, get_plotlyjs().encode("utf-8"))
    for path in font_files().values():
        _asset(directory, path.name, path.read_bytes())
    _asset(directory, FONT_LICENSE, font_license().read_bytes())  # the OFL travels with it


def _embedded_font_css() -> str:
    css = font_face_css()
    for path in font_files().values():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        css = css.replace(f"url('{path.name}')", f"url(data:font/ttf;base64,{data})")
    return css


def html_layout(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` laid out for a page: the width follows the window, the height is
    the figure's, and the right margin has room for a vertical toolbar."""
    out = go.Figure(fig)
    right = fig.layout.margin.r if fig.layout.margin.r is not None else 80
    out.update_layout(
        width=None, autosize=True, margin_r=right + MODEBAR_PX, modebar_orientation="v"
    )
    return out


def write_html(fig: go.Figure, target: Path, embed: bool = False) -> None:
    """Write ``fig`` as a page at ``target``, atomically (see the module's text); animations
    keep their controls and do not start on their own."""
    if not embed:
        _local_assets(target.parent)
    div_id = "fig-" + "".join(c if c.isalnum() else "-" for c in target.stem)
    page = html_layout(fig).to_html(
        include_plotlyjs=True if embed else PLOTLY_JS,
        full_html=True,
        auto_play=False,
        div_id=div_id,
        default_width="100%",
        default_height=f"{fig.layout.height or 560}px",
        config=_CONFIG,
        post_script=_AFTER_FONT,
    )
    css = _embedded_font_css() if embed else font_face_css()
    page = page.replace("<head>", f"<head><style>{css}</style>", 1)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
