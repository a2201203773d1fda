"""Writing figures to disk, atomically (called by experiments and the CLI only)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import plotly.graph_objects as go

from mi_cluster.core.atomic import atomic_path, atomic_write_text
from mi_cluster.core.provenance import Provenance
from mi_cluster.plotting.browser import INSTALL_HINT, FigureExportError, chromium_path
from mi_cluster.plotting.font import fontconfig_env, plain_text
from mi_cluster.plotting.html import write_html

__all__ = [
    "FigureExportError",
    "chromium_path",
    "figure_record",
    "figures_index",
    "save_figure",
    "save_formats",
    "static_figure",
    "write_experiment",
]

STATIC_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "webp")
DEFAULT_FORMATS = ("html", "png", "svg")
# Seconds a static export may take before its browser is killed (env MI_CLUSTER_EXPORT_TIMEOUT).
EXPORT_TIMEOUT_S = float(os.environ.get("MI_CLUSTER_EXPORT_TIMEOUT", "120"))
PNG_SCALE = 2  # static pixels per layout pixel: a 500-px figure is 1000 px, 300 dpi at 3.3 in


def static_figure(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` for a still image: an animation's play buttons and slider, which
    do nothing on paper, are taken off (its first frame is what is drawn)."""
    out = go.Figure(fig)
    out.layout.updatemenus = ()
    out.layout.sliders = ()
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill the export child, its process group and every descendant (a browser may have
    started a session of its own)."""
    try:
        import psutil

        family = psutil.Process(proc.pid).children(recursive=True)
    except Exception:  # psutil missing, or the child is already gone
        family = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for p in family:
        with contextlib.suppress(Exception):
            p.kill()
    proc.communicate()


def _write_static(fig: go.Figure, targets: list[tuple[Path, str]], timeout: float) -> None:
    """Render ``targets`` (path, format) in a child process with one browser; kill it (and
    its browser) if it takes longer than ``timeout`` seconds."""
    names = ", ".join(p.name for p, _ in targets)
    browser = chromium_path()
    if browser is None:
        raise FigureExportError(f"{names} not written: no Chromium found; {INSTALL_HINT}")
    try:
        import kaleido  # noqa: F401
    except ImportError as err:
        raise FigureExportError(
            f"{names} not written: static export needs kaleido>=1 (the figures extra: "
            'pip install "mi-cluster[figures]")'
        ) from err
    with contextlib.ExitStack() as stack:
        tmps = [(stack.enter_context(atomic_path(p)), fmt) for p, fmt in targets]
        job = {
            "figure": static_figure(fig).to_json(),
            "targets": [[str(t), fmt] for t, fmt in tmps],
            "scale": PNG_SCALE,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "mi_cluster.plotting._export_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "BROWSER_PATH": browser, **fontconfig_env()},
            start_new_session=True,  # its own process group: the browser dies with it
        )
        try:
            _, err = proc.communicate(json.dumps(job).encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            raise FigureExportError(
                f"{names} not written: the browser ({browser}) did not finish within the "
                f"{timeout:g} s time-out and was killed (raise it with timeout= or "
                "MI_CLUSTER_EXPORT_TIMEOUT)"
            ) from None
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            raise FigureExportError(
                f"{names} not written: kaleido/Chromium failed ({browser}): {' | '.join(tail)}"
            )
        empty = [t.name for t, _ in tmps if not t.is_file() or t.stat().st_size == 0]
        if empty:
            raise FigureExportError(f"{names} not written: the browser produced no output")


def save_figure(
    fig: go.Figure,
    target: str | os.PathLike,
    formats: Sequence[str] | None = None,
    *,
    embed_plotlyjs: bool = False,
    timeout: float = EXPORT_TIMEOUT_S,
) -> list[Path]:
    """Write ``fig`` as ``<target>.<format>`` for each of ``formats`` (default: HTML, PNG
    and SVG; a ``target`` that ends in a format's suffix writes just that file).

    - ``.html`` opens offline with animations kept: it loads ``plotly.min.js`` from its own
      folder, written there once for all figures (never a CDN), or carries plotly.js inside
      it with ``embed_plotlyjs=True`` (4.8 MB a file, for an HTML that travels alone).
    - ``.png``/``.svg``/``.pdf`` go through kaleido and the system's Chromium in a child
      process, all formats with one browser start; PNGs at twice the layout's pixels. A
      browser that does not finish within ``timeout`` seconds is killed and
      :class:`FigureExportError` names the files and the time-out; a missing Chromium
      raises it with the install hint. Nothing is ever downloaded.

    Each file appears complete or not at all, and the same figure gives the same bytes."""
    target = Path(target)
    if formats is None:
        suffix = target.suffix.lstrip(".")
        if suffix.lower() in ("html", *STATIC_FORMATS):
            formats, target = (suffix.lower(),), target.with_suffix("")
        elif suffix.isalpha() and len(suffix) <= 4:  # a file type, not part of a stem
            raise ValueError(
                f"{target} ends in .{suffix}, which is not a format a figure is written in "
                f"(html or {', '.join(STATIC_FORMATS)}): give one of those, or a stem "
                "without a suffix for the default formats"
            )
        else:
            formats = DEFAULT_FORMATS
    formats = [f.lstrip(".").lower() for f in formats]
    unknown = [f for f in formats if f != "html" and f not in STATIC_FORMATS]
    if unknown:
        raise ValueError(f"unknown figure format(s) {unknown}; use html or {STATIC_FORMATS}")
    paths = {f: Path(f"{os.fspath(target)}.{f}") for f in formats}
    if "html" in paths:
        write_html(fig, paths["html"], embed_plotlyjs)
    static = [(paths[f], f) for f in formats if f != "html"]
    if static:
        paths[formats[0]].parent.mkdir(parents=True, exist_ok=True)
        _write_static(fig, static, timeout)
    return [paths[f] for f in formats]


def save_formats(
    fig: go.Figure, stem: str | os.PathLike, formats: tuple[str, ...] = ("html", "png")
) -> tuple[list[Path], list[str]]:
    """:func:`save_figure`, but a static export that fails is reported instead of raised:
    returns the files written and the failure messages, so a machine without a Chromium
    still gets the HTML."""
    written = save_figure(fig, stem, [f for f in formats if f == "html"])
    failed: list[str] = []
    static = [f for f in formats if f != "html"]
    if static:
        try:
            written += save_figure(fig, stem, static)
        except FigureExportError as err:
            failed.append(str(err))
    return written, failed


_DATA_KEYS = ("type", "name", "x", "y", "z", "base", "error_x", "error_y")


def _traces(traces: list[dict]) -> list[dict]:
    return [{k: t[k] for k in _DATA_KEYS if k in t} for t in traces]


def figure_record(fig: go.Figure) -> dict:
    """The numbers a figure plots: per trace its type, name and x/y/z (and error bars), and
    the same for every animation frame; with its title."""
    spec = json.loads(fig.to_json() or "")  # (None only when writing to a file)
    title = (spec.get("layout", {}).get("title") or {}).get("text") or ""
    out = {"title": plain_text(title), "data": _traces(spec["data"])}
    if spec.get("frames"):
        out["frames"] = [
            {"name": f.get("name"), "data": _traces(f.get("data", []))} for f in spec["frames"]
        ]
    return out


def write_experiment(
    out: str | os.PathLike,
    stem: str,
    record: dict,
    figures: Mapping[str, go.Figure],
    *,
    png: bool = True,
    html_only: Collection[str] = (),
    indent: int = 2,
    provenance: Provenance | None = None,
    headlines: Mapping[str, str] | None = None,
) -> tuple[list[Path], list[str]]:
    """Write an experiment's outputs to ``out``.

    - ``<stem>.json``: ``record`` (with ``"provenance"`` added when given);
    - per figure, ``<stem>_<kind>.html`` and ``.png`` and ``.svg`` (only HTML when ``png``
      is false or the kind is in ``html_only``; animations get a key-frame strip
      ``<stem>_<kind>_strip`` in the static formats instead, see :func:`keyframe_strip`);
    - per figure, ``<stem>_<kind>.json``: the numbers it plots (:func:`figure_record`), its
      headline (``headlines[kind]``, else ``record["headline"]``), the provenance and the
      files; :func:`figures_index` builds ``figures/README.md`` from these.

    Every file is written atomically. Returns the files written and the messages of static
    exports that failed (see :func:`save_formats`). A figure that states no colour scale or
    leaves a numeric axis untitled (:func:`~mi_cluster.plotting.check.spec_problems`) is
    refused with :class:`ValueError` before anything is written."""
    from mi_cluster.plotting.check import spec_problems
    from mi_cluster.plotting.strips import keyframe_strip

    # an animation's still strip, built once, checked and written (only with static formats)
    strips = {k: keyframe_strip(fig) for k, fig in figures.items() if fig.frames} if png else {}
    found = {kind: spec_problems(fig) for kind, fig in figures.items()}
    found.update({f"{kind} (key frames)": spec_problems(s) for kind, s in strips.items()})
    if any(found.values()):
        lines = [f"{kind}: {p}" for kind, problems in found.items() for p in problems]
        raise ValueError(f"{stem}: figures a reviewer would send back: " + "; ".join(lines))

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance.as_dict() if provenance is not None else None
    if prov is not None:
        record = {**record, "provenance": prov}
    files = [atomic_write_text(out / f"{stem}.json", json.dumps(record, indent=indent) + "\n")]
    failures: list[str] = []
    static = ("png", "svg") if png else ()
    for kind, fig in figures.items():
        name = f"{stem}_{kind}"
        written, failed = save_formats(
            fig, out / name, ("html",) if kind in html_only else ("html", *static)
        )
        if fig.frames and static:  # an animation: a strip of its key frames for the paper
            strip, strip_failed = save_formats(strips[kind], out / f"{name}_strip", static)
            written, failed = written + strip, failed + strip_failed
        sidecar = {
            "figure": name,
            **figure_record(fig),
            "headline": (headlines or {}).get(kind) or record.get("headline") or "",
            "source": f"{stem}.json",
            "files": [p.name for p in written],
            "provenance": prov,
        }
        files += written
        files.append(atomic_write_text(out / f"{name}.json", json.dumps(sidecar, indent=1) + "\n"))
        failures += failed
    return files, failures


def figures_index(directory: str | os.PathLike) -> str:
    """``README.md`` text for a figures folder: one line per figure (from the ``.json``
    written beside each by :func:`write_experiment`) with what it shows, its files, the
    command that made it and its headline number."""
    directory = Path(directory)
    rows = []
    for path in sorted(directory.glob("*.json")):
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(meta, dict) or "figure" not in meta:
            continue
        command = (meta.get("provenance") or {}).get("command", "")
        files = ", ".join(f"[{f.rsplit('.', 1)[-1]}]({f})" for f in meta.get("files", []))
        cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        rows.append(
            f"| `{meta['figure']}` ({files}) | {cell(meta.get('title', ''))} | "
            f"`{cell(command)}` | {cell(meta.get('headline', ''))} |"
        )
    header = [
        "# Figures",
        "",
        "Generated by `mi-cluster figures` (do not edit): every figure, what it shows, the "
        "command that made it and its headline number. Beside each figure a `.json` holds "
        "the numbers it plots and its provenance (model weights hash, prompt-set hash, seed, "
        "versions).",
        "",
        "| figure | what it shows | command | headline |",
        "|---|---|---|---|",
    ]
    return "\n".join(header + rows) + "\n"
