"""Centred kernel alignment: linear (biased and debiased), RBF, and minibatch CKA.

Biased CKA (Kornblith et al. 2019) is HSIC normalised, with HSIC estimated from doubly
centred Gram matrices. With few samples it is strongly biased upwards (independent data
with 100 samples and 768 neurons scores about 0.88). Debiased CKA replaces HSIC by its
unbiased U-statistic (Song et al. 2012; Nguyen et al. 2021), which is close to 0 on
independent data. Debiased values can be slightly negative.

All functions take ``Float[Tensor, "n d"]`` (rows are samples), centre features before any
product (one-pass formulas lose precision in float32), compute in the inputs' dtype and on
their device, and return a 0-d tensor.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.methods.similarity.inputs import (
    SimilarityInputError,
    center,
    check_matrix,
    check_pair,
    require_variation,
)


def linear_hsic_terms(
    xc: Float[Tensor, "n d1"], yc: Float[Tensor, "n d2"], debiased: bool
) -> Float[Tensor, ""]:
    """Scaled HSIC of two *centred* matrices with the linear kernel: ``<K, L>`` for the
    centred Grams (biased), or the U-statistic ``n (n - 3) HSIC_1`` (debiased). Computed in
    feature space (``||Xc^T Yc||^2``) or sample space, whichever is cheaper."""
    n, d1 = xc.shape
    d2 = yc.shape[1]
    if d1 * d2 <= n * n:
        cross = (xc.T @ yc).pow(2).sum()
    else:
        cross = ((xc @ xc.T) * (yc @ yc.T)).sum()
    if not debiased:
        return cross
    return debias_hsic(cross[None, None], xc.pow(2).sum(1)[None], yc.pow(2).sum(1)[None])[0, 0]


def debias_hsic(
    cross: Float[Tensor, "a b"], rx: Float[Tensor, "a n"], ry: Float[Tensor, "b n"]
) -> Float[Tensor, "a b"]:
    """Turn biased scaled HSICs ``<K_i, L_j>`` of centred data into the unbiased
    ``n (n - 3) HSIC_1`` (Kornblith et al.'s feature-space form of Song et al.'s estimator),
    given each input's squared row norms (the diagonals of its centred Gram)."""
    n = rx.shape[-1]
    tx, ty = rx.sum(-1), ry.sum(-1)
    return cross - n / (n - 2) * (rx @ ry.T) + tx[:, None] * ty[None, :] / ((n - 1) * (n - 2))


def linear_cka(x: Tensor, y: Tensor, debiased: bool = False) -> Float[Tensor, ""]:
    """Linear CKA between ``x`` (n, d1) and ``y`` (n, d2).

    ``debiased=False``: Kornblith et al.'s CKA. ``debiased=True``: CKA from the unbiased HSIC
    estimator (needs n >= 4). Invariant to orthogonal transforms and isotropic scaling of
    either input; 1 when ``x`` and ``y`` are equal."""
    x, y = check_pair(x, y, min_rows=4 if debiased else 2)
    require_variation(x, "x")
    require_variation(y, "y")
    xc, yc = center(x), center(y)
    xy = linear_hsic_terms(xc, yc, debiased)
    xx = linear_hsic_terms(xc, xc, debiased)
    yy = linear_hsic_terms(yc, yc, debiased)
    return _normalise(xy, xx, yy)


def _normalise(xy: Tensor, xx: Tensor, yy: Tensor) -> Tensor:
    denom = (xx * yy).clamp_min(0).sqrt()
    if float(denom) == 0.0:
        raise SimilarityInputError(
            "CKA is undefined: one input has no variance across samples (constant rows)"
        )
    return xy / denom


