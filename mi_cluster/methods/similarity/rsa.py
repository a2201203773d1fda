"""Representational similarity analysis (Kriegeskorte et al. 2008).

A representational dissimilarity matrix (RDM) holds the dissimilarity of every pair of
samples; two representations of the same samples are compared by correlating the upper
triangles of their RDMs. Because only sample-by-sample geometry enters, the two inputs may
have any widths (e.g. GPT-2's 768 against BERT's 384).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.methods.similarity.cka import squared_distances
from mi_cluster.methods.similarity.inputs import SimilarityInputError, check_matrix, check_pair

RDM_METRICS = ("correlation", "cosine", "euclidean")
COMPARISONS = ("spearman", "pearson")


def rdm(x: Tensor, metric: str = "correlation") -> Float[Tensor, " pair"]:
    """The upper triangle (``i < j``, row by row, as ``scipy.spatial.distance.pdist``) of
    the RDM of ``x`` (n, d): ``1 - Pearson r`` between rows (``"correlation"``),
    ``1 - cosine`` (``"cosine"``) or Euclidean distance (``"euclidean"``)."""
    x = check_matrix(x)
    if metric not in RDM_METRICS:
        raise SimilarityInputError(f"unknown RDM metric {metric!r}; use one of {RDM_METRICS}")
    n = x.shape[0]
    iu = torch.triu_indices(n, n, offset=1, device=x.device)
    if metric == "euclidean":
        return squared_distances(x)[iu[0], iu[1]].sqrt()
    rows = x - x.mean(1, keepdim=True) if metric == "correlation" else x
    norms = rows.norm(dim=1)
    if bool((norms == 0).any()):
        bad = int((norms == 0).nonzero()[0])
        what = "constant" if metric == "correlation" else "all zero"
        raise SimilarityInputError(
            f"row {bad} of x is {what}: its {metric} dissimilarity is undefined"
        )
    unit = rows / norms[:, None]
    return (1 - unit @ unit.T)[iu[0], iu[1]]


def average_ranks(v: Float[Tensor, " m"]) -> Float[Tensor, " m"]:
    """Ranks 1..m, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    order = torch.argsort(v)
    sorted_v = v[order]
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(v.dtype)
    mean_rank = ends - (counts.to(v.dtype) - 1) / 2
    ranks = torch.empty_like(v)
    ranks[order] = mean_rank[inverse]
    return ranks


