"""Linear probes, cross-validated over held-out units (words), for every layer at once.

The probe is a ridge classifier (least squares on labels ``±1`` with an intercept and an
L2 penalty), as ``sklearn.linear_model.RidgeClassifier``: solved in closed form, batched
over layers, so it is exact and reproducible. Its penalty is relative,
``alpha = ridge * mean squared norm of the centred training rows``, so one ``ridge``
regularises every layer alike although residual norms grow with depth.

Held-out predictions are a linear function of the training labels,
``decision_test = A @ y_train`` with ``A`` fixed by the inputs alone (the "hat map"), so
a label-permutation test re-uses ``A`` for every permutation instead of refitting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mi_cluster.stats.inputs import StatsInputError, check_labels, check_layered, check_units
from mi_cluster.stats.resampling import Seed, make_generator

__all__ = [
    "FoldHat",
    "ProbeResult",
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


def probe_accuracy(
    x: Float[Tensor, "layer row d"],
    labels: Tensor,
    units: Tensor | None = None,
    *,
    n_folds: int = 5,
    ridge: float = 1.0,
    seed: Seed = 0,
) -> ProbeResult:
    """Cross-validated accuracy of a ridge probe separating the two groups, per layer,
    with whole units (words) held out: a word's vectors never train the probe that
    classifies them."""
    x = check_layered(x, "x", 3)
    lab = check_labels(labels, x.shape[1])
    row_unit, unit_label = check_units(units, lab)
    folds = unit_folds(unit_label, n_folds, seed)
    y = lab.to(x.dtype) * 2 - 1
    decision = torch.empty(x.shape[:2], dtype=x.dtype, device=x.device)
    for fh in fold_hats(x, folds[row_unit], y, ridge):
        decision[:, fh.test_rows.to(x.device)] = fh.hat @ y[fh.train_rows].to(x.device)
    correct = (decision > 0) == lab.to(x.device)
    return ProbeResult(correct.to(x.dtype).mean(-1), decision, folds, ridge)
