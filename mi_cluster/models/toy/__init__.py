"""The project's own trained toy IOI model, shipped with the package (``load_model("toy-ioi")``)."""

from __future__ import annotations

from pathlib import Path

import torch

from mi_cluster.core.protocols import HookedModel

TOY_IOI_DIR = Path(__file__).parent / "weights"
# The toy model's tuned lens (``mi-cluster train-lens``), for ``TunedLens.load``.
TOY_TUNED_LENS = TOY_IOI_DIR / "tuned_lens.safetensors"

__all__ = ["TOY_IOI_DIR", "TOY_TUNED_LENS", "load_toy_ioi", "register"]


def load_toy_ioi(
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
    compatibility_mode: bool | str = True,
) -> HookedModel:
    """Load the shipped toy IOI model (offline) as a TransformerLens bridge."""
    from mi_cluster.core.model_info import ModelInfo
    from mi_cluster.models.loading import load_directory
    from mi_cluster.models.sources import ModelUnavailableError

    if not (TOY_IOI_DIR / "config.json").is_file():
        raise ModelUnavailableError(
            f"the toy IOI weights are missing from {TOY_IOI_DIR}; regenerate them with "
            "`mi-cluster train-toy`"
        )
    info = ModelInfo(name="toy-ioi", source=str(TOY_IOI_DIR), attention_only=True)
    return load_directory(TOY_IOI_DIR, info, device, dtype, compatibility_mode)


def register() -> None:
    """The ``mi_cluster.models`` entry point: make ``load_model("toy-ioi")`` work."""
    from mi_cluster.models.registry import register_model

    register_model(
        "toy-ioi",
        lambda device, dtype, compat: load_toy_ioi(device, dtype, compat),
        "the project's trained 3-layer attention-only IOI model (see its MODEL_CARD.md)",
    )
