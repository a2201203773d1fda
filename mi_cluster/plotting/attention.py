"""Attention figures: one head's pattern, the model view (every layer and head), a
bertviz-style head view, and the neuron view. All plotly, so all export to PNG/SVG/PDF.

Long inputs stay usable: the head view draws only weights above ``min_weight``, grouped
into a few opacity levels (a handful of traces per head, however many tokens), and every
builder takes a ``window`` of positions to show.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mi_cluster.methods.attention import AttentionPatterns, NeuronView
from mi_cluster.plotting.scales import add_colour_axes, colour_scale
from mi_cluster.plotting.style import PALETTE, apply_paper_style

__all__ = ["head_colors", "plot_head_view", "plot_model_view", "plot_neuron_view", "plot_pattern"]

# Opacity levels of the head view's lines: weights in [low, high) are drawn at `alpha`.
_LEVELS = (
    (0.0, 0.1, 0.15),
    (0.1, 0.25, 0.3),
    (0.25, 0.5, 0.5),
    (0.5, 0.75, 0.75),
    (0.75, 1.01, 1.0),
)


def head_colors(n_heads: int) -> list[str]:
    """One colour per head drawn: the colour-blind-safe palette up to 8 heads, beyond that
    hues spaced evenly round the colour wheel, neighbours alternating dark and light, so
    no two are near-identical."""
    if n_heads <= len(PALETTE):
        return list(PALETTE[:n_heads])
    out = []
    for h in range(n_heads):
        r, g, b = colorsys.hls_to_rgb(h / n_heads, 0.32 if h % 2 else 0.55, 0.8)
        out.append(f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}")
    return out


def _windowed(p: AttentionPatterns, window: tuple[int, int] | None, show_special: bool):
    return p if window is None and show_special else p.select(show_special, window)


def plot_pattern(
    p: AttentionPatterns,
    layer: int,
    head: int,
    *,
    window: tuple[int, int] | None = None,
    show_special: bool = True,
    title: str | None = None,
) -> go.Figure:
    """One head's pattern as a heatmap: queries down, keys across, weights 0..1."""
    p = _windowed(p, window, show_special)
    z = p.pattern[p.layer_index(layer), head].double().cpu()
    n = len(p.labels)
    fig = go.Figure(
        go.Heatmap(
            z=z.tolist(),
            x=list(p.labels),
            y=list(p.labels),
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": "attention"},
            hovertemplate="%{y} → %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(
        autorange="reversed", title_text="query", tickfont={"size": 10 if n < 60 else 6}
    )
    fig.update_xaxes(title_text="key", tickangle=-60, tickfont={"size": 10 if n < 60 else 6})
    side = int(min(1400, max(420, 14 * n + 200)))
    fig.update_layout(title=title or f"{p.model_name}: attention of L{layer}H{head}")
    return apply_paper_style(fig, width=side + 80, height=side)


def plot_model_view(
    p: AttentionPatterns,
    *,
    heads: Sequence[int] | None = None,
    window: tuple[int, int] | None = None,
    show_special: bool = True,
    cell: int = 72,
    title: str | None = None,
) -> go.Figure:
    """Every kept layer (rows) and head (columns) as a small heatmap on one colour scale."""
    p = _windowed(p, window, show_special)
    heads = list(range(p.pattern.shape[1])) if heads is None else list(heads)
    rows, cols = len(p.layers), len(heads)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        row_titles=[f"L{x}" for x in p.layers],
        column_titles=[f"H{h}" for h in heads],
        horizontal_spacing=min(0.01, 0.5 / cols),
        vertical_spacing=min(0.015, 0.5 / rows),
    )
    for i in range(rows):
        for j, h in enumerate(heads):
            fig.add_trace(
                go.Heatmap(
                    z=p.pattern[i, h].double().cpu().round(decimals=4).tolist(),
                    x=list(p.labels),
                    y=list(p.labels),
                    coloraxis="coloraxis",
                    hovertemplate=f"L{p.layers[i]}H{h} " + "%{y} → %{x}: %{z:.3f}<extra></extra>",
                ),
                row=i + 1,
                col=j + 1,
            )
    fig.update_xaxes(showticklabels=False, ticks="", showline=False)
    fig.update_yaxes(showticklabels=False, ticks="", showline=False, autorange="reversed")
    fig.update_layout(
        coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1, "colorbar": {"title": "attention"}},
        title=title or f"{p.model_name}: attention by layer and head (queries down, keys across)",
        margin={"t": 90},
    )
    return apply_paper_style(fig, width=cell * cols + 200, height=cell * rows + 140)


