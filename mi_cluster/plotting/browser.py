"""The headless browser that draws still figures and checks them: which one, and the
error when there is none or it fails. mi_cluster never downloads a browser."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["INSTALL_HINT", "FigureExportError", "chromium_path"]

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = (
    "install Debian's Chromium (apt-get install chromium) or point BROWSER_PATH at a "
    "Chromium or Chrome binary; mi_cluster never downloads a browser"
)


class FigureExportError(RuntimeError):
    """A static figure (PNG, SVG, PDF) could not be rendered: kaleido or a Chromium is
    missing, failed, or did not answer within the time-out."""


def chromium_path() -> str | None:
    """The browser kaleido will use: ``BROWSER_PATH`` if set, else a Chromium or Chrome on
    ``PATH``; None if there is none."""
    override = os.environ.get("BROWSER_PATH")
    if override:
        return override if Path(override).is_file() else None
    return next((p for p in map(shutil.which, _BROWSERS) if p), None)
