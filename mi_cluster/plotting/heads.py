"""Per-head figures: layer x head maps of several quantities, and head-role claims with
their confidence intervals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from mi_cluster.plotting.scales import add_colour_axes, colour_scale
from mi_cluster.plotting.style import PALETTE, apply_paper_style, legend_below
from mi_cluster.studies.ioi.claims import HeadClaim

__all__ = ["claims_forest", "head_maps"]


def head_maps(
    values: Sequence[Float[Tensor, "_layer head"]],
    titles: Sequence[str],
    units: Sequence[str],
    title: str = "",
    columns: int = 3,
    stated: Mapping[str, tuple[float, float]] | None = None,
) -> go.Figure:
    """One layer x head heatmap per quantity (attention, direct logit attribution, copy
    score, ...), cells labelled with their value; NaN cells are left blank, and a map may
    have fewer layers than the others (e.g. the heads that can send to a receiver). Maps in
    the same unit (``units``, one a map) share one
    colour scale, each unit with its own titled colour bar (:mod:`~mi_cluster.plotting.scales`:
    signed units diverge around zero, a map of rounding noise is drawn white); ``stated``
    gives a unit its natural range, e.g. ``{"attention": (0, 1)}``."""
    if not values or not len(values) == len(titles) == len(units):
        raise ValueError(
            f"{len(values)} maps, {len(titles)} titles and {len(units)} units: give one "
            "title and one unit a map"
        )
    if any(v.ndim != 2 for v in values) or len({v.shape[1] for v in values}) != 1:
        shapes = [tuple(v.shape) for v in values]
        raise ValueError(f"every map must be [layer, head] with one number of heads, got {shapes}")
    n_layers, n_heads = max(v.shape[0] for v in values), values[0].shape[1]
    columns = min(columns, len(values))
    rows = -(-len(values) // columns)
    fig = make_subplots(
        rows=rows, cols=columns, subplot_titles=list(titles), horizontal_spacing=0.05,
        vertical_spacing=0.2 / rows + 0.06,
    )  # fmt: skip
    maps = [v.detach().double().cpu() for v in values]
    order = list(dict.fromkeys(units))
    scales = [
        colour_scale(u, [z for z, w in zip(maps, units, strict=True) if w == u],
                     stated=(stated or {}).get(u))
        for u in order
    ]  # fmt: skip
    axes = dict(zip(order, add_colour_axes(fig, scales), strict=True))
    for k, (z, unit) in enumerate(zip(maps, units, strict=True)):
        row, col = k // columns + 1, k % columns + 1
        fig.add_trace(
            go.Heatmap(
                z=z.tolist(),
                x=[f"H{h}" for h in range(n_heads)],
                y=[f"L{a}" for a in range(z.shape[0])],
                coloraxis=axes[unit],
                text=[["" if x != x else _cell(x) for x in r] for r in z.tolist()],
                texttemplate="%{text}" if n_heads <= 12 and n_layers <= 12 else None,
                textfont={"size": 10},
                hovertemplate="%{y}%{x}: %{z:.3f}<extra>" + unit + "</extra>",
                name=titles[k],
            ),
            row=row,
            col=col,
        )
        fig.update_yaxes(autorange="reversed", row=row, col=col)
        fig.update_xaxes(tickangle=0, tickfont_size=11, row=row, col=col)
    fig.update_layout(title={"text": title, "x": 0.5, "xanchor": "center"})
    width = columns * max(260, 34 * n_heads) + 200
    return apply_paper_style(fig, width=width, height=rows * max(240, 34 * n_layers + 110) + 90)


def _cell(x: float) -> str:
    """A cell's label: two decimals, and a value that rounds to zero reads 0 (never -0.00)."""
    text = f"{x:.2f}"
    return "0" if float(text) == 0 else text


def _label(claim: HeadClaim) -> str:
    return ", ".join(f"L{a}H{b}" for a, b in claim.heads)


def claims_forest(claims: Sequence[HeadClaim], title: str = "", alpha: float = 0.05) -> go.Figure:
    """Each claim's effect with its 95% interval, one panel per kind of claim (their units
    differ: each x axis is titled with its claims' unit), one row per head set; filled
    markers where the claim is supported at ``alpha``, open where not; each p-value in a
    column right of its panel, the null in the hover text."""
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
                    mode="markers",
                    hovertext=[str(c) for c in sub],
                    hoverinfo="text",
                    marker={
                        "size": 9,
                        "color": PALETTE[0] if supported else PALETTE[1],
                        "symbol": "circle" if supported else "circle-open",
                    },
                    name=f"supported (p < {alpha} and the 95% CI excludes 0)"
                    if supported
                    else f"not supported (p ≥ {alpha} or the CI includes 0)",
                    legendgroup=str(supported),
                    showlegend=supported not in shown,
                ),
                row=k + 1,
                col=1,
            )
            shown.add(supported)
        axis = "" if k == 0 else str(k + 1)
        for c in group:  # p-values in a column right of the panel, clear of the whiskers
            fig.add_annotation(
                x=1.01, xref=f"x{axis} domain", xanchor="left", y=_label(c), yref=f"y{axis}",
                text=f"p = {c.p_value:.2g}", showarrow=False, font={"size": 11},
            )  # fmt: skip
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
        pad = 0.08 * (high - low or 1.0)  # markers at the ends stay whole
        unit = next((c.unit for c in group if c.unit), "effect")
        fig.update_xaxes(range=[low - pad, high + pad], title_text=unit, row=k + 1, col=1)
    fig.update_layout(
        title={"text": title, "x": 0.5, "xanchor": "center"},
    )
    rows = sum(len({_label(c) for c in claims if c.claim == kind}) for kind in kinds)
    fig = apply_paper_style(fig, width=760, height=140 + 130 * len(kinds) + 34 * rows)
    fig.update_layout(margin_r=90)
    return legend_below(fig)
