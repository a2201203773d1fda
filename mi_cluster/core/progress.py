"""Progress bars: one switch for the whole library, and the right bar for where it runs.

Every long loop in mi_cluster (collection, the store, patching sweeps, tuned-lens
training) draws its bar through :func:`progress_bar`. Each such function takes
``progress=True``; :func:`set_progress` (or the environment variable
``MI_CLUSTER_PROGRESS=0``) turns every bar off at once.

In a Jupyter kernel with ``ipywidgets`` installed (the ``notebook`` extra) the bar is a
widget; anywhere else, including a kernel without ``ipywidgets``, it is text. tqdm's own
auto mode picks the widget whenever a kernel runs and then fails to draw it without
``ipywidgets`` ("IProgress not found"); this never does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from mi_cluster.core.jupyter import in_jupyter_kernel

__all__ = ["progress_bar", "progress_enabled", "set_progress"]

T = TypeVar("T")
_ENABLED: bool | None = None  # None: as the environment says (on unless set to 0/false/no/off)


def set_progress(enabled: bool | None) -> None:
    """Turn every mi_cluster progress bar on or off (None: back to the environment's
    ``MI_CLUSTER_PROGRESS``, on by default)."""
    global _ENABLED
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"set_progress takes True, False or None, got {enabled!r}")
    _ENABLED = enabled


def progress_enabled() -> bool:
    """Whether progress bars are drawn (:func:`set_progress`, else the environment)."""
    if _ENABLED is not None:
        return _ENABLED
    value = os.environ.get("MI_CLUSTER_PROGRESS", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def progress_bar(iterable: Iterable[T], *, desc: str, unit: str, enabled: bool = True) -> Any:
    """``iterable`` wrapped in a progress bar (drawn when ``enabled`` and bars are on)."""
    disable = not (enabled and progress_enabled())
    return _bar_class()(iterable, desc=desc, unit=unit, disable=disable)


def _bar_class() -> Any:
    """tqdm's widget bar in a Jupyter kernel that can draw it, else its text bar."""
    from tqdm.std import tqdm

    if not in_jupyter_kernel():
        return tqdm
    try:
        import ipywidgets  # noqa: F401  # the widget bar needs it
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:
        return tqdm
    return notebook_tqdm
