"""Logit-lens figures: the top predictions at every layer (ecco's "predictions"), the
ranks of watched tokens by layer (ecco's "rankings_watch"), and the layer x position map of
the top token for one prompt. Per-layer curves (KL, logit difference) use
:func:`mi_cluster.plotting.layer_bands`."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import plotly.graph_objects as go

from mi_cluster.methods.lens.logit import LensResult
from mi_cluster.plotting.style import apply_paper_style

__all__ = ["plot_lens_positions", "plot_lens_predictions", "plot_lens_ranks"]


def _check_row(result: LensResult, row: int) -> None:
    if not 0 <= row < len(result.prompt_index):
        raise ValueError(f"row {row} is outside the lens result's {len(result.prompt_index)} rows")


def _shown(token: str) -> str:
    return repr(token)[1:-1] if token.strip() == "" else token


def _probability_map(
    result: LensResult, probs, x: list[str], text: list[list[str]], hover: str, font: int
) -> go.Figure:
    """Layers down, ``x`` across, each cell a token coloured by its probability."""
    fig = go.Figure(
        go.Heatmap(
            z=probs.tolist(),
            x=x,
            y=list(result.layer_labels),
            text=text,
            texttemplate="%{text}",
            textfont={"size": font},
            colorscale="Purples",
            zmin=0,
            zmax=1,
            colorbar={"title": "probability"},
            hovertemplate=hover + "<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="layer")
    return fig


def plot_lens_predictions(
    result: LensResult, row: int = 0, k: int | None = None, title: str | None = None
) -> go.Figure:
    """The ``k`` most likely next tokens at every layer for one row: layers down, rank
    across, each cell the token, coloured by its probability."""
    _check_row(result, row)
    k = result.top_ids.shape[-1] if k is None else min(k, result.top_ids.shape[-1])
    probs = result.top_log_probs[:, row, :k].double().exp()
    text = [
        [_shown(t) for t in result.top_tokens[layer][row][:k]] for layer in range(result.n_layers)
    ]
    x = [str(i + 1) for i in range(k)]
    fig = _probability_map(result, probs, x, text, "%{y}, rank %{x}: %{text} (p = %{z:.3f})", 11)
    fig.update_xaxes(title_text="rank", side="top")
    prompt = result.prompts[result.prompt_index[row]]
    prompt = html.escape(prompt if len(prompt) < 110 else prompt[:107] + "...")
    where = f"after {_shown(result.tokens[row])!r} (position {result.positions[row]})"
    heading = title or f"{result.model_name}, {result.lens} lens: top predictions {where}"
    fig.update_layout(
        # the prompt as the title's last line, where the layout keeps room for it
        title=f"{heading}<br><span style='font-size:12px;color:#555555'>{prompt}</span>",
        margin={"t": 140, "b": 30},
    )
    return apply_paper_style(
        fig, width=int(max(520, 90 * k + 160)), height=int(36 * result.n_layers + 200)
    )


def plot_lens_ranks(
    result: LensResult,
    rows: Sequence[int] | None = None,
    title: str | None = None,
    vocab_size: int | None = None,
) -> go.Figure:
    """The rank (0 = most likely) of each watched token at every layer: one column per
    watched token and row, coloured on a log scale (ecco's ``rankings_watch``). The scale
    runs from rank 0 to the last rank of a ``vocab_size`` vocabulary, so maps of one model
    (the logit and the tuned lens) are drawn on the same scale; without it, to the largest
    rank shown."""
    if not result.watch_ids:
        raise ValueError("no watched tokens: give watch=[...] to logit_lens")
    rows = [0] if rows is None else list(rows)
    for r in rows:
        _check_row(result, r)
    columns, ranks = [], []
    for r in rows:
        for j, token in enumerate(result.watch_tokens):
            label = _shown(token)
            columns.append(
                label if len(rows) == 1 else f"{label} @ {_shown(result.tokens[r])} ({r})"
            )
            ranks.append(result.watch_ranks[:, r, j].tolist())
    z = [
        [math.log10(ranks[c][layer] + 1) for c in range(len(columns))]
        for layer in range(result.n_layers)
    ]
    text = [[str(ranks[c][layer]) for c in range(len(columns))] for layer in range(result.n_layers)]
    last = vocab_size - 1 if vocab_size else max(max(r) for r in ranks)
    top = math.log10(max(last, 1) + 1)
    # round ranks for ticks, none crowding the last rank's tick (at least 0.3 decades apart)
    marks = [m for m in (0, 9, 99, 999, 9999, 99999) if math.log10((last + 1) / (m + 1)) > 0.3]
    marks.append(last)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=list(result.layer_labels),
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis_r",
            zmin=0,
            zmax=top,
            colorbar={
                "title": {"text": "rank (log scale)", "side": "right"},
                "tickvals": [math.log10(m + 1) for m in dict.fromkeys(marks)],
                "ticktext": [str(m) for m in dict.fromkeys(marks)],
            },
            hovertemplate="%{y}, %{x}: rank %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="layer")
    fig.update_xaxes(title_text="watched token", side="top")
    fig.update_layout(
        title=title or f"{result.model_name}, {result.lens} lens: rank of watched tokens (0 = top)",
        margin={"t": 120},
    )
    return apply_paper_style(
        fig, width=int(max(460, 110 * len(columns) + 200)), height=int(36 * result.n_layers + 220)
    )


def plot_lens_positions(result: LensResult, prompt: int = 0, title: str | None = None) -> go.Figure:
    """For one prompt read at every position (``positions="all"``): layers down, positions
    across, each cell the top next-token prediction coloured by its probability."""
    rows = result.rows_of(prompt)
    if not rows:
        raise ValueError(f"prompt {prompt} has no rows in this lens result")
    probs = result.top_log_probs[:, rows, 0].double().exp()
    text = [
        [_shown(result.top_tokens[layer][r][0]) for r in rows] for layer in range(result.n_layers)
    ]
    x = [f"{result.positions[r]}: {_shown(result.tokens[r])}" for r in rows]
    hover = "%{y}, after %{x}: %{text} (p = %{z:.3f})"
    fig = _probability_map(result, probs, x, text, hover, 10)
    fig.update_xaxes(title_text="input token (prediction is for the next one)", tickangle=-45)
    fig.update_layout(
        title=title
        or f"{result.model_name}, {result.lens} lens: top prediction by layer and position"
    )
    return apply_paper_style(
        fig, width=int(max(600, 70 * len(rows) + 200)), height=int(40 * result.n_layers + 260)
    )
