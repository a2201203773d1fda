"""Exact linear CKA between layers, accumulated over batches of rows (an on-disk store).

Linear CKA needs, for every pair of layers ``a, b``, ``||Xa_c^T Xb_c||_F^2`` with the rows
centred. ``Xa_c^T Xb_c = sum_i x_ia x_ib^T - n mean_a mean_b^T``, so one pass over the
rows that accumulates ``sum_i z_i z_i^T`` and ``sum_i z_i`` of the layers' concatenated
features ``z_i`` gives the whole layer-by-layer matrix exactly: memory is
``(layers x width)^2`` numbers whatever the number of rows (e.g. 7 x 384 for MiniLM:
58 MB in float64), never a Gram of the rows. Unlike :class:`~mi_cluster.similarity.cka.
MinibatchCKA` (averaged unbiased HSIC of minibatches, an estimate), this equals the
in-memory :func:`~mi_cluster.similarity.cka.linear_cka` of all rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.similarity.inputs import SimilarityInputError

__all__ = ["StreamingLinearCKA", "store_linear_cka"]


class StreamingLinearCKA:
    """Accumulate batches ``[layer, rows, d]`` (the same layers and width every time) and
    compute the exact linear CKA between every pair of layers (float64 throughout)."""

    def __init__(self) -> None:
        self._zz: Tensor | None = None
        self._z: Tensor | None = None
        self._shape: tuple[int, int] | None = None
        self.n = 0

    def update(self, batch: Float[Tensor, "layer rows d"]) -> None:
        if batch.ndim != 3:
            raise SimilarityInputError(
                f"a batch must be [layer, rows, d], got shape {tuple(batch.shape)}"
            )
        n_layers, rows, d = batch.shape
        if self._shape is not None and self._shape != (n_layers, d):
            raise SimilarityInputError(
                f"this batch has {n_layers} layers of width {d}, earlier ones "
                f"{self._shape[0]} of width {self._shape[1]}"
            )
        if not bool(torch.isfinite(batch).all()):
            raise SimilarityInputError("a batch holds NaN or infinite values")
        z = batch.double().permute(1, 0, 2).reshape(rows, n_layers * d)
        if self._zz is None:
            self._shape = (n_layers, d)
            self._zz, self._z = z.T @ z, z.sum(0)
        else:
            self._zz += z.T @ z
            self._z += z.sum(0)
        self.n += rows

    def compute(self) -> Float[Tensor, "layer layer"]:
        if self._zz is None or self.n < 2:
            raise SimilarityInputError("linear CKA needs at least 2 rows")
        n_layers, d = self._shape
        cov = self._zz - torch.outer(self._z, self._z) / self.n  # centred cross-products
        hsic = cov.reshape(n_layers, d, n_layers, d).pow(2).sum((1, 3))  # [layer, layer]
        self_h = hsic.diagonal()
        return hsic / (self_h[:, None] * self_h[None, :]).clamp_min(0).sqrt()


def store_linear_cka(
    store: Any, rows: int = 4096, layers: Iterable[int] | None = None
) -> Float[Tensor, "layer layer"]:
    """Linear CKA between every pair of layers of an :class:`~mi_cluster.store.
    ActivationStore`, streamed over it ``rows`` at a time (equal to the in-memory
    ``pairwise(..., "linear_cka")`` of the same rows)."""
    acc = StreamingLinearCKA()
    for batch in store.batches(rows=rows, layers=None if layers is None else list(layers)):
        acc.update(batch)
    return acc.compute()
