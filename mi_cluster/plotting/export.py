"""Writing figures to disk, atomically (called by experiments and the CLI only)."""

from __future__ import annotations

import os
from pathlib import Path

import plotly.graph_objects as go

from mi_cluster.atomic import atomic_path

__all__ = ["save_figure"]


def save_figure(fig: go.Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path``: ``.html`` is standalone (plotly.js embedded, opens
    offline, animations kept); ``.png``/``.svg``/``.pdf`` go through kaleido (needs a
    Chromium on the machine). The file appears complete or not at all."""
    target = Path(path)
    with atomic_path(target) as tmp:
        if target.suffix == ".html":
            fig.write_html(str(tmp), include_plotlyjs=True, full_html=True, auto_play=False)
        elif target.suffix in (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp"):
            fig.write_image(str(tmp))
        else:
            raise ValueError(f"unknown figure format {target.suffix!r} for {target}")
    return target
