"""Figures in Jupyter, offline: plotly.js from the installed package, never a CDN.

Plotly shows a figure in a notebook through its default renderer; where that renderer
gives no HTML (it depends on how plotly guessed its environment), ``Figure._repr_html_``
falls back to loading plotly.js from a CDN, and plotly's own ``notebook`` renderer adds a
MathJax script from a CDN to every figure. Importing :mod:`mi_cluster.plotting` inside a
Jupyter kernel therefore makes the default renderer ``"plotly_mimetype+"`` plus
:data:`OFFLINE_RENDERER`: JupyterLab reads the figure's JSON, and the classic notebook and
``_repr_html_`` get HTML that loads nothing: it uses the plotly.js that the renderer put
into the page once, from the plotly package itself.
"""

from __future__ import annotations

from typing import Any

from mi_cluster.core.jupyter import in_jupyter_kernel

__all__ = ["OFFLINE_RENDERER", "render_offline_in_notebooks"]

OFFLINE_RENDERER = "mi_cluster_notebook"
"""The name under which the offline renderer is registered with ``plotly.io.renderers``."""


def render_offline_in_notebooks() -> None:
    """In a Jupyter kernel, register the offline renderer and make it plotly's default
    (beside the JSON mimetype); a no-op elsewhere."""
    if not in_jupyter_kernel():
        return
    import plotly.io as pio

    if OFFLINE_RENDERER not in pio.renderers:
        pio.renderers[OFFLINE_RENDERER] = _offline_renderer(pio)
    pio.renderers.default = f"plotly_mimetype+{OFFLINE_RENDERER}"


def _offline_renderer(pio: Any) -> Any:
    """plotly's notebook renderer (plotly.js put into the page once, from the package)
    with figures' HTML that loads no MathJax from a CDN."""
    base: Any = type(pio.renderers["notebook"])

    class OfflineNotebookRenderer(base):
        def to_mimebundle(self, fig_dict: Any) -> dict[str, str]:
            html = pio.to_html(
                fig_dict,
                config=self.config,
                auto_play=self.auto_play,
                include_plotlyjs=False,
                include_mathjax=False,
                full_html=False,
                animation_opts=self.animation_opts,
                default_width="100%",
                default_height=525,
            )
            return {"text/html": html}

    return OfflineNotebookRenderer(connected=False)
