"""A "subjecthood" score: how name-like (vs object-like) a vector is, per layer.

An axis is fitted per layer on labelled vectors (names = True, objects = False):

- ``"centroid"``: ``score(x) = (x - c_obj) . (c_name - c_obj) / |c_name - c_obj|^2``, so
  0 is the object centroid, 1 the name centroid, and a shift of 0.1 moves a vector a tenth
  of the way from objects to names, whatever the layer's norm;
- ``"probe"``: the decision value of a ridge probe (:mod:`mi_cluster.methods.stats.probe`),
  ``+1``/``-1`` being the names'/objects' targets.

Both are linear: ``score(x) = x . direction + offset``. :func:`fit_subjecthood_axis`
gives an axis to score any vector with (e.g. a patching metric);
:func:`cross_fitted_subjecthood` scores every row with an axis fitted without the row's
unit (word), so a word's own vectors never define the axis it is scored on. Both accept
an on-disk :class:`~mi_cluster.collection.store.ActivationStore` too, streamed (group sums for the
centroid axis, the folds' cross-products for the probe) to the in-memory numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.core.protocols import RowStore, is_store
from mi_cluster.methods.stats.inputs import (
    StatsInputError,
    check_labels,
    check_layered,
    check_units,
)
from mi_cluster.methods.stats.probe import fold_fits, ridge_fit, unit_folds
from mi_cluster.methods.stats.resampling import Seed
from mi_cluster.methods.stats.sufficient import (
    batch_rows,
    group_sums,
    source_shape,
    stream_rows,
)

__all__ = [
    "AXIS_METHODS",
    "CrossFittedScores",
    "SubjecthoodAxis",
    "cross_fitted_subjecthood",
    "fit_subjecthood_axis",
]

AxisMethod = Literal["centroid", "probe"]
AXIS_METHODS: tuple[str, ...] = ("centroid", "probe")


@dataclass(frozen=True)
class SubjecthoodAxis:
    """A fitted name-vs-object axis per layer: ``score(x) = x . direction + offset``.

    Fields:
        direction: ``Float[Tensor, "layer d_model"]``.
        offset: ``Float[Tensor, "layer"]``.
        method: ``"centroid"`` (0 = object centroid, 1 = name centroid) or ``"probe"``
            (ridge decision value, targets ``+1`` names / ``-1`` objects).
        n_names, n_objects: rows it was fitted on.
    """

    direction: Float[Tensor, "layer d_model"]
    offset: Float[Tensor, " layer"]
    method: str
    n_names: int
    n_objects: int

    def score(self, x: Float[Tensor, "layer ... d_model"]) -> Float[Tensor, "layer ..."]:
        """Scores of vectors with a leading layer axis matching the fitted layers."""
        if x.shape[0] != self.direction.shape[0] or x.shape[-1] != self.direction.shape[1]:
            raise StatsInputError(
                f"vectors of shape {tuple(x.shape)} do not match an axis fitted on "
                f"{self.direction.shape[0]} layers of width {self.direction.shape[1]}"
            )
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        off = self.offset.reshape(shape[:-1])
        return (x * self.direction.reshape(shape).to(x)).sum(-1) + off.to(x)


def _check_counts(n_names: int, n_objects: int) -> None:
    if n_names < 1 or n_objects < 1:
        raise StatsInputError(
            f"a subjecthood axis needs names and objects to fit on; got {n_names} name and "
            f"{n_objects} object rows"
        )


def _fit(x: Tensor, is_name: Tensor, method: str, ridge: float) -> SubjecthoodAxis:
    n_names, n_objects = int(is_name.sum()), int((~is_name).sum())
    _check_counts(n_names, n_objects)
    if method == "centroid":
        dev_mask = is_name.to(x.device)
        c_name, c_obj = x[:, dev_mask].mean(1), x[:, ~dev_mask].mean(1)
        return _centroid_axis(c_name, c_obj, n_names, n_objects)
    if method == "probe":
        direction, offset = ridge_fit(x, is_name.to(x.dtype) * 2 - 1, ridge)
    else:
        raise StatsInputError(f"unknown subjecthood method {method!r}; use one of {AXIS_METHODS}")
    return SubjecthoodAxis(direction, offset, method, n_names, n_objects)


def _centroid_axis(c_name: Tensor, c_obj: Tensor, n_names: int, n_objects: int) -> SubjecthoodAxis:
    _check_counts(n_names, n_objects)
    gap = c_name - c_obj
    norm2 = gap.pow(2).sum(-1)
    if bool((norm2 == 0).any()):
        layer = int((norm2 == 0).nonzero()[0])
        raise StatsInputError(
            f"the name and object centroids coincide at layer {layer}: no axis to fit"
        )
    direction = gap / norm2[:, None]
    offset = -(c_obj * direction).sum(-1)
    return SubjecthoodAxis(direction, offset, "centroid", n_names, n_objects)


def _store_axis(sums: Tensor, counts: Tensor) -> SubjecthoodAxis:
    """The centroid axis from row sums ``[layer, 2, d]`` and counts ``[2]`` (names,
    objects)."""
    n_names, n_objects = int(counts[0]), int(counts[1])
    c = sums / counts.clamp_min(1)[:, None]
    return _centroid_axis(c[:, 0], c[:, 1], n_names, n_objects)


def _store_probe_axes(
    store: RowStore,
    row_fold: Tensor,
    row_cell: Tensor,
    n_cells: int,
    held_out: list[int | None],
    ridge: float,
) -> list[SubjecthoodAxis]:
    """Ridge-probe axes streamed from a store (:func:`~mi_cluster.methods.stats.probe.fold_fits`):
    rows summed in cells ``2 * fold + (0 name, 1 object)``, each fit leaving out a fold."""
    cell_fold = torch.arange(n_cells) // 2
    cell_y = 1.0 - 2.0 * (torch.arange(n_cells) % 2)  # +1 names, -1 objects
    counts = torch.bincount(row_cell[row_fold >= 0], minlength=n_cells)
    axes = []
    for h, fit in zip(
        held_out, fold_fits(store, row_fold, row_cell, cell_fold, cell_y, held_out, ridge=ridge),
        strict=True,
    ):  # fmt: skip
        trained = cell_fold != h if h is not None else torch.ones(n_cells, dtype=torch.bool)
        n_names, n_objects = int(counts[trained][0::2].sum()), int(counts[trained][1::2].sum())
        _check_counts(n_names, n_objects)
        w, b = fit.axis(cell_y)
        axes.append(SubjecthoodAxis(w, b, "probe", n_names, n_objects))
    return axes


def _check_method(method: str) -> None:
    if method not in AXIS_METHODS:
        raise StatsInputError(f"unknown subjecthood method {method!r}; use one of {AXIS_METHODS}")


def fit_subjecthood_axis(
    x: Float[Tensor, "layer row d_model"] | Any,
    is_name: Tensor,
    method: AxisMethod = "centroid",
    ridge: float = 1.0,
) -> SubjecthoodAxis:
    """Fit the name-vs-object axis of every layer on all rows of ``x`` (a tensor, or an
    on-disk store, streamed once: float64 on the CPU)."""
    if is_store(x):
        _check_method(method)
        lab = check_labels(is_name, source_shape(x)[1], "is_name", min_per_group=1)
        if method == "probe":
            zeros = torch.zeros(lab.shape[0], dtype=torch.long)
            return _store_probe_axes(x, zeros, (~lab).long(), 2, [None], ridge)[0]
        gs = group_sums(x, (~lab).long(), 2)
        return _store_axis(gs.sums, gs.counts)
    x = check_layered(x, "x", 3)
    lab = check_labels(is_name, x.shape[1], "is_name", min_per_group=1)
    return _fit(x, lab, method, ridge)


@dataclass(frozen=True)
class CrossFittedScores:
    """Subjecthood of every row, each scored by an axis fitted without its unit.

    Fields:
        scores: ``Float[Tensor, "layer row"]``.
        folds: ``Tensor``, the fold of each unit (units of one fold share an axis).
        method: the axis method.
        n_folds: number of folds.
        axes: the axis of each fold (fitted without that fold's units), to score new
            vectors of a unit with the axis that left it out (``axes[folds[unit]]``).
    """

    scores: Float[Tensor, "layer row"]
    folds: Tensor
    method: str
    n_folds: int
    axes: tuple[SubjecthoodAxis, ...] = ()


def cross_fitted_subjecthood(
    x: Float[Tensor, "layer row d_model"] | Any,
    is_name: Tensor,
    units: Tensor,
    fit_rows: Tensor | None = None,
    *,
    method: AxisMethod = "centroid",
    n_folds: int = 5,
    ridge: float = 1.0,
    seed: Seed = 0,
) -> CrossFittedScores:
    """Score every row of ``x`` on a name-vs-object axis fitted without the row's unit.

    Units (words) are dealt into ``n_folds`` folds, both groups in proportion; the rows of
    fold ``f`` are scored by the axis fitted on the ``fit_rows`` (default: all rows) of the
    other folds. With ``fit_rows`` one may, e.g., fit on in-context rows of both roles and
    still score the words alone.

    ``x`` may be an on-disk store: two passes (the fold x role sums, with the folds'
    cross-products for ``"probe"``; then the scores), float64 on the CPU, equal to the
    scores in memory.
    """
    if is_store(x):
        _check_method(method)
    else:
        x = check_layered(x, "x", 3)
    lab = check_labels(is_name, source_shape(x)[1], "is_name")
    row_unit, unit_label = check_units(units, lab)
    fit = torch.ones_like(lab) if fit_rows is None else torch.as_tensor(fit_rows, dtype=torch.bool)
    if fit.shape != lab.shape:
        raise StatsInputError(f"fit_rows has {fit.shape[0]} entries for {lab.shape[0]} rows")
    folds = unit_folds(unit_label, n_folds, seed)
    row_fold = folds[row_unit]
    if is_store(x):
        return _store_cross_fitted(
            x, lab, fit, row_fold, folds, n_folds=n_folds, method=method, ridge=ridge
        )
    scores = torch.empty(x.shape[:2], dtype=x.dtype, device=x.device)
    axes = []
    for f in range(n_folds):
        held = row_fold == f
        train = fit & ~held
        axes.append(_fit(x[:, train.to(x.device)], lab[train], method, ridge))
        scores[:, held.to(x.device)] = axes[-1].score(x[:, held.to(x.device)])
    return CrossFittedScores(scores, folds, method, n_folds, tuple(axes))


def _store_cross_fitted(
    store: RowStore,
    lab: Tensor,
    fit: Tensor,
    row_fold: Tensor,
    folds: Tensor,
    *,
    n_folds: int,
    method: str,
    ridge: float,
) -> CrossFittedScores:
    cell = torch.where(fit, row_fold * 2 + (~lab).long(), -1)  # fold x (name, object)
    if method == "probe":
        fitted_fold = torch.where(fit, row_fold, -1)
        axes = tuple(
            _store_probe_axes(store, fitted_fold, cell, 2 * n_folds, list(range(n_folds)), ridge)
        )
    else:
        gs = group_sums(store, cell, 2 * n_folds)
        n_layers, _, d = gs.sums.shape
        sums, counts = gs.sums.view(n_layers, n_folds, 2, d), gs.counts.view(n_folds, 2)
        axes = tuple(
            _store_axis(sums.sum(1) - sums[:, f], counts.sum(0) - counts[f]) for f in range(n_folds)
        )
    n_layers, d = axes[0].direction.shape
    direction = torch.stack([a.direction for a in axes])  # [fold, layer, d]
    offset = torch.stack([a.offset for a in axes])  # [fold, layer]
    scores = torch.empty((n_layers, lab.shape[0]), dtype=torch.float64)
    layers = list(range(n_layers))
    for start, batch in stream_rows(store, layers, batch_rows(n_layers, d, 2**28)):
        f = row_fold[start : start + batch.shape[1]]
        scores[:, start : start + batch.shape[1]] = (
            torch.einsum("lrd,rld->lr", batch, direction[f]) + offset[f].T
        )
    return CrossFittedScores(scores, folds, method, n_folds, axes)
