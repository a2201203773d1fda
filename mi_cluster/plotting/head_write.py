"""The "before and after a head" view
(:mod:`~mi_cluster.studies.subject_object.head_write`): every prompt's residual just
before the head writes and just after, on one fixed plane, with an arrow from before to
after."""

from __future__ import annotations

import plotly.graph_objects as go

from mi_cluster.plotting.style import apply_paper_style, color_for, marker_for, rgba
from mi_cluster.studies.subject_object.head_write import HeadWrite

__all__ = ["head_write_scatter"]


def head_write_scatter(view: HeadWrite, title: str = "", max_arrows: int = 400) -> go.Figure:
    """Open markers before the head, filled markers after it, a thin arrow between the two
    per prompt (at most ``max_arrows``, spread evenly over each group), coloured by group.
    Axes: the head's top OV write direction and the second basis direction."""
    groups = list(dict.fromkeys(view.groups))
    b, a = view.coords_before.tolist(), view.coords_after.tolist()
    fig = go.Figure()
    for g in groups:
        idx = [i for i, x in enumerate(view.groups) if x == g]
        color, symbol = color_for(g, groups), marker_for(g, groups).replace("-open", "")
        for when, pts, filled in (("before", b, False), ("after", a, True)):
            fig.add_trace(
                go.Scatter(
                    x=[pts[i][0] for i in idx],
                    y=[pts[i][1] for i in idx],
                    mode="markers",
                    name=f"{g}, {when} {view.head_label}",
                    legendgroup=g,
                    hovertext=[f"{view.labels[i]} ({when})" for i in idx],
                    hoverinfo="text",
                    marker={
                        "size": 7,
                        "symbol": symbol if filled else f"{symbol}-open",
                        "color": color,
                        "opacity": 0.85 if filled else 0.6,
                        "line": {"width": 1, "color": color},
                    },
                )
            )
    per_group = max(1, max_arrows // len(groups))
    arrows = []
    for g in groups:  # evenly spaced within each group, so every group keeps its arrows
        idx = [i for i, x in enumerate(view.groups) if x == g]
        step = max(1, -(-len(idx) // per_group))
        arrows += idx[::step]
    for i in arrows:
        color = color_for(view.groups[i], groups)
        fig.add_annotation(
            x=a[i][0], y=a[i][1], ax=b[i][0], ay=b[i][1], xref="x", yref="y", axref="x",
            ayref="y", showarrow=True, arrowhead=2, arrowsize=0.8, arrowwidth=0.8,
            arrowcolor=rgba(color, 0.45), text="",
        )  # fmt: skip
    note = f"OV singular values {float(view.singular_values[0]):.2f}, "
    note += f"{float(view.singular_values[1]):.2f}; open: before, filled: after"
    if view.shift_along_axis is not None:
        moves = ", ".join(f"{g} {v:+.2f}" for g, v in view.group_shift().items())
        note += f"; cos(axis, OV write 1) = {view.axis_cosine:+.2f}"
        note += f"<br>mean write along the subject/object axis: {moves}"
    head = title or (
        f"{view.model_name}: the residual at the read word before and after "
        f"{view.head_label} writes"
    )
    fig.update_layout(
        title={"text": f"{head}<br><sup>{note}</sup>", "x": 0.5, "xanchor": "center"},
        legend={"orientation": "h", "y": -0.18},
    )
    fig.update_xaxes(title_text=view.basis_labels[0], zeroline=True)
    fig.update_yaxes(title_text=view.basis_labels[1], zeroline=True)
    return apply_paper_style(fig, width=820, height=720)