def center_gram(gram: Float[Tensor, "n n"], unbiased: bool = False) -> Float[Tensor, "n n"]:
    """Doubly centre a symmetric Gram matrix (``H K H``), or U-centre it (zero diagonal,
    Szekely & Rizzo 2014) so that ``<U(K), U(L)> / (n (n - 3))`` is the unbiased HSIC."""
    n = gram.shape[0]
    if not unbiased:
        col = gram.mean(0)
        return gram - col[:, None] - col[None, :] + col.mean()
    g = gram.clone()
    g.fill_diagonal_(0)
    col = g.sum(0) / (n - 2)
    col = col - col.sum() / (2 * (n - 1))
    g = g - col[:, None] - col[None, :]
    g.fill_diagonal_(0)
    return g


def kernel_cka(
    gram_x: Float[Tensor, "n n"], gram_y: Float[Tensor, "n n"], debiased: bool = False
) -> Float[Tensor, ""]:
    """CKA from two (uncentred) symmetric Gram matrices."""
    if gram_x.shape != gram_y.shape or gram_x.ndim != 2 or gram_x.shape[0] != gram_x.shape[1]:
        raise SimilarityInputError(
            f"Gram matrices must be square and the same size: got {tuple(gram_x.shape)} "
            f"and {tuple(gram_y.shape)}"
        )
    if debiased and gram_x.shape[0] < 4:
        raise SimilarityInputError("debiased CKA needs at least 4 samples")
    kx, ky = center_gram(gram_x, debiased), center_gram(gram_y, debiased)
    return _normalise((kx * ky).sum(), (kx * kx).sum(), (ky * ky).sum())


def squared_distances(x: Float[Tensor, "n d"]) -> Float[Tensor, "n n"]:
    """Squared Euclidean distances between rows (centred first, exact zeros on the
    diagonal, clamped at 0)."""
    xc = center(x)
    sq = xc.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * (xc @ xc.T)).clamp_min(0)
    d2.fill_diagonal_(0)
    return d2


def median_of_distances(d2: Float[Tensor, "n n"]) -> Tensor:
    """numpy's median (mean of the two middle values for an even count) of all n^2 entries
    of a symmetric, non-negative matrix with a zero diagonal, found from its upper
    triangle alone: the full multiset is n zeros plus every upper entry twice."""
    n = d2.shape[0]
    iu = torch.triu_indices(n, n, offset=1, device=d2.device)
    upper = d2[iu[0], iu[1]]

    def rank(k: int) -> int:  # k-th smallest (1-based) of all n^2 entries is upper's rank()
        return (k - n + 1) // 2 if k > n else 0

    total = n * n
    lo_k, hi_k = (total + 1) // 2, total // 2 + 1
    lo_r, hi_r = rank(lo_k), rank(hi_k)
    lo = upper.kthvalue(lo_r).values if lo_r else d2.new_zeros(())
    if hi_r == lo_r:
        hi = lo
    elif int((upper <= lo).sum()) >= hi_r:  # ties: the next rank has the same value
        hi = lo
    else:
        hi = upper[upper > lo].min()
    return (lo + hi) / 2


def rbf_gram(x: Tensor, threshold: float = 1.0) -> Float[Tensor, "n n"]:
    """RBF Gram matrix ``exp(-|xi - xj|^2 / (2 sigma^2))`` with Kornblith et al.'s
    bandwidth: ``sigma^2 = threshold^2 * median`` of the squared distances (the median over
    all n^2 entries, diagonal included, as in their code)."""
    x = check_matrix(x)
    if threshold <= 0:
        raise SimilarityInputError(f"threshold must be positive, got {threshold}")
    d2 = squared_distances(x)
    med = median_of_distances(d2)
    if float(med) == 0.0:
        raise SimilarityInputError(
            "RBF bandwidth is 0: the median squared distance between samples is 0 "
            "(more than half the pairs of rows are identical)"
        )
    return torch.exp(-d2 / (2 * threshold**2 * med))


