"""Writing figures to disk, atomically (called by experiments and the CLI only)."""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import plotly.graph_objects as go

from mi_cluster.atomic import atomic_path, atomic_write_text

__all__ = ["FigureExportError", "save_figure", "save_formats", "write_experiment"]

STATIC_FORMATS = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp")
PLOTLY_JS = "plotly.min.js"


class FigureExportError(RuntimeError):
    """A static figure (PNG, SVG, PDF) could not be rendered: kaleido or a Chromium is
    missing or failed."""


def _local_plotly_js(directory: Path) -> None:
    """Write the installed plotly.js as ``plotly.min.js`` in ``directory`` unless the same
    file is there already (atomically: a reader never sees half a library)."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    target = directory / PLOTLY_JS
    if target.is_file() and target.stat().st_size == len(js.encode("utf-8")):
        if target.read_text(encoding="utf-8") == js:
            return
    with atomic_path(target) as tmp:
        tmp.write_text(js, encoding="utf-8")


def save_figure(fig: go.Figure, path: str | os.PathLike, embed_plotlyjs: bool = False) -> Path:
    """Write ``fig`` to ``path``. ``.html`` opens offline with animations kept: it loads
    ``plotly.min.js`` from its own folder, written there once for all figures (never a
    CDN), or carries plotly.js inside it with ``embed_plotlyjs=True`` (4.8 MB a file, for
    an HTML that travels alone). ``.png``/``.svg``/``.pdf`` go through kaleido (needs a
    Chromium on the machine; a failure raises :class:`FigureExportError` saying how to
    install one). Each file appears complete or not at all, and the same figure always
    gives the same bytes (the plot's element id comes from the file name)."""
    target = Path(path)
    if target.suffix != ".html" and target.suffix not in STATIC_FORMATS:
        raise ValueError(f"unknown figure format {target.suffix!r} for {target}")
    if target.suffix == ".html" and not embed_plotlyjs:
        target.parent.mkdir(parents=True, exist_ok=True)
        _local_plotly_js(target.parent)
    with atomic_path(target) as tmp:
        if target.suffix == ".html":
            js = True if embed_plotlyjs else PLOTLY_JS
            div_id = "fig-" + "".join(c if c.isalnum() else "-" for c in target.stem)
            fig.write_html(
                str(tmp), include_plotlyjs=js, full_html=True, auto_play=False, div_id=div_id
            )
        else:
            try:
                fig.write_image(str(tmp))
            except Exception as err:  # kaleido missing, Chromium missing or crashed
                raise FigureExportError(
                    f"{target.name} not written: {err}. Static export needs the figures extra "
                    "(kaleido>=1) and a Chromium on the machine (apt-get install chromium)"
                ) from err
    return target


def save_formats(
    fig: go.Figure, stem: str | os.PathLike, formats: tuple[str, ...] = ("html", "png")
) -> tuple[list[Path], list[str]]:
    """Write ``fig`` as ``<stem>.<format>`` for each format (see :func:`save_figure`).
    Returns the files written and, instead of raising, the message of each static format
    that could not be rendered, so a machine without a Chromium still gets the others."""
    written: list[Path] = []
    failed: list[str] = []
    for fmt in formats:
        path = Path(f"{os.fspath(stem)}.{fmt.lstrip('.')}")
        try:
            written.append(save_figure(fig, path))
        except FigureExportError as err:
            failed.append(str(err))
    return written, failed


def write_experiment(
    out: str | os.PathLike,
    stem: str,
    record: dict,
    figures: Mapping[str, go.Figure],
    *,
    png: bool = True,
    html_only: Collection[str] = (),
    indent: int = 2,
) -> tuple[list[Path], list[str]]:
    """Write an experiment's outputs to ``out``: ``<stem>.json`` (``record``) and, for each
    figure, ``<stem>_<kind>.html`` and ``.png`` (unless ``png`` is false or the kind is in
    ``html_only``, e.g. animations). Every file is written atomically. Returns the files
    written and the messages of static exports that failed (see :func:`save_formats`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [atomic_write_text(out / f"{stem}.json", json.dumps(record, indent=indent) + "\n")]
    failures: list[str] = []
    for kind, fig in figures.items():
        formats = ("html", "png") if png and kind not in html_only else ("html",)
        written, failed = save_formats(fig, out / f"{stem}_{kind}", formats)
        files += written
        failures += failed
    return files, failures
