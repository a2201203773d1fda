"""Figures in Jupyter, offline: plotly.js from the installed package, never a CDN.

Plotly shows a figure in a notebook through its default renderer; where that renderer
gives no HTML (it depends on how plotly guessed its environment), ``Figure._repr_html_``
falls back to loading plotly.js from a CDN, which fails offline. Importing
:mod:`mi_cluster.plotting` inside a Jupyter kernel therefore makes the default renderer
``"plotly_mimetype+notebook"``: JupyterLab reads the figure's JSON, and the classic
notebook and ``_repr_html_`` get HTML that uses the plotly.js the ``notebook`` renderer
put into the page once, from the plotly package itself.
"""

from __future__ import annotations

__all__ = ["OFFLINE_RENDERER", "in_jupyter_kernel", "render_offline_in_notebooks"]

OFFLINE_RENDERER = "plotly_mimetype+notebook"


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter kernel (not a terminal IPython or a script)."""
    try:
        from IPython import get_ipython  # type: ignore[attr-defined]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def render_offline_in_notebooks() -> None:
    """In a Jupyter kernel, make plotly's default renderer the offline one (a no-op
    elsewhere, and where the user already chose a renderer without a CDN)."""
    if not in_jupyter_kernel():
        return
    import plotly.io as pio

    current = str(pio.renderers.default or "")
    if "notebook" in current.split("+") and "connected" not in current:
        return
    pio.renderers.default = OFFLINE_RENDERER
