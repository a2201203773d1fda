"""Per-layer 2-D projections: an animated scatter with one frame per layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from torch import Tensor

from mi_cluster.methods.projections import LayerProjection
from mi_cluster.plotting.style import apply_paper_style, color_for, marker_for

__all__ = ["animation_controls", "layer_scatter"]


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
    coords = _checked_coords(projection, labels, groups, layer_labels, pairs)
    if normalise:
        rms = coords.pow(2).sum(-1).mean(-1).sqrt().clamp_min(1e-12)
        coords = coords / rms[:, None, None]
    points = _Points(
        coords, list(labels), list(groups), list(hover or labels), list(pairs), show_labels
    )
    evr = projection.explained_variance_ratio.detach().cpu()
    comp = projection.component_labels or ("component 1", "component 2")

    def frame_title(layer: int) -> str:
        v = evr[layer]
        return (
            f"{title}<br><sup>layer {layer_labels[layer]}: {comp[0]} {100 * v[0]:.1f}%, "
            f"{comp[1]} {100 * v[1]:.1f}% of variance; {projection.basis}</sup>"
        )

    frames = [
        go.Frame(
            data=points.traces(layer),
            name=str(layer),
            layout={"title": {"text": frame_title(layer)}},
        )
        for layer in range(coords.shape[0])
    ]
    fig = go.Figure(data=frames[0].data, frames=frames)
    lim = float(coords[..., :2].abs().max()) * 1.15
    unit = " (scaled per layer)" if normalise else ""
    fig.update_xaxes(title=f"{comp[0]}{unit}", range=[-lim, lim], zeroline=True, autorange=False)
    fig.update_yaxes(title=f"{comp[1]}{unit}", range=[-lim, lim], zeroline=True, autorange=False)
    sliders, buttons = animation_controls(layer_labels)
    fig.update_layout(title={"text": frame_title(0)}, sliders=sliders, updatemenus=buttons)
    fig.update_layout(margin={"b": 150, "t": 100})
    return apply_paper_style(fig, width=880, height=760)


def _checked_coords(
    projection: LayerProjection,
    labels: Sequence[str],
    groups: Sequence[str],
    layer_labels: Sequence[str],
    pairs: Sequence[tuple[int, int]],
) -> Tensor:
    """The projection's coordinates (float64, CPU), after checking the labels fit them."""
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
    return coords


@dataclass(frozen=True)
class _Points:
    """The scatter's points at every layer, with their text, groups and joined pairs."""

    coords: Tensor  # [layer, point, component]
    labels: list[str]
    groups: list[str]
    hover: list[str]
    pairs: list[tuple[int, int]]
    show_labels: bool

    def traces(self, layer: int) -> list[go.Scatter]:
        """The lines joining pairs, then one marker trace per group, at ``layer``."""
        xs: list[float | None] = []
        ys: list[float | None] = []
        c = self.coords[layer]
        for i, j in self.pairs:
            xs += [float(c[i, 0]), float(c[j, 0]), None]
            ys += [float(c[i, 1]), float(c[j, 1]), None]
        line = {"color": "rgba(120,120,120,0.35)", "width": 1}
        out = [
            go.Scatter(
                x=xs, y=ys, mode="lines", line=line, hoverinfo="skip", name="pairs",
                showlegend=False,
            )
        ]  # fmt: skip
        order = list(dict.fromkeys(self.groups))
        for g in order:
            idx = [i for i, group in enumerate(self.groups) if group == g]
            color = color_for(g, order)
            marker = {"size": 9, "color": color, "symbol": marker_for(g, order)}
            out.append(
                go.Scatter(
                    x=c[idx, 0].tolist(),
                    y=c[idx, 1].tolist(),
                    mode="markers+text" if self.show_labels else "markers",
                    name=g,
                    text=[self.labels[i] for i in idx],
                    textposition="top center",
                    textfont={"size": 8, "color": "#555555"},
                    hovertext=[self.hover[i] for i in idx],
                    hoverinfo="text",
                    marker={**marker, "line": {"width": 1.2, "color": color}},
                )
            )
        return out


def animation_controls(frame_labels: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """A slider over the frames (named ``"0"``, ``"1"``, ...) and play/pause buttons,
    below the plot: ``(sliders, updatemenus)`` for ``fig.update_layout``."""
    step_args = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}
    slider = {
        "active": 0,
        "currentvalue": {"prefix": "layer: "},
        "x": 0.17,
        "len": 0.83,
        "y": 0,
        "yanchor": "top",
        "pad": {"t": 50},
        "steps": [
            {"label": label, "method": "animate", "args": [[str(k)], step_args]}
            for k, label in enumerate(frame_labels)
        ],
    }
    play = {"frame": {"duration": 900, "redraw": True}, "fromcurrent": True}
    buttons = {
        "type": "buttons",
        "showactive": False,
        "direction": "left",
        "x": 0.15,
        "y": 0,
        "xanchor": "right",
        "yanchor": "top",
        "pad": {"t": 78, "r": 10},
        "buttons": [
            {"label": "▶", "method": "animate", "args": [None, play]},
            {"label": "❚❚", "method": "animate", "args": [[None], step_args]},
        ],
    }
    return [slider], [buttons]
