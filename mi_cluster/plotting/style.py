"""One paper style for every mi_cluster figure."""

from __future__ import annotations

import plotly.graph_objects as go

__all__ = ["GROUP_STYLES", "PALETTE", "apply_paper_style", "color_for", "marker_for"]

# Colour-blind-safe (Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
# The subject/object design's groups: names blue, objects vermillion/orange; circles for
# names, diamonds for objects; filled in subject position, open in object position.
GROUP_STYLES: dict[str, tuple[str, str]] = {
    "name · subject": ("#0072B2", "circle"),
    "name · object": ("#56B4E9", "circle-open"),
    "object · subject": ("#D55E00", "diamond"),
    "object · object": ("#E69F00", "diamond-open"),
    "name · alone": ("#000000", "circle-dot"),
    "object · alone": ("#999999", "diamond-dot"),
}


def color_for(group: str, order: list[str]) -> str:
    style = GROUP_STYLES.get(group)
    return style[0] if style else PALETTE[order.index(group) % len(PALETTE)]


def marker_for(group: str, order: list[str]) -> str:
    style = GROUP_STYLES.get(group)
    symbols = ("circle", "diamond", "square", "triangle-up", "cross", "x", "star", "hexagon")
    return style[1] if style else symbols[order.index(group) % len(symbols)]


def apply_paper_style(fig: go.Figure, width: int = 760, height: int = 560) -> go.Figure:
    fig.update_layout(
        template="simple_white",
        font={"family": "Arial, Helvetica, sans-serif", "size": 13},
        width=width,
        height=height,
    )
    fig.update_layout(
        margin={"l": 70, "r": 30, "t": fig.layout.margin.t or 80, "b": fig.layout.margin.b or 60},
        legend={"bgcolor": "rgba(255,255,255,0.7)"},
    )
    return fig
