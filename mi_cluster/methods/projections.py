"""Low-dimensional views of representations, layer by layer.

Three PCA bases for ``[layer, prompt, d_model]`` (:func:`pca_by_layer`):

- ``"per_layer"``: each layer's own principal axes (sign fixed so each axis's largest
  loading is positive). Faithful per frame, but consecutive frames may rotate or mirror.
- ``"shared"``: one basis for every layer, fitted on one layer (``fit_layer``) or on all
  layers stacked after each is centred and scaled to unit RMS norm (so the larger norms of
  late layers do not dominate). Frames are directly comparable.
- ``"aligned"``: each layer's own top-``k`` subspace, rotated (orthogonal Procrustes, which
  includes reflections) to best match the previous layer's coordinates, so an animation
  neither spins nor mirrors between frames while every frame still shows its own layer's
  top-``k`` subspace.

And projections on given directions (:func:`project_on_directions`): a subject-minus-object
axis, or the top singular directions of a head's OV or QK circuit
(:func:`head_circuit_directions`, from TransformerLens's ``FactoredMatrix``; Millidge &
Black 2022). Every result says which basis it used and the share of each layer's variance
each component carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.core.protocols import HookedModel, RowSource, RowStore, is_store
from mi_cluster.methods.stats.inputs import check_layered

__all__ = [
    "BASES",
    "HeadDirections",
    "LayerProjection",
    "head_circuit_directions",
    "pca_by_layer",
    "project_on_directions",
]

Basis = Literal["per_layer", "shared", "aligned"]
BASES: tuple[str, ...] = ("per_layer", "shared", "aligned")


@dataclass(frozen=True)
class LayerProjection:
    """Rows of every layer projected on ``k`` components.

    Fields:
        coords: ``Float[Tensor, "layer prompt component"]``, rows centred on their
            layer's mean and projected on that layer's components.
        components: ``Float[Tensor, "layer component d_model"]``, unit vectors
            (orthonormal for the PCA bases).
        explained_variance_ratio: ``Float[Tensor, "layer component"]``, the share of the
            layer's total variance along each component.
        mean: ``Float[Tensor, "layer d_model"]``, each layer's centre.
        basis: which basis, in words (shown in figure captions).
        component_labels: a name per component (``"PC1"``, ``"subject - object axis"``).
    """

    coords: Float[Tensor, "layer prompt component"]
    components: Float[Tensor, "layer component d_model"]
    explained_variance_ratio: Float[Tensor, "layer component"]
    mean: Float[Tensor, "layer d_model"]
    basis: str
    component_labels: tuple[str, ...]

    def reconstruct(self) -> Float[Tensor, "layer prompt d_model"]:
        """``mean + coords @ components``: the rows back in the model's space (exact when
        the components span the rows' variation)."""
        return self.mean[:, None] + self.coords @ self.components


def _check(x: Tensor) -> Tensor:
    """Real, finite ``[layer, prompt, d_model]`` (half precision computed in float32)."""
    return check_layered(x, "activations", 3)


def _finish(centred: Tensor, comps: Tensor, mean: Tensor, basis: str, labels) -> LayerProjection:
    coords = centred @ comps.transpose(1, 2)
    return _projection(coords, comps, centred.pow(2).sum((1, 2)), mean, basis, labels)


def _projection(
    coords: Tensor, comps: Tensor, total: Tensor, mean: Tensor, basis: str, labels
) -> LayerProjection:
    """The result, with each component's share of the layer's total variance ``total``."""
    ratio = coords.pow(2).sum(1) / total.clamp_min(torch.finfo(total.dtype).tiny)[:, None]
    return LayerProjection(coords, comps, ratio, mean, basis, tuple(labels))


def _align(coords: Tensor, comps: Tensor) -> None:
    """Rotate each layer's components (and coordinates), in place, onto the previous
    layer's: ``R = argmin ||C_l R - C_{l-1}||`` over orthogonal ``R``, ``U V^T`` from
    ``svd(C_l^T C_{l-1})``."""
    for layer in range(1, coords.shape[0]):
        u, _, vt = torch.linalg.svd(coords[layer].T @ coords[layer - 1])
        rot = u @ vt
        coords[layer] = coords[layer] @ rot
        comps[layer] = rot.T @ comps[layer]


ALIGNED = "per-layer PCA, Procrustes-aligned to the previous layer"
STACKED = "all layers stacked (each centred, scaled to unit RMS)"


def _fixed_signs(comps: Tensor) -> Tensor:
    idx = comps.abs().argmax(dim=-1, keepdim=True)
    return comps * torch.sign(torch.gather(comps, -1, idx))


