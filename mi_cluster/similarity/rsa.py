"""Representational similarity analysis (Kriegeskorte et al. 2008).

A representational dissimilarity matrix (RDM) holds the dissimilarity of every pair of
samples; two representations of the same samples are compared by correlating the upper
triangles of their RDMs. Because only sample-by-sample geometry enters, the two inputs may
have any widths (e.g. GPT-2's 768 against BERT's 384).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.similarity.cka import squared_distances
from mi_cluster.similarity.inputs import SimilarityInputError, check_matrix, check_pair

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
