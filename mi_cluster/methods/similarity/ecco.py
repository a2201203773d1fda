"""Functions that reproduce ``ecco.analysis.cka / cca / svcca / pwcca``.

They are for users reproducing published ecco notebooks. They are *not* the
paper-faithful metrics of :mod:`mi_cluster.methods.similarity`; the differences are kept on purpose:

- inputs are ``(neurons, tokens)``, ecco's layout (the rest of mi_cluster uses
  ``(tokens, neurons)``);
- :func:`ecco_cca` runs Google's ``cca_core.get_cca_similarity`` procedure (sample
  covariance rescaled by its largest entry, neurons with variance below ``epsilon=1e-10``
  dropped, ``epsilon`` added to the diagonal, pseudo-inverse square roots) and returns
  its ``"mean"``: the mean of only the leading coefficients whose cumulative sum first
  reaches 98% of the total, not the plain mean;
- :func:`ecco_svcca` keeps a fixed 20 singular directions of the centred activations,
  then CCA, and returns the plain mean of all coefficients;
- :func:`ecco_pwcca` is Google's ``compute_pwcca``: its weights use activations with the
  neuron means added back (uncentred), and it fails when the first argument has more
  neurons than the second (raised here as a clear error);
- :func:`ecco_cka` is biased linear CKA.

CCA-based variants compute in float64 (``np.cov`` promotes to float64) on the inputs'
device. ``ecco_pwcca`` depends on the signs of one SVD's singular vectors, which LAPACK
builds choose differently; that single small SVD (neurons x neurons) runs in numpy so the
result matches ecco's to rounding.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.methods.similarity.cka import linear_cka
from mi_cluster.methods.similarity.inputs import SimilarityInputError, check_matrix

ECCO_EPSILON = 1e-10
ECCO_THRESHOLD = 0.98


def _neurons_by_tokens(acts1, acts2, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    a = torch.as_tensor(acts1)
    b = torch.as_tensor(acts2)
    a = check_matrix(a, "acts1").to(dtype)
    b = check_matrix(b, "acts2").to(dtype)
    if a.shape[0] >= a.shape[1]:
        raise SimilarityInputError(
            f"acts1 is {tuple(a.shape)}: ecco's CCA needs fewer neurons (rows) than tokens "
            f"(columns). If it is (tokens, neurons), transpose it."
        )
    if a.shape[1] != b.shape[1]:
        raise SimilarityInputError(
            f"acts1 {tuple(a.shape)} and acts2 {tuple(b.shape)} must have the same number of "
            f"tokens (columns: ecco's layout is (neurons, tokens))"
        )
    return a, b.to(a.device)


def _inv_sqrt(sigma: Tensor) -> Tensor:
    inv = torch.linalg.pinv(sigma, rtol=1e-15, hermitian=False)
    w, v = torch.linalg.eigh(inv)
    return v @ torch.diag(w.sqrt()) @ v.T


def _google_cca(a: Tensor, b: Tensor, epsilon: float):
    """Google's get_cca_similarity core: canonical correlations and what pwcca needs."""
    nx = a.shape[0]
    both = torch.cat([a, b])
    centred = both - both.mean(1, keepdim=True)
    cov = centred @ centred.T / (both.shape[1] - 1)
    sxx, sxy, syy = cov[:nx, :nx], cov[:nx, nx:], cov[nx:, nx:]
    xmax, ymax = sxx.abs().max(), syy.abs().max()
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / (xmax * ymax).sqrt()
    keep_x = sxx.diagonal().abs() >= epsilon
    keep_y = syy.diagonal().abs() >= epsilon
    if not bool(keep_x.any()) or not bool(keep_y.any()):
        return None
    sxx, syy = sxx[keep_x][:, keep_x], syy[keep_y][:, keep_y]
    sxy = sxy[keep_x][:, keep_y]
    sxx = sxx + epsilon * torch.eye(sxx.shape[0], dtype=a.dtype, device=a.device)
    syy = syy + epsilon * torch.eye(syy.shape[0], dtype=a.dtype, device=a.device)
    arr = _inv_sqrt(sxx) @ sxy @ _inv_sqrt(syy)
    return arr, keep_x, keep_y


