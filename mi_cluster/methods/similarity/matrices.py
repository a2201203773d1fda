"""Layer-by-layer (one model) and layer-by-layer (two models) similarity matrices.

Work is shared instead of repeated per pair:
- linear CKA (biased and debiased): every layer's centred Gram matrix is built once, one
  block of samples by block at a time (a symmetric Gram's off-diagonal block ``(p, q)`` is
  built once and counted twice, so the Grams cost about half a full product), and each
  block adds one matrix product ``F_x F_y^T`` to the HSIC of every pair. Only one block of
  every layer's Gram is in memory at a time; ``max_memory`` bounds it, so stacks whose
  Grams do not fit are streamed. When there are fewer features than samples, the cheaper
  feature-space products ``||Xa^T Xb||^2`` are used instead (chosen by counting flops).
- RBF CKA and RSA: each layer's centred kernel or standardised RDM is built once, then one
  matrix product gives every pair.
- CCA, SVCCA, PWCCA and Procrustes: each layer's whitened basis (or normalised data) is
  computed once; pairs then cost one small product and SVD.

Within one model only the upper triangle of a symmetric metric is computed. For CCA and
SVCCA the matrix holds the mean canonical correlation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.core.protocols import RowStore, is_store
from mi_cluster.methods.similarity.cca import (
    pwcca_from_bases,
    require_cca_samples,
    require_joint_rank,
    svd_reduce,
    whitened_basis,
)
from mi_cluster.methods.similarity.cka import center_gram, debias_hsic, rbf_gram
from mi_cluster.methods.similarity.distances import procrustes_of_normalised, unit_centred
from mi_cluster.methods.similarity.inputs import (
    SimilarityInputError,
    center,
    check_matrix,
    require_variation,
)
from mi_cluster.methods.similarity.rsa import average_ranks, rdm

METRICS = (
    "linear_cka",
    "debiased_cka",
    "rbf_cka",
    "debiased_rbf_cka",
    "cca",
    "svcca",
    "pwcca",
    "rsa",
    "procrustes",
)
SYMMETRIC = {m for m in METRICS if m != "pwcca"}
BLOCK_ROWS = 512  # sample rows per Gram block: measured fastest for float32 and float64 here


@dataclass(frozen=True)
class SimilarityMatrix:
    """A matrix of one metric between every layer of ``xs`` and every layer of ``ys``.

    Fields:
        values: ``values[i, j]`` is ``metric(xs[i], ys[j])``.
        metric: the metric's name (one of ``METRICS``).
        symmetric: True when computed within one stack (``ys`` omitted) for a symmetric
            metric, so ``values`` is symmetric by construction.
    """

    values: Float[Tensor, "layer_x layer_y"]
    metric: str
    symmetric: bool


Stack = Tensor | Sequence[Tensor]
Progress = Callable[[int, int], None]


def _layers(stack: Stack | RowStore, name: str) -> list[Tensor]:
    if is_store(stack):
        raise SimilarityInputError(
            f"{name} is a store: a store streams linear_cka within itself, as xs only; for "
            "other metrics or two stores load it with store.to_activations() (when it fits)"
        )
    if isinstance(stack, Tensor):
        if stack.ndim != 3:
            raise SimilarityInputError(
                f"{name} must be (layer, n, d) or a list of (n, d) tensors, got shape "
                f"{tuple(stack.shape)}"
            )
        stack = list(stack.unbind(0))
    layers = [check_matrix(x, f"{name}[{i}]") for i, x in enumerate(stack)]
    if not layers:
        raise SimilarityInputError(f"{name} has no layers")
    for i, x in enumerate(layers):
        require_variation(x, f"{name}[{i}]")
    n = layers[0].shape[0]
    for i, x in enumerate(layers):
        if x.shape[0] != n:
            raise SimilarityInputError(
                f"every layer must have the same samples: {name}[0] has {n} rows, "
                f"{name}[{i}] has {x.shape[0]}"
            )
    return layers


def _centred_stacks(xs: list[Tensor]) -> list[tuple[list[int], Tensor]]:
    """Centred layers stacked in runs of equal width: ``(layer indices, (k, n, d))``."""
    runs: list[list[int]] = []
    for i, x in enumerate(xs):
        if runs and xs[runs[-1][-1]].shape[1] == x.shape[1]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return [(idx, torch.stack([center(xs[i]) for i in idx])) for idx in runs]


def _gram_block(stacks, rows_p: slice, rows_q: slice, n_layers: int) -> Tensor:
    """Block ``(p, q)`` of every layer's centred Gram, flattened: ``(layer, |p| |q|)``."""
    first = stacks[0][1]
    size = (rows_p.stop - rows_p.start) * (rows_q.stop - rows_q.start)
    out = first.new_empty(n_layers, size)
    for idx, stack in stacks:
        k = torch.bmm(stack[:, rows_p], stack[:, rows_q].transpose(1, 2))
        out[idx[0] : idx[-1] + 1] = k.flatten(1)
    return out


