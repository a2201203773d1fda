"""Paper figures. Every function returns a ``plotly.graph_objects.Figure``; writing files
is left to experiments and the CLI."""

from mi_cluster.plotting.export import save_figure
from mi_cluster.plotting.heatmap import similarity_heatmaps
from mi_cluster.plotting.lines import layer_lines
from mi_cluster.plotting.projection import layer_scatter

__all__ = ["layer_lines", "layer_scatter", "save_figure", "similarity_heatmaps"]
