"""Per-layer curves with confidence bands and significance markers, one panel per quantity."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mi_cluster.plotting.style import PALETTE, apply_paper_style, legend_below, rgba

__all__ = ["Band", "layer_bands"]


@dataclass(frozen=True)
class Band:
    """One series of a per-layer figure.

    Fields:
        values: the estimate at each layer.
        low, high: its confidence interval (drawn as a shaded band), if any.
        significant: per layer, whether to draw a filled (significant) or an open marker.
        reference: draw as a dashed grey line without markers (e.g. a permutation null),
            under the other series, each reference with a dash of its own.
    """

    values: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    significant: Sequence[bool] | None = None
    reference: bool = False


_DASHES = ("dash", "dot", "dashdot", "longdash")


def _first(panels: Mapping[str, Mapping[str, Band]], name: str) -> Band:
    return next(series[name] for series in panels.values() if name in series)


def _style(
    name: str, band: Band, palette: Mapping[str, str], references: Sequence[str]
) -> tuple[str, str, bool]:
    """A series' colour and dash: references grey, each with a dash of its own."""
    if band.reference:
        return "#777777", _DASHES[references.index(name) % len(_DASHES)], True
    return palette[name], "solid", False


def _add_band(
    fig: go.Figure, x: list, name: str, band: Band, style, *, row: int, col: int, crowded: bool
) -> None:
    """A series' confidence band; where several bands share a panel (``crowded``), each a
    faint fill with its edges drawn thin in its colour, so none hides another."""
    if band.low is None or band.high is None:
        return
    color, _, reference = style
    edge = {"width": 1, "color": rgba(color, 0.55)} if crowded else {"width": 0}
    fig.add_trace(
        go.Scatter(
            x=x + x[::-1],
            y=[float(v) for v in band.high] + [float(v) for v in band.low][::-1],
            mode="lines",
            fill="toself",
            fillcolor=rgba(color, 0.06 if reference or crowded else 0.15),
            line=edge,
            hoverinfo="skip",
            showlegend=False,
            legendgroup=name,
        ),
        row=row,
        col=col,
    )


def _add_line(fig: go.Figure, x: list, name: str, band: Band, style, *, row: int, col: int) -> None:
    color, dash, reference = style
    sig = list(band.significant) if band.significant is not None else [True] * len(x)
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[float(v) for v in band.values],
            mode="lines" if reference else "lines+markers",
            name=name,
            legendgroup=name,
            showlegend=False,
            line={"color": color, "width": 1.5 if reference else 2, "dash": dash},
            marker={
                "size": 8,
                "color": [color if s else "white" for s in sig],
                "line": {"color": color, "width": 1.5},
            },
        ),
        row=row,
        col=col,
    )


def layer_bands(
    panels: Mapping[str, Mapping[str, Band]],
    layer_labels: Sequence[str],
    *,
    title: str = "",
    y_titles: Mapping[str, str] | None = None,
    colors: Mapping[str, str] | None = None,
    zero_line: bool = False,
    note: str = "",
    columns: int = 2,
    shared_y: bool = False,
) -> go.Figure:
    """One panel per quantity, one line per series over layers, with shaded confidence
    bands, markers filled where a series is significant, and dashed reference lines.

    Args:
        panels: panel title -> series name -> :class:`Band`. A series keeps its colour and
            legend entry across panels.
        layer_labels: x-axis categories.
        title: figure title.
        y_titles: panel title -> y-axis title (default: the panel's title; with
            ``shared_y`` only the left column's axes, which carry the tick labels).
        colors: series name -> colour (default: the palette in order of appearance).
        zero_line: draw y = 0 in every panel.
        note: a line under the title (e.g. what filled markers mean).
        columns: panels per row.
        shared_y: one y range for every panel (panels that show one quantity at different
            scopes, so their intervals compare at a glance).
    """
    names = list(dict.fromkeys(name for series in panels.values() for name in series))
    references = [n for n in names if _first(panels, n).reference]
    palette = dict(colors or {})
    for name in names:
        if name not in references:
            palette.setdefault(name, PALETTE[len(palette) % len(PALETTE)])
    n = len(panels)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(panels),
        horizontal_spacing=0.1,
        vertical_spacing=0.16,
        shared_yaxes="all" if shared_y else False,  # pyright: ignore[reportArgumentType]
    )
    x = list(layer_labels)
    for k, (panel, series) in enumerate(panels.items()):
        row, col = k // cols + 1, k % cols + 1
        for name, band in series.items():
            for what, seq in (("values", band.values), ("low", band.low), ("high", band.high)):
                if seq is not None and len(seq) != len(x):
                    raise ValueError(f"{panel!r} / {name!r}: {len(seq)} {what} for {len(x)} layers")
        # bands first, references' lightest and lowest, so no band hides another's line
        ordered = sorted(series.items(), key=lambda item: not item[1].reference)
        crowded = sum(b.low is not None and b.high is not None for b in series.values()) > 1
        for name, band in ordered:
            style = _style(name, band, palette, references)
            _add_band(fig, x, name, band, style, row=row, col=col, crowded=crowded)
        for name, band in ordered:
            _add_line(fig, x, name, band, _style(name, band, palette, references), row=row, col=col)
        fig.update_xaxes(title_text="layer", type="category", row=row, col=col)
        ticks = not shared_y or col == 1  # shared: tick labels (and the title) on the left
        fig.update_yaxes(
            title_text=(y_titles or {}).get(panel, panel) if ticks else None, row=row, col=col
        )
        if zero_line:
            line = {"color": "#bbbbbb", "width": 1}
            fig.add_hline(y=0, line=line, row=row, col=col)  # pyright: ignore[reportArgumentType]
    for name in names:  # legend entries drawn filled, whatever a series' first marker is
        color, dash, reference = _style(name, _first(panels, name), palette, references)
        fig.add_trace(
            go.Scatter(
                x=[None], y=[None], name=name, legendgroup=name,
                mode="lines" if reference else "lines+markers",
                line={"color": color, "dash": dash}, marker={"size": 8, "color": color},
            )
        )  # fmt: skip
    text = title + (f"<br><sup>{note}</sup>" if note else "")
    fig.update_layout(title={"text": text, "x": 0.5, "xanchor": "center"}, margin={"t": 110})
    fig = apply_paper_style(fig, width=max(520 * cols, 620), height=340 * rows + 110)
    return legend_below(fig)
