"""Input checks shared by every statistic, with errors that name the problem.

Conventions: representations are ``Float[Tensor, "layer row d_model"]`` (one row per
prompt or word, a leading layer axis that every statistic is vectorised over); per-row
scalars (scores, paired differences) are ``Float[Tensor, "layer row"]``. Two groups are
given as one boolean label per row (``True`` = the first group, e.g. names). Rows that
belong to the same *unit* (a word read in several templates) share one label and are
resampled together: a unit, not a row, is what permutations and bootstraps exchange.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

__all__ = ["StatsInputError", "check_labels", "check_layered", "check_units"]


class StatsInputError(ValueError):
    """An input a statistic cannot use: wrong shape, non-finite values, groups that are
    too small, labels that disagree with the data, or a probe that cannot be fitted."""


def check_layered(x: Tensor, name: str, ndim: int) -> Tensor:
    """``x`` as a floating tensor of ``ndim`` dimensions with finite values."""
    if not isinstance(x, Tensor):
        raise StatsInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        want = "[layer, row, d_model]" if ndim == 3 else "[layer, row]"
        raise StatsInputError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if x.is_complex():
        raise StatsInputError(f"{name} is complex; statistics take real tensors")
    if not x.is_floating_point():
        x = x.double()
    elif x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # half precision lacks the ops and the range: computed in float32
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise StatsInputError(
            f"{name} has {int(bad.sum())} non-finite values (NaN or inf); the first at "
            f"index {where} (layer, row{', feature' if ndim == 3 else ''})"
        )
    return x


def check_labels(
    labels: Tensor | Sequence[bool], n_rows: int, name: str = "labels", min_per_group: int = 2
) -> Bool[Tensor, " row"]:
    """One boolean per row, with at least ``min_per_group`` rows in each of the two groups."""
    lab = torch.as_tensor(labels)
    if lab.ndim != 1:
        raise StatsInputError(f"{name} must be one label per row, got shape {tuple(lab.shape)}")
    if lab.shape[0] != n_rows:
        raise StatsInputError(f"{name} has {lab.shape[0]} entries for {n_rows} rows")
    if lab.dtype != torch.bool:
        values = torch.unique(lab)
        if not bool(((values == 0) | (values == 1)).all()):
            raise StatsInputError(
                f"{name} must be booleans (True = first group) or 0/1, got values "
                f"{values.tolist()[:5]}"
            )
        lab = lab == 1
    n_true = int(lab.sum())
    for group, count in (("True (first)", n_true), ("False (second)", n_rows - n_true)):
        if count < min_per_group:
            raise StatsInputError(
                f"group {group} of {name} has {count} member(s); this statistic needs at "
                f"least {min_per_group} in each group"
            )
    return lab


def check_units(
    units: Tensor | Sequence[int] | None, labels: Bool[Tensor, " row"]
) -> tuple[Int[Tensor, " row"], Bool[Tensor, " unit"]]:
    """Unit index of each row (``None``: every row its own unit), renumbered 0..u-1, and
    the label of each unit; every row of a unit must carry the unit's label."""
    n = labels.shape[0]
    if units is None:
        return torch.arange(n), labels.clone()
    u = torch.as_tensor(units)
    if u.ndim != 1 or u.shape[0] != n:
        raise StatsInputError(
            f"units has shape {tuple(u.shape)}; expected one unit id per row ({n})"
        )
    _, idx = torch.unique(u, return_inverse=True)
    n_units = int(idx.max()) + 1
    unit_label = torch.zeros(n_units, dtype=torch.bool)
    unit_label[idx] = labels
    mixed = unit_label[idx] != labels
    if bool(mixed.any()):
        row = int(mixed.nonzero()[0])
        raise StatsInputError(
            f"unit {int(u[row])} has rows in both groups (row {row}); a unit (e.g. a word) "
            "must belong to one group"
        )
    return idx, unit_label
