"""Figures of activation factors (NMF): the passage as colour-coded text, a component x
token heatmap, and each component's top tokens. Plain plotly shapes and text, so all of
them export to PNG/SVG/PDF."""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mi_cluster.methods.factors import ActivationFactors
from mi_cluster.plotting.font import text_width
from mi_cluster.plotting.style import apply_paper_style, rgba

__all__ = ["component_colors", "plot_factor_heatmap", "plot_factor_text", "plot_factor_top_tokens"]

_FONT = 12  # px, the text figure's font size
_LINE = 26  # px per line of text
_PAD, _GAP = 3.0, 4.0  # px inside a word's box at each end; px between words


def component_colors(n: int) -> list[str]:
    """One colour per component (plotly's colour-blind-safe "Safe" set, cycled)."""
    pool = list(plotly.colors.qualitative.Safe)
    return [pool[i % len(pool)] for i in range(n)]


def _display(token: str) -> tuple[str, bool]:
    """A token as it reads in running text, and whether it joins the previous one
    (WordPiece ``##`` continuations; GPT-2 tokens without a leading space)."""
    if token.startswith("##"):
        return token[2:], True
    return token.strip() or "␣", False


def _words(tokens: Sequence[str]) -> list[list[int]]:
    """Token indices grouped into words: a piece that joins the previous one (``##ve``)
    belongs to its word."""
    words: list[list[int]] = []
    for i, token in enumerate(tokens):
        if words and _display(token)[1]:
            words[-1].append(i)
        else:
            words.append([i])
    return words


def plot_factor_text(
    f: ActivationFactors,
    components: Sequence[int] | None = None,
    *,
    width: int = 900,
    title: str | None = None,
) -> go.Figure:
    """The passage with each token highlighted in the colour of its strongest component
    (among ``components``, default all), the opacity its activation relative to that
    component's maximum (ecco's explorable as a static figure). Hover shows every value."""
    comps = list(range(f.n_components)) if components is None else list(components)
    if not comps or any(not 0 <= c < f.n_components for c in comps):
        raise ValueError(f"components must be in 0..{f.n_components - 1}, got {components}")
    colors = component_colors(f.n_components)
    acts = f.activations[comps].double().cpu()  # [comp, token]
    rel = acts / acts.max(1, keepdim=True).values.clamp_min(1e-12)
    strength, which = rel.max(0)
    shapes, xs, ys, texts, hovers = [], [], [], [], []
    x, line = 0.0, 0
    usable = width - 40
    for word in _words(f.tokens):  # a word's pieces stay together on one line
        pieces = [(i, _display(f.tokens[i])[0]) for i in word]
        widths = [
            text_width(shown, _FONT) + (_PAD if k == 0 else 0)
            for k, (_, shown) in enumerate(pieces)
        ]
        widths[-1] += _PAD
        if x > 0 and x + _GAP + sum(widths) > usable:
            x, line = 0.0, line + 1
        x += _GAP if x > 0 else 0.0
        for (i, shown), w in zip(pieces, widths, strict=True):
            y0 = -line * _LINE
            c = comps[int(which[i])]
            shapes.append(
                {
                    "type": "rect", "x0": x, "x1": x + w,
                    "y0": y0 - _LINE / 2 + 2, "y1": y0 + _LINE / 2 - 2,
                    "fillcolor": rgba(colors[c], 0.85 * float(strength[i])),
                    "line": {"width": 0}, "layer": "below",
                }
            )  # fmt: skip
            xs.append(x + w / 2)
            ys.append(y0)
            texts.append(shown)
            values = ", ".join(f"C{cc}: {float(acts[j, i]):.2f}" for j, cc in enumerate(comps))
            hovers.append(f"{f.labels[i]}<br>{values}")
            x += w
    fig = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            mode="text",
            text=texts,
            textfont={"size": _FONT, "color": "#000000"},
            hovertext=hovers,
            hoverinfo="text",
            showlegend=False,
        )
    )
    for c in comps:
        order = f.activations[c].argsort(descending=True).tolist()
        words = list(dict.fromkeys(_display(f.tokens[i])[0] for i in order[:40]))[:4]
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"symbol": "square", "size": 12, "color": colors[c]},
                name=f"C{c}: " + ", ".join(words),
            )
        )
    n_lines = line + 1
    fig.update_xaxes(visible=False, range=[-5, usable + 5])
    fig.update_yaxes(visible=False, range=[-(n_lines - 0.5) * _LINE, 0.5 * _LINE])
    legend_rows = math.ceil(len(comps) / 2)
    fig.update_layout(
        shapes=shapes,
        title=title or f"{f.model_name}: NMF components of {f.site} ({f.n_components} components)",
        legend={"orientation": "h", "y": -0.02, "yanchor": "top", "x": 0, "font": {"size": 11}},
        margin={"t": 70, "b": 30 + 22 * legend_rows, "l": 20, "r": 20},
    )
    return apply_paper_style(fig, width=width, height=int(n_lines * _LINE + 120 + 22 * legend_rows))


