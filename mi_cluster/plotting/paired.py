"""Figures of paired-prompt comparisons (:mod:`mi_cluster.methods.paired`): one line per layer
measure with its interval over pairs, and a layer x position heatmap."""

from __future__ import annotations

import plotly.graph_objects as go

from mi_cluster.methods.paired import PairedComparison
from mi_cluster.plotting.lines import Band, layer_bands
from mi_cluster.plotting.scales import add_colour_axes, colour_scale
from mi_cluster.plotting.style import apply_paper_style

__all__ = ["paired_heatmap", "paired_lines"]

_MEASURES = {
    "kl": ("KL(a || b) of the lens distributions", "nats"),
    "js": ("Jensen-Shannon divergence", "nats (at most ln 2)"),
    "cosine": ("cosine of the residuals", "cosine"),
}


def paired_lines(c: PairedComparison, title: str = "", note: str = "") -> go.Figure:
    """One panel per measure over layers: the mean over prompt pairs with its 95%
    bootstrap interval (KL, JS, cosine), and the linear CKA of the two sets of residuals."""
    panels, y_titles = {}, {}
    for key, (name, unit) in _MEASURES.items():
        if key not in c.per_pair:
            continue
        mean = c.per_pair[key].mean(-1).tolist()
        low = None if c.ci_low is None else c.ci_low[key].tolist()
        high = None if c.ci_high is None else c.ci_high[key].tolist()
        panels[name] = {"mean over pairs (95% CI)": Band(mean, low, high)}
        y_titles[name] = unit
    panels["linear CKA of the residuals"] = {"all rows pooled": Band(c.cka.tolist())}
    y_titles["linear CKA of the residuals"] = "CKA"
    lens = {"logit": "logit lens", "tuned": "tuned lens"}.get(c.lens or "", "no lens")
    text = title or f"{c.model_name}: two prompt sets compared layer by layer ({lens})"
    return layer_bands(panels, c.layer_labels, title=text, y_titles=y_titles, note=note)


def paired_heatmap(
    c: PairedComparison, measure: str = "js", title: str = "", note: str = ""
) -> go.Figure:
    """Layer x position heatmap of one measure, averaged over the pairs at each position
    (:meth:`~mi_cluster.methods.paired.PairedComparison.by_position`); positions are labelled by
    the first pair's tokens, ``"a / b"`` where its two prompts differ."""
    values, labels = c.by_position(measure)
    name, unit = _MEASURES[measure]
    x = [f"{k}: {t}" for k, t in enumerate(labels)]
    fig = go.Figure(
        go.Heatmap(
            z=values.tolist(),
            x=x,
            y=list(c.layer_labels),
            coloraxis="coloraxis",
            hovertemplate="%{y}, %{x}: %{z:.4f}<extra></extra>",
        )
    )
    add_colour_axes(fig, [colour_scale(unit, [values])])  # from zero, or around it if signed
    fig.update_yaxes(autorange="reversed", title_text="layer", type="category")
    fig.update_xaxes(title_text="position", tickangle=-45, type="category")
    head = title or f"{c.model_name}: {name} by layer and position"
    fig.update_layout(
        title={
            "text": head + (f"<br><sup>{note}</sup>" if note else ""),
            "x": 0.5,
            "xanchor": "center",
        }
    )
    n_layers = len(c.layer_labels)
    return apply_paper_style(fig, width=max(560, 48 * len(x) + 260), height=220 + 34 * n_layers)