def pca_by_layer(
    x: RowSource,
    n_components: int = 2,
    basis: Basis = "aligned",
    fit_layer: int | None = None,
) -> LayerProjection:
    """PCA of every layer's rows in one of three bases (see the module docstring),
    computed by SVD in the input's dtype and device.

    Args:
        x: ``[layer, prompt, d_model]``, or an
            :class:`~mi_cluster.collection.store.ActivationStore`:
            streamed in two passes (each layer's covariance, then the coordinates), in
            float64, holding ``layer x d_model^2`` numbers and the coordinates, never the
            rows; the same projection as in memory.
        n_components: components kept (at most ``min(prompt, d_model)``).
        basis: ``"per_layer"``, ``"shared"`` or ``"aligned"``.
        fit_layer: for ``"shared"``, the layer (index) to fit the basis on; ``None`` fits
            on all layers stacked, each centred and scaled to unit RMS norm.
    """
    if is_store(x):  # an on-disk ActivationStore
        return _store_pca(x, n_components, basis, fit_layer)
    x = _check(x)
    n_layers, n, d = x.shape
    if not 1 <= n_components <= min(n, d):
        raise ValueError(f"n_components={n_components} must be between 1 and min(n, d)={min(n, d)}")
    if basis not in BASES:
        raise ValueError(f"unknown basis {basis!r}; use one of {BASES}")
    mean = x.mean(dim=1)
    centred = x - mean[:, None]
    labels = [f"PC{i + 1}" for i in range(n_components)]
    if basis == "shared":
        if fit_layer is None:
            rms = centred.pow(2).sum(-1).mean(-1).sqrt().clamp_min(torch.finfo(x.dtype).tiny)
            fit_on = (centred / rms[:, None, None]).reshape(n_layers * n, d)
            where = STACKED
        else:
            if not -n_layers <= fit_layer < n_layers:
                raise ValueError(f"fit_layer={fit_layer} is out of range for {n_layers} layers")
            fit_on, where = centred[fit_layer], f"layer {fit_layer % n_layers}"
        if fit_on.shape[0] < n_components:
            raise ValueError(f"too few rows to fit {n_components} shared components")
        vh = torch.linalg.svd(fit_on, full_matrices=False).Vh[:n_components]
        comps = _fixed_signs(vh).expand(n_layers, -1, -1).clone()
        return _finish(centred, comps, mean, f"shared PCA basis fitted on {where}", labels)
    vh = torch.linalg.svd(centred, full_matrices=False).Vh[:, :n_components]
    comps = _fixed_signs(vh)
    if basis == "per_layer":
        return _finish(centred, comps, mean, "PCA fitted per layer", labels)
    coords = centred @ comps.transpose(1, 2)
    _align(coords, comps)
    return _finish(
        centred, comps, mean, ALIGNED, [f"aligned PC{i + 1}" for i in range(n_components)]
    )


def _store_pca(store: RowStore, k: int, basis: str, fit_layer: int | None) -> LayerProjection:
    """:func:`pca_by_layer` of a store: covariances in one pass, coordinates in another."""
    if basis not in BASES:
        raise ValueError(f"unknown basis {basis!r}; use one of {BASES}")
    n, sums, cross = 0, None, None
    for batch in store.batches():
        x = batch.double()  # [layer, rows, d]
        part_sums, part_cross = x.sum(1), x.transpose(1, 2) @ x
        sums = part_sums if sums is None else sums + part_sums
        cross = part_cross if cross is None else cross + part_cross
        n += x.shape[1]
    if sums is None or cross is None:
        raise ValueError("the store holds no rows")
    n_layers, d = sums.shape
    if not 1 <= k <= min(n, d):
        raise ValueError(f"n_components={k} must be between 1 and min(n, d)={min(n, d)}")
    mean = sums / n
    cov = cross - n * mean[:, :, None] * mean[:, None, :]  # centred X^T X per layer
    total = cov.diagonal(dim1=1, dim2=2).sum(-1)
    labels = [f"PC{i + 1}" for i in range(k)]
    if basis == "shared":
        if fit_layer is None:
            fit, where = (cov / (total / n)[:, None, None]).sum(0), STACKED
        else:
            if not -n_layers <= fit_layer < n_layers:
                raise ValueError(f"fit_layer={fit_layer} is out of range for {n_layers} layers")
            fit, where = cov[fit_layer], f"layer {fit_layer % n_layers}"
        top = torch.linalg.eigh(fit).eigenvectors.flip(-1)[:, :k].T  # descending
        comps = _fixed_signs(top).expand(n_layers, -1, -1).clone()
        name = f"shared PCA basis fitted on {where}"
    else:
        comps = _fixed_signs(torch.linalg.eigh(cov).eigenvectors.flip(-1)[..., :k].transpose(1, 2))
        name = "PCA fitted per layer"
    coords = torch.cat(
        [(b.double() - mean[:, None]) @ comps.transpose(1, 2) for b in store.batches()], dim=1
    )
    if basis == "aligned":
        _align(coords, comps)
        name, labels = ALIGNED, [f"aligned PC{i + 1}" for i in range(k)]
    return _projection(coords, comps, total, mean, name, labels)