def plot_factor_heatmap(f: ActivationFactors, title: str | None = None) -> go.Figure:
    """Component x token heatmap of the factor activations (tokens in passage order). Every
    token is a column; tick labels are the tokens as they read (WordPiece ``##`` dropped),
    every one where they fit and every k-th where they would crowd (hover names all)."""
    z = f.activations.double().cpu()
    n = len(f.labels)
    width = int(min(2400, max(700, 7 * n + 200)))
    every = max(1, math.ceil(13 * n / (width - 200)))  # 13 px per label at 10 px
    fig = go.Figure(
        go.Heatmap(
            z=z.tolist(),
            x=list(range(n)),
            y=[f"C{c}" for c in range(f.n_components)],
            colorscale="Viridis",
            zmin=0,
            colorbar={"title": {"text": "activation", "side": "right"}},
            customdata=[list(f.labels)] * f.n_components,
            hovertemplate="%{y}, %{customdata}: %{z:.3f}<extra></extra>",
        )
    )
    ticks = list(range(0, n, every))
    fig.update_xaxes(
        title_text="token" + (f" (one in {every} labelled)" if every > 1 else ""),
        tickmode="array", tickvals=ticks, ticktext=[_display(f.tokens[i])[0] for i in ticks],
        tickangle=-90, tickfont={"size": 10},
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed", title_text="component")
    fig.update_layout(
        title=title or f"{f.model_name}: NMF component activation by token ({f.site})"
    )
    return apply_paper_style(fig, width=width, height=int(40 * f.n_components + 260))


def plot_factor_top_tokens(
    f: ActivationFactors, n: int = 10, columns: int = 4, title: str | None = None
) -> go.Figure:
    """Each component's ``n`` most active tokens, one bar panel per component."""
    tops = f.top_tokens(n)
    cols = min(columns, f.n_components)
    rows = math.ceil(f.n_components / cols)
    colors = component_colors(f.n_components)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"C{c}" for c in range(f.n_components)],
        horizontal_spacing=0.12,
        vertical_spacing=0.5 / rows,
    )
    for c, top in enumerate(tops):
        fig.add_trace(
            go.Bar(
                x=[v for _, v in top],
                y=[t for t, _ in top],
                orientation="h",
                marker_color=colors[c],
                showlegend=False,
                hovertemplate="%{y}: %{x:.3f}<extra></extra>",
            ),
            row=c // cols + 1,
            col=c % cols + 1,
        )
        fig.update_yaxes(
            autorange="reversed", tickfont={"size": 10}, row=c // cols + 1, col=c % cols + 1
        )
        fig.update_xaxes(title_text="activation", row=c // cols + 1, col=c % cols + 1)
    fig.update_layout(title=title or f"{f.model_name}: top tokens of each NMF component ({f.site})")
    return apply_paper_style(fig, width=240 * cols + 120, height=int((22 * n + 110) * rows + 120))
