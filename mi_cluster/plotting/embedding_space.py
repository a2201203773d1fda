"""Figures of embedding-space readings: the layer x layer alignment of two models with the
matched pairs marked, and tables of the tokens a head's or neuron's parameters read or
write (:mod:`~mi_cluster.methods.embedding_space`)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from mi_cluster.methods.embedding_space.alignment import LayerAlignment
from mi_cluster.methods.embedding_space.readings import TokenReading
from mi_cluster.plotting.style import DIVERGING, apply_paper_style

__all__ = ["alignment_heatmap", "token_table"]

_KINDS = {
    "keys": "MLP keys",
    "values": "MLP values",
    "ov": "heads' OV outputs",
    "qk": "heads' queries",
}


def alignment_heatmap(alignment: LayerAlignment, title: str = "") -> go.Figure:
    """The layer x layer similarity of two models in vocabulary space (rows: the first
    model's layers, columns: the second's) on a symmetric scale around zero, with the
    one-to-one matching marked and its permutation p-value in the subtitle."""
    z = alignment.similarity.detach().cpu().double()
    n_a, n_b = z.shape
    rows, cols = [f"L{i}" for i in range(n_a)], [f"L{j}" for j in range(n_b)]
    fig = go.Figure(
        go.Heatmap(
            z=z.tolist(),
            x=cols,
            y=rows,
            zmin=-1,
            zmax=1,
            colorscale=DIVERGING,
            colorbar={"title": {"text": "Pearson r"}},
            text=[[f"{v:.2f}" for v in row] for row in z.tolist()],
            texttemplate="%{text}",
            textfont={"size": 10},
            hovertemplate="%{y} vs %{x}: r = %{z:.4f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[cols[j] for _, j in alignment.matching],
            y=[rows[i] for i, _ in alignment.matching],
            mode="markers",
            marker={"symbol": "square-open", "size": 30, "color": "black", "line": {"width": 2}},
            name="matched",
            hoverinfo="skip",
        )
    )
    kind = _KINDS.get(alignment.kind, alignment.kind)
    note = (
        f"{kind}; matched pairs boxed: mean r = {alignment.score:.3f}, permutation "
        f"p = {alignment.p_value:.3g} ({len(alignment.null_scores)} vocabulary shuffles)"
    )
    head = title or f"{alignment.model_a} vs {alignment.model_b} in vocabulary space"
    fig.update_layout(title={"text": f"{head}<br><sup>{note}</sup>", "x": 0.5})
    fig.update_xaxes(title=f"layer of {alignment.model_b}")
    fig.update_yaxes(title=f"layer of {alignment.model_a}", autorange="reversed")
    size = 220 + 60 * max(n_a, n_b)
    return apply_paper_style(fig, width=size + 160, height=size + 80)


def token_table(
    readings: Sequence[TokenReading], title: str = "", *, bottom: bool = True, k: int = 8
) -> go.Figure:
    """A table with one row per parameter vector: its label and its top ``k`` tokens (and,
    with ``bottom``, the ``k`` it scores lowest), each with its score."""
    labels, tops, bottoms = [], [], []
    k = min([k] + [r.top_ids.shape[1] for r in readings])  # what every reading holds
    for reading in readings:
        for i, label in enumerate(reading.labels):
            labels.append(label)
            tops.append(_cell(reading.top_tokens[i][:k], reading.top_scores[i][:k].tolist()))
            bottoms.append(
                _cell(reading.bottom_tokens[i][:k], reading.bottom_scores[i][:k].tolist())
            )
    if not labels:
        raise ValueError("no readings to tabulate")
    header = ["parameter", f"top {k} tokens"] + ([f"bottom {k} tokens"] if bottom else [])
    columns = [labels, tops] + ([bottoms] if bottom else [])
    fig = go.Figure(
        go.Table(
            columnwidth=[1.2, 3, 3][: len(columns)],
            header={"values": header, "align": "left", "font": {"size": 12}},
            cells={"values": columns, "align": "left", "font": {"size": 11}, "height": 44},
        )
    )
    fig.update_layout(title={"text": title, "x": 0.5})
    return apply_paper_style(fig, width=1100, height=170 + 46 * len(labels))


def _cell(tokens: Sequence[str], scores: Sequence[float]) -> str:
    return ", ".join(
        f"{t.strip() or repr(t)} ({s:+.2f})" for t, s in zip(tokens, scores, strict=True)
    )