def compare_rdms(a: Tensor, b: Tensor, method: str = "spearman") -> Float[Tensor, ""]:
    """Pearson or Spearman correlation between two condensed RDMs."""
    if method not in COMPARISONS:
        raise SimilarityInputError(f"unknown RDM comparison {method!r}; use one of {COMPARISONS}")
    if a.shape != b.shape or a.ndim != 1:
        raise SimilarityInputError(
            f"RDMs must be condensed vectors of the same length, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    if method == "spearman":
        a, b = average_ranks(a), average_ranks(b)
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    if float(denom) == 0:
        raise SimilarityInputError("an RDM is constant: its correlation is undefined")
    return (a @ b) / denom


def rsa(
    x: Tensor, y: Tensor, rdm_metric: str = "correlation", compare: str = "spearman"
) -> Float[Tensor, ""]:
    """RSA score between ``x`` (n, d1) and ``y`` (n, d2): the ``compare`` correlation of
    their ``rdm_metric`` RDMs. Needs n >= 3 (at least 3 pairs)."""
    x, y = check_pair(x, y, min_rows=3)
    return compare_rdms(rdm(x, rdm_metric), rdm(y, rdm_metric), compare)


@dataclass(frozen=True)
class MantelResult:
    """A Mantel test of two square (dis)similarity matrices over the same items.

    Fields:
        r: ``Float[Tensor, "layer"]``, the correlation of the upper triangles (the RSA
            score; Pearson or Spearman).
        p_value: ``Float[Tensor, "layer"]``, the share of item relabellings of the second
            matrix (rows and columns permuted together) giving a correlation at least as
            large (``alternative="greater"``), as in ``scipy.stats.permutation_test``.
        null_high: the 95th percentile of the permutation null per layer.
        method: ``"pearson"`` or ``"spearman"``.
        n_permutations: relabellings used (all ``n!`` when ``exact``).
        exact: whether every relabelling was enumerated.
    """

    r: Float[Tensor, " layer"]
    p_value: Float[Tensor, " layer"]
    null_high: Float[Tensor, " layer"]
    method: str
    n_permutations: int
    exact: bool


def _square_stack(m: Tensor, name: str) -> Tensor:
    if not isinstance(m, Tensor) or m.ndim not in (2, 3) or m.shape[-1] != m.shape[-2]:
        shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
        raise SimilarityInputError(
            f"{name} must be a square matrix [n, n] or a stack [layer, n, n], got {shape}"
        )
    m = m if m.is_floating_point() else m.double()
    if not bool(torch.isfinite(m).all()):
        raise SimilarityInputError(f"{name} has NaN or inf entries")
    if not torch.allclose(m, m.transpose(-1, -2), rtol=1e-5, atol=1e-6):
        raise SimilarityInputError(
            f"{name} is not symmetric: a Mantel test compares symmetric matrices"
        )
    return m if m.ndim == 3 else m[None]


def mantel_test(
    a: Tensor,
    b: Tensor,
    *,
    method: str = "pearson",
    alternative: str = "greater",
    n_permutations: int = 10_000,
    seed: int | torch.Generator | None = 0,
    max_memory: int = 256 * 2**20,
) -> MantelResult:
    """Mantel test: correlate the upper triangles of two symmetric ``[n, n]`` matrices
    (similarities or dissimilarities of the same ``n`` items, e.g. cosine similarity of word
    embeddings in two models), and compare with the correlations after relabelling the
    items of ``b`` (its rows and columns permuted together). Either argument may be a stack
    ``[layer, n, n]``; the same relabellings serve every layer."""
    from mi_cluster.methods.stats.resampling import (
        chunk_rows,
        make_generator,
        permutation_draws,
        permutation_p_value,
    )

    if method not in COMPARISONS:
        raise SimilarityInputError(f"unknown method {method!r}; use one of {COMPARISONS}")
    a, b = _square_stack(a, "a"), _square_stack(b, "b")
    if a.shape[-1] != b.shape[-1]:
        raise SimilarityInputError(f"a is over {a.shape[-1]} items and b over {b.shape[-1]}")
    if a.device != b.device:
        raise SimilarityInputError(f"a is on {a.device} but b is on {b.device}")
    n = a.shape[-1]
    if n < 4:
        raise SimilarityInputError(f"a Mantel test needs at least 4 items, got {n}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    iu = torch.triu_indices(n, n, offset=1, device=a.device)
    va, vb = a[:, iu[0], iu[1]], b[:, iu[0], iu[1]]  # [layer, pair]
    if method == "spearman":
        va = torch.stack([average_ranks(v) for v in va])
        vb = torch.stack([average_ranks(v) for v in vb])
    for name, v in (("a", va), ("b", vb)):
        if bool(((v - v.mean(-1, keepdim=True)).norm(dim=-1) == 0).any()):
            raise SimilarityInputError(f"{name}'s upper triangle is constant: r is undefined")
    za = va - va.mean(-1, keepdim=True)
    za = za / za.norm(dim=-1, keepdim=True)
    # b's ranks/values as a full symmetric matrix, so relabelling is a gather.
    full = torch.zeros_like(b)
    full[:, iu[0], iu[1]] = vb
    full = full + full.transpose(1, 2)
    orders = permutation_draws(n, n_permutations, make_generator(seed))
    exact = orders.exact
    item = torch.finfo(dtype).bits // 8
    rows = chunk_rows(iu.shape[1] * full.shape[0] * item * 4 + n * 8, max_memory)
    out = []
    for k, chunk in enumerate(orders.chunks(rows)):
        o = (torch.cat([torch.arange(n)[None], chunk]) if k == 0 else chunk).to(a.device)
        perm_b = full[:, o[:, iu[0]], o[:, iu[1]]]  # [layer_b, R, pair]
        zb = perm_b - perm_b.mean(-1, keepdim=True)
        zb = zb / zb.norm(dim=-1, keepdim=True)
        out.append((zb * za[:, None]).sum(-1))  # broadcast layers: [layer, R]
    stats = torch.cat(out, dim=1).T  # [1 + P, layer]
    observed, null = stats[0], stats[1:]
    p = permutation_p_value(null, observed, alternative, exact)  # type: ignore[arg-type]
    return MantelResult(
        r=observed,
        p_value=p,
        null_high=torch.quantile(null, 0.95, dim=0),
        method=method,
        n_permutations=null.shape[0],
        exact=exact,
    )
