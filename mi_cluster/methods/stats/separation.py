"""How well two groups of representations (names vs objects) separate, per layer, with
a label-permutation test and bootstrap intervals over units.

Statistics (all scale-free, so layers with larger residual norms are comparable):

- ``"centroid"``: distance between the group centroids over the root-mean-square distance
  of rows to their own centroid;
- ``"variance_ratio"``: between- over within-group variance, ``(BSS / 1) / (WSS / (n-2))``
  (the Calinski-Harabasz score for two groups);
- ``"silhouette"``: the mean silhouette width on Euclidean distances;
- ``"probe"``: held-out accuracy of a ridge probe with whole units held out.

Each is computed from unit weights and unit labels (a unit drawn twice in a bootstrap
resample weighs 2, exactly as if its rows were duplicated), so one formula serves the data,
every permutation of the labels and every bootstrap resample, batched over layers and
resamples. Since all rows of a unit weigh alike, the rows enter only reduced to units
(:mod:`mi_cluster.methods.stats.sufficient`; the probe's :func:`~mi_cluster.methods.stats.probe.
decision_map`), which is also what lets every statistic stream from an on-disk store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mi_cluster.core.protocols import RowSource, is_store
from mi_cluster.methods.stats.corrections import benjamini_hochberg, holm
from mi_cluster.methods.stats.inputs import (
    StatsInputError,
    check_labels,
    check_layered,
    check_units,
)
from mi_cluster.methods.stats.probe import decision_map, unit_folds
from mi_cluster.methods.stats.resampling import (
    DEFAULT_MAX_MEMORY,
    BootstrapInterval,
    Seed,
    bootstrap_interval,
    chunk_rows,
    label_permutation_draws,
    make_generator,
    permutation_p_value,
)
from mi_cluster.methods.stats.sufficient import (
    UnitGram,
    distance_sums,
    source_shape,
    unit_gram,
)

__all__ = [
    "STATISTICS",
    "SeparationTest",
    "UnitReduction",
    "centroid_separation",
    "separation_test",
    "silhouette",
    "reduce_to_units",
    "variance_ratio",
    "weighted_statistic",
]

Statistic = Literal["centroid", "variance_ratio", "silhouette", "probe"]
STATISTICS: tuple[str, ...] = ("centroid", "variance_ratio", "silhouette", "probe")


def _quad(g: Tensor, v: Tensor) -> Tensor:
    """``v_r^T G_l v_r`` for every layer ``l`` and weight vector ``r``: ``[layer, R]``."""
    return (torch.matmul(v, g) * v).sum(-1)


@dataclass(frozen=True)
class UnitReduction:
    """The rows reduced to units as a statistic needs them (see
    :mod:`~mi_cluster.methods.stats.sufficient`): what every resample's statistic is computed
    from without the rows.

    Fields:
        statistic: ``"centroid"``, ``"variance_ratio"`` or ``"silhouette"``.
        row_unit: ``[row]``, each row's unit.
        counts: ``[unit]``, rows per unit.
        gram: the units' Gram of centred row sums (centroid, variance ratio).
        dist: ``[layer, row, unit]`` summed distances of each row to each unit (silhouette).
    """

    statistic: str
    row_unit: Tensor  # [row]
    counts: Tensor  # [unit], rows per unit
    gram: UnitGram | None = None  # centroid, variance_ratio
    dist: Tensor | None = None  # silhouette: [layer, row, unit] distance sums


def reduce_to_units(
    x: RowSource,
    row_unit: Tensor,
    n_units: int,
    statistic: str,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> UnitReduction:
    """Reduce rows ``x`` (``[layer, row, d_model]`` or a store), each in unit
    ``row_unit[row]`` of ``n_units``, to what ``statistic`` needs."""
    if statistic == "silhouette":
        dist = distance_sums(x, row_unit, n_units, max_memory)
        ru = row_unit.to(dist.device)
        counts = torch.bincount(ru, minlength=n_units).to(dist.dtype)
        return UnitReduction(statistic, ru, counts, dist=dist)
    gram = unit_gram(x, row_unit, n_units, max_memory)
    return UnitReduction(statistic, row_unit.to(gram.gram.device), gram.counts, gram=gram)


def _centroid_family(
    ug: UnitGram, w: Float[Tensor, "R unit"], a: Bool[Tensor, "R unit"], kind: str
) -> Float[Tensor, "layer R"]:
    wa, wb = w * a, w * ~a
    na, nb = wa @ ug.counts, wb @ ug.counts  # [R], rows in each group
    dist2 = _quad(ug.gram, wa / na[:, None] - wb / nb[:, None]).clamp_min(0)
    wss = (ug.sq_norms @ w.T) - _quad(ug.gram, wa) / na - _quad(ug.gram, wb) / nb
    wss = wss.clamp_min(torch.finfo(ug.gram.dtype).tiny)
    total = na + nb
    if kind == "centroid":
        return dist2.sqrt() / (wss / total).sqrt()
    return (na * nb / total) * dist2 / (wss / (total - 2))


def _silhouette_family(
    red: UnitReduction,
    dist: Float[Tensor, "layer row unit"],
    w: Float[Tensor, "R unit"],
    a: Bool[Tensor, "R unit"],
) -> Float[Tensor, "layer R"]:
    wa, wb = w * a, w * ~a
    na, nb = wa @ red.counts, wb @ red.counts  # [R]
    to_a, to_b = dist @ wa.T, dist @ wb.T  # [layer, row, R]: weighted distance sums
    at = a[:, red.row_unit].T  # [row, R]
    own = torch.where(at, to_a, to_b)
    other = torch.where(at, to_b, to_a)
    n_own = torch.where(at, na, nb)
    n_other = torch.where(at, nb, na)
    mean_own = own / (n_own - 1).clamp_min(1)  # the row itself is one of its group's copies
    mean_other = other / n_other
    denom = torch.maximum(mean_own, mean_other)
    s = (mean_other - mean_own) / denom.clamp_min(torch.finfo(dist.dtype).tiny)
    s = torch.where((n_own > 1) & (denom > 0), s, torch.zeros_like(s))
    return (s * w[:, red.row_unit].T).sum(1) / (na + nb)


def weighted_statistic(
    red: UnitReduction, w: Float[Tensor, "R unit"], a: Bool[Tensor, "R unit"]
) -> Float[Tensor, "layer R"]:
    """The statistic under unit weights ``w`` (1 = the data, counts = a bootstrap draw)
    and unit labels ``a`` (the data's, or a shuffle)."""
    if red.dist is not None:  # silhouette
        return _silhouette_family(red, red.dist, w, a)
    if red.gram is None:
        raise ValueError(f"a reduction for {red.statistic!r} holds neither Gram nor distances")
    return _centroid_family(red.gram, w, a, red.statistic)


def _plain(x: RowSource, labels: Tensor, statistic: str) -> Tensor:
    _, n, _ = source_shape(x)
    lab = check_labels(labels, n)
    red = reduce_to_units(x, (~lab).long(), 2, statistic)  # unit 0: the first group, 1: the second
    w = torch.ones((1, 2), dtype=red.counts.dtype, device=red.counts.device)
    a = torch.tensor([[True, False]], device=red.counts.device)
    return weighted_statistic(red, w, a)[:, 0]


def centroid_separation(
    x: Float[Tensor, "layer row d"] | Any, labels: Tensor
) -> Float[Tensor, " layer"]:
    """Distance between the two group centroids divided by the RMS distance of rows to
    their own centroid, per layer: about 0 when the groups overlap, large when apart."""
    return _plain(x, labels, "centroid")


def variance_ratio(
    x: Float[Tensor, "layer row d"] | Any, labels: Tensor
) -> Float[Tensor, " layer"]:
    """Between- over within-group variance per layer (``sklearn.metrics.calinski_harabasz_score``
    for two groups)."""
    return _plain(x, labels, "variance_ratio")


def silhouette(x: Float[Tensor, "layer row d"] | Any, labels: Tensor) -> Float[Tensor, " layer"]:
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


@dataclass(frozen=True)
class _Resampled:
    """A statistic under resampling: ``perm_stat`` of unit labellings ``[R, unit]`` and
    ``boot_stat`` of unit weights ``[R, unit]``, each ``[layer, R]``, with the bytes one
    resample takes."""

    perm_stat: Callable[[Tensor], Tensor]
    boot_stat: Callable[[Tensor], Tensor]
    bytes_per: int


def _probe_functions(
    x: RowSource,
    row_unit: Tensor,
    unit_label: Tensor,
    folds: Tensor,
    *,
    ridge: float,
    max_memory: int,
    dt: torch.dtype,
    dev: torch.device,
) -> _Resampled:
    """The probe's held-out accuracy, from its decision map: the held-out decisions are
    linear in the units' labels, so every relabelling is one matrix product."""
    n_layers, n = source_shape(x)[:2]
    row_unit_d = row_unit.to(dev)
    unit_y = unit_label.to(dt) * 2 - 1
    dmap = decision_map(x, row_unit, folds, unit_y, ridge, max_memory)  # [layer, n, unit]

    def correct_rows(unit_labels: Tensor) -> Tensor:  # [R, unit] bool -> [layer, R, n]
        decision = dmap @ (unit_labels.to(dt) * 2 - 1).T  # [layer, n, R]
        return (decision > 0).transpose(1, 2) == unit_labels[:, row_unit_d]

    def perm_stat(unit_labels: Tensor) -> Tensor:
        return correct_rows(unit_labels).to(dt).mean(-1)

    observed_correct = correct_rows(unit_label.to(dev)[None])[:, 0].to(dt)  # [layer, n]

    def boot_stat(unit_w: Tensor) -> Tensor:
        w = unit_w[:, row_unit_d]  # [R, n]
        return (observed_correct @ w.T) / w.sum(-1)

    item = torch.finfo(dt).bits // 8
    return _Resampled(perm_stat, boot_stat, n_layers * n * item * 4)


def _reduced_functions(
    red: UnitReduction,
    unit_label: Tensor,
    n_layers: int,
    n: int,
    dt: torch.dtype,
    dev: torch.device,
) -> _Resampled:
    """The centroid statistics and the silhouette, from the rows reduced to units."""
    unit_label_d = unit_label.to(dev)

    def perm_stat(unit_labels: Tensor) -> Tensor:
        w = torch.ones(unit_labels.shape, dtype=dt, device=dev)
        return weighted_statistic(red, w, unit_labels)

    def boot_stat(unit_w: Tensor) -> Tensor:
        return weighted_statistic(red, unit_w, unit_label_d.expand(unit_w.shape))

    per_row = n if red.statistic == "silhouette" else unit_label.shape[0]
    item = torch.finfo(dt).bits // 8
    return _Resampled(perm_stat, boot_stat, n_layers * per_row * item * 8)


def separation_test(
    x: Float[Tensor, "layer row d"] | Any,
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
        x: representations, ``[layer, row, d_model]``, or an on-disk
            :class:`~mi_cluster.collection.store.ActivationStore`, streamed in bounded memory for
            every statistic (float64 on the CPU; the same numbers as in memory). Memory
            then grows with units, not rows: ``layer x unit x d_model`` unit sums
            (centroid, variance ratio); ``layer x row x unit`` distance sums (silhouette,
            which still computes every pairwise distance) or decision maps (probe, plus
            ``folds x d_model^2`` cross-products per layer).
        labels: one boolean per row (True = first group); for a store, in its row order
            (``labels_per_prompt[store.prompt_index()]``).
        statistic: see the module docstring.
        units: unit id per row (rows of one word share it); default: each row its own.
        n_permutations: label permutations; the test is exact when the distinct
            relabellings number at most ``n_permutations``.
        n_bootstrap: bootstrap resamples of units for the intervals.
        n_folds: the probe's cross-validation folds (of units).
        ridge: the probe's relative penalty.
        confidence: the intervals' level.
        seed: an int or a CPU ``torch.Generator``; the same seed gives the same result.
        max_memory: bytes of intermediates per chunk of resamples, and of what a store
            is reduced to (too little is refused, naming the sizes).
    """
    if statistic not in STATISTICS:
        raise StatsInputError(f"unknown statistic {statistic!r}; use one of {STATISTICS}")
    n_layers, n, _ = source_shape(x)
    if is_store(x):  # reduced in float64 on the CPU
        dev, dt = torch.device("cpu"), torch.float64
    else:
        x = check_layered(x, "x", 3)
        dev, dt = x.device, x.dtype
    lab = check_labels(labels, n)
    row_unit, unit_label = check_units(units, lab)
    for group in (True, False):
        if int((unit_label == group).sum()) < 2:
            raise StatsInputError("each group needs at least 2 units (words)")
    gen = make_generator(seed)
    n_units = unit_label.shape[0]
    perms = label_permutation_draws(unit_label, n_permutations, gen)
    if statistic == "probe":
        folds = unit_folds(unit_label, n_folds, gen)
        fns = _probe_functions(
            x, row_unit, unit_label, folds, ridge=ridge, max_memory=max_memory, dt=dt, dev=dev
        )
    else:
        red = reduce_to_units(x, row_unit, n_units, statistic, max_memory)
        fns = _reduced_functions(red, unit_label, n_layers, n, dt, dev)
    # The observed labels go first through the same computation as the permutations, so
    # the observed statistic ties exactly with the identity permutation.
    parts = []
    for k, chunk in enumerate(perms.chunks(chunk_rows(fns.bytes_per + n_units, max_memory))):
        labellings = torch.cat([unit_label[None], chunk]) if k == 0 else chunk
        parts.append(fns.perm_stat(labellings.to(dev)).T)
    stats = torch.cat(parts)  # [1 + P, layer]
    observed, null = stats[0], stats[1:]
    exact = perms.exact
    p = permutation_p_value(null, observed, "greater", exact)
    interval = bootstrap_interval(
        fns.boot_stat,
        unit_label.long(),
        n_resamples=n_bootstrap,
        confidence=confidence,
        seed=gen,
        bytes_per_resample=fns.bytes_per,
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
        n_permutations=perms.n_resamples,
        exact=exact,
        n_units=(int(unit_label.sum()), int((~unit_label).sum())),
    )
