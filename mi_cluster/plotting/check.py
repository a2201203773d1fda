"""A reviewer's first look, automated: what makes a figure misleading or unreadable.

- :func:`spec_problems` reads a figure before it is drawn: every heatmap states its colour
  scale (a colour bar of its own, or a shared colour axis that shows one), every colour
  bar and every axis that carries numbers has a title.
- :func:`svg_problems` looks at written SVGs as a reader sees them, in a headless Chromium
  (each with the font embedded in it): no text leaves the canvas or overlaps another text
  (rotated labels included), every heatmap has a colour bar with a title, every axis whose
  tick labels are numbers has a title, and no animation controls in a still image.

Both return problems as sentences that name the text or the trace; empty means none seen.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from mi_cluster.plotting.browser import INSTALL_HINT, FigureExportError, chromium_path

__all__ = ["spec_problems", "svg_problems"]

_NUMERIC_AXES = ("linear", "log", "date")


def _colour_bar_problems(fig: go.Figure) -> list[str]:
    out = []
    traces: Sequence[Any] = fig.data  # pyright: ignore[reportAssignmentType]
    for k, trace in enumerate(traces):
        if trace.type not in ("heatmap", "contour", "histogram2d"):
            continue
        name = trace.name or f"trace {k}"
        if trace.coloraxis:
            axis = fig.layout[trace.coloraxis]
            if axis.showscale is False:
                out.append(f"heatmap {name!r} uses {trace.coloraxis}, whose colour bar is hidden")
            elif not (axis.colorbar.title.text or "").strip():
                out.append(f"the colour bar of {trace.coloraxis} has no title")
        elif trace.showscale is False:
            out.append(f"heatmap {name!r} has its own colour scale and no colour bar")
        elif not (trace.colorbar.title.text or "").strip():
            out.append(f"the colour bar of heatmap {name!r} has no title")
    return sorted(set(out))


def _axis_uses(fig: go.Figure) -> dict[str, set[str]]:
    """Per axis name (``"xaxis"``, ``"yaxis2"``, ...), the kinds of value plotted on it."""
    uses: dict[str, set[str]] = {}
    traces: Sequence[Any] = fig.data  # pyright: ignore[reportAssignmentType]
    for trace in traces:
        for letter in ("x", "y"):
            ref = getattr(trace, f"{letter}axis", None) or letter
            values = getattr(trace, letter, None)
            if values is None or len(values) == 0:
                continue
            kind = "number" if all(isinstance(v, int | float) for v in values) else "label"
            uses.setdefault(ref.replace(letter, f"{letter}axis", 1), set()).add(kind)
    return uses


def spec_problems(fig: go.Figure) -> list[str]:
    """What is wrong with ``fig`` before it is drawn (see the module's text)."""
    out = _colour_bar_problems(fig)
    for axis, kinds in sorted(_axis_uses(fig).items()):
        layout_axis = fig.layout[axis]
        if layout_axis is None or layout_axis.visible is False:
            continue
        if layout_axis.showticklabels is False or kinds != {"number"}:
            continue
        if layout_axis.type not in (None, "-", *_NUMERIC_AXES):
            continue
        if not (layout_axis.title.text or "").strip():
            out.append(f"{axis} carries numbers but has no title")
    return out


def svg_problems(
    paths: Sequence[str | os.PathLike], *, timeout: float = 300.0
) -> dict[str, list[str]]:
    """Per SVG file, what a reader would see wrong with it (see the module's text), all
    checked in one headless Chromium run. Raises :class:`FigureExportError` without a
    Chromium, or if it fails or gives no answer within ``timeout`` seconds."""
    browser = chromium_path()
    if browser is None:
        raise FigureExportError(f"no Chromium to check figures in; {INSTALL_HINT}")
    files = [Path(p).resolve() for p in paths]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such SVG: {missing}")
    script = resources.files("mi_cluster.plotting").joinpath("check_svg.js").read_text("utf-8")
    urls = [p.as_uri() for p in files]
    with tempfile.TemporaryDirectory(prefix="mi_cluster_check_") as tmp:
        page = Path(tmp) / "check.html"
        page.write_text(
            "<!doctype html><html><head><meta charset='utf-8'></head><body>"
            "<div id='stage'></div><pre id='result'></pre>"
            f"<script>window.FIGURES = {json.dumps(urls)};</script>"
            f"<script>{script}</script></body></html>",
            encoding="utf-8",
        )
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--allow-file-access-from-files", f"--user-data-dir={tmp}/profile",
            f"--virtual-time-budget={int(timeout * 1000)}", "--dump-dom", page.as_uri(),
        ]  # fmt: skip
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FigureExportError(
                f"the figure check in {browser} did not finish within {timeout:g} s"
            ) from None
    start = proc.stdout.find('<pre id="result">')
    end = proc.stdout.find("</pre>", start)
    body = html.unescape(proc.stdout[start + len('<pre id="result">') : end]) if start >= 0 else ""
    if not body:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise FigureExportError(f"the figure check in {browser} gave no answer: {tail}")
    found = json.loads(body)
    return {str(p): found.get(u, ["not checked"]) for p, u in zip(files, urls, strict=True)}
