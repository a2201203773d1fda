"""Named offline models: a registry each model's package adds itself to, through its
``mi_cluster.models`` entry point (mi_cluster's own are in its ``pyproject.toml``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mi_cluster.core.protocols import HookedModel
from mi_cluster.models.sources import ENTRY_POINT_GROUP

__all__ = ["RegisteredModel", "discovery_error", "register_model", "registered_models"]


@dataclass(frozen=True)
class RegisteredModel:
    """A model ``load_model`` knows by name.

    Fields:
        name: the name (``"minilm"``).
        load: ``(device, dtype, compatibility_mode) -> model``, where
            ``compatibility_mode`` is what
            :func:`~mi_cluster.models.loading.prepare_bridge` takes (True,
            ``"transformer_lens"``, ``"hf"`` or False).
        description: one line, shown in error messages and listings.
    """

    name: str
    load: Callable[[torch.device | None, torch.dtype, bool | str], HookedModel]
    description: str


_REGISTRY: dict[str, RegisteredModel] = {}
_BROKEN: dict[str, Exception] = {}  # entry point name -> the error that broke it
_DISCOVERED: list[bool] = []  # non-empty once the entry points have been loaded


def register_model(
    name: str,
    load: Callable[[torch.device | None, torch.dtype, bool | str], HookedModel],
    description: str,
) -> None:
    """Make ``load_model(name)`` call ``load``. Packages register their models from a
    function named in their ``mi_cluster.models`` entry point (mi_cluster's own are in its
    ``pyproject.toml``), so the loader imports none of them."""
    if not name or name in _REGISTRY and _REGISTRY[name].load is not load:
        raise ValueError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = RegisteredModel(name, load, description)


def registered_models() -> dict[str, RegisteredModel]:
    """Every named model: mi_cluster's and those other installed packages register."""
    if not _DISCOVERED:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()()
            except Exception as err:  # one broken plugin must not hide the others
                _BROKEN[ep.name] = err
        _DISCOVERED.append(True)
    return dict(_REGISTRY)


def discovery_error(name: str) -> Exception | None:
    """The error that kept entry point ``name`` from registering its model, if one did."""
    registered_models()
    return _BROKEN.get(name)
