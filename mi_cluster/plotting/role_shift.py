"""Figures of the role-shift attribution: which components carry the shift of a word's
subjecthood from object to subject position
(:mod:`~mi_cluster.studies.subject_object.role_shift`)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mi_cluster.methods.stats import SCOPES
from mi_cluster.plotting.heads import head_maps
from mi_cluster.plotting.scales import add_colour_axes, colour_scale
from mi_cluster.plotting.style import PALETTE, apply_paper_style, rgba
from mi_cluster.studies.subject_object.role_shift import ComponentShare, RoleShiftAttribution

__all__ = ["role_shift_forest", "role_shift_heads", "role_shift_positions"]

_TITLE_KINDS = {
    "head_out": "head",
    "head_out_by_pos": "head at one position",
    "mlp_out_all": "MLP",
    "mlp_out": "MLP at one position",
    "resid_pre": "residual at one position",
}


def _subtitle(a: RoleShiftAttribution) -> str:
    these, general = a.shift(SCOPES[0]), a.shift(SCOPES[1])
    return (
        f"{a.model_name}: what carries the shift of {a.word_type}s toward names at "
        f"{a.layer_label}<br><sup>subjecthood (objects 0, names 1), subject minus object "
        f"position: {these['estimate']:+.3f}, these templates [{these['low']:+.3f}, "
        f"{these['high']:+.3f}], templates in general [{general['low']:+.3f}, "
        f"{general['high']:+.3f}]<br>fraction: the share of it each patch carries</sup>"
    )


def role_shift_heads(a: RoleShiftAttribution) -> go.Figure:
    """Layer x head maps of the fraction of the shift each head carries (its output at
    every position patched from the subject into the object form), then for each path
    receiver the fraction its upstream senders carry through it (rows: the layers that can
    send to it); one colour scale for all."""
    heads = a.components.get("head_out")
    if heads is None:
        raise ValueError("the attribution has no head_out site to draw")
    maps, titles = [heads.fraction], ["each head's output (all positions)"]
    for receiver, share in a.paths.items():  # senders: the layers before the receiver
        maps.append(share.fraction)
        titles.append(f"path: sender -> {receiver} (q, k, v)")
    return head_maps(
        maps, titles, ["fraction"] * len(maps), title=_subtitle(a), columns=min(3, len(maps))
    )


def role_shift_positions(a: RoleShiftAttribution) -> go.Figure:
    """Layer x position (relative to the read word W) maps of the fraction carried by
    patching the residual stream, or an MLP's output, at one position; one diverging
    scale for all panels."""
    kinds = [k for k in ("resid_pre", "mlp_out") if k in a.components]
    if not kinds:
        raise ValueError("the attribution has no by-position site (resid_pre, mlp_out) to draw")
    shares = [a.components[k] for k in kinds]
    scale = colour_scale("fraction", [s.fraction for s in shares], diverging=True)
    fig = make_subplots(
        rows=1, cols=len(kinds), subplot_titles=[_TITLE_KINDS[k] for k in kinds],
        horizontal_spacing=0.08,
    )  # fmt: skip
    for k, share in enumerate(shares):
        entry = "input to " if share.site == "resid_pre" else ""
        fig.add_trace(
            go.Heatmap(
                z=share.fraction.tolist(),
                x=share.labels["offset"],
                y=[entry + lab for lab in share.labels["layer"]],
                coloraxis="coloraxis",
                text=[[f"{v:.2f}" for v in row] for row in share.fraction.tolist()],
                texttemplate="%{text}",
                textfont={"size": 9},
                hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=k + 1,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=k + 1)
        fig.update_xaxes(title_text="position (W = the read word)", row=1, col=k + 1)
    add_colour_axes(fig, [scale])
    fig.update_layout(title={"text": _subtitle(a), "x": 0.5, "xanchor": "center"})
    n_off = len(shares[0].labels["offset"])
    return apply_paper_style(fig, width=len(kinds) * max(380, 46 * n_off) + 200, height=460)


_STATES = (
    ("across", "reliable for templates in general (Holm p < {alpha})"),
    ("within", "reliable for these templates only (Holm p < {alpha})"),
    ("none", "not reliable (Holm p ≥ {alpha} for both)"),
)


def _rows(a: RoleShiftAttribution, share: ComponentShare, kind: str) -> list[dict]:
    flat = [t.flatten().tolist() for t in (share.fraction, share.low, share.high)]
    words = [t.flatten().tolist() for t in (share.low_words, share.high_words)]
    across = {r.component for r in a.reliable(share)}
    within = {r.component for r in a.reliable(share, "words")}
    return [
        {
            "label": f"{kind}: {label}",
            "f": flat[0][i], "low": flat[1][i], "high": flat[2][i],
            "wlow": words[0][i], "whigh": words[1][i], "p": share.p_holm.flatten()[i].item(),
            "p_general": share.p_holm_general.flatten()[i].item(),
            "state": "across" if label in across else "within" if label in within else "none",
        }
        for i, label in enumerate(share.component_labels())
    ]  # fmt: skip


def _bars(rows: list[dict], low: str, high: str, color: str, thickness: float, width: float):
    """Asymmetric error bars from each row's estimate to its ``low`` and ``high``."""
    return {
        "type": "data", "symmetric": False, "thickness": thickness, "width": width,
        "color": color,
        "array": [r[high] - r["f"] for r in rows],
        "arrayminus": [r["f"] - r[low] for r in rows],
    }  # fmt: skip


