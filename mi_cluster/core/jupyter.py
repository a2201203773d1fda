"""Whether this process is a Jupyter kernel: progress bars and figures behave differently
there (widget bars, inline offline figures)."""

from __future__ import annotations

__all__ = ["in_jupyter_kernel"]


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter kernel (not a terminal IPython or a script)."""
    try:
        from IPython import get_ipython  # type: ignore[attr-defined]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})
