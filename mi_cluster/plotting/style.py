"""One paper style for every mi_cluster figure: a plotly template (``"mi_cluster"``), the
palette and colour scales, and sizes for a one-column or a full-width figure.

- White background, Arial, a colour-blind-safe categorical palette (Okabe-Ito).
- ``DIVERGING`` (centred at zero; patching, attribution, effects) and ``SEQUENTIAL``
  (similarities, attention, probabilities).
- Builders are sized for a full-width figure (6.75 in): at their default 13-px font and
  760-1000 px width the text prints at 6-8 pt. :func:`paper_size` resizes any figure to a
  column (3.25 in) or the full width at 96 px an inch with an 8-pt font, to export at
  ``PAPER_DPI``.
- Titles never run into subplot titles: :func:`apply_paper_style` reserves a top margin
  for every line of the title and, where there are subplot titles, a line for them.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

__all__ = [
    "DIVERGING",
    "GROUP_STYLES",
    "PALETTE",
    "PAPER_WIDTH_IN",
    "SEQUENTIAL",
    "apply_paper_style",
    "color_for",
    "marker_for",
    "paper_size",
    "rgba",
]

# Colour-blind-safe (Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
DIVERGING = "RdBu"  # blue positive, red negative; always with a zero midpoint
SEQUENTIAL = "Blues"
PAPER_WIDTH_IN = {"column": 3.25, "full": 6.75}
PAPER_DPI = 300
_PX_PER_IN = 96
FONT = "Arial, Helvetica, sans-serif"
# The subject/object design's groups: names blue, objects vermillion/orange; circles for
# names, diamonds for objects; filled in subject position, open in object position.
GROUP_STYLES: dict[str, tuple[str, str]] = {
    "name · subject": ("#0072B2", "circle"),
    "name · object": ("#56B4E9", "circle-open"),
    "object · subject": ("#D55E00", "diamond"),
    "object · object": ("#E69F00", "diamond-open"),
    "name · alone": ("#000000", "circle-dot"),
    "object · alone": ("#999999", "diamond-dot"),
}

_template = go.layout.Template(pio.templates["simple_white"])
_layout: Any = _template.layout  # plotly's stubs do not type a template's layout
_layout.font = {"family": FONT, "size": 13, "color": "#222222"}
_layout.colorway = list(PALETTE)
_layout.paper_bgcolor = "white"
_layout.plot_bgcolor = "white"
_layout.colorscale = {"sequential": SEQUENTIAL, "diverging": DIVERGING}
_layout.legend = {"bgcolor": "rgba(255,255,255,0.7)"}
pio.templates["mi_cluster"] = _template


def rgba(color: str, alpha: float) -> str:
    """``color`` (``"#RRGGBB"`` or ``"rgb(r, g, b)"``) with opacity ``alpha``."""
    if color.startswith("#"):
        r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    else:
        r, g, b = (int(float(v)) for v in color[color.index("(") + 1 : -1].split(",")[:3])
    return f"rgba({r},{g},{b},{round(alpha, 3):g})"


def color_for(group: str, order: list[str]) -> str:
    """The colour of a point group: its fixed colour, else one from the palette by order."""
    style = GROUP_STYLES.get(group)
    return style[0] if style else PALETTE[order.index(group) % len(PALETTE)]


def marker_for(group: str, order: list[str]) -> str:
    """The marker of a point group: its fixed symbol, else a circle."""
    style = GROUP_STYLES.get(group)
    symbols = ("circle", "diamond", "square", "triangle-up", "cross", "x", "star", "hexagon")
    return style[1] if style else symbols[order.index(group) % len(symbols)]


def _has_subplot_titles(fig: go.Figure) -> bool:
    return any(
        a.yref == "paper" and a.y is not None and a.y >= 0.9 and a.yanchor == "bottom"
        for a in fig.layout.annotations or ()
    )


def apply_paper_style(fig: go.Figure, width: int = 760, height: int = 560) -> go.Figure:
    """The mi_cluster template, the figure's size, and a top margin that keeps the title
    (every line of it) clear of the subplot titles."""
    fig.update_layout(template="mi_cluster", width=width, height=height)
    title = fig.layout.title.text or ""
    lines = title.count("<br>") + 1 if title else 0
    top = 30 + 26 * lines + (24 if _has_subplot_titles(fig) else 0)
    fig.update_layout(
        margin={
            "l": 70,
            "r": 30,
            "t": max(fig.layout.margin.t or 0, top),
            "b": fig.layout.margin.b or 60,
        },
        # without a top pad plotly clips the first line of a multi-line title
        title={"y": 1 - 12 / height, "yanchor": "top", "yref": "container", "pad": {"t": 8}},
    )
    return fig


def paper_size(fig: go.Figure, where: str = "column", font_pt: float = 8.0) -> go.Figure:
    """A copy of ``fig`` sized for a paper: ``"column"`` (3.25 in) or ``"full"`` (6.75 in)
    wide at 96 px an inch, the height scaled to keep the aspect ratio, every font at
    ``font_pt`` points (subplot titles and tick labels included). Export it with
    ``scale = PAPER_DPI / 96`` for a 300-dpi image."""
    if where not in PAPER_WIDTH_IN:
        raise ValueError(f"where must be one of {sorted(PAPER_WIDTH_IN)}, got {where!r}")
    out = go.Figure(fig)
    width = round(PAPER_WIDTH_IN[where] * _PX_PER_IN)
    old_w, old_h = out.layout.width or 760, out.layout.height or 560
    px = font_pt * _PX_PER_IN / 72
    out.update_layout(width=width, height=round(old_h * width / old_w), font={"size": px})
    out.update_annotations(font_size=px)
    out.update_xaxes(tickfont_size=px, title_font_size=px)
    out.update_yaxes(tickfont_size=px, title_font_size=px)
    return out
