"""Per-layer 2-D projections: an animated scatter with one frame per layer."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import torch

from mi_cluster.methods.projections import LayerProjection
from mi_cluster.plotting.style import apply_paper_style, color_for, marker_for

__all__ = ["layer_scatter"]


def layer_scatter(
    projection: LayerProjection,
    labels: Sequence[str],
    groups: Sequence[str],
    layer_labels: Sequence[str],
    *,
    hover: Sequence[str] | None = None,
    title: str = "",
    normalise: bool = True,
    pairs: Sequence[tuple[int, int]] = (),
    show_labels: bool = True,
) -> go.Figure:
    """An animated scatter of the first two components, one frame per layer, with a layer
    slider and play button, fixed axes across frames, one colour and marker per group, and
    optional thin lines joining paired points (e.g. a word in subject and in object
    position).

    Args:
        projection: from :mod:`mi_cluster.methods.projections` (>= 2 components); its basis and
            component names label the axes and caption.
        labels: text drawn beside each point (the word).
        groups: group of each point; one colour, marker and legend entry per group.
        layer_labels: a label per layer, for the slider and frame titles.
        hover: extra hover text per point (e.g. the prompt).
        title: figure title; each frame adds its layer and explained variance.
        normalise: divide each layer's coordinates by their RMS distance from the centroid,
            so the geometry, not the growing residual norm, is what changes between frames.
        pairs: ``(i, j)`` point indices to join with a line in every frame.
        show_labels: draw ``labels`` as text (hover always shows them).
    """
    coords = projection.coords.detach().to(torch.float64).cpu()
    n_layers, n, k = coords.shape
    if k < 2:
        raise ValueError("layer_scatter needs a projection with at least 2 components")
    for name, seq in (("labels", labels), ("groups", groups)):
        if len(seq) != n:
            raise ValueError(f"{len(seq)} {name} for {n} points")
    if len(layer_labels) != n_layers:
        raise ValueError(f"{len(layer_labels)} layer labels for {n_layers} layers")
    for i, j in pairs:
        if not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"pair ({i}, {j}) names a point outside 0..{n - 1}")
    if normalise:
        rms = coords.pow(2).sum(-1).mean(-1).sqrt().clamp_min(1e-12)
        coords = coords / rms[:, None, None]
    hover = list(hover) if hover is not None else list(labels)
    order = list(dict.fromkeys(groups))
    evr = projection.explained_variance_ratio.detach().cpu()
    comp = projection.component_labels or ("component 1", "component 2")

    def traces(layer: int) -> list[go.Scatter]:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for i, j in pairs:
            xs += [float(coords[layer, i, 0]), float(coords[layer, j, 0]), None]
            ys += [float(coords[layer, i, 1]), float(coords[layer, j, 1]), None]
        out = [
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line={"color": "rgba(120,120,120,0.35)", "width": 1},
                hoverinfo="skip",
                name="pairs",
                showlegend=False,
            )
        ]
        for g in order:
            idx = [i for i in range(n) if groups[i] == g]
            out.append(
                go.Scatter(
                    x=coords[layer, idx, 0].tolist(),
                    y=coords[layer, idx, 1].tolist(),
                    mode="markers+text" if show_labels else "markers",
                    name=g,
                    text=[labels[i] for i in idx],
                    textposition="top center",
                    textfont={"size": 8, "color": "#555555"},
                    hovertext=[hover[i] for i in idx],
                    hoverinfo="text",
                    marker={
                        "size": 9,
                        "color": color_for(g, order),
                        "symbol": marker_for(g, order),
                        "line": {"width": 1.2, "color": color_for(g, order)},
                    },
                )
            )
        return out

    def frame_title(layer: int) -> str:
        v = evr[layer]
        return (
            f"{title}<br><sup>layer {layer_labels[layer]}: {comp[0]} {100 * v[0]:.1f}%, "
            f"{comp[1]} {100 * v[1]:.1f}% of variance; {projection.basis}</sup>"
        )

    frames = [
        go.Frame(
            data=traces(layer), name=str(layer), layout={"title": {"text": frame_title(layer)}}
        )
        for layer in range(n_layers)
    ]
    fig = go.Figure(data=frames[0].data, frames=frames)
    lim = float(coords[..., :2].abs().max()) * 1.15
    unit = " (scaled per layer)" if normalise else ""
    fig.update_xaxes(title=f"{comp[0]}{unit}", range=[-lim, lim], zeroline=True, autorange=False)
    fig.update_yaxes(title=f"{comp[1]}{unit}", range=[-lim, lim], zeroline=True, autorange=False)
    step_args = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}
    fig.update_layout(
        title={"text": frame_title(0)},
        sliders=[
            {
                "active": 0,
                "currentvalue": {"prefix": "layer: "},
                "x": 0.17,
                "len": 0.83,
                "y": 0,
                "yanchor": "top",
                "pad": {"t": 50},
                "steps": [
                    {
                        "label": layer_labels[layer],
                        "method": "animate",
                        "args": [[str(layer)], step_args],
                    }
                    for layer in range(n_layers)
                ],
            }
        ],
        updatemenus=[
            {
                "type": "buttons",
                "showactive": False,
                "direction": "left",
                "x": 0.15,
                "y": 0,
                "xanchor": "right",
                "yanchor": "top",
                "pad": {"t": 78, "r": 10},
                "buttons": [
                    {
                        "label": "▶",
                        "method": "animate",
                        "args": [
                            None,
                            {"frame": {"duration": 900, "redraw": True}, "fromcurrent": True},
                        ],
                    },
                    {"label": "❚❚", "method": "animate", "args": [[None], step_args]},
                ],
            }
        ],
    )
    fig.update_layout(margin={"b": 150, "t": 100})
    return apply_paper_style(fig, width=880, height=760)
