"""Exact linear CKA between layers, accumulated over batches of rows (an on-disk store).

Linear CKA needs, for every pair of layers ``a, b``, ``||Xa_c^T Xb_c||_F^2`` with the rows
centred. ``Xa_c^T Xb_c = sum_i x_ia x_ib^T - n mean_a mean_b^T``, so one pass over the
rows that accumulates ``sum_i z_i z_i^T`` and ``sum_i z_i`` of the layers' concatenated
features ``z_i`` gives the whole layer-by-layer matrix exactly: memory is
``(layers x width)^2`` numbers whatever the number of rows (e.g. 7 x 384 for MiniLM:
58 MB in float64), never a Gram of the rows. Unlike :class:`~mi_cluster.methods.similarity.cka.
MinibatchCKA` (averaged unbiased HSIC of minibatches, an estimate), this equals the
in-memory :func:`~mi_cluster.methods.similarity.cka.linear_cka` of all rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.core.protocols import RowStore
from mi_cluster.methods.similarity.inputs import SimilarityInputError, no_variation

__all__ = ["StreamingLinearCKA", "store_linear_cka"]


class StreamingLinearCKA:
    """Accumulate batches ``[layer, rows, d]`` (the same layers and width every time) and
    compute the exact linear CKA between every pair of layers (float64 throughout)."""

    def __init__(self) -> None:
        # (Z^T Z, column sums of Z, (layers, width)) of the rows so far, Z = [row, layer * d]
        self._sums: tuple[Tensor, Tensor, tuple[int, int]] | None = None
        self.n = 0

    def update(self, batch: Float[Tensor, "layer rows d"]) -> None:
        """Add a batch of rows, ``[layer, rows, d]`` (the same layers and width every time)."""
        if batch.ndim != 3:
            raise SimilarityInputError(
                f"a batch must be [layer, rows, d], got shape {tuple(batch.shape)}"
            )
        n_layers, rows, d = batch.shape
        if self._sums is not None and self._sums[2] != (n_layers, d):
            raise SimilarityInputError(
                f"this batch has {n_layers} layers of width {d}, earlier ones "
                f"{self._sums[2][0]} of width {self._sums[2][1]}"
            )
        if not bool(torch.isfinite(batch).all()):
            raise SimilarityInputError("a batch holds NaN or infinite values")
        z = batch.double().permute(1, 0, 2).reshape(rows, n_layers * d)
        if self._sums is None:
            self._sums = (z.T @ z, z.sum(0), (n_layers, d))
        else:
            zz, zsum, shape = self._sums
            self._sums = (zz + z.T @ z, zsum + z.sum(0), shape)
        self.n += rows

    def compute(self) -> Float[Tensor, "layer layer"]:
        """Linear CKA between every pair of layers, from every row added so far."""
        if self._sums is None or self.n < 2:
            raise SimilarityInputError("linear CKA needs at least 2 rows")
        zz, zsum, (n_layers, d) = self._sums
        cov = zz - torch.outer(zsum, zsum) / self.n  # centred cross-products
        blocks = cov.reshape(n_layers, d, n_layers, d)
        centred = cov.diagonal().reshape(n_layers, d).sum(1)
        raw = zz.diagonal().reshape(n_layers, d).sum(1)
        flat = no_variation(centred, raw, cov.dtype).nonzero().flatten().tolist()
        if flat:
            raise SimilarityInputError(
                f"layer(s) {flat} (of those streamed) have no variance across rows: CKA "
                "with them is undefined"
            )
        hsic = blocks.pow(2).sum((1, 3))  # [layer, layer]
        self_h = hsic.diagonal()
        return hsic / (self_h[:, None] * self_h[None, :]).clamp_min(0).sqrt()


def store_linear_cka(
    store: RowStore,
    rows: int = 4096,
    layers: Sequence[int] | None = None,
    max_memory: int = 2 * 1024**3,
) -> Float[Tensor, "layer layer"]:
    """Linear CKA between every pair of layers of an :class:`~mi_cluster.collection.store.
    ActivationStore` (or of ``layers``), streamed over it ``rows`` at a time; equal to
    the in-memory ``pairwise(..., "linear_cka")`` of the same rows.

    Memory is bounded by ``max_memory`` bytes of accumulators, not by the rows: when all
    layers' cross-products do not fit (``(layers x width)^2`` float64 numbers), the layers
    are taken in blocks and the store is read once per pair of blocks (e.g. 33 layers of
    width 4096 in 2 GiB: blocks of 2 layers, 153 passes)."""
    chosen = list(range(len(store.layer_labels))) if layers is None else list(layers)
    width = math.prod(store.row_shape)
    per_block = max(1, int(math.sqrt(max_memory / 8) // (2 * width)))
    if per_block >= len(chosen):
        return _one_pass(store, chosen, rows)
    blocks = [chosen[i : i + per_block] for i in range(0, len(chosen), per_block)]
    out = torch.empty(len(chosen), len(chosen), dtype=torch.float64)
    where = {layer: k for k, layer in enumerate(chosen)}
    for a, block_a in enumerate(blocks):
        for block_b in blocks[a:]:
            both = list(dict.fromkeys(block_a + block_b))
            part = _one_pass(store, both, rows)
            index = torch.tensor([where[layer] for layer in both])
            out[index[:, None], index[None, :]] = part
    return out


def _one_pass(store: RowStore, layers: list[int], rows: int) -> Tensor:
    acc = StreamingLinearCKA()
    for batch in store.batches(rows=rows, layers=layers):
        acc.update(batch)
    return acc.compute()