def plot_head_view(
    p: AttentionPatterns,
    layer: int,
    *,
    heads: Sequence[int] | None = None,
    window: tuple[int, int] | None = None,
    show_special: bool = True,
    min_weight: float = 0.02,
    title: str | None = None,
) -> go.Figure:
    """bertviz's head view: tokens in two columns (queries left, keys right), a line from
    each query to each key it attends to, opacity by weight (five levels), one colour per
    head, several heads overlaid (click a legend entry to hide a head). Weights below
    ``min_weight`` are not drawn. For a still image give a few ``heads`` (default: all,
    which only an interactive view can untangle); each drawn head gets its own colour."""
    p = _windowed(p, window, show_special)
    li = p.layer_index(layer)
    n_heads = p.pattern.shape[1]
    heads = list(range(n_heads)) if heads is None else list(heads)
    colors = dict(zip(heads, head_colors(len(heads)), strict=True))
    n = len(p.labels)
    y = [-float(i) for i in range(n)]
    fig = go.Figure()
    for h in heads:
        w = p.pattern[li, h].double().cpu()
        fig.add_trace(  # the legend entry, at full colour (the lines below are faint)
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line={"color": colors[h], "width": 3},
                name=f"H{h}",
                legendgroup=f"H{h}",
            )
        )
        for low, high, alpha in _LEVELS:
            q, k = ((w >= max(low, min_weight)) & (w < high)).nonzero(as_tuple=True)
            if len(q) == 0:
                continue
            xs, ys = [], []
            for a, b in zip(q.tolist(), k.tolist(), strict=True):
                xs += [0.0, 1.0, None]
                ys += [y[a], y[b], None]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    line={"color": colors[h], "width": 1 + 2 * alpha},
                    opacity=alpha,
                    name=f"H{h}",
                    legendgroup=f"H{h}",
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
    font_color = ["#888888" if s else "#000000" for s in p.special]
    for x, side in ((0.0, "middle left"), (1.0, "middle right")):
        fig.add_trace(
            go.Scatter(
                x=[x] * n,
                y=y,
                mode="text",
                text=list(p.labels),
                textposition=side,
                textfont={"color": font_color, "size": 12 if n < 80 else 9},
                showlegend=False,
                hoverinfo="text",
            )
        )
    fig.update_xaxes(visible=False, range=[-0.7, 1.7])
    fig.update_yaxes(visible=False, range=[-n + 0.3, 1.0])
    fig.update_layout(
        title=title
        or f"{p.model_name}: head view of layer {layer}"
        + (f" (heads {', '.join(f'H{h}' for h in heads)})" if len(heads) < n_heads else ""),
        legend={"orientation": "h", "x": 0, "y": 0, "yanchor": "top", "entrywidth": 56},
        margin={"t": 70, "l": 20, "r": 20, "b": 30 + 26 * math.ceil(len(heads) / 8)},
    )
    height = 18 * n + 100 + 26 * math.ceil(len(heads) / 8)
    return apply_paper_style(fig, width=620, height=int(max(360, height)))


def plot_neuron_view(nv: NeuronView, title: str | None = None, model_name: str = "") -> go.Figure:
    """bertviz's neuron view for one head and query token: the query vector q, the key
    vectors k, their elementwise product q × k, the scores q · k / scale and the softmax
    (the attention weights), one row per key token. q and k share one colour scale, q × k
    has its own; both colour bars are titled; ``model_name`` heads the default title."""
    keys = list(nv.labels)
    d = nv.q.shape[0]
    fig = make_subplots(
        rows=2,
        cols=4,
        row_heights=[0.12, 0.88],
        column_widths=[0.34, 0.34, 0.16, 0.16],
        shared_yaxes=False,
        horizontal_spacing=0.03,
        vertical_spacing=0.1,
        specs=[[{}, None, None, None], [{}, {}, {}, {}]],
        subplot_titles=(
            f"query q ({keys[nv.query]})",
            "keys k",
            "q × k",
            f"q · k / {nv.scale:.3g}",
            "softmax",
        ),
    )
    vectors = colour_scale("q, k component", [nv.q, nv.k], diverging=True)
    products = colour_scale("q × k term", [nv.product], diverging=True)
    vec_axis, prod_axis = add_colour_axes(fig, [vectors, products])
    dims = list(range(d))
    fig.add_trace(
        go.Heatmap(z=[nv.q.tolist()], x=dims, y=[keys[nv.query]], coloraxis=vec_axis),
        row=1,
        col=1,
    )
    fig.add_trace(go.Heatmap(z=nv.k.tolist(), x=dims, y=keys, coloraxis=vec_axis), row=2, col=1)
    fig.add_trace(
        go.Heatmap(z=nv.product.tolist(), x=dims, y=keys, coloraxis=prod_axis), row=2, col=2
    )
    finite = [s if math.isfinite(s) else None for s in nv.scores.tolist()]
    fig.add_trace(
        go.Bar(x=finite, y=keys, orientation="h", marker_color=PALETTE[1], showlegend=False),
        row=2,
        col=3,
    )
    fig.add_trace(
        go.Bar(
            x=nv.pattern.tolist(),
            y=keys,
            orientation="h",
            marker_color=PALETTE[0],
            showlegend=False,
        ),
        row=2,
        col=4,
    )
    for c in range(1, 5):
        fig.update_yaxes(
            autorange="reversed",
            row=2,
            col=c,
            showticklabels=c == 1,
            categoryorder="array",
            categoryarray=keys,
        )
    fig.update_xaxes(showticklabels=False, row=1, col=1)
    fig.update_xaxes(title_text="head dimension", row=2, col=1)
    fig.update_xaxes(title_text="head dimension", row=2, col=2)
    fig.update_xaxes(title_text="score", row=2, col=3)
    fig.update_xaxes(title_text="attention", range=[0, 1], row=2, col=4)
    who = f"{model_name}: " if model_name else ""
    fig.update_layout(
        title=title or f"{who}neuron view of L{nv.layer}H{nv.head}, query {keys[nv.query]!r}",
        margin={"t": 100},
    )
    return apply_paper_style(fig, width=1000, height=int(max(360, 20 * len(keys) + 180)))
