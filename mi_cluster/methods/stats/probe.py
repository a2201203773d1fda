"""Linear probes, cross-validated over held-out units (words), for every layer at once.

The probe is a ridge classifier (least squares on labels ``±1`` with an intercept and an
L2 penalty), as ``sklearn.linear_model.RidgeClassifier``: solved in closed form, batched
over layers, so it is exact and reproducible. Its penalty is relative,
``alpha = ridge * mean squared norm of the centred training rows``, so one ``ridge``
regularises every layer alike although residual norms grow with depth.

Held-out predictions are a linear function of the training labels,
``decision_test = A @ y_train`` with ``A`` fixed by the inputs alone (the "hat map"), so
a label-permutation test re-uses ``A`` for every permutation instead of refitting. Since a
unit's rows share a label, ``A`` summed over each unit's columns (:func:`decision_map`,
``[layer, row, unit]``) is all a test needs.

From an on-disk :class:`~mi_cluster.collection.store.ActivationStore` the same fits are made in the
primal, streamed: per fold the rows' cross-products ``sum x x^T`` and per unit the row sums,
one pass per block of layers; then ``(Cov + alpha I)^-1`` applied to each unit's centred sum
gives the map, and a second pass its rows. Memory is ``folds x d_model^2`` per layer, not
``row x row``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mi_cluster.core.protocols import RowStore, is_store
from mi_cluster.methods.stats.inputs import (
    StatsInputError,
    check_labels,
    check_layered,
    check_units,
)
from mi_cluster.methods.stats.resampling import Seed, make_generator
from mi_cluster.methods.stats.sufficient import (
    batch_rows,
    check_row_unit_map,
    layer_blocks,
    source_shape,
    stream_rows,
)

__all__ = [
    "FoldFit",
    "FoldHat",
    "ProbeResult",
    "decision_map",
    "fold_fits",
    "fold_hats",
    "probe_accuracy",
    "ridge_alpha",
    "ridge_fit",
    "unit_folds",
]


def unit_folds(unit_labels: Bool[Tensor, " unit"], n_folds: int, seed: Seed = 0) -> Tensor:
    """Fold index of each unit: units of each group shuffled and dealt round-robin, so
    every fold holds both groups in proportion and a unit's rows are never split."""
    n_units = unit_labels.shape[0]
    if not 2 <= n_folds <= n_units:
        raise StatsInputError(f"n_folds={n_folds} must be between 2 and the {n_units} units")
    gen = make_generator(seed)
    folds = torch.empty(n_units, dtype=torch.long)
    start = 0
    for group in (True, False):
        members = (unit_labels == group).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=gen)]
        folds[members] = (torch.arange(len(members)) + start) % n_folds
        start = (start + len(members)) % n_folds
    return folds


def ridge_alpha(x_train: Float[Tensor, "layer n d"], ridge: float) -> Float[Tensor, " layer"]:
    """The absolute penalty for a relative ``ridge``: ``ridge`` times the mean squared norm
    of the centred training rows, per layer."""
    centred = x_train - x_train.mean(1, keepdim=True)
    return ridge * centred.pow(2).sum(-1).mean(-1)


def _check_fit(y_train: Tensor, alpha: Tensor, ridge: float) -> None:
    if ridge <= 0:
        raise StatsInputError(f"ridge must be positive, got {ridge}")
    if bool((y_train > 0).all()) or bool((y_train < 0).all()):
        raise StatsInputError(
            "the probe cannot be fitted: its training rows are all in one group; each "
            "fold's training set needs both groups"
        )
    if bool((alpha <= 0).any()):
        layer = int((alpha <= 0).nonzero()[0])
        raise StatsInputError(
            f"the probe cannot be fitted at layer {layer}: all training rows are identical"
        )


def _spd_solve(a: Tensor, b: Tensor) -> Tensor:
    """``a^-1 b`` for symmetric positive definite ``a`` (a Gram or covariance plus a ridge),
    batched over layers, by Cholesky (stabler than LU, and immune to an MKL fault in
    batched LU solves seen after ``torch.set_num_threads``)."""
    chol, info = torch.linalg.cholesky_ex(a)
    if bool((info != 0).any()):
        layer = int((info != 0).nonzero()[0])
        raise StatsInputError(
            f"the probe cannot be fitted at layer {layer}: its regularised normal equations "
            "are not positive definite (non-finite or degenerate activations)"
        )
    return torch.cholesky_solve(b, chol)


