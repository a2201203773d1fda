"""mi_cluster: residual streams by layer, clustering, similarity metrics and patching,
on TransformerLens models."""

from mi_cluster.activations import Activations, Positions, collect, collect_many
from mi_cluster.models import ModelInfo, TinyConfig, load_model, model_info

__all__ = [
    "Activations",
    "ModelInfo",
    "Positions",
    "TinyConfig",
    "collect",
    "collect_many",
    "load_model",
    "model_info",
]
__version__ = "0.1.0"
