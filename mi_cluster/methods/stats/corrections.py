"""Corrections for testing every layer: Holm (family-wise error) and Benjamini-Hochberg
(false discovery rate), on the last axis of a tensor of p-values."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.methods.stats.inputs import StatsInputError

__all__ = ["benjamini_hochberg", "holm"]


def _check(p: Tensor) -> Tensor:
    if p.ndim < 1 or p.shape[-1] == 0:
        raise StatsInputError("p-values must have at least one entry on their last axis")
    if bool(((p < 0) | (p > 1) | ~p.isfinite()).any()):
        raise StatsInputError("p-values must lie in [0, 1]")
    return p


def holm(p: Float[Tensor, "... test"]) -> Float[Tensor, "... test"]:
    """Holm's step-down adjusted p-values (as ``statsmodels`` ``multipletests(method="holm")``):
    sorted ascending, ``(m - i) p_(i)``, made non-decreasing, capped at 1."""
    p = _check(p)
    m = p.shape[-1]
    sorted_p, order = p.sort(dim=-1)
    factor = torch.arange(m, dtype=p.dtype, device=p.device).flip(-1) + 1  # m, m-1, ..., 1
    adjusted = (sorted_p * factor).cummax(dim=-1).values.clamp(max=1.0)
    return adjusted.gather(-1, order.argsort(dim=-1))


def benjamini_hochberg(p: Float[Tensor, "... test"]) -> Float[Tensor, "... test"]:
    """Benjamini-Hochberg adjusted p-values (``multipletests(method="fdr_bh")``): sorted
    ascending, ``p_(i) m / i``, made non-increasing from the largest, capped at 1."""
    p = _check(p)
    m = p.shape[-1]
    sorted_p, order = p.sort(dim=-1)
    rank = torch.arange(m, dtype=p.dtype, device=p.device) + 1
    scaled = sorted_p * m / rank
    adjusted = scaled.flip(-1).cummin(dim=-1).values.flip(-1).clamp(max=1.0)
    return adjusted.gather(-1, order.argsort(dim=-1))
