"""TransformerLens hook names: the one place they are built.

Sites are mi_cluster's names for activations (``resid_post``, ``z``, ...); each maps to
the compatibility-mode hook of a block, which every architecture the bridge loads exposes
under the same name. Importing this module imports nothing heavy, so the command line
checks a site before it loads torch.
"""

from __future__ import annotations

__all__ = ["FINAL_SCALE", "SITES", "hook_name", "post_attention_scale"]

SITES: tuple[str, ...] = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "mlp_post",  # MLP neurons after the non-linearity, [.., d_mlp]
    "result",
    "z",
)
_ATTENTION_ONLY = ("pattern", "attn_scores", "q", "k", "v", "rot_q", "rot_k", "scale")

# The final norm's divisor (RMS, or standard deviation for LayerNorm), [batch, pos, 1].
FINAL_SCALE = "ln_final.hook_scale"


def hook_name(site: str, layer: int) -> str:
    """The TransformerLens hook name of ``site`` at ``layer``."""
    from transformer_lens.utilities.components_utils import (
        get_act_name,  # here: SITES is read before torch
    )

    if site not in SITES and site not in _ATTENTION_ONLY:
        raise ValueError(f"unknown site {site!r}; expected one of {SITES}")
    return get_act_name("post" if site == "mlp_post" else site, layer)


def post_attention_scale(layer: int) -> str:
    """The hook of the divisor of the norm a block applies to attention's output before
    adding it to the residual stream (Gemma 2/3, OLMo 2: ``ln1_post``)."""
    return f"blocks.{layer}.ln1_post.hook_scale"
