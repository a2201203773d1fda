"""Per-head figures: layer x head maps of several quantities, and head-role claims with
their confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from mi_cluster.plotting.style import PALETTE, apply_paper_style
from mi_cluster.studies.ioi.claims import HeadClaim

__all__ = ["claims_forest", "head_maps"]


def head_maps(
    values: Sequence[Float[Tensor, "layer head"]],
    titles: Sequence[str],
    title: str = "",
    columns: int = 3,
    shared_scale: str | None = None,
) -> go.Figure:
    """One layer x head heatmap per quantity (attention, direct logit attribution, copy
    score, ...), each on its own diverging scale centred at zero, cells labelled with their
    value (quantities in different units do not share a colour scale); NaN cells (e.g.
    heads that cannot send to a receiver) are left blank. ``shared_scale``: the unit's name
    when every map is in the same unit: then they share one scale, with a colour bar."""
    if not values or len(values) != len(titles):
        raise ValueError(f"{len(values)} maps and {len(titles)} titles: give one title a map")
    shape = tuple(values[0].shape)
    if len(shape) != 2 or any(tuple(v.shape) != shape for v in values):
        raise ValueError(f"every map must be [layer, head] of one shape, got {shape} first")
    n_layers, n_heads = shape
    columns = min(columns, len(values))
    rows = -(-len(values) // columns)
    fig = make_subplots(
        rows=rows, cols=columns, subplot_titles=list(titles), horizontal_spacing=0.06,
        vertical_spacing=0.16,
    )  # fmt: skip
    maps = [v.detach().double().cpu() for v in values]
    shared = max(float(z.nan_to_num(0.0).abs().max()) for z in maps) or 1.0
    for k, z in enumerate(maps):
        bound = shared if shared_scale else float(z.nan_to_num(0.0).abs().max()) or 1.0
        scale = {"coloraxis": "coloraxis"} if shared_scale else {
            "colorscale": "RdBu", "zmid": 0, "zmin": -bound, "zmax": bound, "showscale": False,
        }  # fmt: skip
        fig.add_trace(
            go.Heatmap(
                z=z.tolist(),
                x=[f"H{h}" for h in range(n_heads)],
                y=[f"L{a}" for a in range(n_layers)],
                **scale,
                text=[["" if x != x else f"{x:.2f}" for x in row] for row in z.tolist()],
                texttemplate="%{text}" if n_heads <= 12 and n_layers <= 12 else None,
                textfont={"size": 10},
                hovertemplate="%{y}%{x}: %{z:.3f}<extra></extra>",
            ),
            row=k // columns + 1,
            col=k % columns + 1,
        )
        fig.update_yaxes(autorange="reversed", row=k // columns + 1, col=k % columns + 1)
    fig.update_layout(title={"text": title, "x": 0.5, "xanchor": "center"})
    if shared_scale:
        fig.update_layout(
            coloraxis={
                "colorscale": "RdBu", "cmid": 0, "cmin": -shared, "cmax": shared,
                "colorbar": {"title": shared_scale},
            }
        )  # fmt: skip
    width = columns * max(260, 30 * n_heads) + 120 + (100 if shared_scale else 0)
    return apply_paper_style(fig, width=width, height=rows * max(240, 34 * n_layers + 120) + 80)


def _label(claim: HeadClaim) -> str:
    return ", ".join(f"L{a}H{b}" for a, b in claim.heads)


def claims_forest(claims: Sequence[HeadClaim], title: str = "", alpha: float = 0.05) -> go.Figure:
    """Each claim's effect with its 95% interval, one panel per kind of claim (their units
    differ), one row per head set; filled markers where the claim is supported at
    ``alpha``, open where not; the p-value and its null in the hover text."""
    if not claims:
        raise ValueError("no claims to plot")
    kinds = list(dict.fromkeys(c.claim for c in claims))
    fig = make_subplots(
        rows=len(kinds), cols=1, subplot_titles=kinds, vertical_spacing=0.5 / len(kinds)
    )
    shown: set[bool] = set()  # legend groups with an entry already
    for k, kind in enumerate(kinds):
        group = [c for c in claims if c.claim == kind]
        for supported in (True, False):
            sub = [c for c in group if c.supported(alpha) == supported]
            if not sub:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[c.effect for c in sub],
                    y=[_label(c) for c in sub],
                    error_x={
                        "type": "data",
                        "symmetric": False,
                        "array": [c.ci_high - c.effect for c in sub],
                        "arrayminus": [c.effect - c.ci_low for c in sub],
                    },
                    mode="markers+text",
                    text=[f"  p = {c.p_value:.2g}" for c in sub],
                    textposition="middle right",
                    cliponaxis=False,
                    textfont={"size": 10},
                    hovertext=[str(c) for c in sub],
                    hoverinfo="text",
                    marker={
                        "size": 9,
                        "color": PALETTE[0] if supported else PALETTE[1],
                        "symbol": "circle" if supported else "circle-open",
                    },
                    name=f"supported (p < {alpha}, CI excludes 0)"
                    if supported
                    else "not supported",
                    legendgroup=str(supported),
                    showlegend=supported not in shown,
                ),
                row=k + 1,
                col=1,
            )
            shown.add(supported)
        axis = "" if k == 0 else str(k + 1)
        fig.add_shape(
            type="line", x0=0, x1=0, y0=0, y1=1, xref=f"x{axis}", yref=f"y{axis} domain",
            line={"color": "#888", "dash": "dot"},
        )  # fmt: skip
        labels = list(dict.fromkeys(_label(c) for c in group))
        fig.update_yaxes(
            categoryorder="array", categoryarray=labels, range=[len(labels) - 0.5, -0.7],
            row=k + 1, col=1,
        )  # fmt: skip
        low = min(0.0, *(c.ci_low for c in group))
        high = max(0.0, *(c.ci_high for c in group))
        pad = 0.25 * (high - low or 1.0)
        fig.update_xaxes(range=[low - 0.05 * pad, high + pad], row=k + 1, col=1)
    fig.update_layout(
        title={"text": title, "x": 0.5, "xanchor": "center"},
        legend={"orientation": "h", "y": -0.08},
    )
    rows = sum(len({_label(c) for c in claims if c.claim == kind}) for kind in kinds)
    return apply_paper_style(fig, width=760, height=160 + 90 * len(kinds) + 34 * rows)
