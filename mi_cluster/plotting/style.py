"""One paper style for every mi_cluster figure."""

from __future__ import annotations

import plotly.graph_objects as go

__all__ = ["GROUP_COLORS", "PALETTE", "apply_paper_style", "color_for"]

# Colour-blind-safe (Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
GROUP_COLORS = {
    "name alone": "#0072B2",
    "name in context": "#56B4E9",
    "object alone": "#D55E00",
    "object in context": "#E69F00",
}


def color_for(group: str, order: list[str]) -> str:
    return GROUP_COLORS.get(group, PALETTE[order.index(group) % len(PALETTE)])


def apply_paper_style(fig: go.Figure, width: int = 760, height: int = 560) -> go.Figure:
    fig.update_layout(
        template="simple_white",
        font={"family": "Arial, Helvetica, sans-serif", "size": 13},
        width=width,
        height=height,
    )
    fig.update_layout(
        margin={"l": 70, "r": 30, "t": 80, "b": fig.layout.margin.b or 60},
        legend={"bgcolor": "rgba(255,255,255,0.7)"},
    )
    return fig
