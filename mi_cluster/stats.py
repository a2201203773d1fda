"""Statistics on groups of representations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["group_separation"]


def group_separation(
    x: Float[Tensor, "layer prompt d_model"],
    groups: Sequence[str],
    a: str,
    b: str,
) -> Float[Tensor, " layer"]:
    """Per layer, the distance between the centroids of groups ``a`` and ``b`` divided by
    the root-mean-square distance of their members to their own centroid.

    Scale-free (the residual norm grows with depth, this ratio does not), so values are
    comparable across layers: about 0 when the groups overlap, large when they separate.
    """
    if len(groups) != x.shape[1]:
        raise ValueError(f"{len(groups)} group labels for {x.shape[1]} rows")
    ia = [i for i, g in enumerate(groups) if g == a]
    ib = [i for i, g in enumerate(groups) if g == b]
    for name, idx in ((a, ia), (b, ib)):
        if len(idx) < 2:
            raise ValueError(f"group {name!r} has {len(idx)} rows; need at least 2")
    xa, xb = x[:, ia], x[:, ib]
    ca, cb = xa.mean(1, keepdim=True), xb.mean(1, keepdim=True)
    between = (ca - cb).squeeze(1).norm(dim=-1)
    within = torch.cat([(xa - ca), (xb - cb)], dim=1).pow(2).sum(-1).mean(-1).sqrt()
    return between / within
