"""Key-frame strips: an animation as small multiples, so it can go in a paper (PDF, PNG)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mi_cluster.plotting.style import apply_paper_style

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


def keyframe_strip(
    fig: go.Figure,
    frames: Sequence[int | str] | None = None,
    *,
    max_frames: int = 6,
    columns: int | None = None,
    panel: int = 280,
) -> go.Figure:
    """Small multiples of an animation's frames on the animation's own axes.

    Args:
        fig: a figure with ``frames`` (e.g. :func:`mi_cluster.plotting.layer_scatter`).
        frames: which frames, by index, name or slider label (``"L3"``); default up to
            ``max_frames`` evenly spaced, first and last included.
        max_frames: how many frames at most when ``frames`` is not given.
        columns: panels per row (default: all in one row up to 4, else 3 a row).
        panel: each panel's size in pixels.
    """
    if not fig.frames:
        raise ValueError("keyframe_strip needs a figure with animation frames")
    names = [str(f.name) for f in fig.frames]
    labels = _frame_labels(fig)
    by_label = {label: name for name, label in labels.items()}
    if frames is None:
        k = min(max_frames, len(names))
        picked = sorted({round(i * (len(names) - 1) / max(k - 1, 1)) for i in range(k)})
    else:
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
    n = len(picked)
    cols = columns or (n if n <= 4 else 3)
    rows = math.ceil(n / cols)
    strip = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[labels.get(names[i], names[i]) for i in picked],
        horizontal_spacing=0.04,
        vertical_spacing=0.1,
    )
    x_range, y_range = fig.layout.xaxis.range, fig.layout.yaxis.range
    traces = fig.to_plotly_json()["data"]  # the figure's traces, as plotly JSON
    for k, i in enumerate(picked):
        frame = fig.frames[i]
        data: Sequence[Any] = frame.data  # plotly's stubs do not type a figure's data
        indices = list(frame.traces) if frame.traces is not None else range(len(data))
        for j, trace in zip(indices, data, strict=False):
            base = traces[j] if j < len(traces) else {}
            merged = {**base, **trace.to_plotly_json()}
            merged["showlegend"] = k == 0 and merged.get("showlegend", True) is not False
            if "mode" in merged:  # word labels clutter small panels: markers only
                merged["mode"] = str(merged["mode"]).replace("+text", "")
            strip.add_trace(type(trace)(merged), row=k // cols + 1, col=k % cols + 1)
        strip.update_xaxes(range=x_range, row=k // cols + 1, col=k % cols + 1)
        strip.update_yaxes(range=y_range, row=k // cols + 1, col=k % cols + 1)
    title = (fig.layout.title.text or "").split("<br>")[0]
    strip.update_layout(
        title=title + (" (key frames)" if title else "key frames"),
        legend={"orientation": "h", "y": -0.12, "yanchor": "top", "x": 0},
        margin={"t": 90, "b": 90},
    )
    strip.update_xaxes(title_text=fig.layout.xaxis.title.text, row=rows, col=1)
    strip.update_yaxes(title_text=fig.layout.yaxis.title.text, row=rows, col=1)
    return apply_paper_style(strip, width=cols * panel + 120, height=rows * panel + 200)