def _gram_products(
    xs: list[Tensor], ys: list[Tensor] | None, max_memory: int, progress: Progress | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``<K_a, K_b>`` for all pairs, ``<K_a, K_a>``, ``<K_b, K_b>``, and each layer's
    squared centred row norms (the Gram diagonals, for debiasing), accumulated over blocks
    of samples: a symmetric Gram's block ``(p, q)`` with ``p < q`` is built once and
    counted twice, so the Grams cost about half a full product, and only one block of
    every layer's Gram is in memory at a time."""
    n = xs[0].shape[0]
    n_layers = len(xs) + (0 if ys is None else len(ys))
    fit = int(math.sqrt(max(1, max_memory // (2 * n_layers * xs[0].element_size()))))
    rows = max(1, min(n, BLOCK_ROWS, fit))
    edges = list(range(0, n, rows)) + [n]
    spans = [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    sx = _centred_stacks(xs)
    sy = None if ys is None else _centred_stacks(ys)
    ly = len(xs) if ys is None else len(ys)
    out = xs[0].new_zeros(len(xs), ly)
    self_x = xs[0].new_zeros(len(xs))
    self_y = xs[0].new_zeros(ly)
    total = len(spans) * (len(spans) + 1) // 2
    done = 0
    for p, rp in enumerate(spans):
        for rq in spans[p:]:
            weight = 1.0 if rq is rp else 2.0
            fx = _gram_block(sx, rp, rq, len(xs))
            if sy is None:
                out.addmm_(fx, fx.T, alpha=weight)
            else:
                fy = _gram_block(sy, rp, rq, ly)
                out.addmm_(fx, fy.T, alpha=weight)
                self_x += weight * fx.pow(2).sum(1)
                self_y += weight * fy.pow(2).sum(1)
            done += 1
            if progress:
                progress(done, total)
    rx = torch.cat([stack.pow(2).sum(-1) for _, stack in sx])
    if sy is None:
        self_x = out.diagonal().clone()
        return out, self_x, self_x, rx, rx
    return out, self_x, self_y, rx, torch.cat([stack.pow(2).sum(-1) for _, stack in sy])


def _feature_products(
    xs: list[Tensor], ys: list[Tensor] | None, progress: Progress | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The same quantities as :func:`_gram_products` from ``||Xa^T Yb||_F^2``."""
    xc = [center(x) for x in xs]
    yc = xc if ys is None else [center(y) for y in ys]
    out = xc[0].new_zeros(len(xc), len(yc))
    for a, x in enumerate(xc):
        start = a if ys is None else 0
        for b in range(start, len(yc)):
            out[a, b] = (x.T @ yc[b]).pow(2).sum()
        if progress:
            progress(a + 1, len(xc))
    rx = torch.stack([x.pow(2).sum(1) for x in xc])
    if ys is None:
        out = torch.triu(out) + torch.triu(out, 1).T
        self_x = out.diagonal().clone()
        return out, self_x, self_x, rx, rx
    self_x = torch.stack([(x.T @ x).pow(2).sum() for x in xc])
    self_y = torch.stack([(y.T @ y).pow(2).sum() for y in yc])
    return out, self_x, self_y, rx, torch.stack([y.pow(2).sum(1) for y in yc])


def _linear_cka(
    xs: list[Tensor],
    ys: list[Tensor] | None,
    debiased: bool,
    max_memory: int,
    progress: Progress | None,
) -> Tensor:
    n = xs[0].shape[0]
    targets = xs if ys is None else ys
    dx = sum(x.shape[1] for x in xs) / len(xs)
    dy = sum(y.shape[1] for y in targets) / len(targets)
    pairs = len(xs) * len(targets) / (2 if ys is None else 1)
    blocks = math.ceil(n / BLOCK_ROWS)
    packed = n * n * (blocks + 1) / (2 * blocks)  # Gram entries actually built per layer
    widths = sum(x.shape[1] for x in xs) + (0 if ys is None else sum(y.shape[1] for y in ys))
    gram_flops = packed * widths + pairs * packed
    feature_flops = pairs * n * dx * dy + (0 if ys is None else n * len(xs) * dx * dx)
    if gram_flops < feature_flops:
        xy, xx, yy, rx, ry = _gram_products(xs, ys, max_memory, progress)
    else:
        xy, xx, yy, rx, ry = _feature_products(xs, ys, progress)
    if debiased:
        xy = debias_hsic(xy, rx, ry)
        xx = debias_hsic(torch.diag(xx), rx, rx).diagonal()
        yy = debias_hsic(torch.diag(yy), ry, ry).diagonal()
    return xy / (xx[:, None] * yy[None, :]).clamp_min(0).sqrt()


def _vector_similarity(
    vx: list[Tensor], vy: list[Tensor] | None, max_memory: int, progress: Progress | None
) -> Tensor:
    """Cosine similarity between per-layer vectors, built in blocks of layers."""
    vy_ = vx if vy is None else vy
    ux = torch.stack([v / v.norm() for v in vx])
    uy = ux if vy is None else torch.stack([v / v.norm() for v in vy_])
    out = ux.new_zeros(ux.shape[0], uy.shape[0])
    size = max(1, max_memory // max(1, ux.shape[1] * ux.element_size()))
    for start in range(0, ux.shape[0], size):
        out[start : start + size] = ux[start : start + size] @ uy.T
        if progress:
            progress(min(start + size, ux.shape[0]), ux.shape[0])
    return out


def _kernel_vector(x: Tensor, threshold: float, debiased: bool) -> Tensor:
    return center_gram(rbf_gram(x, threshold), unbiased=debiased).flatten()


def _rdm_vector(x: Tensor, rdm_metric: str, compare: str) -> Tensor:
    v = rdm(x, rdm_metric)
    if compare == "spearman":
        v = average_ranks(v)
    return v - v.mean()


def _pair_loop(prep_x, prep_y, compare, symmetric: bool, progress: Progress | None) -> Tensor:
    px = prep_x
    py = prep_x if prep_y is None else prep_y
    out = torch.zeros(len(px), len(py), dtype=torch.float64)
    for a in range(len(px)):
        for b in range(len(py)):
            if symmetric and prep_y is None and b < a:
                out[a, b] = out[b, a]
            else:
                out[a, b] = compare(px[a], py[b])
        if progress:
            progress(a + 1, len(px))
    return out


def pairwise(
    xs: Stack | RowStore,
    ys: Stack | None = None,
    metric: str = "linear_cka",
    *,
    threshold: float = 1.0,
    variance: float = 0.99,
    dims: int | None = None,
    ridge: float = 0.0,
    rdm_metric: str = "correlation",
    compare: str = "spearman",
    max_memory: int = 2 * 1024**3,
    progress: Progress | None = None,
) -> SimilarityMatrix:
    """``metric`` between every layer of ``xs`` and every layer of ``ys`` (or of ``xs``).

    Args:
        xs: ``Float[Tensor, "layer n d"]`` or a list of ``(n, d_l)`` tensors (rows are the
            same samples in every layer), or an
            :class:`~mi_cluster.collection.store.ActivationStore`
            (``linear_cka`` only, streamed in bounded memory, exact).
        ys: a second stack over the same samples (another model); widths may differ.
        metric: one of ``METRICS``.
        threshold: the RBF kernel's bandwidth (``rbf_cka``).
        variance: the share of variance SVCCA keeps.
        dims: SVCCA's number of directions (instead of ``variance``).
        ridge: the CCA/PWCCA regularisation.
        rdm_metric: the RSA dissimilarity.
        compare: how RSA compares two RDMs.
        max_memory: bytes the Gram/kernel blocks may take; larger stacks are streamed.
        progress: called as ``progress(done, total)`` while the matrix is filled.

    Values equal the single-pair functions (``linear_cka``, ``cca``, ...) to rounding.
    """
    if metric not in METRICS:
        raise SimilarityInputError(f"unknown metric {metric!r}; use one of {METRICS}")
    if is_store(xs):  # an on-disk ActivationStore: stream over its rows
        if metric != "linear_cka" or ys is not None:
            raise SimilarityInputError(
                "a store streams linear_cka within itself; for other metrics or two stores "
                "load it with store.to_activations() (when it fits)"
            )
        from mi_cluster.methods.similarity.streaming import store_linear_cka

        return SimilarityMatrix(store_linear_cka(xs), metric, True)
    lx, ly, dtype = _aligned(xs, ys)
    if metric in ("debiased_cka", "debiased_rbf_cka") and lx[0].shape[0] < 4:
        raise SimilarityInputError("debiased CKA needs at least 4 samples")
    settings = _Settings(threshold, variance, dims, ridge, rdm_metric, compare, max_memory)
    values = _values(metric, lx, ly, settings, progress)
    values = values.to(dtype=dtype, device=lx[0].device)
    return SimilarityMatrix(values, metric, ly is None and metric in SYMMETRIC)


@dataclass(frozen=True)
class _Settings:
    """The metric parameters of :func:`pairwise`."""

    threshold: float
    variance: float
    dims: int | None
    ridge: float
    rdm_metric: str
    compare: str
    max_memory: int


def _aligned(xs: Stack, ys: Stack | None) -> tuple[list[Tensor], list[Tensor] | None, torch.dtype]:
    """Both stacks as lists of ``(n, d_l)`` matrices of one dtype (the promoted one), after
    checking they hold the same samples on the same device."""
    lx = _layers(xs, "xs")
    ly = None if ys is None else _layers(ys, "ys")
    if ly is not None:
        if ly[0].shape[0] != lx[0].shape[0]:
            raise SimilarityInputError(
                f"xs and ys must hold the same samples: {lx[0].shape[0]} and {ly[0].shape[0]} rows"
            )
        if ly[0].device != lx[0].device:
            raise SimilarityInputError(f"xs is on {lx[0].device} but ys is on {ly[0].device}")
    dtype = lx[0].dtype
    for t in lx + (ly or []):
        dtype = torch.promote_types(dtype, t.dtype)
    return [x.to(dtype) for x in lx], None if ly is None else [y.to(dtype) for y in ly], dtype


def _values(
    metric: str,
    lx: list[Tensor],
    ly: list[Tensor] | None,
    s: _Settings,
    progress: Progress | None,
) -> Tensor:
    """The ``[layer_x, layer_y]`` values of ``metric``."""
    if metric in ("linear_cka", "debiased_cka"):
        return _linear_cka(lx, ly, metric == "debiased_cka", s.max_memory, progress)
    if metric in ("rbf_cka", "debiased_rbf_cka"):
        deb = metric == "debiased_rbf_cka"
        vx = [_kernel_vector(x, s.threshold, deb) for x in lx]
        vy = None if ly is None else [_kernel_vector(y, s.threshold, deb) for y in ly]
        return _vector_similarity(vx, vy, s.max_memory, progress)
    if metric == "rsa":
        vx = [_rdm_vector(x, s.rdm_metric, s.compare) for x in lx]
        vy = None if ly is None else [_rdm_vector(y, s.rdm_metric, s.compare) for y in ly]
        return _vector_similarity(vx, vy, s.max_memory, progress)
    if metric == "procrustes":
        px = [unit_centred(x, f"xs[{i}]") for i, x in enumerate(lx)]
        py = None if ly is None else [unit_centred(y, f"ys[{i}]") for i, y in enumerate(ly)]
        return _pair_loop(px, py, procrustes_of_normalised, True, progress)
    return _cca_values(metric, lx, ly, s, progress)


def _cca_values(
    metric: str,
    lx: list[Tensor],
    ly: list[Tensor] | None,
    s: _Settings,
    progress: Progress | None,
) -> Tensor:
    """CCA, SVCCA or PWCCA between every pair of layers, each layer whitened once."""
    if metric == "svcca":
        lx = [svd_reduce(x, s.variance, s.dims) for x in lx]
        ly = None if ly is None else [svd_reduce(y, s.variance, s.dims) for y in ly]
    if s.ridge == 0:
        for name, stack in (("xs", lx), ("ys", ly or [])):
            for i, x in enumerate(stack):
                where = f"{name}[{i}]" + (" after the SVD step" if metric == "svcca" else "")
                require_cca_samples(x, where, metric.upper())
    bx = [(x, whitened_basis(x, s.ridge)) for x in lx]
    by = None if ly is None else [(y, whitened_basis(y, s.ridge)) for y in ly]
    hint = "use more samples, fewer kept dims or ridge > 0"

    def comp(a, b):
        if s.ridge == 0:
            require_joint_rank(a[1], b[1], metric.upper(), hint)
        if metric == "pwcca":
            return pwcca_from_bases(a[0], a[1], b[1])
        return torch.linalg.svdvals(a[1].T @ b[1]).clamp(0, 1).mean()

    return _pair_loop(bx, by, comp, metric in SYMMETRIC, progress)
