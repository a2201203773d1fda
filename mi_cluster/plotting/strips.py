"""Key-frame strips: an animation as small multiples, so it can go in a paper (PDF, PNG)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mi_cluster.plotting.labels import place_labels
from mi_cluster.plotting.style import apply_paper_style, legend_below

_LABEL_PX = 9

__all__ = ["keyframe_strip"]


def _frame_labels(fig: go.Figure) -> dict[str, str]:
    """Frame name -> the label its slider step shows (e.g. "L3"), where there is a slider."""
    labels: dict[str, str] = {}
    for slider in fig.layout.sliders or ():
        for step in slider.steps or ():
            args = step.args or ()
            if args and isinstance(args[0], list | tuple) and args[0]:
                labels[str(args[0][0])] = step.label
    return labels


def _pick(fig: go.Figure, frames: Sequence[int | str] | None, max_frames: int) -> list[int]:
    names = [str(f.name) for f in fig.frames]
    by_label = {label: name for name, label in _frame_labels(fig).items()}
    if frames is None:
        k = min(max_frames, len(names))
        return sorted({round(i * (len(names) - 1) / max(k - 1, 1)) for i in range(k)})
    picked = []
    for f in frames:
        if isinstance(f, int) and 0 <= f < len(names):
            picked.append(f)
        elif str(f) in names:
            picked.append(names.index(str(f)))
        elif str(f) in by_label and by_label[str(f)] in names:
            picked.append(names.index(by_label[str(f)]))
        else:
            raise ValueError(f"no frame {f!r}; frames are {names} (labels {list(by_label)})")
    return picked


def _relabel(panel: list[dict], ranges: tuple, size_px: float) -> None:
    """Place the panel's point labels anew for its small size: none overlap; those with no
    free place are left off (hover still names them)."""
    (x0, x1), (y0, y1) = ranges
    items = [(t, i) for t in panel if "text" in str(t.get("mode", "")) for i in range(len(t["x"]))]
    pts = [
        ((t["x"][i] - x0) * size_px / (x1 - x0), (t["y"][i] - y0) * size_px / (y1 - y0))
        for t, i in items
    ]
    texts = [str(t["text"][i]) if t.get("text") is not None else "" for t, i in items]
    places = place_labels(pts, texts, size=_LABEL_PX, marker=7, canvas=(size_px, size_px))
    for t in panel:
        if "text" in str(t.get("mode", "")):
            t["text"], t["textposition"] = list(t["text"]), ["top center"] * len(t["x"])
            t["textfont"] = {**(t.get("textfont") or {}), "size": _LABEL_PX}
    for (t, i), place in zip(items, places, strict=True):
        t["text"][i] = t["text"][i] if place else ""
        t["textposition"][i] = place or "top center"


def keyframe_strip(
    fig: go.Figure,
    frames: Sequence[int | str] | None = None,
    *,
    max_frames: int = 12,
    columns: int | None = None,
    panel: int = 280,
) -> go.Figure:
    """Small multiples of an animation's frames on the animation's own axes, point labels
    placed anew for the small panels (never overlapping; see
    :func:`~mi_cluster.plotting.labels.place_labels`).

    Args:
        fig: a figure with ``frames`` (e.g. :func:`mi_cluster.plotting.layer_scatter`).
        frames: which frames, by index, name or slider label (``"L3"``); default every
            frame, or ``max_frames`` evenly spaced (first and last included) where there
            are more, and then the title says which are shown.
        max_frames: how many frames at most when ``frames`` is not given.
        columns: panels per row (default: all in one row up to 4, else 4 a row).
        panel: each panel's size in pixels.
    """
    if not fig.frames:
        raise ValueError("keyframe_strip needs a figure with animation frames")
    names = [str(f.name) for f in fig.frames]
    labels = _frame_labels(fig)
    picked = _pick(fig, frames, max_frames)
    n = len(picked)
    cols = columns or min(n, 4)
    rows = math.ceil(n / cols)
    shown = [labels.get(names[i], names[i]) for i in picked]
    strip = make_subplots(
        rows=rows, cols=cols, subplot_titles=shown, horizontal_spacing=0.03,
        vertical_spacing=0.35 / rows,
    )  # fmt: skip
    ranges = (tuple(fig.layout.xaxis.range), tuple(fig.layout.yaxis.range))
    traces = fig.to_plotly_json()["data"]  # the figure's traces, as plotly JSON
    for k, i in enumerate(picked):
        frame = fig.frames[i]
        data: Sequence[Any] = frame.data  # plotly's stubs do not type a figure's data
        indices = list(frame.traces) if frame.traces is not None else range(len(data))
        merged = [
            {**(traces[j] if j < len(traces) else {}), **trace.to_plotly_json()}
            for j, trace in zip(indices, data, strict=False)
        ]
        _relabel(merged, ranges, panel - 40)
        row, col = k // cols + 1, k % cols + 1
        for spec, trace in zip(merged, data, strict=False):
            spec["showlegend"] = k == 0 and spec.get("showlegend", True) is not False
            strip.add_trace(type(trace)(spec), row=row, col=col)
        strip.update_xaxes(range=ranges[0], showticklabels=row == rows, row=row, col=col)
        strip.update_yaxes(range=ranges[1], showticklabels=col == 1, row=row, col=col)
        if row == rows or k + cols >= n:  # the lowest panel of its column: its x title
            strip.update_xaxes(title_text=fig.layout.xaxis.title.text, showticklabels=True,
                               row=row, col=col)  # fmt: skip
        if col == 1:
            strip.update_yaxes(title_text=fig.layout.yaxis.title.text, row=row, col=col)
    title = (fig.layout.title.text or "").split("<br>")[0]
    which = "every frame" if n == len(names) else f"{n} of {len(names)} frames"
    strip.update_layout(title=f"{title} ({which})" if title else which, margin={"t": 90})
    strip = apply_paper_style(strip, width=cols * panel + 120, height=rows * (panel + 40) + 150)
    return legend_below(strip)