def _solve_map(x_train: Tensor, x_test: Tensor, alpha: Tensor) -> Tensor:
    """``(x_test - mean) W`` where ``W`` maps centred labels to ridge weights:
    ``[layer, m, n]``, by the dual (n <= d) or primal (n > d) normal equations."""
    mean = x_train.mean(1, keepdim=True)
    xc, xt = x_train - mean, x_test - mean
    n, d = xc.shape[1:]
    if n <= d:
        gram = xc @ xc.transpose(1, 2)
        gram.diagonal(dim1=1, dim2=2).add_(alpha[:, None])
        cross = xt @ xc.transpose(1, 2)  # [layer, m, n]
        return _spd_solve(gram, cross.transpose(1, 2)).transpose(1, 2)
    cov = xc.transpose(1, 2) @ xc
    cov.diagonal(dim1=1, dim2=2).add_(alpha[:, None])
    return _spd_solve(cov, xt.transpose(1, 2)).transpose(1, 2) @ xc.transpose(1, 2)


def ridge_fit(
    x: Float[Tensor, "layer n d"], y: Float[Tensor, " n"], ridge: float = 1.0
) -> tuple[Float[Tensor, "layer d"], Float[Tensor, " layer"]]:
    """Ridge-classifier weights and intercept per layer for labels ``y`` in ``±1``:
    ``decision(x) = x @ w + b``."""
    y = y.to(device=x.device, dtype=x.dtype)
    alpha = ridge_alpha(x, ridge)
    _check_fit(y, alpha, ridge)
    mean = x.mean(1)
    xc = x - mean[:, None]
    yc = y - y.mean()
    n, d = xc.shape[1:]
    if n <= d:
        gram = xc @ xc.transpose(1, 2)
        gram.diagonal(dim1=1, dim2=2).add_(alpha[:, None])
        coef = _spd_solve(gram, yc.expand(x.shape[0], n).unsqueeze(-1))
        w = (xc.transpose(1, 2) @ coef).squeeze(-1)
    else:
        cov = xc.transpose(1, 2) @ xc
        cov.diagonal(dim1=1, dim2=2).add_(alpha[:, None])
        w = _spd_solve(cov, (xc.transpose(1, 2) @ yc).unsqueeze(-1)).squeeze(-1)
    b = y.mean() - (mean * w).sum(-1)
    return w, b


@dataclass(frozen=True)
class FoldHat:
    """One cross-validation fold's hat map.

    Fields:
        test_rows, train_rows: row indices held out and fitted on.
        hat: ``Float[Tensor, "layer test train"]``; held-out decisions are ``hat @ y_train``.
    """

    test_rows: Tensor
    train_rows: Tensor
    hat: Float[Tensor, "layer test train"]


def fold_hats(
    x: Float[Tensor, "layer row d"],
    row_folds: Int[Tensor, " row"],
    y: Float[Tensor, " row"],
    ridge: float = 1.0,
) -> list[FoldHat]:
    """The hat map of every fold (rows of fold ``f`` held out, the rest fitted on)."""
    out = []
    for f in torch.unique(row_folds).tolist():
        test = (row_folds == f).nonzero().squeeze(1)
        train = (row_folds != f).nonzero().squeeze(1)
        xtr, xte = x[:, train.to(x.device)], x[:, test.to(x.device)]
        alpha = ridge_alpha(xtr, ridge)
        _check_fit(y[train], alpha, ridge)
        q = _solve_map(xtr, xte, alpha)
        n = len(train)
        hat = q - q.sum(-1, keepdim=True) / n + 1.0 / n
        out.append(FoldHat(test, train, hat))
    return out


@dataclass(frozen=True)
class ProbeResult:
    """A linear probe's held-out performance per layer.

    Fields:
        accuracy: ``Float[Tensor, "layer"]``, the share of rows whose held-out decision
            has the sign of their label.
        decision: ``Float[Tensor, "layer row"]``, each row's decision value from the probe
            fitted without its unit (positive = first group).
        folds: fold index of each unit.
        ridge: the relative penalty.
    """

    accuracy: Float[Tensor, " layer"]
    decision: Float[Tensor, "layer row"]
    folds: Tensor
    ridge: float


