"""Canonical correlation analysis and the two CCA-based similarities built on it.

- :func:`cca`: every canonical correlation between ``x`` (n, d1) and ``y`` (n, d2), with
  mean rho and mean rho^2 (Yanai's GCD); optional ridge regularisation.
- :func:`svcca` (Raghu et al. 2017): keep the singular directions of each (centred) input
  that explain 99% of its variance, or a fixed number, then CCA.
- :func:`pwcca` (Morcos et al. 2018): canonical correlations weighted by how much of ``x``
  each canonical direction accounts for.

Unregularised CCA needs more samples than directions: centring leaves ``n - 1`` degrees
of freedom, and two column spaces of ranks ``r_x`` and ``r_y`` inside them share at least
``r_x + r_y - (n - 1)`` directions, each a canonical correlation of exactly 1 whatever the
data. So a CCA with ``r_x + r_y > n - 1`` (SVCCA: of the kept directions) raises an error
naming the count instead of returning those 1s. Canonical correlations are computed as the singular
values of ``Qx^T Qy`` for orthonormal bases of the centred inputs (no covariance inverse,
so float32 stays accurate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.methods.similarity.inputs import (
    SimilarityInputError,
    center,
    check_pair,
    require_more_samples_than_features,
)


@dataclass(frozen=True)
class CCAResult:
    """Canonical correlations between two representations.

    Fields:
        rho: the canonical correlations, descending, in [0, 1]; ``min(dims_x, dims_y)``
            of them.
        mean_rho: their plain mean (the SVCCA similarity).
        mean_rho2: the mean of their squares (Yanai's generalised coefficient of
            determination).
        dims_x, dims_y: how many directions of each input entered the CCA (the rank of
            the centred input, or what SVCCA kept).
    """

    rho: Float[Tensor, " k"]
    mean_rho: Float[Tensor, ""]
    mean_rho2: Float[Tensor, ""]
    dims_x: int
    dims_y: int


def whitened_basis(x: Float[Tensor, "n d"], ridge: float = 0.0) -> Float[Tensor, "n r"]:
    """A basis ``A`` of the column space of the centred ``x`` with ``A^T A = I``
    (``ridge=0``; directions with singular value below the numerical rank tolerance are
    dropped), or the ridge-whitened data ``Xc (Xc^T Xc + lambda I)^(-1/2)`` with
    ``lambda = ridge * mean neuron variance * (n - 1)``."""
    xc = center(x)
    if ridge == 0:
        u, s, _ = torch.linalg.svd(xc, full_matrices=False)
        tol = s[0] * max(xc.shape) * torch.finfo(xc.dtype).eps
        return u[:, s > tol]
    cov = xc.T @ xc
    lam = ridge * cov.diagonal().mean()
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    evals, evecs = torch.linalg.eigh(cov + lam * eye)
    return xc @ (evecs * evals.clamp_min(torch.finfo(xc.dtype).tiny).rsqrt()) @ evecs.T


def require_cca_samples(x: Tensor, name: str, metric: str) -> None:
    """Unregularised CCA, PWCCA and SVCCA's final CCA need more samples than (kept)
    neurons in every input; the error says what to change for ``metric``."""
    if metric == "SVCCA":
        hint = "keep fewer directions (a lower variance or dims) or use more samples"
    else:
        hint = "use svcca (which reduces dimensions first) or pass ridge > 0"
    require_more_samples_than_features(x, name, metric, hint)


def _checked(x: Tensor, y: Tensor, ridge: float, metric: str) -> tuple[Tensor, Tensor]:
    x, y = check_pair(x, y, min_rows=3)
    if ridge < 0:
        raise SimilarityInputError(f"ridge must be >= 0, got {ridge}")
    if ridge == 0:
        require_cca_samples(x, "x", metric)
        require_cca_samples(y, "y", metric)
    return x, y


def _result(rho: Tensor, dims_x: int, dims_y: int) -> CCAResult:
    rho = rho.clamp(0, 1)
    return CCAResult(rho, rho.mean(), rho.pow(2).mean(), dims_x, dims_y)


def require_joint_rank(ax: Tensor, ay: Tensor, metric: str, hint: str) -> None:
    """Refuse bases whose ranks force canonical correlations of 1 (see the module)."""
    n, rx, ry = ax.shape[0], ax.shape[1], ay.shape[1]
    forced = rx + ry - (n - 1)
    if forced > 0:
        raise SimilarityInputError(
            f"{metric} is degenerate here: x spans {rx} and y {ry} directions among the "
            f"{n - 1} that {n} centred samples allow, so {forced} canonical correlation(s) "
            f"are exactly 1 whatever the data; {hint}"
        )


def _bases(x: Tensor, y: Tensor, ridge: float, metric: str, hint: str) -> tuple[Tensor, Tensor]:
    ax, ay = whitened_basis(x, ridge), whitened_basis(y, ridge)
    if ridge == 0:
        require_joint_rank(ax, ay, metric, hint)
    return ax, ay


def cca(x: Tensor, y: Tensor, ridge: float = 0.0) -> CCAResult:
    """All canonical correlations between ``x`` (n, d1) and ``y`` (n, d2). Invariant to
    any invertible linear map of either input (``ridge=0``). Unregularised, it needs
    ``rank(x) + rank(y) <= n - 1`` (else correlations of 1 are forced: refused)."""
    x, y = _checked(x, y, ridge, "CCA")
    ax, ay = _bases(x, y, ridge, "CCA", "use more samples, svcca with fewer dims, or ridge > 0")
    return _result(torch.linalg.svdvals(ax.T @ ay), ax.shape[1], ay.shape[1])


def svd_reduce(
    x: Float[Tensor, "n d"], variance: float = 0.99, dims: int | None = None
) -> Float[Tensor, "n k"]:
    """The centred ``x`` projected on its top singular directions: the fewest that explain
    ``variance`` of the total, or exactly ``dims``."""
    u, s, _ = torch.linalg.svd(center(x), full_matrices=False)
    if dims is None:
        if not 0 < variance <= 1:
            raise SimilarityInputError(f"variance must be in (0, 1], got {variance}")
        share = torch.cumsum(s.pow(2), 0) / s.pow(2).sum()
        dims = int((share < variance - 1e-12).sum()) + 1
    elif not 1 <= dims <= s.shape[0]:
        raise SimilarityInputError(
            f"dims={dims} is outside 1..{s.shape[0]} (min of samples and neurons)"
        )
    return u[:, :dims] * s[:dims]


def svcca(x: Tensor, y: Tensor, variance: float = 0.99, dims: int | None = None) -> CCAResult:
    """SVCCA: reduce each input to the singular directions explaining ``variance`` of its
    variance (or to ``dims`` directions), then CCA. Needs more samples than kept
    directions."""
    x, y = check_pair(x, y, min_rows=3)
    xr, yr = svd_reduce(x, variance, dims), svd_reduce(y, variance, dims)
    require_cca_samples(xr, "x after the SVD step", "SVCCA")
    require_cca_samples(yr, "y after the SVD step", "SVCCA")
    hint = "keep fewer directions (a lower variance or dims) or use more samples"
    ax, ay = _bases(xr, yr, 0.0, "SVCCA", hint)
    return _result(torch.linalg.svdvals(ax.T @ ay), ax.shape[1], ay.shape[1])


def pwcca_from_bases(
    x: Float[Tensor, "n d1"], ax: Float[Tensor, "n r1"], ay: Float[Tensor, "n r2"]
) -> Float[Tensor, ""]:
    """PWCCA given the whitened bases of both inputs and ``x`` itself."""
    u, rho, _ = torch.linalg.svd(ax.T @ ay, full_matrices=False)
    h = ax @ u  # canonical variates of x, one column per correlation
    h = h / h.norm(dim=0, keepdim=True)
    alpha = (h.T @ center(x)).abs().sum(1)
    alpha = alpha / alpha.sum()
    return (alpha * rho.clamp(0, 1)).sum()


def pwcca(x: Tensor, y: Tensor, ridge: float = 0.0) -> Float[Tensor, ""]:
    """Projection-weighted CCA (Morcos et al. 2018): ``sum_i alpha_i rho_i`` with
    ``alpha_i`` proportional to ``sum_j |<h_i, x_j>|``, the canonical variates ``h_i`` of
    ``x`` against its centred neurons ``x_j``. Asymmetric: the weights come from ``x``."""
    x, y = _checked(x, y, ridge, "PWCCA")
    ax, ay = _bases(x, y, ridge, "PWCCA", "use more samples or pass ridge > 0")
    return pwcca_from_bases(x, ax, ay)