def project_on_directions(
    x: Float[Tensor, "layer prompt d_model"],
    directions: Float[Tensor, "... component d_model"],
    labels: tuple[str, ...] | list[str],
    description: str,
) -> LayerProjection:
    """Rows of every layer (centred on the layer's mean) projected on given directions,
    each scaled to unit length: one set ``[component, d_model]`` for all layers, or one
    per layer ``[layer, component, d_model]`` (e.g. a subjecthood axis per layer)."""
    x = _check(x)
    n_layers, _, d = x.shape
    dirs = directions.to(device=x.device, dtype=x.dtype)
    if dirs.ndim == 2:
        dirs = dirs.expand(n_layers, -1, -1)
    if dirs.ndim != 3 or dirs.shape[0] != n_layers or dirs.shape[2] != d:
        raise ValueError(
            f"directions of shape {tuple(directions.shape)} do not fit activations of "
            f"shape {tuple(x.shape)}: expected [component, {d}] or [{n_layers}, component, {d}]"
        )
    if len(labels) != dirs.shape[1]:
        raise ValueError(f"{len(labels)} labels for {dirs.shape[1]} directions")
    norms = dirs.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("a direction is the zero vector")
    mean = x.mean(dim=1)
    return _finish(x - mean[:, None], dirs / norms, mean, description, labels)


@dataclass(frozen=True)
class HeadDirections:
    """Top singular directions of one head's OV or QK circuit, in the residual stream.

    Fields:
        directions: ``Float[Tensor, "component d_model"]``, unit vectors.
        singular_values: ``Float[Tensor, "component"]``.
        labels: a name per direction (``"L2H2 OV in 1"``).
        description: what the directions are, in words.
    """

    directions: Float[Tensor, "component d_model"]
    singular_values: Float[Tensor, " component"]
    labels: tuple[str, ...]
    description: str


def head_circuit_directions(
    model: HookedModel,
    layer: int,
    head: int,
    circuit: Literal["OV", "QK"] = "OV",
    side: Literal["input", "output"] = "input",
    k: int = 2,
) -> HeadDirections:
    """The top-``k`` singular directions of head ``layer``.``head``'s ``circuit``.

    TransformerLens writes the circuits for row vectors: ``x @ OV`` is what the head writes
    when it attends to ``x``, ``q @ QK @ k^T`` the attention score. With
    ``OV = U S V^T``, the ``"input"`` side (``U``) holds the residual directions the head
    reads (for QK, the query side) and the ``"output"`` side (``V``) the directions it
    writes (for QK, the key side). Grouped key/value heads are expanded to each query
    head. Where a block normalises attention's output before adding it (Gemma 2/3, OLMo
    2), the OV circuit includes that norm at unit scale, so the output side spans what
    the head writes into the residual stream (up to the positive per-token scale).
    """
    if circuit not in ("OV", "QK"):
        raise ValueError(f"circuit must be 'OV' or 'QK', got {circuit!r}")
    if side not in ("input", "output"):
        raise ValueError(f"side must be 'input' or 'output', got {side!r}")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise ValueError(f"no head L{layer}H{head}: the model has {n_layers} x {n_heads} heads")
    from mi_cluster.core.writes import HeadWriter  # the model stack: not loaded for plain PCA

    factored = getattr(model, circuit)[layer, head]
    write_map = HeadWriter(model).write_map(layer) if circuit == "OV" else None
    if write_map is not None:  # the post-attention norm, linear at unit scale
        linear = torch.diag(write_map) if write_map.ndim == 1 else write_map
        factored = factored @ linear.to(factored.B)
    u, s, v = factored.svd()  # u: [d_model, rank], v: [d_model, rank]
    if not 1 <= k <= s.shape[0]:
        raise ValueError(f"k={k} must be between 1 and the circuit's rank {s.shape[0]}")
    vecs = (u if side == "input" else v)[:, :k].T.detach()
    names = {("OV", "input"): "read", ("OV", "output"): "write"}
    names.update({("QK", "input"): "query", ("QK", "output"): "key"})
    tag = names[(circuit, side)]
    labels = tuple(f"L{layer}H{head} {circuit} {tag} {i + 1}" for i in range(k))
    desc = f"top {k} singular directions of head L{layer}H{head}'s {circuit} circuit ({tag} side)"
    return HeadDirections(vecs / vecs.norm(dim=-1, keepdim=True), s[:k].detach(), labels, desc)
