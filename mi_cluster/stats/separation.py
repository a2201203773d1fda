"""How well two groups of representations (names vs objects) separate, per layer, with
a label-permutation test and bootstrap intervals over units.

Statistics (all scale-free, so layers with larger residual norms are comparable):

- ``"centroid"``: distance between the group centroids over the root-mean-square distance
  of rows to their own centroid;
- ``"variance_ratio"``: between- over within-group variance, ``(BSS / 1) / (WSS / (n-2))``
  (the Calinski-Harabasz score for two groups);
- ``"silhouette"``: the mean silhouette width on Euclidean distances;
- ``"probe"``: held-out accuracy of a ridge probe with whole units held out.

Each is computed from row weights and group labels (a row drawn twice in a bootstrap
resample weighs 2, exactly as if it were duplicated), so one formula serves the data, every
permutation of the labels and every bootstrap resample, batched over layers and resamples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mi_cluster.stats.corrections import benjamini_hochberg, holm
from mi_cluster.stats.inputs import StatsInputError, check_labels, check_layered, check_units
from mi_cluster.stats.probe import fold_hats, unit_folds
from mi_cluster.stats.resampling import (
    DEFAULT_MAX_MEMORY,
    BootstrapInterval,
    Seed,
    bootstrap_interval,
    chunked,
    label_permutations,
    make_generator,
    permutation_p_value,
)

__all__ = [
    "STATISTICS",
    "SeparationTest",
    "centroid_separation",
    "separation_test",
    "silhouette",
    "variance_ratio",
]

Statistic = Literal["centroid", "variance_ratio", "silhouette", "probe"]
STATISTICS: tuple[str, ...] = ("centroid", "variance_ratio", "silhouette", "probe")


def _quad(g: Tensor, v: Tensor) -> Tensor:
    """``v_r^T G_l v_r`` for every layer ``l`` and weight vector ``r``: ``[layer, R]``."""
    return (torch.matmul(v, g) * v).sum(-1)


def _centroid_family(
    gram: Float[Tensor, "layer n n"], w: Float[Tensor, "R n"], a: Bool[Tensor, "R n"], kind: str
) -> Float[Tensor, "layer R"]:
    wa, wb = w * a, w * ~a
    na, nb = wa.sum(-1), wb.sum(-1)
    dist2 = _quad(gram, wa / na[:, None] - wb / nb[:, None]).clamp_min(0)
    diag = gram.diagonal(dim1=1, dim2=2)  # [layer, n]
    wss = (diag @ w.T) - _quad(gram, wa) / na - _quad(gram, wb) / nb
    wss = wss.clamp_min(torch.finfo(gram.dtype).tiny)
    total = na + nb
    if kind == "centroid":
        return dist2.sqrt() / (wss / total).sqrt()
    return (na * nb / total) * dist2 / (wss / (total - 2))


def _silhouette_family(
    dist: Float[Tensor, "layer n n"], w: Float[Tensor, "R n"], a: Bool[Tensor, "R n"]
) -> Float[Tensor, "layer R"]:
    wa, wb = w * a, w * ~a
    na, nb = wa.sum(-1), wb.sum(-1)  # [R]
    to_a, to_b = dist @ wa.T, dist @ wb.T  # [layer, n, R]: weighted distance sums
    at = a.T  # [n, R]
    own = torch.where(at, to_a, to_b)
    other = torch.where(at, to_b, to_a)
    n_own = torch.where(at, na, nb)
    n_other = torch.where(at, nb, na)
    mean_own = own / (n_own - 1).clamp_min(1)  # the row itself is one of its group's copies
    mean_other = other / n_other
    denom = torch.maximum(mean_own, mean_other)
    s = (mean_other - mean_own) / denom.clamp_min(torch.finfo(dist.dtype).tiny)
    s = torch.where((n_own > 1) & (denom > 0), s, torch.zeros_like(s))
    return (s * w.T).sum(1) / (na + nb)


def _prepare(x: Tensor, statistic: str) -> Tensor:
    centred = x - x.mean(1, keepdim=True)
    if statistic == "silhouette":
        return torch.cdist(centred, centred, compute_mode="donot_use_mm_for_euclid_dist")
    return centred @ centred.transpose(1, 2)


def _weighted(pre: Tensor, w: Tensor, a: Tensor, statistic: str) -> Tensor:
    if statistic == "silhouette":
        return _silhouette_family(pre, w, a)
    return _centroid_family(pre, w, a, statistic)


def _plain(x: Tensor, labels: Tensor, statistic: str) -> Tensor:
    x = check_layered(x, "x", 3)
    lab = check_labels(labels, x.shape[1]).to(x.device)
    w = torch.ones((1, x.shape[1]), dtype=x.dtype, device=x.device)
    return _weighted(_prepare(x, statistic), w, lab[None], statistic)[:, 0]


def centroid_separation(x: Float[Tensor, "layer row d"], labels: Tensor) -> Float[Tensor, " layer"]:
    """Distance between the two group centroids divided by the RMS distance of rows to
    their own centroid, per layer: about 0 when the groups overlap, large when apart."""
    return _plain(x, labels, "centroid")


def variance_ratio(x: Float[Tensor, "layer row d"], labels: Tensor) -> Float[Tensor, " layer"]:
    """Between- over within-group variance per layer (``sklearn.metrics.calinski_harabasz_score``
    for two groups)."""
    return _plain(x, labels, "variance_ratio")


def silhouette(x: Float[Tensor, "layer row d"], labels: Tensor) -> Float[Tensor, " layer"]:
    """Mean silhouette width per layer on Euclidean distances
    (``sklearn.metrics.silhouette_score``): 1 = tight separate groups, 0 = overlap."""
    return _plain(x, labels, "silhouette")


@dataclass(frozen=True)
class SeparationTest:
    """One separation statistic per layer, tested against shuffled group labels.

    Fields:
        statistic: ``"centroid"``, ``"variance_ratio"``, ``"silhouette"`` or ``"probe"``.
        value: ``Float[Tensor, "layer"]``, the statistic on the data.
        interval: bootstrap intervals over units resampled within their group (for
            ``"probe"``, over the held-out correctness of units, the probe not refitted).
        null_median, null_high: the median and the ``confidence`` quantile of the statistic
            under shuffled labels (what separation chance alone gives).
        p_value: one-sided (more separated than chance) permutation p-value per layer.
        p_holm, p_bh: ``p_value`` corrected across layers (Holm; Benjamini-Hochberg).
        n_permutations: permutations used (all of them when ``exact``).
        exact: whether every distinct relabelling was enumerated.
        n_units: units (words) per group, ``(first, second)``.
    """

    statistic: str
    value: Float[Tensor, " layer"]
    interval: BootstrapInterval
    null_median: Float[Tensor, " layer"]
    null_high: Float[Tensor, " layer"]
    p_value: Float[Tensor, " layer"]
    p_holm: Float[Tensor, " layer"]
    p_bh: Float[Tensor, " layer"]
    n_permutations: int
    exact: bool
    n_units: tuple[int, int]


def separation_test(
    x: Float[Tensor, "layer row d"],
    labels: Tensor,
    statistic: Statistic = "silhouette",
    units: Tensor | None = None,
    *,
    n_permutations: int = 10_000,
    n_bootstrap: int = 2_000,
    confidence: float = 0.95,
    n_folds: int = 5,
    ridge: float = 1.0,
    seed: Seed = 0,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> SeparationTest:
    """Separation of the two groups at every layer, its bootstrap interval, and a
    label-permutation test (labels shuffled across units, the same shuffles at every
    layer).

    Args:
        x: representations, ``[layer, row, d_model]``.
        labels: one boolean per row (True = first group).
        statistic: see the module docstring.
        units: unit id per row (rows of one word share it); default: each row its own.
        n_permutations, n_bootstrap: resamples; the permutation test is exact when the
            distinct relabellings number at most ``n_permutations``.
        n_folds, ridge: the probe's cross-validation and relative penalty.
        seed: an int or a CPU ``torch.Generator``; the same seed gives the same result.
        max_memory: bytes of intermediates per chunk of resamples.
    """
    if statistic not in STATISTICS:
        raise StatsInputError(f"unknown statistic {statistic!r}; use one of {STATISTICS}")
    x = check_layered(x, "x", 3)
    lab = check_labels(labels, x.shape[1])
    row_unit, unit_label = check_units(units, lab)
    for group in (True, False):
        if int((unit_label == group).sum()) < 2:
            raise StatsInputError("each group needs at least 2 units (words)")
    gen = make_generator(seed)
    dev, dt = x.device, x.dtype
    n_layers, n = x.shape[:2]
    row_unit_d = row_unit.to(dev)
    item = torch.finfo(dt).bits // 8
    perms, exact = label_permutations(unit_label, n_permutations, gen)

    if statistic == "probe":
        folds = unit_folds(unit_label, n_folds, gen)[row_unit]
        y = lab.to(dt) * 2 - 1
        hats = fold_hats(x, folds, y, ridge)

        def correct_rows(row_labels: Tensor) -> Tensor:  # [R, n] bool -> [layer, R, n]
            yy = row_labels.to(dt) * 2 - 1
            out = torch.empty((n_layers, yy.shape[0], n), dtype=torch.bool, device=dev)
            for fh in hats:
                test, train = fh.test_rows.to(dev), fh.train_rows.to(dev)
                dec = fh.hat @ yy[:, train].T  # [layer, test, R]
                out[:, :, test] = (dec > 0).transpose(1, 2) == row_labels[:, test]
            return out

        def perm_stat(row_labels: Tensor) -> Tensor:
            return correct_rows(row_labels).to(dt).mean(-1)

        observed_correct = correct_rows(lab.to(dev)[None])[:, 0].to(dt)  # [layer, n]

        def boot_stat(unit_w: Tensor) -> Tensor:
            w = unit_w[:, row_unit_d]  # [R, n]
            return (observed_correct @ w.T) / w.sum(-1)

        bytes_per = n_layers * n * item * 4
    else:
        pre = _prepare(x, statistic)

        def perm_stat(row_labels: Tensor) -> Tensor:
            w = torch.ones(row_labels.shape, dtype=dt, device=dev)
            return _weighted(pre, w, row_labels, statistic)

        def boot_stat(unit_w: Tensor) -> Tensor:
            w = unit_w[:, row_unit_d]
            return _weighted(pre, w, lab.to(dev).expand_as(w), statistic)

        bytes_per = n_layers * n * item * 8

    # The observed labels go first through the same computation as the permutations, so
    # the observed statistic ties exactly with the identity permutation.
    labellings = torch.cat([unit_label[None], perms])
    stats = torch.cat(
        [
            perm_stat(labellings[sl].to(dev)[:, row_unit_d]).T
            for sl in chunked(labellings.shape[0], bytes_per, max_memory)
        ]
    )  # [1 + P, layer]
    observed, null = stats[0], stats[1:]
    p = permutation_p_value(null, observed, "greater", exact)
    interval = bootstrap_interval(
        boot_stat,
        unit_label.long(),
        n_resamples=n_bootstrap,
        confidence=confidence,
        seed=gen,
        bytes_per_resample=bytes_per,
        max_memory=max_memory,
        dtype=dt,
        device=dev,
    )
    q = torch.tensor([0.5, confidence], dtype=dt, device=dev)
    null_q = torch.quantile(null, q, dim=0)
    return SeparationTest(
        statistic=statistic,
        value=observed,
        interval=interval,
        null_median=null_q[0],
        null_high=null_q[1],
        p_value=p,
        p_holm=holm(p),
        p_bh=benjamini_hochberg(p),
        n_permutations=perms.shape[0],
        exact=exact,
        n_units=(int(unit_label.sum()), int((~unit_label).sum())),
    )
