"""A plain scatter of paired values (e.g. two models' pairwise similarities, for RSA)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go

from mi_cluster.plotting.style import PALETTE, apply_paper_style

__all__ = ["value_scatter"]


def value_scatter(
    x: Sequence[float],
    y: Sequence[float],
    x_title: str,
    y_title: str,
    *,
    title: str = "",
    hover: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
) -> go.Figure:
    """One point per pair ``(x[i], y[i])``, coloured by ``groups`` if given. Pairs that
    coincide are drawn once with a marker whose area grows with their number, and the
    title says how many points fell on how many places (40 prompts on 3 dots is said, not
    hidden)."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} x values and {len(y)} y values")
    labels = list(groups) if groups is not None else [""] * len(x)
    if len(labels) != len(x):
        raise ValueError(f"{len(labels)} groups for {len(x)} points")
    hover = list(hover) if hover is not None else [""] * len(x)
    fig = go.Figure()
    distinct = 0
    for k, g in enumerate(dict.fromkeys(labels)):
        points: dict[tuple[float, float], list[int]] = {}  # a point -> the pairs drawn there
        for i, lab in enumerate(labels):
            if lab == g:
                points.setdefault((float(x[i]), float(y[i])), []).append(i)
        distinct += len(points)
        counts = [len(idx) for idx in points.values()]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="markers",
                name=g or "pairs",
                showlegend=bool(g),
                hovertext=[
                    hover[idx[0]] + (f" (and {len(idx) - 1} more here)" if len(idx) > 1 else "")
                    for idx in points.values()
                ],
                hoverinfo="text+x+y",
                marker={
                    "size": [7 * math.sqrt(c) for c in counts],  # area in proportion to count
                    "color": PALETTE[k % len(PALETTE)],
                    "opacity": 0.7,
                    "line": {"width": 0.5},
                },
            )
        )
    if distinct < len(x):
        note = f"{len(x)} points at {distinct} distinct places; marker area ∝ points there"
        title = f"{title}<br><span style='font-size:12px'>{note}</span>" if title else note
    fig.update_layout(title={"text": title, "x": 0.5, "xanchor": "center"})
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return apply_paper_style(fig, width=560, height=500)
