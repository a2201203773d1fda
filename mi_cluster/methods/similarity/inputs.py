"""Input checks shared by every similarity metric.

Convention: an activation matrix is ``Float[Tensor, "n d"]``: one row per sample (token),
one column per neuron (feature). The ecco-compatible functions in
:mod:`mi_cluster.methods.similarity.ecco` are the only exception (they take ``(neurons, tokens)``,
as ecco does).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


class SimilarityInputError(ValueError):
    """An input a similarity metric cannot use: wrong rank, disagreeing shapes, non-finite
    values, or too few samples for the metric."""


def check_matrix(x: Tensor, name: str = "x", min_rows: int = 2) -> Float[Tensor, "n d"]:
    """``x`` as a floating 2-D tensor; errors name the argument and the problem."""
    if not isinstance(x, Tensor):
        raise SimilarityInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise SimilarityInputError(
            f"{name} must be 2-D (n samples, d neurons), got shape {tuple(x.shape)}"
        )
    if x.is_complex():
        raise SimilarityInputError(f"{name} is complex; similarity metrics take real tensors")
    if not x.is_floating_point():
        x = x.double()
    elif x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # half precision overflows in Gram products: computed in float32
    if x.shape[0] < min_rows:
        raise SimilarityInputError(
            f"{name} has {x.shape[0]} samples (rows); this metric needs at least {min_rows}"
        )
    if x.shape[1] < 1:
        raise SimilarityInputError(f"{name} has no neurons (columns)")
    bad = ~torch.isfinite(x)
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise SimilarityInputError(
            f"{name} has {int(bad.sum())} non-finite values (NaN or inf), "
            f"the first at row {row}, column {col}"
        )
    return x


def check_pair(
    x: Tensor, y: Tensor, min_rows: int = 2, same_width: bool = False
) -> tuple[Float[Tensor, "n d1"], Float[Tensor, "n d2"]]:
    """Check ``x`` and ``y`` and bring them to a common dtype (the wider of the two)."""
    x = check_matrix(x, "x", min_rows)
    y = check_matrix(y, "y", min_rows)
    if x.shape[0] != y.shape[0]:
        raise SimilarityInputError(
            f"x and y must have the same number of samples (rows): x is {tuple(x.shape)}, "
            f"y is {tuple(y.shape)}. Rows are samples/tokens, columns are neurons."
        )
    if same_width and x.shape[1] != y.shape[1]:
        raise SimilarityInputError(
            f"x and y must have the same number of neurons (columns): x is "
            f"{tuple(x.shape)}, y is {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise SimilarityInputError(f"x is on {x.device} but y is on {y.device}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype)


def require_more_samples_than_features(x: Tensor, name: str, metric: str, hint: str) -> None:
    """CCA-style metrics are trivially 1 when the centred data span every direction."""
    n, d = x.shape
    if n <= d:
        raise SimilarityInputError(
            f"{metric} needs more samples than neurons, but {name} has n={n} samples and "
            f"d={d} neurons (rows are samples). With n <= d every canonical correlation is "
            f"trivially 1. If your matrix is (neurons, samples), transpose it; otherwise "
            f"{hint}."
        )


def no_variation(centred_sq: Tensor, raw_sq: Tensor, dtype: torch.dtype) -> Tensor:
    """Which inputs are constant across samples: their centred squared norm is rounding
    noise (below ``(64 eps)^2``) beside their raw squared norm (all zeros counts too)."""
    return centred_sq <= (64 * torch.finfo(dtype).eps) ** 2 * raw_sq


def require_variation(x: Float[Tensor, "n d"], name: str) -> None:
    """Refuse an input that is the same for every sample (a metric of its geometry is
    undefined: 0/0), naming it."""
    if bool(no_variation(center(x).pow(2).sum(), x.pow(2).sum(), x.dtype)):
        raise SimilarityInputError(
            f"{name} has no variance across samples (every row the same): similarity to it "
            "is undefined"
        )


def center(x: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
    """Subtract each column's mean (done before any product, for float32 accuracy)."""
    return x - x.mean(dim=0, keepdim=True)