def role_shift_forest(a: RoleShiftAttribution, top: int = 14) -> go.Figure:
    """The ``top`` components by |fraction| over every site kind and path, each with its
    95% interval for these templates (thick) and for templates in general (thin; clipped
    at the axis, which spans the thick intervals), both carrying the axis's error; filled
    where reliable for templates in general, half-filled where for these templates only."""
    rows = []
    for site, share in a.components.items():
        rows += _rows(a, share, _TITLE_KINDS.get(site, site))
    for receiver, share in a.paths.items():
        rows += _rows(a, share, f"path to {receiver}")
    rows = sorted(rows, key=lambda r: -abs(r["f"]))[:top]
    fig = go.Figure()
    labels = [r["label"] for r in rows]
    for k, (state, name) in enumerate(_STATES):
        sub = [r for r in rows if r["state"] == state]
        if not sub:
            continue
        color = PALETTE[k]
        common = {"y": [r["label"] for r in sub], "mode": "markers", "legendgroup": state}
        fig.add_trace(
            go.Scatter(
                x=[r["f"] for r in sub],
                error_x=_bars(sub, "low", "high", rgba(color, 0.5), thickness=1.5, width=3),
                marker={"size": 1, "color": color},
                showlegend=False,
                hoverinfo="skip",
                **common,
            )
        )  # fmt: skip
        symbol = {"across": "circle", "within": "circle-dot", "none": "circle-open"}[state]
        fig.add_trace(
            go.Scatter(
                x=[r["f"] for r in sub],
                error_x=_bars(sub, "wlow", "whigh", color, thickness=3, width=5),
                marker={
                    "size": 10, "symbol": symbol, "color": color,
                    "line": {"color": color, "width": 1.5},
                },
                name=name.format(alpha=a.alpha),
                hovertext=[
                    f"{r['label']}: {r['f']:.3f}, these templates [{r['wlow']:.3f}, "
                    f"{r['whigh']:.3f}] (Holm p = {r['p']:.3g}), templates in general "
                    f"[{r['low']:.3f}, {r['high']:.3f}] (Holm p = {r['p_general']:.3g})"
                    for r in sub
                ],
                hoverinfo="text",
                **common,
            )
        )  # fmt: skip
    low = min(0.0, *(r["wlow"] for r in rows))
    high = max(1.0, *(r["whigh"] for r in rows))
    pad = 0.08 * (high - low)
    fig.add_vline(x=0, line={"color": "#888", "dash": "dot"})
    fig.add_vline(x=1, line={"color": "#bbb", "dash": "dash"})
    fig.update_yaxes(categoryorder="array", categoryarray=labels[::-1])
    fig.update_xaxes(
        title_text="fraction of the shift (1 = all of it)", range=[low - pad, high + pad]
    )
    title = _subtitle(a).replace(
        "</sup>",
        "<br>thick: these templates; thin: templates in general, clipped at the axis</sup>",
    )
    fig.update_layout(
        title={"text": title, "x": 0.5, "xanchor": "center"},
        legend={"orientation": "v", "y": -0.14, "x": 0, "xanchor": "left", "yanchor": "top"},
    )
    return apply_paper_style(fig, width=880, height=300 + 30 * len(rows))
