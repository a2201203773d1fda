"""What the separation statistics and centroid axes need of the rows, reduced to groups of
rows, from a tensor in memory or streamed from an on-disk
:class:`~mi_cluster.collection.store.ActivationStore` in bounded memory.

Every resample of a separation test (a shuffle of the units' labels, a bootstrap draw of
units) weighs all rows of a unit alike, so the statistics need the rows only through:

- **unit sums** (centroid, variance ratio): per unit ``k``, ``S_k``, the sum of its rows
  centred on the grand mean, and ``Q_k``, the sum of their squared norms. Every quadratic
  form of the rows' Gram with unit-constant weights is one of the units' Gram ``S S^T``:
  ``v^T X_c X_c^T v = ||sum_k v_k S_k||^2``. One pass over the rows; memory
  ``layer x unit x d_model``, not ``row x row``;
- **distance sums** (silhouette): per row ``i`` and unit ``k``, the summed Euclidean
  distance from row ``i`` to the rows of ``k``: ``layer x row x unit`` numbers. Every
  pairwise distance is still computed (the silhouette's ``row^2 x d_model`` cost); a store
  is read once per block of rows.

A store is read in float64 and the results are float64 on the CPU; a tensor keeps its
dtype and device. A source is ``Float[Tensor, "layer row d_model"]`` or a store (anything
with ``batches``, ``n_rows``, ``layer_labels`` and ``row_shape``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_cluster.core.protocols import RowSource, RowStore, is_store
from mi_cluster.methods.stats.inputs import StatsInputError, check_layered

__all__ = [
    "GroupSums",
    "UnitGram",
    "batch_rows",
    "check_row_unit_map",
    "distance_sums",
    "group_sums",
    "layer_blocks",
    "source_shape",
    "stream_rows",
    "unit_gram",
]

_F64 = 8  # bytes


def source_shape(source: RowSource, name: str = "x") -> tuple[int, int, int]:
    """``(layers, rows, features)`` of a tensor or a store (a row's trailing dimensions
    flattened)."""
    if is_store(source):
        return len(source.layer_labels), int(source.n_rows), math.prod(source.row_shape)
    x = check_layered(source, name, 3)
    return x.shape[0], x.shape[1], x.shape[2]


def layer_blocks(
    n_layers: int,
    bytes_per_layer: int,
    max_memory: int,
    what: str,
    advice: str = "raise max_memory, or group rows into fewer units (e.g. units = words)",
) -> list[list[int]]:
    """Consecutive blocks of layers whose accumulators (``bytes_per_layer`` each) fit
    ``max_memory`` together; a store is read once per block. One layer that does not fit
    is refused, naming ``what`` and the sizes."""
    if bytes_per_layer > max_memory:
        raise StatsInputError(
            f"{what} of one layer take {bytes_per_layer / 2**20:.1f} MiB, more than "
            f"max_memory ({max_memory / 2**20:.1f} MiB); {advice}"
        )
    per = max(1, min(n_layers, max_memory // bytes_per_layer))
    return [list(range(i, min(n_layers, i + per))) for i in range(0, n_layers, per)]


def batch_rows(n_layers: int, width: int, max_memory: int) -> int:
    """Rows per batch so that one float64 batch takes at most a quarter of ``max_memory``."""
    return int(max(1, min(4096, max_memory // (4 * _F64 * n_layers * width))))


def stream_rows(store: RowStore, layers: list[int], rows: int) -> Iterator[tuple[int, Tensor]]:
    """``(first row, batch [layer, rows, features] float64)`` over the store."""
    start = 0
    for batch in store.batches(rows=rows, layers=layers, dtype=torch.float64):
        batch = batch.flatten(2)
        if not bool(torch.isfinite(batch).all()):
            raise StatsInputError(
                f"the store holds non-finite values (NaN or inf) in rows "
                f"{start}..{start + batch.shape[1] - 1}"
            )
        yield start, batch
        start += batch.shape[1]


def check_row_unit_map(
    n_layers: int, n_rows: int, n_units: int, max_memory: int, what: str
) -> None:
    """Refuse a ``[layer, row, unit]`` float64 map (the silhouette's distance sums, the
    probe's decision map) that would take more than half of ``max_memory``."""
    held = _F64 * n_layers * n_rows * n_units
    if held > max_memory // 2:
        raise StatsInputError(
            f"{what} ({n_rows} rows x {n_units} units x {n_layers} layers) take "
            f"{held / 2**20:.1f} MiB, more than half of max_memory "
            f"({max_memory / 2**20:.1f} MiB); raise max_memory, group rows into fewer "
            "units, or use the centroid or variance_ratio statistic (unit sums only)"
        )


@dataclass(frozen=True)
class GroupSums:
    """Rows summed per group (groups numbered ``0..G-1``; rows of group ``-1`` left out).

    Fields:
        sums: ``Float[Tensor, "layer group d_model"]``, the rows' sum per group.
        sq_norms: ``Float[Tensor, "layer group"]``, the sum of the rows' squared norms.
        counts: ``Float[Tensor, "group"]``, rows per group.
    """

    sums: Float[Tensor, "layer group d_model"]
    sq_norms: Float[Tensor, "layer group"]
    counts: Float[Tensor, " group"]


def group_sums(
    source: RowSource,
    group: Int[Tensor, " row"],
    n_groups: int,
    layers: list[int] | None = None,
    max_memory: int = 2**30,
) -> GroupSums:
    """Per-group sums of the rows (and of their squared norms) at ``layers`` (default
    all), from a tensor or in one pass over a store."""
    n_layers, n, d = source_shape(source)
    chosen = list(range(n_layers)) if layers is None else layers
    group = torch.as_tensor(group, dtype=torch.int64)
    if group.shape != (n,):
        raise StatsInputError(f"{group.shape[0]} group ids for {n} rows")
    keep = group >= 0
    if not is_store(source):
        x = (source if layers is None else source[chosen])[:, keep.to(source.device)]
        g = group[keep].to(source.device)
        sums = x.new_zeros((len(chosen), n_groups, d)).index_add_(1, g, x)
        sq = x.new_zeros((len(chosen), n_groups)).index_add_(1, g, x.pow(2).sum(-1))
        counts = torch.bincount(g, minlength=n_groups).to(x.dtype)
        return GroupSums(sums, sq, counts)
    sums = torch.zeros((len(chosen), n_groups, d), dtype=torch.float64)
    sq = torch.zeros((len(chosen), n_groups), dtype=torch.float64)
    for start, batch in stream_rows(source, chosen, batch_rows(len(chosen), d, max_memory)):
        rows = slice(start, start + batch.shape[1])
        k = keep[rows]
        g = group[rows][k]
        sums.index_add_(1, g, batch[:, k])
        sq.index_add_(1, g, batch[:, k].pow(2).sum(-1))
    counts = torch.bincount(group[keep], minlength=n_groups).to(torch.float64)
    return GroupSums(sums, sq, counts)


@dataclass(frozen=True)
class UnitGram:
    """The centred rows reduced to units (see the module docstring).

    Fields:
        gram: ``Float[Tensor, "layer unit unit"]``, ``S S^T`` of the units' centred sums.
        sq_norms: ``Float[Tensor, "layer unit"]``, ``Q``, the units' summed squared norms.
        counts: ``Float[Tensor, "unit"]``, rows per unit.
    """

    gram: Float[Tensor, "layer unit unit"]
    sq_norms: Float[Tensor, "layer unit"]
    counts: Float[Tensor, " unit"]


def unit_gram(
    source: RowSource, row_unit: Int[Tensor, " row"], n_units: int, max_memory: int = 2**30
) -> UnitGram:
    """The units' Gram of centred sums and their squared norms at every layer. A tensor is
    centred first, in its dtype; a store is summed in float64 in one pass per block of
    layers and centred after (``S_k = U_k - m_k mean``)."""
    if not is_store(source):
        x = check_layered(source, "x", 3)
        gs = group_sums(x - x.mean(1, keepdim=True), row_unit, n_units)
        return UnitGram(gs.sums @ gs.sums.transpose(1, 2), gs.sq_norms, gs.counts)
    n_layers, _, d = source_shape(source)
    per_layer = _F64 * n_units * (2 * d + n_units)
    grams, norms, counts = [], [], None
    for block in layer_blocks(n_layers, per_layer, max_memory, "unit sums"):
        gs = group_sums(source, row_unit, n_units, block, max_memory)
        counts = gs.counts
        mean = gs.sums.sum(1) / gs.counts.sum()  # [layer, d]
        s = gs.sums - gs.counts[:, None] * mean[:, None, :]
        cross = (gs.sums @ mean[..., None])[..., 0]  # U_k . mean
        q = gs.sq_norms - 2 * cross + gs.counts * mean.pow(2).sum(-1, keepdim=True)
        grams.append(s @ s.transpose(1, 2))
        norms.append(q.clamp_min(0))
    if counts is None:
        raise ValueError("unit sums of a source without layers")
    return UnitGram(torch.cat(grams), torch.cat(norms), counts)


def distance_sums(
    source: RowSource, row_unit: Int[Tensor, " row"], n_units: int, max_memory: int = 2**30
) -> Float[Tensor, "layer row unit"]:
    """Summed Euclidean distance from every row to the rows of every unit, per layer.
    A store is read once per block of rows that fits ``max_memory`` (plus once)."""
    n_layers, n, d = source_shape(source)
    row_unit = torch.as_tensor(row_unit, dtype=torch.int64)
    if not is_store(source):
        x = check_layered(source, "x", 3)
        xc = x - x.mean(1, keepdim=True)
        dist = torch.cdist(xc, xc, compute_mode="donot_use_mm_for_euclid_dist")
        if n_units == n and torch.equal(row_unit, torch.arange(n)):
            return dist
        out = dist.new_zeros((n_layers, n, n_units))
        return out.index_add_(2, row_unit.to(x.device), dist)
    check_row_unit_map(n_layers, n, n_units, max_memory, "the silhouette's distance sums")
    out = torch.zeros((n_layers, n, n_units), dtype=torch.float64)
    layers = list(range(n_layers))
    budget = max_memory // 2  # the other half holds the sums
    rows = min(batch_rows(n_layers, d, budget), math.isqrt(budget // (4 * _F64 * n_layers)))
    rows = max(1, rows)  # queries, references and their distances each fit a quarter
    for q_start, queries in stream_rows(source, layers, rows):
        q_rows = slice(q_start, q_start + queries.shape[1])
        for r_start, refs in stream_rows(source, layers, rows):
            dist = torch.cdist(queries, refs, compute_mode="donot_use_mm_for_euclid_dist")
            units = row_unit[r_start : r_start + refs.shape[1]]
            out[:, q_rows].index_add_(2, units, dist)
    return out
