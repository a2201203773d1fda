"""mi_cluster: residual streams by layer, clustering, similarity metrics and patching,
on TransformerLens models.

The top-level names load on first use, so ``import mi_cluster.stats`` or
``import mi_cluster.similarity`` (plain torch) does not import TransformerLens.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Activations": "mi_cluster.activations",
    "Positions": "mi_cluster.activations",
    "collect": "mi_cluster.activations",
    "collect_many": "mi_cluster.activations",
    "ModelInfo": "mi_cluster.models",
    "TinyConfig": "mi_cluster.models",
    "load_model": "mi_cluster.models",
    "model_info": "mi_cluster.models",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mi_cluster' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
