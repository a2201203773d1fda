"""mi_cluster: residual streams by layer, clustering, similarity metrics and patching,
on TransformerLens models.

The package is layered, each layer importing only from those below it::

    cli -> plotting -> studies -> methods -> collection -> models -> core

The top-level names load on first use, so ``import mi_cluster.methods.stats`` or
``import mi_cluster.methods.similarity`` (plain torch) does not import TransformerLens.
"""

from __future__ import annotations

from importlib import import_module as _import_module
from types import ModuleType as _ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what editors and type checkers see; at run time they load lazily
    from typing import Any

    from mi_cluster.collection.activations import Activations, Positions, collect, collect_many
    from mi_cluster.core.model_info import ModelInfo, model_info
    from mi_cluster.core.progress import set_progress
    from mi_cluster.models.loading import load_model
    from mi_cluster.models.tiny import TinyConfig

_EXPORTS = {
    "Activations": "mi_cluster.collection.activations",
    "Positions": "mi_cluster.collection.activations",
    "collect": "mi_cluster.collection.activations",
    "collect_many": "mi_cluster.collection.activations",
    "ModelInfo": "mi_cluster.core.model_info",
    "model_info": "mi_cluster.core.model_info",
    "set_progress": "mi_cluster.core.progress",
    "load_model": "mi_cluster.models.loading",
    "TinyConfig": "mi_cluster.models.tiny",
}

__all__ = [
    "Activations",
    "ModelInfo",
    "Positions",
    "TinyConfig",
    "collect",
    "collect_many",
    "load_model",
    "model_info",
    "set_progress",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(_import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mi_cluster' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names, the version and the subpackages imported so far."""
    loaded = [
        n for n, v in globals().items() if isinstance(v, _ModuleType) and not n.startswith("_")
    ]
    return sorted({*__all__, "__version__", *loaded})
