"""Per-layer line charts (one line per series)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from mi_cluster.plotting.style import PALETTE, apply_paper_style

__all__ = ["layer_lines"]


def layer_lines(
    series: Mapping[str, Sequence[float]],
    layer_labels: Sequence[str],
    title: str = "",
    y_title: str = "",
) -> go.Figure:
    """One line per named series over layers."""
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        if len(values) != len(layer_labels):
            raise ValueError(
                f"series {name!r} has {len(values)} values for {len(layer_labels)} layers"
            )
        fig.add_trace(
            go.Scatter(
                x=list(layer_labels),
                y=[float(v) for v in values],
                mode="lines+markers",
                name=name,
                line={"color": PALETTE[i % len(PALETTE)], "width": 2},
            )
        )
    fig.update_layout(title={"text": title})
    fig.update_xaxes(title="layer", type="category")
    fig.update_yaxes(title=y_title, rangemode="tozero")
    return apply_paper_style(fig, height=440)
