"""Layer-by-layer similarity heatmaps."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mi_cluster.methods.similarity import SimilarityMatrix
from mi_cluster.plotting.scales import ColourScale, add_colour_axes, colour_scale
from mi_cluster.plotting.style import apply_paper_style

__all__ = ["similarity_heatmaps"]

_TITLES = {
    "linear_cka": "linear CKA (biased)",
    "debiased_cka": "linear CKA (debiased)",
    "rbf_cka": "RBF CKA",
    "debiased_rbf_cka": "RBF CKA (debiased)",
    "cca": "CCA (mean ρ)",
    "svcca": "SVCCA (mean ρ)",
    "pwcca": "PWCCA",
    "rsa": "RSA",
    "procrustes": "Procrustes distance",
}


def similarity_heatmaps(
    matrices: Sequence[SimilarityMatrix],
    row_labels: Sequence[str],
    *,
    col_labels: Sequence[str] | None = None,
    title: str = "",
    zmin: float | None = 0.0,
    zmax: float | None = 1.0,
    show_values: bool = True,
    unit: str = "similarity",
) -> go.Figure:
    """One heatmap per matrix, side by side, sharing a colour scale (from ``zmin`` to
    ``zmax``) with one colour bar titled ``unit``; NaN cells are left blank; cells carry
    their value unless ``show_values`` is False (large matrices). Rows are the first
    stack's layers or items (top = first), columns the second's; the row labels are drawn
    once, left of the first panel."""
    col_labels = list(row_labels if col_labels is None else col_labels)
    rows = list(row_labels)
    for m in matrices:
        if tuple(m.values.shape) != (len(rows), len(col_labels)):
            raise ValueError(
                f"{m.metric} matrix is {tuple(m.values.shape)} but there are {len(rows)} row "
                f"and {len(col_labels)} column labels"
            )
    fig = make_subplots(
        rows=1,
        cols=len(matrices),
        subplot_titles=[_TITLES.get(m.metric, m.metric) for m in matrices],
        horizontal_spacing=0.08,
    )
    values = [m.values.detach().cpu().double() for m in matrices]
    auto = colour_scale(unit, values)
    low = auto.low if zmin is None else zmin
    high = auto.high if zmax is None else zmax
    (axis,) = add_colour_axes(fig, [ColourScale(unit, low, high, False, colours="Viridis")])
    for k, m in enumerate(matrices):
        z = values[k].numpy()
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=col_labels,
                y=rows,
                coloraxis=axis,
                text=[["" if v != v else f"{v:.2f}" for v in row] for row in z]
                if show_values
                else None,
                texttemplate="%{text}" if show_values else None,
                textfont={"size": 10},
                hovertemplate="%{y} vs %{x}: %{z:.4f}<extra>" + m.metric + "</extra>",
            ),
            row=1,
            col=k + 1,
        )
        fig.update_yaxes(
            autorange="reversed", row=1, col=k + 1, scaleanchor=f"x{k + 1}", showticklabels=k == 0
        )
    fig.update_layout(title={"text": title, "x": 0.5})
    return apply_paper_style(fig, width=420 * len(matrices) + 80, height=500)
