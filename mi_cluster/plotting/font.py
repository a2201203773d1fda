"""The one font every figure uses, shipped with the package: Source Sans Pro (SIL Open Font
License, from the ``font-source-sans-pro`` wheel), so a figure is laid out and drawn the
same on every machine whatever fonts it has.

- Static exports: the export's Chromium finds the font through a fontconfig file that adds
  the wheel's folder to the system's fonts (:func:`fontconfig_env`); PDFs embed what they
  use, and :func:`embed_in_svg` puts the glyphs an SVG uses inside it (a subset, a few KB).
- HTML figures load the font from a file written beside them (:func:`font_face_css`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
import re
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from mi_cluster.core.atomic import atomic_write_text

__all__ = [
    "FONT_FAMILY",
    "FONT_STACK",
    "MARKUP",
    "embed_in_svg",
    "font_face_css",
    "FONT_LICENSE",
    "font_files",
    "font_license",
    "fontconfig_env",
    "plain_text",
    "text_width",
]

FONT_FAMILY = "Source Sans Pro"
# Generic fallback only where the pinned font cannot load (an HTML opened without its folder).
FONT_STACK = f"'{FONT_FAMILY}', sans-serif"
# plotly's text markup: the tags it draws; any other "<" is a character ("p < 0.05")
MARKUP = re.compile(r"</?(?:b|i|br|sup|sub|span|a|em|s|u)\b[^>]*>", re.IGNORECASE)
_SMALL = 0.7  # plotly draws <sup> and <sub> at 70% of the size around them
_WEIGHTS = {"normal": "SourceSansPro-Regular.ttf", "bold": "SourceSansPro-Bold.ttf"}


FONT_LICENSE = "SourceSansPro-LICENSE.txt"  # the name its licence is copied under


def font_license() -> Path:
    """The font's licence (SIL Open Font License 1.1), which goes wherever its files go."""
    return font_files()["normal"].parent / "LICENSE.txt"


def font_files() -> dict[str, Path]:
    """The font's files by CSS weight (``"normal"``, ``"bold"``)."""
    try:
        import font_source_sans_pro
    except ImportError as err:  # a dependency of mi-cluster: only a broken install lacks it
        raise RuntimeError(
            "the figures' font is missing: pip install font-source-sans-pro (a dependency "
            "of mi-cluster; reinstall it)"
        ) from err
    folder = Path(font_source_sans_pro.font_directory)
    return {weight: folder / name for weight, name in _WEIGHTS.items()}


