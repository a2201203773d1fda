"""Paper figures. Every function returns a ``plotly.graph_objects.Figure``; writing files
is left to experiments and the CLI. In a Jupyter kernel, importing this package makes
plotly render figures offline (:mod:`mi_cluster.plotting.notebook`)."""

from mi_cluster.plotting.export import (
    FigureExportError,
    save_figure,
    save_formats,
    write_experiment,
)
from mi_cluster.plotting.heatmap import similarity_heatmaps
from mi_cluster.plotting.lines import Band, layer_bands
from mi_cluster.plotting.notebook import render_offline_in_notebooks
from mi_cluster.plotting.projection import layer_scatter
from mi_cluster.plotting.scatter import value_scatter

__all__ = [
    "Band",
    "FigureExportError",
    "layer_bands",
    "layer_scatter",
    "save_figure",
    "save_formats",
    "similarity_heatmaps",
    "value_scatter",
    "write_experiment",
]

render_offline_in_notebooks()
