"""A model's weights per component, read from its blocks: each head's query, key, value
and output matrices (grouped key/value heads expanded to the query heads that share them),
and each MLP's input and output matrices.

The weights are the ones the model runs with after its weight processing (TransformerLens
folds norm weights into the next matrix; see :func:`~mi_cluster.models.loading.load_model`).
"""

from __future__ import annotations

from typing import Literal

from jaxtyping import Float
from torch import Tensor

from mi_cluster.core.protocols import HookedModel

__all__ = ["head_input_weights", "head_output_weights", "mlp_weights"]


def head_output_weights(model: HookedModel, layer: int) -> Float[Tensor, "head d_head d_model"]:
    """``W_O`` of one layer, read from its block (the model's stacked ``W_O`` rebuilds
    every layer's on each access)."""
    attn = model.blocks[layer].attn
    return (attn.W_O if hasattr(attn, "W_O") else model.W_O[layer]).detach()


def head_input_weights(
    model: HookedModel, layer: int, which: Literal["Q", "K", "V"]
) -> Float[Tensor, "head d_model d_head"]:
    """``W_Q``, ``W_K`` or ``W_V`` of one layer, one matrix per query head: under
    grouped-query attention a key/value head's matrix is repeated for each query head that
    reads it (query head ``h`` reads key/value head ``h // group``)."""
    if which not in ("Q", "K", "V"):
        raise ValueError(f"which must be 'Q', 'K' or 'V', got {which!r}")
    w = getattr(model.blocks[layer].attn, f"W_{which}").detach()
    return w.repeat_interleave(model.cfg.n_heads // w.shape[0], dim=0)


def mlp_weights(
    model: HookedModel, layer: int
) -> tuple[Float[Tensor, "d_model d_mlp"], Float[Tensor, "d_mlp d_model"]]:
    """``(W_in, W_out)`` of one layer's MLP: each neuron's input key is a column of
    ``W_in`` (for a gated MLP, the linear branch the gate multiplies), its output value a
    row of ``W_out``."""
    mlp = model.blocks[layer].mlp
    w_in, w_out = getattr(mlp, "W_in", None), getattr(mlp, "W_out", None)
    if w_in is None or w_out is None:
        raise ValueError(f"block {layer} has no MLP weights (an attention-only block?)")
    return w_in.detach(), w_out.detach()