@cache
def _fontconfig_file() -> str:
    """A fontconfig file that reads the system's configuration and adds the font's folder;
    one per user and installation, in the temporary directory, written once and reused
    (with its font cache) by every later export, never one folder per process."""
    fonts = str(font_files()["normal"].parent)
    owner = f"{os.getuid()}" if hasattr(os, "getuid") else "user"
    key = hashlib.sha256(f"{owner}:{fonts}".encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"mi_cluster_fonts_{key}"
    folder.mkdir(mode=0o700, exist_ok=True)
    conf = (
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">\n'
        "<fontconfig>\n"
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"  <dir>{html.escape(fonts)}</dir>\n"
        f"  <cachedir>{html.escape(str(folder / 'cache'))}</cachedir>\n"
        "</fontconfig>\n"
    )
    target = folder / "fonts.conf"
    if not target.is_file() or target.read_text(encoding="utf-8") != conf:
        atomic_write_text(target, conf)
    return str(target)


def fontconfig_env() -> dict[str, str]:
    """Environment variables under which a Chromium (Linux) finds the figures' font."""
    return {"FONTCONFIG_FILE": _fontconfig_file()}


def _subset(path: Path, text: str) -> bytes:
    """The font at ``path`` cut down to the glyphs of ``text`` (byte-for-byte the same for the
    same text: no time stamp is written)."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    font = TTFont(str(path), recalcTimestamp=False)
    subsetter = subset.Subsetter(subset.Options(hinting=False))  # hints: unused on screen
    subsetter.populate(text=text or " ")
    subsetter.subset(font)
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


@cache
def _advances(weight: str) -> tuple[dict[int, int], int, int]:
    """The font's advance widths by code point, its units per em, and the advance of a
    character it lacks (the width of ``"n"``, a fair stand-in)."""
    from fontTools.ttLib import TTFont

    font = TTFont(str(font_files()[weight]), lazy=True)
    glyphs = font.getBestCmap() or {}
    tables: Any = font  # fontTools' stubs do not type its tables' fields
    metrics = tables["hmtx"].metrics
    widths = {code: metrics[name][0] for code, name in glyphs.items()}
    return widths, int(tables["head"].unitsPerEm), widths.get(ord("n"), 500)


def text_width(text: str, size: float, bold: bool = False) -> float:
    """The width in pixels of the longest line of ``text`` (plotly's markup: ``<br>`` ends a
    line, ``<b>`` is bold, ``<sup>``/``<sub>`` are 70% high, other tags draw nothing) at
    ``size`` pixels, in the figures' font; kerning is ignored (a pixel or two on a
    title)."""
    widest, in_bold, small = 0.0, False, False  # <b> and <sup>/<sub> run across lines
    for line in re.split(r"<br\s*/?>", text, flags=re.IGNORECASE):
        total = 0.0
        for k, piece in enumerate(re.split(f"({MARKUP.pattern})", line, flags=re.IGNORECASE)):
            if k % 2:  # a tag
                tag = piece.lower().replace(" ", "")
                in_bold = True if tag == "<b>" else False if tag == "</b>" else in_bold
                small = tag in ("<sup>", "<sub>") or (small and tag not in ("</sup>", "</sub>"))
                continue
            widths, em, missing = _advances("bold" if bold or in_bold else "normal")
            scale = size * (_SMALL if small else 1.0) / em
            total += sum(widths.get(ord(c), missing) for c in html.unescape(piece)) * scale
        widest = max(widest, total)
    return widest


def plain_text(markup: str) -> str:
    """What a reader reads in plotly ``markup``: tags dropped (``<br>`` as a space),
    entities decoded, a bare ``<`` kept."""
    spaced = re.sub(r"<br\s*/?>", " ", markup, flags=re.IGNORECASE)
    return " ".join(html.unescape(MARKUP.sub("", spaced)).split())


def _face(weight: str, src: str) -> str:
    return (
        f"@font-face{{font-family:'{FONT_FAMILY}';font-style:normal;font-weight:{weight};"
        f"src:{src};}}"
    )


def embed_in_svg(svg: str) -> str:
    """``svg`` with the glyphs its text uses embedded as ``@font-face`` rules (TrueType
    subsets in data URIs; the bold face only where some text is bold), so it renders in the
    figures' font on a machine without it.
    Needs fontTools (the ``figures`` extra)."""
    if "<style" in svg[:2000] and FONT_FAMILY in svg[:2000]:
        return svg  # embedded already
    text = "".join(html.unescape(t) for t in re.findall(r">([^<>]+)<", svg))
    chars = "".join(sorted(set(text) | set("0123456789.,-−+ ")))
    rules = []
    bold = re.search(r"font-weight:\s*(bold|[6-9]00)", svg) is not None
    for weight, path in font_files().items():
        if weight == "bold" and not bold:  # plotly draws bold only for <b>
            continue
        data = base64.b64encode(_subset(path, chars)).decode("ascii")
        rules.append(_face(weight, f"url(data:font/ttf;base64,{data}) format('truetype')"))
    style = "<defs><style>" + "".join(rules) + "</style></defs>"
    head = re.search(r"<svg[^>]*>", svg)
    if head is None:
        raise ValueError("not an SVG document: no <svg> element")
    return svg[: head.end()] + style + svg[head.end() :]


def font_face_css() -> str:
    """``@font-face`` rules that load the font from files of the same names beside an HTML
    page (the writer copies them there)."""
    return "".join(
        _face(weight, f"url('{path.name}') format('truetype')")
        for weight, path in font_files().items()
    )