def decision_map(
    x: Float[Tensor, "layer row d"] | Any,
    row_unit: Int[Tensor, " row"],
    fold_of_unit: Int[Tensor, " unit"],
    unit_y: Float[Tensor, " unit"],
    ridge: float = 1.0,
    max_memory: int = 2**30,
) -> Float[Tensor, "layer row unit"]:
    """Held-out decisions as a linear map of the units' labels: with labels ``y`` (``±1``
    per unit, the data's or a shuffle), the decisions are ``D @ y``, each row's from the
    probe fitted on the other folds. ``unit_y`` (the data's labels) is only checked: each
    fit needs both groups. A store is streamed in float64 (see the module docstring)."""
    n_layers, n, _ = source_shape(x)
    row_unit = torch.as_tensor(row_unit, dtype=torch.int64)
    n_units = fold_of_unit.shape[0]
    if is_store(x):
        check_row_unit_map(n_layers, n, n_units, max_memory, "the probe's decision map")
        folds = sorted(set(fold_of_unit.tolist()))
        out = torch.zeros((n_layers, n, n_units), dtype=torch.float64)
        row_fold = fold_of_unit[row_unit]
        for layers, fits in _store_fold_fits(
            x,
            row_fold,
            row_unit,
            fold_of_unit,
            unit_y,
            held_out=folds,
            ridge=ridge,
            max_memory=max_memory,
        ):
            block = out[layers[0] : layers[-1] + 1]  # a view: the blocks are consecutive
            _apply_fits(x, layers, row_fold, dict(zip(folds, fits, strict=True)), block)
        return out
    y = unit_y.to(x.dtype)[row_unit]
    out = x.new_zeros((n_layers, n, n_units))
    for fh in fold_hats(x, fold_of_unit[row_unit], y, ridge):
        train_units = row_unit[fh.train_rows].to(x.device)
        part = x.new_zeros((n_layers, len(fh.test_rows), n_units))
        out[:, fh.test_rows.to(x.device)] = part.index_add_(2, train_units, fh.hat)
    return out


@dataclass(frozen=True)
class FoldFit:
    """The primal ridge fit on one training set, for every labelling of its groups.

    Fields:
        mean: ``Float[Tensor, "layer d"]``, the training rows' mean.
        coef: ``Float[Tensor, "layer d group"]``, ``(Cov + alpha I)^-1`` applied to each
            group's centred row sum (0 for groups not trained on): the weights for labels
            ``y`` are ``coef @ y``.
        share: ``Float[Tensor, "group"]``, each trained group's share of the training rows:
            the intercept is ``share @ y - mean . w``.
    """

    mean: Float[Tensor, "layer d"]
    coef: Float[Tensor, "layer d group"]
    share: Float[Tensor, " group"]

    def axis(self, group_y: Tensor) -> tuple[Tensor, Tensor]:
        """Weights ``[layer, d]`` and intercept ``[layer]`` for labels ``group_y``."""
        y = group_y.to(self.coef)
        w = self.coef @ y
        return w, self.share @ y - (self.mean * w).sum(-1)


def fold_fits(
    store: RowStore,
    row_fold: Int[Tensor, " row"],
    row_group: Int[Tensor, " row"],
    group_fold: Int[Tensor, " group"],
    group_y: Tensor,
    held_out: list[int | None],
    *,
    ridge: float = 1.0,
    max_memory: int = 2**30,
) -> list[FoldFit]:
    """Ridge fits streamed from a store, one per entry of ``held_out``: trained on the
    rows whose fold (``row_fold``, ``-1`` = never trained on) is not that fold (``None``:
    every fold). Rows are summed by ``row_group``; each group lies in one fold
    (``group_fold``) and ``group_y`` (``±1``) are the labels each fit is checked for."""
    parts = list(
        _store_fold_fits(
            store,
            row_fold,
            row_group,
            group_fold,
            group_y,
            held_out=held_out,
            ridge=ridge,
            max_memory=max_memory,
        )
    )
    return [
        FoldFit(
            torch.cat([p[1][j].mean for p in parts]),
            torch.cat([p[1][j].coef for p in parts]),
            parts[0][1][j].share,
        )
        for j in range(len(held_out))
    ]


