"""The model's output head applied to residual vectors: one readout for the logit lens, the
tuned lens, the patching runner, direct logit attribution and copy scores.

``residual_logits`` applies what the model does after its last block: the final norm
(LayerNorm or RMSNorm, with whatever weight convention the model has), the unembedding,
and the final logit soft-capping (Gemma 2); for BERT's masked-LM models the MLM transform
(dense, activation, LayerNorm) first. :func:`check_readout` verifies once per model that
this reproduces the model's own logits and refuses the model by name otherwise, so an
output head with a step mi_cluster does not know is never read wrongly.

With ``scale``, the final norm is frozen (:func:`mi_cluster.core.norms.frozen_norm`).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.core.hooks import hook_name
from mi_cluster.core.model_info import architecture_name, module_device
from mi_cluster.core.norms import frozen_norm, on_device
from mi_cluster.core.protocols import HookedModel

__all__ = ["ReadoutError", "check_readout", "residual_logits"]

_VERIFIED = "_mi_cluster_readout_verified"


class ReadoutError(ValueError):
    """The model's output head cannot be reproduced from its residual stream."""


def _on_call(module: Any, x: Tensor) -> Tensor:
    return module(on_device(module, x))


def residual_logits(
    model: HookedModel,
    resid: Float[Tensor, "... d_model"],
    scale: Float[Tensor, "... 1"] | None = None,
) -> Float[Tensor, "... d_vocab"]:
    """The model's output head applied to residual vectors: final norm and unembedding,
    then the final soft-cap where the model has one; for BERT masked-LM models dense ->
    activation -> LayerNorm -> decoder.

    With ``scale``, the final norm divides by it instead of each residual's own scale (used
    by path patching to freeze the norm at another run's value).

    Each step runs where its weights are (the last GPUs of a model split by a device
    map; a no-op on one device), and the logits stay where the unembedding is."""
    if hasattr(model, "mlm_head"):
        if scale is not None:
            raise ReadoutError("a frozen final norm needs a model whose logits follow ln_final")
        from transformers.activations import ACT2FN

        hidden = ACT2FN[model.cfg.act_fn](model.mlm_head(on_device(model.mlm_head, resid)))
        return _on_call(model.unembed, _on_call(model.ln_final, hidden))
    if hasattr(model, "ln_final"):
        resid = (
            _on_call(model.ln_final, resid)
            if scale is None
            else frozen_norm(model.ln_final, resid, scale)
        )
    elif scale is not None:
        raise ReadoutError("a frozen final norm needs a model whose logits follow ln_final")
    logits = _on_call(model.unembed, resid)
    cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0)
    if cap > 0:  # Gemma 2: logits = cap * tanh(logits / cap)
        logits = cap * torch.tanh(logits / cap)
    return logits


def check_readout(model: HookedModel) -> None:
    """Verify once per model that :func:`residual_logits` of the last block's output gives
    the model's own logits; raise :class:`ReadoutError` naming the architecture if not."""
    if getattr(model, _VERIFIED, False):
        return
    n = model.cfg.n_layers
    tokens = torch.arange(min(8, model.cfg.d_vocab))[None].to(
        module_device(model, torch.device("cpu"))
    )
    with torch.no_grad():
        logits, cache = model.run_with_cache(
            tokens, names_filter=lambda name: name == hook_name("resid_post", n - 1)
        )
        got = residual_logits(model, cache[hook_name("resid_post", n - 1)])
    scale = logits.abs().max().clamp_min(1.0)
    if not torch.allclose(got.to(logits), logits, atol=1e-4 * float(scale), rtol=1e-4):
        raise ReadoutError(
            f"mi_cluster cannot read {architecture_name(model)} "
            "residuals as logits: its final norm, unembedding and soft-cap applied to the last "
            "block's output do not give the model's logits (an output head step mi_cluster "
            "does not know)"
        )
    setattr(model, _VERIFIED, True)
