"""One paper style for every mi_cluster figure: a plotly template (``"mi_cluster"``), the
palette and colour scales, and sizes for a one-column or a full-width figure.

- White background, the packaged Source Sans Pro (:mod:`mi_cluster.plotting.font`), a
  colour-blind-safe categorical palette (Okabe-Ito).
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

import re
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from mi_cluster.plotting.font import FONT_STACK, MARKUP, text_width

__all__ = [
    "DIVERGING",
    "GROUP_STYLES",
    "PALETTE",
    "PAPER_WIDTH_IN",
    "SEQUENTIAL",
    "apply_paper_style",
    "color_for",
    "legend_below",
    "marker_for",
    "paper_size",
    "rgba",
    "wrap_text",
]

# Colour-blind-safe (Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
DIVERGING = "RdBu"  # blue positive, red negative; always with a zero midpoint
SEQUENTIAL = "Blues"
PAPER_WIDTH_IN = {"column": 3.25, "full": 6.75}
PAPER_DPI = 300
TITLE_PX, SUBPLOT_TITLE_PX = 18, 16  # plotly's sizes for a 13-px font
_PX_PER_IN = 96
# The subject/object design's groups: names blue, objects vermillion/orange, dark in
# subject position and light in object position; circles and diamonds for names and
# objects in subject position, squares and triangles in object position. All filled: an
# open marker means "not significant" in every mi_cluster figure.
GROUP_STYLES: dict[str, tuple[str, str]] = {
    "name · subject": ("#0072B2", "circle"),
    "name · object": ("#56B4E9", "square"),
    "object · subject": ("#D55E00", "diamond"),
    "object · object": ("#E69F00", "triangle-up"),
    "name · alone": ("#000000", "circle-dot"),
    "object · alone": ("#999999", "diamond-dot"),
}

_template = go.layout.Template(pio.templates["simple_white"])
_layout: Any = _template.layout  # plotly's stubs do not type a template's layout
_layout.font = {"family": FONT_STACK, "size": 13, "color": "#222222"}
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


def wrap_text(text: str, width: float, size: float) -> str:
    """``text`` with ``<br>`` put between words so no line is wider than ``width`` pixels at
    ``size`` pixels in the figures' font (lines it has already are kept; a single word
    wider than ``width`` stays whole; a comparison such as ``p < 0.05`` is never split)."""
    text = re.sub(r" (<|>|=|≤|≥|±|≈) ", "\u00a0\\1\u00a0", text)  # glue "p < 0.05"
    text = MARKUP.sub(lambda m: m.group(0).replace(" ", "\x00"), text)  # tags stay whole
    out = []
    for line in re.split(r"<br\s*/?>", text, flags=re.IGNORECASE):
        current = ""
        for word in line.split(" "):
            trial = f"{current} {word}" if current else word
            if current and text_width(trial, size) > width:
                out.append(current)
                current = word
            else:
                current = trial
        out.append(current)
    return "<br>".join(out).replace("\x00", " ")


def _fit_subplot_titles(fig: go.Figure, plot_width: float) -> None:
    """Wrap each subplot title to the width of its column."""
    axes = [fig.layout[a] for a in fig.layout if a.startswith("xaxis")]  # type: ignore[attr-defined]
    domains = sorted({tuple(a.domain or (0.0, 1.0)) for a in axes})
    for note in fig.layout.annotations or ():
        if note.xref != "paper" or note.yanchor != "bottom" or not note.text:
            continue
        widths = [(d1 - d0) for d0, d1 in domains if d0 - 1e-6 <= note.x <= d1 + 1e-6]
        if widths:
            size = (note.font.size if note.font else None) or SUBPLOT_TITLE_PX
            note.text = wrap_text(note.text, min(widths) * plot_width + 8, size)


def legend_below(fig: go.Figure) -> go.Figure:
    """Put the legend in a band of its own along the bottom edge of a styled figure (call
    it after :func:`apply_paper_style`), under the x-axis titles, never over them; the
    figure grows by the band, which has a row for every line the entries wrap to."""
    traces: Sequence[Any] = fig.data  # pyright: ignore[reportAssignmentType]
    names = [t.name for t in traces if t.name and t.showlegend is not False]
    width = fig.layout.width or 760
    lines, used = 1, 0.0
    for name in dict.fromkeys(names):
        entry = text_width(name, 13) + 50  # symbol, gap and padding
        if used and used + entry > width - 20:
            lines, used = lines + 1, 0.0
        used += entry
    band = 10 + 24 * lines
    fig.update_layout(
        legend={
            "orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yanchor": "bottom",
            "yref": "container",
        },
        margin_b=(fig.layout.margin.b or 60) + band,
        height=(fig.layout.height or 560) + band,
    )  # fmt: skip
    fig.update_layout(title_y=1 - 12 / fig.layout.height)  # where apply_paper_style put it
    return fig


def apply_paper_style(fig: go.Figure, width: int = 760, height: int = 560) -> go.Figure:
    """The mi_cluster template, the figure's size, titles wrapped to fit the figure (and
    subplot titles to their column), and a top margin that keeps the title (every line of
    it) clear of the subplot titles."""
    fig.update_layout(template="mi_cluster", width=width, height=height)
    margin = fig.layout.margin
    plot_width = width - (margin.l if margin.l is not None else 70) - (margin.r or 30)
    _fit_subplot_titles(fig, plot_width)
    if fig.layout.title.text:
        fig.layout.title.text = wrap_text(fig.layout.title.text, width - 40, TITLE_PX)
    for frame in fig.frames or ():  # an animation's frames bring titles of their own
        if frame.layout and frame.layout.title and frame.layout.title.text:
            frame.layout.title.text = wrap_text(frame.layout.title.text, width - 40, TITLE_PX)
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
