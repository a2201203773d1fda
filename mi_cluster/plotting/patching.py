"""Patching maps: layer x head and layer x position heatmaps on a diverging scale."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mi_cluster.methods.patching import PatchResult
from mi_cluster.plotting.scales import add_colour_axes, colour_scale
from mi_cluster.plotting.style import apply_paper_style

__all__ = ["patching_maps"]


def patching_maps(
    results: Sequence[PatchResult],
    titles: Sequence[str] | None = None,
    title: str = "",
    normalised: bool = True,
) -> go.Figure:
    """One heatmap per result (layers down, heads or positions across, positions labelled
    by their tokens, repeated tokens numbered), sharing one diverging colour scale centred
    at zero. With ``normalised`` the cells are ``(patched - base) / (source - base)``
    (1: the patch carries the whole effect), else the prompt-averaged metric minus the
    base run's."""
    if not results:
        raise ValueError("no results to plot")
    panels = []
    for r in results:
        if len(r.axes) != 2:
            raise ValueError(
                f"patching_maps draws (layer, head) or (layer, pos) results; {r.site!r} has axes "
                f"{r.axes}: sum or select one axis of its values first"
            )
        if normalised:
            z = r.normalised()
        else:
            base = r.corrupted if r.direction == "denoise" else r.clean
            z = r.mean() - base.mean()
        panels.append(z.detach().double().cpu())
    what = "normalised effect" if normalised else f"Δ {results[0].metric}"
    scale = colour_scale(what, panels, diverging=True)
    names = list(titles) if titles is not None else [f"{r.site} ({r.direction})" for r in results]
    fig = make_subplots(rows=1, cols=len(results), subplot_titles=names, horizontal_spacing=0.07)
    for k, (r, z) in enumerate(zip(results, panels, strict=True)):
        x = r.labels[r.axes[1]]
        fig.add_trace(
            go.Heatmap(
                z=z.tolist(),
                x=[f"{i}: {t}" if r.axes[1] == "pos" else t for i, t in enumerate(x)],
                y=r.labels["layer"],
                coloraxis="coloraxis",
                hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=k + 1,
        )
        fig.update_yaxes(
            autorange="reversed", title_text="layer" if k == 0 else None, row=1, col=k + 1
        )
        fig.update_xaxes(
            title_text=r.axes[1].replace("pos", "position"),
            tickangle=-45 if r.axes[1] == "pos" else 0,
            tickfont_size=11,
            row=1,
            col=k + 1,
        )
    add_colour_axes(fig, [scale])
    fig.update_layout(
        title={"text": title, "x": 0.5, "xanchor": "center"},
        margin={"b": 110},
    )
    widths = sum(max(260, 34 * len(r.labels[r.axes[1]])) for r in results)
    return apply_paper_style(
        fig, width=widths + 220, height=420 + 18 * len(results[0].labels["layer"])
    )
