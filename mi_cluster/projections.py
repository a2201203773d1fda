"""Low-dimensional projections of representations, layer by layer (PCA via SVD)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["LayerProjection", "pca_by_layer"]


@dataclass(frozen=True)
class LayerProjection:
    """A separate PCA of each layer's rows.

    Fields:
        coords: ``Float[Tensor, "layer prompt component"]``, the rows projected on each
            layer's principal components (centred on that layer's mean).
        components: ``Float[Tensor, "layer component d_model"]``, unit principal axes.
        explained_variance_ratio: ``Float[Tensor, "layer component"]``, the share of that
            layer's total variance each component explains.
    """

    coords: Float[Tensor, "layer prompt component"]
    components: Float[Tensor, "layer component d_model"]
    explained_variance_ratio: Float[Tensor, "layer component"]


def pca_by_layer(
    x: Float[Tensor, "layer prompt d_model"], n_components: int = 2, align_signs: bool = True
) -> LayerProjection:
    """PCA of each layer separately, computed by SVD in the input's dtype and device.

    Principal axes are defined up to sign. Each layer's signs are fixed so that the largest
    loading of every axis is positive, then, with ``align_signs``, flipped where that makes
    the coordinates agree better with the previous layer's, so an animation across layers
    does not jump by mirror images.
    """
    if x.ndim != 3:
        raise ValueError(f"expected [layer, prompt, d_model], got shape {tuple(x.shape)}")
    n_layers, n, d = x.shape
    if not 1 <= n_components <= min(n, d):
        raise ValueError(f"n_components={n_components} must be between 1 and min(n, d)={min(n, d)}")
    if not torch.isfinite(x).all():
        raise ValueError("activations contain NaN or inf")
    centred = x - x.mean(dim=1, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    comps = vh[:, :n_components]  # [layer, k, d]
    idx = comps.abs().argmax(dim=-1, keepdim=True)
    comps = comps * torch.sign(torch.gather(comps, -1, idx))
    coords = torch.einsum("lnd,lkd->lnk", centred, comps)
    if align_signs:
        for layer in range(1, n_layers):
            agree = (coords[layer] * coords[layer - 1]).sum(0)
            flip = torch.where(agree < 0, -1.0, 1.0).to(coords.dtype)
            coords[layer] *= flip
            comps[layer] *= flip[:, None]
    var = s**2
    ratio = var[:, :n_components] / var.sum(dim=1, keepdim=True).clamp_min(
        torch.finfo(x.dtype).tiny
    )
    return LayerProjection(coords=coords, components=comps, explained_variance_ratio=ratio)
