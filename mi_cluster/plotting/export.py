"""Writing figures to disk, atomically (called by experiments and the CLI only)."""

from __future__ import annotations

import os
from pathlib import Path

import plotly.graph_objects as go

from mi_cluster.atomic import atomic_path

__all__ = ["FigureExportError", "save_figure"]

STATIC_FORMATS = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp")


class FigureExportError(RuntimeError):
    """A static figure (PNG, SVG, PDF) could not be rendered: kaleido or a Chromium is
    missing or failed."""


def save_figure(fig: go.Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path``: ``.html`` is standalone (plotly.js embedded, opens
    offline, animations kept); ``.png``/``.svg``/``.pdf`` go through kaleido (needs a
    Chromium on the machine; a failure raises :class:`FigureExportError` saying how to
    install one). The file appears complete or not at all."""
    target = Path(path)
    if target.suffix != ".html" and target.suffix not in STATIC_FORMATS:
        raise ValueError(f"unknown figure format {target.suffix!r} for {target}")
    with atomic_path(target) as tmp:
        if target.suffix == ".html":
            fig.write_html(str(tmp), include_plotlyjs=True, full_html=True, auto_play=False)
        else:
            try:
                fig.write_image(str(tmp))
            except Exception as err:  # kaleido missing, Chromium missing or crashed
                raise FigureExportError(
                    f"{target.name} not written: {err}. Static export needs the figures extra "
                    "(kaleido>=1) and a Chromium on the machine (apt-get install chromium)"
                ) from err
    return target