def rbf_cka(
    x: Tensor, y: Tensor, threshold: float = 1.0, debiased: bool = False
) -> Float[Tensor, ""]:
    """CKA with RBF kernels whose bandwidth is ``threshold`` x the median distance."""
    x, y = check_pair(x, y, min_rows=4 if debiased else 2)
    return kernel_cka(rbf_gram(x, threshold), rbf_gram(y, threshold), debiased)


class MinibatchCKA:
    """Linear CKA over a dataset seen in minibatches (Nguyen, Raghu & Kornblith 2021):
    unbiased HSIC is accumulated batch by batch, so only one batch is ever in memory.

    Works on stacks of layers, giving the whole layer-by-layer matrix at once::

        acc = MinibatchCKA()
        for xs, ys in batches:           # xs: (layer_x, batch, d1), ys: (layer_y, batch, d2)
            acc.update(xs, ys)           # ys=None compares xs with itself
        matrix = acc.compute()           # (layer_x, layer_y)

    Each batch must have at least 4 samples. The estimate is the ratio of averaged
    unbiased HSICs, not the CKA of the whole dataset; it converges to the population CKA
    and does not depend on the batch size in expectation. Inputs may also be single
    matrices (batch, d); ``compute`` then returns a 0-d tensor.
    """

    def __init__(self) -> None:
        self._sums: tuple[Tensor, Tensor, Tensor] | None = None  # HSIC(x, y), (x, x), (y, y)
        self._single = False
        self.batches = 0

    @staticmethod
    def _grams(stack: Tensor, name: str) -> Tensor:
        if stack.ndim != 3:
            raise SimilarityInputError(
                f"{name} must be (batch, d) or (layer, batch, d), got {tuple(stack.shape)}"
            )
        for layer in range(stack.shape[0]):
            check_matrix(stack[layer], f"{name}[{layer}]", min_rows=4)
        xc = stack - stack.mean(1, keepdim=True)
        grams = xc @ xc.transpose(1, 2)
        return torch.stack([center_gram(g, unbiased=True) for g in grams]).flatten(1)

    def update(self, xs: Tensor, ys: Tensor | None = None) -> None:
        """Add one minibatch (the same samples in ``xs`` and ``ys``)."""
        single = xs.ndim == 2
        if self.batches and single != self._single:
            raise SimilarityInputError("mixing single matrices and layer stacks across batches")
        self._single = single
        xs = xs[None] if single else xs
        if ys is not None:
            ys = ys[None] if ys.ndim == 2 else ys
            if ys.shape[1] != xs.shape[1]:
                raise SimilarityInputError(
                    f"xs and ys must hold the same samples: batch sizes {xs.shape[1]} and "
                    f"{ys.shape[1]}"
                )
        dtype = xs.dtype if ys is None else torch.promote_types(xs.dtype, ys.dtype)
        gx = self._grams(xs.to(dtype), "xs")
        gy = gx if ys is None else self._grams(ys.to(dtype), "ys")
        b = xs.shape[1]
        scale = 1.0 / (b * (b - 3))  # unbiased HSIC, so unequal batches weigh alike
        xy, xx, yy = (gx @ gy.T) * scale, gx.pow(2).sum(1) * scale, gy.pow(2).sum(1) * scale
        if self._sums is None:
            self._sums = (xy, xx, yy)
        else:
            sxy, sxx, syy = self._sums
            if xy.shape != sxy.shape:
                raise SimilarityInputError(
                    f"this batch gives a {tuple(xy.shape)} matrix, earlier ones "
                    f"{tuple(sxy.shape)}: the number of layers changed"
                )
            self._sums = (sxy + xy, sxx + xx, syy + yy)
        self.batches += 1

    def compute(self) -> Tensor:
        """The CKA estimate: ``(layer_x, layer_y)``, or 0-d for single matrices."""
        if self._sums is None:
            raise SimilarityInputError("MinibatchCKA.compute() before any update()")
        xy, xx, yy = self._sums
        out = xy / (xx[:, None] * yy[None, :]).clamp_min(0).sqrt()
        return out[0, 0] if self._single else out
