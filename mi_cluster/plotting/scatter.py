"""A plain scatter of paired values (e.g. two models' pairwise similarities, for RSA)."""

from __future__ import annotations

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
    """One point per pair ``(x[i], y[i])``, coloured by ``groups`` if given."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} x values and {len(y)} y values")
    labels = list(groups) if groups is not None else [""] * len(x)
    if len(labels) != len(x):
        raise ValueError(f"{len(labels)} groups for {len(x)} points")
    hover = list(hover) if hover is not None else [""] * len(x)
    fig = go.Figure()
    for k, g in enumerate(dict.fromkeys(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == g]
        fig.add_trace(
            go.Scatter(
                x=[float(x[i]) for i in idx],
                y=[float(y[i]) for i in idx],
                mode="markers",
                name=g or "pairs",
                showlegend=bool(g),
                hovertext=[hover[i] for i in idx],
                hoverinfo="text+x+y",
                marker={
                    "size": 7,
                    "color": PALETTE[k % len(PALETTE)],
                    "opacity": 0.7,
                    "line": {"width": 0.5},
                },
            )
        )
    fig.update_layout(title={"text": title, "x": 0.5, "xanchor": "center"})
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return apply_paper_style(fig, width=560, height=500)