def _sum_threshold(s: Tensor, threshold: float) -> int | None:
    total = s.sum()
    partial = torch.cat([s.new_zeros(1), torch.cumsum(s, 0)[:-1]])
    hit = (partial / total >= threshold).nonzero()
    return int(hit[0]) if hit.numel() else None


def ecco_cca(acts1, acts2) -> Float[Tensor, ""]:
    """``ecco.analysis.cca``: mean of the leading CCA coefficients reaching 98% of their
    sum. Inputs ``(neurons, tokens)``."""
    a, b = _neurons_by_tokens(acts1, acts2)
    core = _google_cca(a, b, ECCO_EPSILON)
    if core is None:
        return a.new_zeros(())
    s = torch.linalg.svdvals(core[0]).abs()
    return s[: _sum_threshold(s, ECCO_THRESHOLD)].mean()


def ecco_svcca(acts1, acts2, dims: int = 20) -> Float[Tensor, ""]:
    """``ecco.analysis.svcca``: the top ``dims`` singular directions of each centred input,
    then the plain mean of all CCA coefficients. Inputs ``(neurons, tokens)``."""
    a, b = _neurons_by_tokens(acts1, acts2)
    reduced = []
    for name, m in (("acts1", a), ("acts2", b)):
        if dims > min(m.shape):
            raise SimilarityInputError(
                f"dims={dims} exceeds {name}'s {min(m.shape)} singular directions"
            )
        _, s, vh = torch.linalg.svd(m - m.mean(1, keepdim=True), full_matrices=False)
        reduced.append(s[:dims, None] * vh[:dims])
    core = _google_cca(reduced[0], reduced[1], ECCO_EPSILON)
    if core is None:
        return a.new_zeros(())
    return torch.linalg.svdvals(core[0]).abs().mean()


def ecco_pwcca(acts1, acts2) -> Float[Tensor, ""]:
    """``ecco.analysis.pwcca`` (Google's ``compute_pwcca``). Inputs ``(neurons, tokens)``;
    the first must not have more neurons than the second."""
    a, b = _neurons_by_tokens(acts1, acts2)
    core = _google_cca(a, b, ECCO_EPSILON)
    if core is None:
        return a.new_zeros(())
    arr, keep_x, keep_y = core
    if int(keep_x.sum()) > int(keep_y.sum()):
        raise SimilarityInputError(
            f"ecco's pwcca fails when acts1 has more neurons than acts2 ({int(keep_x.sum())} > "
            f"{int(keep_y.sum())} after dropping constant ones): Google's compute_pwcca "
            f"indexes acts1 with acts2's mask. Pass the smaller one first, or use "
            f"mi_cluster.methods.similarity.pwcca."
        )
    u, s, _ = np.linalg.svd(arr.cpu().numpy())  # numpy: ecco's singular-vector signs
    u = torch.from_numpy(u).to(a.device)
    s = torch.from_numpy(np.abs(s)).to(a.device)
    acts = a[keep_x]
    means = acts.mean(1, keepdim=True)
    dirns = u.T @ (acts - means) + means
    p, _ = torch.linalg.qr(dirns.T)
    weights = (p.T @ acts.T).abs().sum(1)
    weights = weights / weights.sum()
    return (weights * s).sum()


def ecco_cka(acts1, acts2) -> Float[Tensor, ""]:
    """``ecco.analysis.cka``: biased linear CKA. Inputs ``(neurons, tokens)``."""
    a, b = torch.as_tensor(acts1), torch.as_tensor(acts2)
    if a.ndim != 2 or b.ndim != 2:
        raise SimilarityInputError(
            f"acts1 and acts2 must be 2-D (neurons, tokens), got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    return linear_cka(a.T, b.T)
