"""Point labels that never overlap: each label goes to the first place around its point
where it covers no other label and no marker, or is left off (its hover text still names
the point), and the figure says how many were left off."""

from __future__ import annotations

from collections.abc import Sequence

from mi_cluster.plotting.font import text_width

__all__ = ["place_labels"]

# plotly text positions, tried in this order, with the box's offset from the point as
# (horizontal side, vertical side): -1 left/below, 0 centred, 1 right/above
_PLACES = (
    ("top center", 0, 1),
    ("bottom center", 0, -1),
    ("middle right", 1, 0),
    ("middle left", -1, 0),
    ("top right", 1, 1),
    ("top left", -1, 1),
    ("bottom right", 1, -1),
    ("bottom left", -1, -1),
)

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels, y up


def _box(x: float, y: float, w: float, h: float, side: tuple[int, int], gap: float) -> Box:
    sx, sy = side
    x0 = x - w / 2 if sx == 0 else x + gap if sx > 0 else x - gap - w
    y0 = y - h / 2 if sy == 0 else y + gap if sy > 0 else y - gap - h
    return x0, y0, x0 + w, y0 + h


def _hits(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    points: Sequence[tuple[float, float]],
    texts: Sequence[str],
    *,
    size: float,
    marker: float,
    canvas: tuple[float, float],
) -> list[str | None]:
    """For points at pixel positions ``points`` (y up, inside a plot area of ``canvas``
    pixels) with markers ``marker`` pixels wide, the plotly ``textposition`` of each label
    at ``size`` pixels, or None where every place would cover another label or marker or
    leave the plot area, or repeat the label of a point at the same spot. Labels are
    placed in the order given (put the important first)."""
    half = marker / 2
    markers = [(x - half, y - half, x + half, y + half) for x, y in points]
    placed: list[Box] = []
    named: list[tuple[float, float, str]] = []  # labelled points
    out: list[str | None] = []
    for k, ((x, y), text) in enumerate(zip(points, texts, strict=True)):
        if not text or any(
            t == text and abs(x - a) < marker and abs(y - b) < marker for a, b, t in named
        ):  # nothing to say, or said already at this spot
            out.append(None)
            continue
        w, h = text_width(text, size), size * 1.15
        choice = None
        for name, sx, sy in _PLACES:
            box = _box(x, y, w, h, (sx, sy), half + 1)
            inside = box[0] >= 0 and box[1] >= 0 and box[2] <= canvas[0] and box[3] <= canvas[1]
            if not inside or any(_hits(box, b) for b in placed):
                continue
            if any(_hits(box, m) for j, m in enumerate(markers) if j != k):
                continue
            choice = name
            placed.append(box)
            named.append((x, y, text))
            break
        out.append(choice)
    return out
