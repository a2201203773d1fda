"""Norms with a frozen scale: a LayerNorm or RMSNorm made linear by dividing by a given
scale instead of its input's own.

Direct logit attribution freezes the final norm at the run's scale, path patching freezes
it at the base run's, and a head's share of an attention output that a post-attention norm
rescales (Gemma 2/3, OLMo 2) is the norm frozen at that output's scale. All go through the
norm's own ``hook_scale``: the norm's arithmetic (centring or not, ``w`` or ``1 + w``,
bias) is used as it is, so one function serves every architecture.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.core.model_info import module_device

__all__ = ["FrozenNormError", "frozen_norm", "norm_linear_map", "on_device"]


class FrozenNormError(ValueError):
    """A norm whose scale cannot be frozen (no ``hook_scale``)."""


def on_device(module: Any, x: Tensor) -> Tensor:
    """``x`` on the device of ``module``'s weights (where it is, for a weightless one)."""
    return x.to(module_device(module, x.device))


def frozen_norm(
    norm: Any, x: Float[Tensor, "... d"], scale: Float[Tensor, "... 1"], share: bool = False
) -> Float[Tensor, "... d"]:
    """The norm module ``norm`` applied to ``x`` with its scale (the divisor: RMS, or the
    standard deviation for LayerNorm, eps included) replaced by ``scale`` (broadcast to
    ``x``'s positions), so that the norm is linear in ``x``.

    Computed from two ordinary calls of the norm, whatever its arithmetic: with ``b =
    norm(0)`` (its bias, 0 for RMSNorm) and ``s(x)`` its own scale (read at its
    ``hook_scale``), ``frozen(x) = (norm(x) - b) * s(x) / scale + b``. ``share=True``:
    without ``b``, for one term of a sum (a head's part of the attention output); the
    terms' shares then add up to the frozen norm of their sum, minus the bias. Not for use
    inside a forward hook of ``norm`` itself."""
    hook_point = getattr(norm, "hook_scale", None)
    if hook_point is None:
        raise FrozenNormError(
            f"{type(norm).__name__} has no hook_scale: its scale cannot be frozen"
        )
    own: dict[str, Tensor] = {}

    def read(s: Tensor, hook: Any) -> None:
        own["scale"] = s.detach()

    x = on_device(norm, x)
    handle = hook_point.add_hook(read)
    try:
        out = norm(x)
    finally:
        handle.hook.remove()
        if handle in hook_point.fwd_hooks:
            hook_point.fwd_hooks.remove(handle)
    bias = norm(torch.zeros_like(x[..., :1, :] if x.ndim > 1 else x))
    frozen = (out - bias) * (own["scale"].to(out) / scale.to(out))
    return frozen if share else frozen + bias


def norm_linear_map(norm: Any, d: int, dtype: torch.dtype) -> Tensor:
    """The norm at unit scale without its bias, as a linear map of row vectors: a vector
    ``[d]`` of per-coordinate weights when it is diagonal (RMSNorm), else ``[d, d]`` (a
    LayerNorm's centring is not). ``x -> x * map / scale`` (or ``x @ map / scale``) is then
    :func:`frozen_norm` with ``share=True``, without calling the module."""
    eye = torch.eye(d, dtype=dtype, device=module_device(norm, torch.device("cpu")))
    with torch.no_grad():
        full = frozen_norm(norm, eye, torch.ones(d, 1, dtype=dtype), share=True)
    diagonal = torch.diagonal(full)
    if torch.equal(full, torch.diag(diagonal)):
        return diagonal.clone()
    return full