def _store_fold_fits(
    store: RowStore,
    row_fold: Tensor,
    row_group: Tensor,
    group_fold: Tensor,
    group_y: Tensor,
    *,
    held_out: list[int | None],
    ridge: float,
    max_memory: int,
) -> Iterator[tuple[list[int], list[FoldFit]]]:
    """For each block of layers that fits ``max_memory``: the fits, after one pass."""
    n_layers, _, d = source_shape(store)
    folds = sorted(set(group_fold.tolist()))
    n_groups = group_fold.shape[0]
    per_layer = 8 * d * (len(folds) * d + (1 + len(held_out)) * n_groups + d)
    advice = "raise max_memory: the probe needs folds x d_model^2 float64 numbers per layer"
    for layers in layer_blocks(n_layers, per_layer, max_memory, "the probe's fold moments", advice):
        cross = torch.zeros((len(layers), len(folds), d, d), dtype=torch.float64)
        sums = torch.zeros((len(layers), n_groups, d), dtype=torch.float64)
        for start, batch in stream_rows(store, layers, batch_rows(len(layers), d, max_memory)):
            f = row_fold[start : start + batch.shape[1]]
            g = row_group[start : start + batch.shape[1]]
            for k, fold in enumerate(folds):
                xb = batch[:, f == fold]
                cross[:, k] += xb.transpose(1, 2) @ xb
            sums.index_add_(1, g[f >= 0], batch[:, f >= 0])
        counts = torch.bincount(row_group[row_fold >= 0], minlength=n_groups).double()
        total = cross.sum(1)
        fits = []
        for h in held_out:
            trained = group_fold != h if h is not None else torch.ones(n_groups, dtype=torch.bool)
            y = torch.as_tensor(group_y, dtype=torch.float64)[trained & (counts > 0)]
            n_train = counts[trained].sum()
            mean = sums[:, trained].sum(1) / n_train
            fitted = total - cross[:, folds.index(h)] if h in folds else total.clone()
            cov = fitted - n_train * mean[:, :, None] * mean[:, None, :]
            alpha = ridge * cov.diagonal(dim1=1, dim2=2).sum(-1) / n_train
            _check_fit(y, alpha, ridge)
            centred = (sums - counts[:, None] * mean[:, None]) * trained[:, None]
            cov.diagonal(dim1=1, dim2=2).add_(alpha[:, None])
            coef = _spd_solve(cov, centred.transpose(1, 2))
            fits.append(FoldFit(mean, coef, counts * trained / n_train))
        yield layers, fits


def _apply_fits(
    store: RowStore, layers: list[int], row_fold: Tensor, fits: dict[int, FoldFit], out: Tensor
) -> None:
    """``out[:, i] = (x_i - mean) @ coef + share`` of row ``i``'s fold (a second pass)."""
    d = math.prod(store.row_shape)
    for start, batch in stream_rows(store, layers, batch_rows(len(layers), d, 2**28)):
        f = row_fold[start : start + batch.shape[1]]
        for fold, fit in fits.items():
            rows = (f == fold).nonzero().squeeze(1)
            xc = batch[:, rows] - fit.mean[:, None]
            out[:, start + rows] = xc @ fit.coef + fit.share


def probe_accuracy(
    x: Float[Tensor, "layer row d"] | Any,
    labels: Tensor,
    units: Tensor | None = None,
    *,
    n_folds: int = 5,
    ridge: float = 1.0,
    seed: Seed = 0,
    max_memory: int = 2**30,
) -> ProbeResult:
    """Cross-validated accuracy of a ridge probe separating the two groups, per layer,
    with whole units (words) held out: a word's vectors never train the probe that
    classifies them. ``x`` may be an on-disk store (streamed; float64 on the CPU)."""
    _, n, _ = source_shape(x)
    if not is_store(x):
        x = check_layered(x, "x", 3)
    lab = check_labels(labels, n)
    row_unit, unit_label = check_units(units, lab)
    folds = unit_folds(unit_label, n_folds, seed)
    unit_y = unit_label.double() * 2 - 1
    dmap = decision_map(x, row_unit, folds, unit_y, ridge, max_memory)
    decision = dmap @ unit_y.to(dmap)
    correct = (decision > 0) == lab.to(dmap.device)
    return ProbeResult(correct.to(dmap.dtype).mean(-1), decision, folds, ridge)
