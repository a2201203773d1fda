"""How results show themselves: a one-line ``repr`` and a small table in notebooks.

A result class lists what a reader needs to see first (:class:`Summary`: a title and a
few labelled values: shapes, labels, headline numbers), never its tensors, and gets both
representations from it (:func:`summary_repr`, :func:`summary_html`), so printing a
result in a terminal or a notebook never runs to pages.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

__all__ = ["Summary", "shape_of", "short_list", "summary_html", "summary_repr"]


@dataclass(frozen=True)
class Summary:
    """What a result shows first.

    Fields:
        title: the result's kind, e.g. ``"PatchResult"``.
        items: ``(label, value)`` pairs, each value already a short string.
    """

    title: str
    items: tuple[tuple[str, str], ...]


def summary_repr(summary: Summary) -> str:
    """``Title(label=value, ...)`` on one line."""
    inner = ", ".join(f"{label}={value}" for label, value in summary.items)
    return f"{summary.title}({inner})"


def summary_html(summary: Summary) -> str:
    """A two-column table (label, value), every string escaped."""
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
        f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
        for label, value in summary.items
    )
    return f"<div><strong>{html.escape(summary.title)}</strong><table>{rows}</table></div>"


def shape_of(tensor: Tensor, names: Sequence[str] = ()) -> str:
    """``[layer 12, head 12, prompt 20]`` (named axes where given, the rest numbered)."""
    dims = [f"{n} {d}" if i < len(names) else str(d) for i, (n, d) in _named(tensor, names)]
    return "[" + ", ".join(dims) + "]"


def _named(tensor: Tensor, names: Sequence[str]) -> list[tuple[int, tuple[str, int]]]:
    padded = [*names, *[""] * (tensor.ndim - len(names))]
    return list(enumerate(zip(padded, tensor.shape, strict=True)))


def short_list(values: Sequence[object], limit: int = 4) -> str:
    """The first ``limit`` values and how many more: ``'embed', 'L0', ... (+11)``."""
    shown = ", ".join(repr(v) for v in values[:limit])
    more = len(values) - limit
    return f"{shown}, ... (+{more})" if more > 0 else shown
