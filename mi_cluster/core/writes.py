"""What each component writes into the residual stream: each head from its ``z``, an MLP
from a residual vector.

A head's write is ``z_h W_O^h``; where the block normalises attention's output before
adding it (Gemma 2/3 and OLMo 2's post-attention norm), the norm is linear once its scale
is fixed, so each head's share is ``z_h W_O^h`` through the norm frozen at the scale of the
whole attention output of that position: the heads' shares then add up to what attention
adds (``hook_attn_out``), bias aside. Collection (site ``result``), direct logit
attribution and the before/after-head view all take heads' writes from here.

Decompositions of the residual stream into what components add need blocks that add
their outputs to it; :func:`require_additive` checks that once per model (a post-LayerNorm
BERT normalises the sum after each sub-block, so a head has no additive share there) and
refuses the analysis by name otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.core.hooks import hook_name, post_attention_scale
from mi_cluster.core.model_info import architecture_name, has_mlps, model_device
from mi_cluster.core.norms import norm_linear_map
from mi_cluster.core.protocols import HookedModel
from mi_cluster.core.weights import head_output_weights

__all__ = [
    "RESID_MID_REFUSAL",
    "HeadWriter",
    "NotAdditiveError",
    "is_additive",
    "mlp_write",
    "post_attention_norm",
    "require_additive",
]

_ADDITIVE = "_mi_cluster_additive"


class NotAdditiveError(ValueError):
    """An analysis needs blocks that add their outputs to the residual stream."""


def post_attention_norm(model: HookedModel, layer: int) -> Any | None:
    """The norm block ``layer`` applies to attention's output before adding it to the
    residual stream (Gemma 2/3 and OLMo 2's ``ln1_post``), or None."""
    norm = getattr(model.blocks[layer], "ln1_post", None)
    return norm if norm is not None and hasattr(norm, "hook_scale") else None


class HeadWriter:
    """Each head's write into the residual stream of one model.

    ``scale_hook(layer)`` names the hook whose value a write at that layer needs (the
    post-attention norm's scale), or None where the block has no such norm."""

    def __init__(self, model: HookedModel):
        self.model = model
        # Each post-attention norm as a linear map, computed now: it calls the norm, which
        # must not happen inside a forward hook of that norm.
        cfg = model.cfg
        self._maps: dict[int, Tensor] = {
            layer: norm_linear_map(norm, cfg.d_model, cfg.dtype)
            for layer in range(cfg.n_layers)
            if (norm := post_attention_norm(model, layer)) is not None
        }
        self._w_o: dict[int, Tensor] = {}

    def scale_hook(self, layer: int) -> str | None:
        """The post-attention norm's scale hook of ``layer`` (None: the block has none)."""
        return post_attention_scale(layer) if layer in self._maps else None

    def write(
        self,
        layer: int,
        z: Float[Tensor, "... head d_head"],
        scale: Float[Tensor, "... 1"] | None = None,
    ) -> Float[Tensor, "... head d_model"]:
        """Each head's write from its ``z`` at layer ``layer``; ``scale``: the
        post-attention norm's scale at the same positions (needed where there is one)."""
        if layer not in self._w_o:
            self._w_o[layer] = head_output_weights(self.model, layer)
        out = torch.einsum("...hd,hdm->...hm", z, self._w_o[layer].to(z))
        if layer not in self._maps:
            return out
        if scale is None:
            raise ValueError(f"layer {layer}'s heads write through a norm: give its scale")
        linear = self._maps[layer].to(out)
        out = out * linear if linear.ndim == 1 else out @ linear
        return out / scale.to(out)[..., None, :]

    def write_map(self, layer: int) -> Tensor | None:
        """The post-attention norm of ``layer`` at unit scale as a linear map (a vector of
        per-coordinate weights, or a matrix), or None where there is none: what turns a
        head's ``z W_O`` into the direction it writes."""
        return self._maps.get(layer)


def mlp_write(
    model: HookedModel, layer: int, x: Float[Tensor, "n d_model"]
) -> Float[Tensor, "n d_model"]:
    """What block ``layer``'s MLP adds to residual vectors ``x``, each read alone as a
    one-token sequence: the block run on ``x`` with attention's output set to zero, so
    that its own norms and MLP (a parallel block's shared norm, a post-MLP norm) do the
    rest; zero for an attention-only model."""
    if not has_mlps(model):
        return torch.zeros_like(x)
    out: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: Any) -> None:
        out["y"] = act.detach()

    hooks = [
        (hook_name("attn_out", layer), lambda act, hook: torch.zeros_like(act)),
        (hook_name("resid_post", layer), keep),
    ]
    with torch.no_grad():
        model.run_with_hooks(
            x[:, None, :], start_at_layer=layer, stop_at_layer=layer + 1, fwd_hooks=hooks
        )
    return out["y"][:, 0].to(x) - x


RESID_MID_REFUSAL = (
    "the residual stream between attention and MLP (resid_mid) is defined where blocks add "
    "their outputs to it; {arch} normalises each sub-block's sum (post-LayerNorm), and its "
    "hook_resid_mid is the sum entering the MLP's LayerNorm: read attn_out, the attention "
    "sub-block's normalised output, for the residual between attention and MLP"
)


def is_additive(model: HookedModel) -> bool:
    """Whether every block adds its attention and MLP outputs to the residual stream
    (``resid_post = resid_pre + attn_out + mlp_out``), checked once per model on a short
    input."""
    verdict = getattr(model, _ADDITIVE, None)
    if verdict is not None:
        return verdict
    n = model.cfg.n_layers
    sites = ("resid_pre", "resid_post", "attn_out", "mlp_out")
    names = {hook_name(s, layer) for s in sites for layer in range(n)}
    tokens = torch.arange(min(6, model.cfg.d_vocab))[None].to(model_device(model))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    verdict = True
    for layer in range(n):
        if any(hook_name(s, layer) not in cache for s in sites):
            verdict = False
            break
        pre, post, attn, mlp = (cache[hook_name(s, layer)] for s in sites)
        added = post - pre
        tol = 1e-4 * float(added.abs().max().clamp_min(1.0))
        if not torch.allclose(added, attn + mlp, atol=tol, rtol=1e-4):
            verdict = False
            break
    setattr(model, _ADDITIVE, verdict)
    return verdict


def require_additive(model: HookedModel, analysis: str) -> None:
    """Refuse ``analysis`` unless the model's blocks add their outputs to the residual
    stream (:func:`is_additive`)."""
    if not is_additive(model):
        raise NotAdditiveError(
            f"{analysis} splits the residual stream into what each component adds, but "
            f"{architecture_name(model)}'s blocks do not add their outputs to it (a "
            "post-LayerNorm model normalises the sum after each sub-block), so a component "
            "has no additive share"
        )
