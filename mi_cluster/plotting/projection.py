"""Per-layer 2-D projections: an animated scatter with one frame per layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from torch import Tensor

from mi_cluster.methods.projections import LayerProjection
from mi_cluster.plotting.font import text_width
from mi_cluster.plotting.labels import place_labels
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
    lim = float(coords[..., :2].abs().max()) * 1.15
    legend = max(text_width(g, 13) for g in groups) + 70  # px right of the plot
    points = _Points(
        coords, list(labels), list(groups), list(hover or labels), list(pairs), show_labels,
        lim, (_WIDTH - 70 - legend, _HEIGHT - _MARGIN_T - _MARGIN_B),
    )  # fmt: skip
    evr = projection.explained_variance_ratio.detach().cpu()
    comp = projection.component_labels or ("component 1", "component 2")

    def frame_title(layer: int, shown: int) -> str:
        v = evr[layer]
        left_off = f"; {shown} of {len(labels)} labels drawn (no overlaps; hover for all)"
        return (
            f"{title}<br><sup>layer {layer_labels[layer]}: {comp[0]} {100 * v[0]:.1f}%, "
            f"{comp[1]} {100 * v[1]:.1f}% of variance; {projection.basis}"
            f"{left_off if show_labels and shown < len(labels) else ''}</sup>"
        )

    frames = []
    for layer in range(coords.shape[0]):
        traces, shown = points.traces(layer)
        frames.append(
            go.Frame(
                data=traces, name=str(layer), layout={"title": {"text": frame_title(layer, shown)}}
            )
        )
    fig = go.Figure(data=frames[0].data, frames=frames)
    unit = " (scaled per layer)" if normalise else ""
    fig.update_xaxes(title=f"{comp[0]}{unit}", range=[-lim, lim], zeroline=True, autorange=False)
    fig.update_yaxes(title=f"{comp[1]}{unit}", range=[-lim, lim], zeroline=True, autorange=False)
    sliders, buttons = animation_controls(layer_labels)
    fig.update_layout(title=frames[0].layout.title, sliders=sliders, updatemenus=buttons)
    fig.update_layout(margin={"b": _MARGIN_B, "t": _MARGIN_T})
    fig = apply_paper_style(fig, width=_WIDTH, height=_HEIGHT)
    # the legend in a margin of its own, so the plot area is the size labels were placed in
    fig.update_layout(margin_r=legend, legend={"x": 1.02, "xanchor": "left", "y": 1})
    return fig


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


# The scatter's size and margins (the left one apply_paper_style's), for label placement
_WIDTH, _HEIGHT, _MARGIN_T, _MARGIN_B = 880, 760, 110, 150
_LABEL_PX, _MARKER_PX = 10, 9


@dataclass(frozen=True)
class _Points:
    """The scatter's points at every layer, with their text, groups and joined pairs."""

    coords: Tensor  # [layer, point, component]
    labels: list[str]
    groups: list[str]
    hover: list[str]
    pairs: list[tuple[int, int]]
    show_labels: bool
    lim: float  # the axes run from -lim to lim
    plot_px: tuple[float, float]  # the plot area's width and height

    def _places(self, layer: int) -> list[str | None]:
        """Each label's text position at ``layer`` (None: left off, it would overlap)."""
        c = self.coords[layer]
        w, h = self.plot_px
        scale = (w / (2 * self.lim), h / (2 * self.lim))
        px = [((x + self.lim) * scale[0], (y + self.lim) * scale[1]) for x, y in c[:, :2].tolist()]
        texts = self.labels if self.show_labels else [""] * len(self.labels)
        return place_labels(px, texts, size=_LABEL_PX, marker=_MARKER_PX, canvas=(w, h))

    def traces(self, layer: int) -> tuple[list[go.Scatter], int]:
        """The lines joining pairs, then one marker trace per group, at ``layer``; and how
        many labels are drawn."""
        places = self._places(layer)
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
            marker = {"size": _MARKER_PX, "color": color, "symbol": marker_for(g, order)}
            out.append(
                go.Scatter(
                    x=c[idx, 0].tolist(),
                    y=c[idx, 1].tolist(),
                    mode="markers+text" if self.show_labels else "markers",
                    name=g,
                    text=[self.labels[i] if places[i] else "" for i in idx],
                    textposition=[places[i] or "top center" for i in idx],
                    textfont={"size": _LABEL_PX, "color": "#444444"},
                    hovertext=[self.hover[i] for i in idx],
                    hoverinfo="text",
                    marker={**marker, "line": {"width": 1.2, "color": color}},
                )
            )
        return out, sum(p is not None for p in places)


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
