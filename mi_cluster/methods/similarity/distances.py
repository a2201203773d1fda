"""Distances between representations that are not CKA/CCA/RSA: orthogonal Procrustes,
per-token cosine similarity, divergences between next-token distributions, and the
difference of singular-value spectra."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.methods.similarity.inputs import (
    SimilarityInputError,
    center,
    check_matrix,
    check_pair,
)


def procrustes_distance(x: Tensor, y: Tensor) -> Float[Tensor, ""]:
    """Orthogonal Procrustes distance (Ding et al. 2021; Williams et al. 2021) between
    ``x`` (n, d1) and ``y`` (n, d2): both centred and scaled to unit Frobenius norm, then
    ``sqrt(min_Q ||X - Y Q||_F^2) = sqrt(2 - 2 ||X^T Y||_*)`` over orthogonal ``Q`` (the
    narrower input is zero-padded). 0 for inputs equal up to rotation, translation and
    scale; at most sqrt(2). scipy's ``procrustes`` disparity is ``1 - ||X^T Y||_*^2``."""
    x, y = check_pair(x, y)
    return procrustes_of_normalised(unit_centred(x, "x"), unit_centred(y, "y"))


def unit_centred(x: Float[Tensor, "n d"], name: str) -> Float[Tensor, "n d"]:
    """``x`` centred and scaled to unit Frobenius norm (Procrustes' normal form)."""
    xc = center(x)
    norm = xc.norm()
    if float(norm) == 0:
        raise SimilarityInputError(
            f"Procrustes distance is undefined: {name} is constant across samples"
        )
    return xc / norm


def procrustes_of_normalised(a: Tensor, b: Tensor) -> Float[Tensor, ""]:
    """Procrustes distance between two inputs already in :func:`unit_centred` form."""
    nuclear = torch.linalg.svdvals(a.T @ b).sum()
    return (2 - 2 * nuclear).clamp_min(0).sqrt()


def token_cosine(x: Tensor, y: Tensor) -> Float[Tensor, " n"]:
    """Cosine similarity of each row of ``x`` with the same row of ``y`` (same width)."""
    x, y = check_pair(x, y, min_rows=1, same_width=True)
    nx, ny = x.norm(dim=1), y.norm(dim=1)
    zero = (nx == 0) | (ny == 0)
    if bool(zero.any()):
        raise SimilarityInputError(
            f"row {int(zero.nonzero()[0])} is a zero vector in x or y: cosine is undefined"
        )
    return (x * y).sum(1) / (nx * ny)


def _check_logits(p: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    if p.shape != q.shape:
        raise SimilarityInputError(
            f"logits must have the same shape (..., vocab): got {tuple(p.shape)} and "
            f"{tuple(q.shape)}"
        )
    if p.ndim == 0 or p.shape[-1] < 2:
        raise SimilarityInputError(f"logits need a vocabulary axis last, got {tuple(p.shape)}")
    for name, t in (("logits_p", p), ("logits_q", q)):
        if not bool(torch.isfinite(t).all()):
            raise SimilarityInputError(f"{name} has NaN or inf values")
    dtype = torch.promote_types(p.dtype, q.dtype)
    return p.to(dtype), q.to(dtype)


def kl_from_log_probs(lp: Tensor, lq: Tensor) -> Float[Tensor, "..."]:
    """``KL(P || Q)`` in nats from log-probabilities ``(..., vocab)`` (for callers that
    already hold them; :func:`kl_divergence` takes logits)."""
    return (lp.exp() * (lp - lq)).sum(-1).clamp_min(0)


def js_from_log_probs(lp: Tensor, lq: Tensor) -> Float[Tensor, "..."]:
    """Jensen-Shannon divergence in nats from log-probabilities ``(..., vocab)``."""
    lm = torch.logsumexp(torch.stack([lp, lq]), 0) - math.log(2)
    js = 0.5 * ((lp.exp() * (lp - lm)).sum(-1) + (lq.exp() * (lq - lm)).sum(-1))
    return js.clamp(0, math.log(2))


def kl_divergence(logits_p: Tensor, logits_q: Tensor) -> Float[Tensor, "..."]:
    """``KL(P || Q)`` in nats between the softmax distributions of two logit tensors
    ``(..., vocab)``, one value per leading index (e.g. per token). Computed from log-softmax,
    so it is finite for any finite logits."""
    p, q = _check_logits(logits_p, logits_q)
    return kl_from_log_probs(torch.log_softmax(p, -1), torch.log_softmax(q, -1))


def js_divergence(logits_p: Tensor, logits_q: Tensor) -> Float[Tensor, "..."]:
    """Jensen-Shannon divergence in nats (between 0 and ln 2), per leading index.
    ``scipy.spatial.distance.jensenshannon`` returns its square root."""
    p, q = _check_logits(logits_p, logits_q)
    return js_from_log_probs(torch.log_softmax(p, -1), torch.log_softmax(q, -1))


def spectrum_distance(
    x: Tensor, y: Tensor, centered: bool = True, normalize: bool = False
) -> Float[Tensor, ""]:
    """Euclidean norm of the difference of the singular-value spectra of ``x`` and ``y``
    (descending; the shorter spectrum is padded with zeros). ``centered``: of the
    column-centred inputs. ``normalize``: each spectrum divided by its norm first (the
    Frobenius norm of the input), so only the spectrum's shape counts. The two inputs may
    have different numbers of samples and neurons."""
    x, y = check_matrix(x, "x"), check_matrix(y, "y")
    if x.device != y.device:
        raise SimilarityInputError(f"x is on {x.device} but y is on {y.device}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    sx = torch.linalg.svdvals(center(x) if centered else x).to(dtype)
    sy = torch.linalg.svdvals(center(y) if centered else y).to(dtype)
    if normalize:
        sx, sy = sx / sx.norm(), sy / sy.norm()
    k = max(sx.shape[0], sy.shape[0])
    sx = torch.nn.functional.pad(sx, (0, k - sx.shape[0]))
    sy = torch.nn.functional.pad(sy, (0, k - sy.shape[0]))
    return (sx - sy).norm()
