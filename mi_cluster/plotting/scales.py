"""Colour scales that say what they show: every heatmap is drawn on a stated scale with a
colour bar titled by its unit, panels in one unit share one scale, and zero is always
drawn as zero.

- A signed quantity gets a diverging scale centred at zero, symmetric, wide enough for the
  largest magnitude of every panel that shares it, and never narrower than ``floor``: a
  panel of numerical noise (values of 1e-18) is drawn white, not stretched to full colour.
- A quantity that cannot be negative (attention, a fraction, a distance) gets a sequential
  scale from zero; one with a natural range (attention 0-1, a correlation -1-1) is given it
  with ``stated``.
- :func:`add_colour_axes` gives each scale a colour axis (``coloraxis``, ``coloraxis2``, ...)
  and stacks their colour bars down the right edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from mi_cluster.plotting.style import DIVERGING, SEQUENTIAL

__all__ = ["NOISE_FLOOR", "ColourScale", "add_colour_axes", "colour_scale"]

# The smallest half-width of a diverging scale: magnitudes below it are rounding noise in
# float32 or float64 results, drawn as zero.
NOISE_FLOOR = 1e-6


@dataclass(frozen=True)
class ColourScale:
    """A stated colour scale.

    Attributes:
        unit: what the colour shows (the colour bar's title).
        low, high: the values at the two ends of the scale.
        diverging: centred at zero (blue positive, red negative), else sequential.
        colours: a plotly colour scale name to use instead of the house one.
    """

    unit: str
    low: float
    high: float
    diverging: bool
    colours: str | None = None

    def __repr__(self) -> str:
        kind = "diverging" if self.diverging else "sequential"
        return f"ColourScale({self.unit!r}, {self.low:.3g}..{self.high:.3g}, {kind})"

    def axis(self) -> dict:
        """The layout of a colour axis on this scale (``fig.layout.coloraxis``)."""
        colours = self.colours or (DIVERGING if self.diverging else SEQUENTIAL)
        return {
            "colorscale": colours,
            "cmin": self.low,
            "cmax": self.high,
            **({"cmid": 0.0} if self.diverging else {}),
            "colorbar": {"title": {"text": self.unit, "side": "right"}},
        }


def _finite(values: Iterable) -> np.ndarray:
    arrays = [
        np.asarray(getattr(v, "tolist", lambda v=v: v)(), dtype=float).ravel() for v in values
    ]
    flat = np.concatenate(arrays) if arrays else np.zeros(0)
    return flat[np.isfinite(flat)]


def colour_scale(
    unit: str,
    values: Iterable,
    *,
    stated: tuple[float, float] | None = None,
    diverging: bool | None = None,
    floor: float = NOISE_FLOOR,
) -> ColourScale:
    """The scale for every panel in ``values`` (tensors, arrays or nested lists; NaNs are
    ignored) measured in ``unit``. ``stated`` fixes the ends (values outside it saturate);
    otherwise a quantity with a negative value (or ``diverging=True``) gets
    ``[-m, m]`` with ``m`` the largest magnitude (at least ``floor``), else ``[0, max]``."""
    flat = _finite(values)
    if stated is not None:
        low, high = map(float, stated)
        if not low < high:
            raise ValueError(f"a stated colour scale runs from low to high, got {stated}")
        return ColourScale(unit, low, high, diverging=bool(low < 0 < high))
    signed = bool((flat < 0).any()) if diverging is None else diverging
    top = float(np.abs(flat).max()) if flat.size else 0.0
    bound = max(top, floor)
    return ColourScale(unit, -bound if signed else 0.0, bound, signed)


def add_colour_axes(fig: go.Figure, scales: Sequence[ColourScale]) -> list[str]:
    """Lay out one colour axis per scale, their colour bars stacked down the right edge
    (each titled by its unit); returns the axis names to give traces as ``coloraxis``."""
    names = []
    gap = 0.06
    height = (1.0 - gap * (len(scales) - 1)) / max(len(scales), 1)
    for k, scale in enumerate(scales):
        name = "coloraxis" if k == 0 else f"coloraxis{k + 1}"
        axis = scale.axis()
        axis["colorbar"].update(
            {"len": height, "y": 1.0 - k * (height + gap), "yanchor": "top", "thickness": 14}
        )
        fig.update_layout({name: axis})
        names.append(name)
    return names
