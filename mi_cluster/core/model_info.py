"""What mi_cluster knows about a loaded model, read without loading anything: its
:class:`ModelInfo` (name, source, whether its logits mean anything), its architecture's
name, its heads per site, whether it has MLPs, and where its parameters live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mi_cluster.core.hooks import hook_name
from mi_cluster.core.protocols import HookedModel

__all__ = [
    "INFO_ATTR",
    "LogitsUnavailableError",
    "ModelInfo",
    "architecture_name",
    "has_mlps",
    "model_device",
    "model_info",
    "module_device",
    "require_meaningful_logits",
    "site_heads",
]


class LogitsUnavailableError(RuntimeError):
    """A logit-based analysis was asked of a model whose logits carry no meaning."""


@dataclass(frozen=True)
class ModelInfo:
    """What mi_cluster knows about a loaded model.

    Fields:
        name: a short, human name ("minilm", "gpt2", "tiny-gpt2-2L").
        source: where it came from (hub name, directory, "tiny config", package path).
        logits_meaningful: False when the unembedding is random (MiniLM's MLM head), so
            logit lens, logit difference and the like must refuse it.
        note: why, when logits are not meaningful.
        attention_only: True for a model whose MLPs are absent or fixed at zero (the toy
            and compiled IOI models keep GPT-2's MLP hooks, which then read exactly 0).
    """

    name: str
    source: str
    logits_meaningful: bool = True
    note: str = ""
    attention_only: bool = False


INFO_ATTR = "mi_cluster_info"


def model_info(model: HookedModel) -> ModelInfo:
    """The :class:`ModelInfo` of a model; for a user's own model, one read off its cfg."""
    info = getattr(model, INFO_ATTR, None)
    if isinstance(info, ModelInfo):
        return info
    name = str(getattr(getattr(model, "cfg", None), "model_name", type(model).__name__))
    return ModelInfo(name=name, source="user model")


def require_meaningful_logits(model: HookedModel, analysis: str) -> None:
    """Raise :class:`LogitsUnavailableError` if ``model``'s logits are not real."""
    info = model_info(model)
    if not info.logits_meaningful:
        raise LogitsUnavailableError(
            f"{analysis} needs real logits, but model {info.name!r} has none: {info.note}"
        )


def architecture_name(model: HookedModel) -> str:
    """The model's architecture as Hugging Face names it (``"Gemma2ForCausalLM"``), for
    error messages; the class name for a model without one."""
    return str(getattr(getattr(model, "cfg", None), "architecture", None) or type(model).__name__)


def site_heads(model: HookedModel, site: str) -> int:
    """How many heads an attention site has: key/value heads for ``k`` and ``v`` (fewer
    than the query heads under grouped-query attention: Llama, Mistral, Qwen, Gemma,
    Phi-3, OLMo 2), query heads for ``q``, ``z``, ``pattern`` and results."""
    kv = getattr(model.cfg, "n_key_value_heads", None)
    return int(kv) if site in ("k", "v") and kv else int(model.cfg.n_heads)


def has_mlps(model: HookedModel) -> bool:
    """Whether ``model`` has MLPs worth analysing: MLP hooks that are not attention-only
    by its config or by its :class:`ModelInfo`."""
    if getattr(model.cfg, "attn_only", False) or model_info(model).attention_only:
        return False
    return hook_name("mlp_out", 0) in getattr(model, "hook_dict", {})


def model_device(model: HookedModel) -> torch.device:
    """The device of a model's (first) parameters: for a model split across devices by a
    device map, where its embedding lives (CPU for a model without parameters)."""
    default = torch.device(str(getattr(getattr(model, "cfg", None), "device", "cpu") or "cpu"))
    return module_device(model, default)


def module_device(module: Any, default: torch.device) -> torch.device:
    """Where a module's parameters live, e.g. one block of a model split across GPUs;
    ``default`` for a module without parameters (a folded LayerNorm)."""
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError):
        return default
