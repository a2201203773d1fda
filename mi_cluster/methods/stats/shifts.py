"""Role shifts along a name-vs-object axis, with the axis's own uncertainty.

The subject/object study asks how far subject position moves an object word toward the
names: each word is read in subject and in object position of several template
families, every reading is scored on a name-vs-object axis fitted without the scored word,
and the objects' shift is the mean over object words of (subject minus object position).
Three things make the naive inference wrong, and this module handles each:

- **The axis is estimated.** Its error picks up whatever role does off the axis (and real
  models move representations with position and template), so the shifts of all words
  scored on one axis lean the same way. Here every estimate is recomputed with each word
  left out in turn (the axes of all other words refitted without it, the scale
  recalibrated), and the jackknife variance of those replicates carries the axis's error:
  a t-test with Satterthwaite's degrees of freedom over the two groups of words.
- **The scale shrinks.** On a cross-fitted axis held-out names score below 1 and objects
  above 0 (the fitted axis is longer than the true one by its noise), so a planted shift
  comes out smaller. Shifts are divided by the held-out gap (held-out names' mean score
  minus held-out objects'), so that held-out names average 1 and objects 0.
- **Templates are a sample.** "These templates" (families fixed) uses the word jackknife
  alone. "Templates in general" adds the family jackknife (each family left out in turn,
  the axis refitted), minus the word-by-family residual that both jackknives count (two-way
  ANOVA), with Satterthwaite's degrees of freedom: with five families it has few degrees
  of freedom and little power, and says so by its wide intervals.

The interaction (objects' minus names' shift) comes from the same replicates, so it is
studentized (each group's own variance, Welch-like degrees of freedom). Calibration under
realistic nulls (role moving words off the axis by up to three times the name-object gap,
unequal groups and variances, random family-by-type-by-role effects, heavy tails) is tested
in ``tests/test_shift_calibration.py``; the README reports the rates.

Axes: ``"centroid"`` (object centroid 0, name centroid 1), fitted leaving out one word at
a time in closed form; ``"probe"`` (a ridge probe's decision value), fitted on ``n_folds``
folds of words (refitted in every replicate). The word jackknife counts part of an axis's
noise twice (a shift on an estimated axis carries the product of two noises); for the
centroid that part has a closed form and is subtracted, for the probe it has none, so the
probe's tests are conservative (false-positive rates 0.012-0.030 where the centroid's are
0.035-0.06): a robustness check, not the primary inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mi_cluster.methods.stats.inputs import StatsInputError
from mi_cluster.methods.stats.jackknife import (
    SCOPES,
    ScopedShift,
    jackknife_scopes,
    replicate_weights,
)
from mi_cluster.methods.stats.probe import ridge_fit, unit_folds
from mi_cluster.methods.stats.resampling import Seed

__all__ = ["SCOPES", "RoleShifts", "ScopedShift", "role_shift_inference"]

Cells = Float[Tensor, "layer word family role d_model"]  # role 0: subject, 1: object


@dataclass(frozen=True)
class RoleShifts:
    """The objects' and names' shifts and their interaction, in both scopes.

    Fields:
        objects, names, interaction: scope -> :class:`ScopedShift` (interaction: objects'
            minus names' shift).
        family_objects, family_interaction: per template family, the objects' shift and
            the interaction within that family alone (on the common scale; words left
            out, "these templates"), as :class:`ScopedShift`.
        direction, offset: each word's axis on the data, ``[layer, word, d_model]`` and
            ``[layer, word]`` (fitted without the word), on the calibrated scale:
            ``x . direction + offset`` averages 0 over held-out objects and 1 over
            held-out names (:meth:`score`).
        held_out_names, held_out_objects: ``Float[Tensor, "layer"]``, the shrinkage the
            calibration undoes: the mean held-out score of names and of objects on the
            scale where each word's axis puts its own training centroids at 0 (objects)
            and 1 (names). No shrinkage would give 1 and 0.
        method: the axis (``"centroid"`` or ``"probe"``); n_folds: folds of words for the
            axis (None: each word left out alone).
        n_names, n_objects, n_families: the design's size.
    """

    objects: dict[str, ScopedShift]
    names: dict[str, ScopedShift]
    interaction: dict[str, ScopedShift]
    family_objects: tuple[ScopedShift, ...]
    family_interaction: tuple[ScopedShift, ...]
    direction: Float[Tensor, "layer word d_model"]
    offset: Float[Tensor, "layer word"]
    held_out_names: Float[Tensor, " layer"]
    held_out_objects: Float[Tensor, " layer"]
    method: str
    n_folds: int | None
    n_names: int
    n_objects: int
    n_families: int

    def score(
        self, x: Float[Tensor, "layer item d_model"], word: Int[Tensor, " item"]
    ) -> Float[Tensor, "layer item"]:
        """Readings ``x`` (any: a word alone, in context) on the calibrated scale, each
        scored by the axis fitted without its word ``word[i]`` (an index into the words):
        held-out objects average 0 and held-out names 1."""
        word = torch.as_tensor(word, dtype=torch.long, device=self.direction.device)
        if x.ndim != 3 or word.shape != (x.shape[1],) or x.shape[0] != self.direction.shape[0]:
            raise StatsInputError(
                f"score needs x [layer ({self.direction.shape[0]}), item, d_model] and one "
                f"word index per item, got {tuple(x.shape)} and {tuple(word.shape)}"
            )
        if bool(((word < 0) | (word >= self.direction.shape[1])).any()):
            raise StatsInputError(f"word indices must lie in [0, {self.direction.shape[1]})")
        return (x * self.direction[:, word].to(x)).sum(-1) + self.offset[:, word].to(x)

    def __repr__(self) -> str:
        return (
            f"RoleShifts({self.method}, {self.n_names} names, {self.n_objects} objects, "
            f"{self.n_families} families, {self.held_out_names.shape[0]} layers)"
        )


# ---------------------------------------------------------------------------------------
# Replicates: the whole pipeline on the data, on each word left out, on each family left out.


@dataclass(frozen=True)
class _Replicates:
    """Raw (uncalibrated) quantities of every replicate ``j``: cell shifts ``[j, layer,
    word, family]`` and held-out scores of each word ``[j, layer, word]`` on the axis
    that left the word out."""

    cells: Tensor
    held: Tensor
    direction: Tensor  # [layer, word, d]: the data's axis for each word (score = x . dir + off)
    offset: Tensor  # [layer, word]
    own: Tensor  # [layer, word, 2]: that axis's scores of its training object, name centroids


def _lowo_centroid(x: Tensor, is_name: Tensor, ww: Tensor, fw: Tensor) -> _Replicates:
    """Centroid axes leaving out one word at a time, in closed form, for every replicate:
    word ``k``'s axis is the name centroid minus the object centroid of the replicate's
    other words and families (its readings averaged over roles)."""
    name = is_name.to(x.dtype)
    fwn = fw / fw.sum(-1, keepdim=True)  # [J, F]
    cells_out, held_out, directions, offsets, owns = [], [], [], [], []
    for layer in range(x.shape[0]):  # one layer at a time: [J, word, d] intermediates
        xl = x[layer]  # [K, F, 2, d]
        mean = torch.einsum("kfrd,jf->jkd", xl, fwn) / 2  # each word over families, roles
        diff = xl[:, :, 0] - xl[:, :, 1]  # [K, F, d]
        cols = []
        for group in (name, 1 - name):
            w = ww * group  # [J, K]
            total = torch.einsum("jkd,jk->jd", mean, w)
            left = total[:, None] - w[..., None] * mean  # without word k (all its copies)
            cols.append(left / (w.sum(-1, keepdim=True) - w)[..., None])
        c_name, c_obj = cols
        axis = c_name - c_obj  # [J, K, d]
        held_out.append(((mean - c_obj) * axis).sum(-1))
        cells_out.append(torch.einsum("kfd,jkd->jkf", diff, axis))
        directions.append(axis[0])
        offsets.append(-(c_obj[0] * directions[-1]).sum(-1))
        owns.append(torch.stack([torch.zeros_like(offsets[-1]), axis[0].pow(2).sum(-1)], -1))
    return _Replicates(
        torch.stack(cells_out, 1), torch.stack(held_out, 1), torch.stack(directions),
        torch.stack(offsets), torch.stack(owns),
    )  # fmt: skip


def _fit_axis(rows: Tensor, label: Tensor, method: str, ridge: float) -> tuple[Tensor, Tensor]:
    """``(direction [layer, d], offset [layer])`` with ``score = x . direction + offset``:
    the centroid axis (objects at 0, ``direction`` the name centroid minus the object
    centroid) or a ridge probe's decision value."""
    if method == "probe":
        return ridge_fit(rows, label.to(rows.dtype) * 2 - 1, ridge)
    c_name, c_obj = rows[:, label].mean(1), rows[:, ~label].mean(1)
    direction = c_name - c_obj  # unnormalised: the calibration divides by the held-out gap
    return direction, -(c_obj * direction).sum(-1)


def _folded(
    x: Tensor, is_name: Tensor, ww: Tensor, fw: Tensor, folds: Tensor, *, method: str, ridge: float
) -> _Replicates:
    """Axes fitted on folds of words, refitted in every replicate: word ``k`` is scored by
    the axis fitted on the replicate's readings of the words outside ``k``'s fold."""
    n_layers, n_words, n_families = x.shape[:3]
    n_rep, n_folds = ww.shape[0], int(folds.max()) + 1
    cells = torch.empty(n_rep, n_layers, n_words, n_families, dtype=x.dtype, device=x.device)
    held = torch.empty(n_rep, n_layers, n_words, dtype=x.dtype, device=x.device)
    direction = torch.empty(n_layers, n_words, x.shape[-1], dtype=x.dtype, device=x.device)
    offset = torch.empty(n_layers, n_words, dtype=x.dtype, device=x.device)
    own = torch.empty(n_layers, n_words, 2, dtype=x.dtype, device=x.device)
    label = is_name[:, None, None].expand(n_words, n_families, 2)
    for j in range(n_rep):
        fam = fw[j] > 0
        for f in range(n_folds):
            train = (ww[j] > 0) & (folds != f)
            rows = x[:, train][:, :, fam].reshape(n_layers, -1, x.shape[-1])
            w, b = _fit_axis(rows, label[train][:, fam].reshape(-1), method, ridge)
            scored = (folds == f).nonzero().squeeze(1)
            score = torch.einsum("lkfrd,ld->lkfr", x[:, scored], w) + b[:, None, None, None]
            cells[j, :, scored] = score[..., 0] - score[..., 1]
            held[j, :, scored] = score[:, :, fam].mean((2, 3))
            if j == 0:
                direction[:, scored], offset[:, scored] = w[:, None], b[:, None]
                lab = label[train][:, fam].reshape(-1)
                centroids = torch.stack([rows[:, ~lab].mean(1), rows[:, lab].mean(1)], 1)
                own[:, scored] = (torch.einsum("lcd,ld->lc", centroids, w) + b[:, None])[:, None]
    return _Replicates(cells, held, direction, offset, own)


# ---------------------------------------------------------------------------------------
# From replicates to estimates and their inference.


@dataclass(frozen=True)
class _Calibrated:
    """Per replicate ``[J, layer]``: the calibrated shifts of objects and names, the
    held-out means, and the per-family shifts ``[J, layer, family]``."""

    objects: Tensor
    names: Tensor
    held_names: Tensor
    held_objects: Tensor
    family_objects: Tensor
    family_names: Tensor
    cells: Tensor  # [J, layer, word, family], calibrated


def _calibrate(rep: _Replicates, is_name: Tensor, ww: Tensor, fw: Tensor) -> _Calibrated:
    groups = {}
    for key, member in (("names", is_name), ("objects", ~is_name)):
        w = ww * member.to(ww.dtype)  # [J, K]
        held = (rep.held * w[:, None]).sum(-1) / w.sum(-1)[:, None]  # [J, L]
        cell_w = w[:, None, :, None] * fw[:, None, None, :]  # [J, 1, K, F]
        shift = (rep.cells * cell_w).sum((2, 3)) / cell_w.sum((2, 3))
        family = (rep.cells * w[:, None, :, None]).sum(2) / w.sum(-1)[:, None, None]
        groups[key] = (held, shift, family)
    gap = groups["names"][0] - groups["objects"][0]  # the held-out gap: the scale's unit
    return _Calibrated(
        objects=groups["objects"][1] / gap,
        names=groups["names"][1] / gap,
        held_names=groups["names"][0],
        held_objects=groups["objects"][0],
        family_objects=groups["objects"][2] / gap[..., None],
        family_names=groups["names"][2] / gap[..., None],
        cells=rep.cells / gap[..., None, None],
    )


def _axis_overlap(x: Tensor, is_name: Tensor) -> dict[str, Tensor]:
    """What the word jackknife counts twice of a centroid axis's noise, in raw units.

    A shift scored on an estimated axis carries the product of the shifts' noise and the
    axis's noise; its variance, ``tr(S_s S_e) / n`` (``S_s`` the covariance of the group's
    per-word shifts, ``S_e`` the axis's: each group's word-mean covariance over its size),
    is counted once by each word's own term and once more by its part in the axis. This
    returns that second count, estimated from pairs of different words (a word's shift and
    mean share its noise's scale, so same-word pairs would bias it), for each group's shift
    over families ``[layer]`` and in each family ``[layer, family]``."""
    means = x.mean((2, 3))  # [layer, word, d]
    diffs = x[:, :, :, 0] - x[:, :, :, 1]  # [layer, word, family, d]
    out = {}
    for key, member in (("objects", ~is_name), ("names", is_name)):
        shifts = torch.cat([diffs[:, member].mean(2, keepdim=True), diffs[:, member]], 2)
        shifts = shifts - shifts.mean(1, keepdim=True)  # [layer, n, 1 + family, d]
        n = shifts.shape[1]
        total = torch.zeros(shifts.shape[0], shifts.shape[2], dtype=x.dtype, device=x.device)
        for group in (is_name, ~is_name):
            m = means[:, group] - means[:, group].mean(1, keepdim=True)  # [layer, g, d]
            g = m.shape[1]
            dots = torch.einsum("lkfd,lmd->lfkm", shifts, m).pow(2)
            if group.equal(member):  # pairs of different words, centring allowed for
                same = dots.diagonal(dim1=-2, dim2=-1).sum(-1)
                trace = (dots.sum((-2, -1)) - same) * n / (n - 1) ** 3
            else:
                trace = dots.sum((-2, -1)) / ((n - 1) * (g - 1))
            total = total + trace / (n * g)
        out[key], out[f"family_{key}"] = total[:, 0], total[:, 1:]
    return out


def _double_count(influence: Tensor, is_name: Tensor) -> Tensor:
    """What the word and the family jackknife both count of an estimate, per layer: the
    word-by-family residual of its per-cell influence ``[layer, word, family]`` (two-way
    ANOVA within each word type), ``sum_g n_g F MS_e(g)``. The crossed variance subtracts
    it once."""
    total = torch.zeros_like(influence[:, 0, 0])
    for member in (is_name, ~is_name):
        c = influence[:, member]
        n, f = c.shape[1], c.shape[2]
        r = c - c.mean(1, keepdim=True) - c.mean(2, keepdim=True) + c.mean((1, 2), keepdim=True)
        total = total + r.pow(2).sum((1, 2)) * n * f / ((n - 1) * (f - 1))
    return total


def _influences(
    x: Tensor, cells: Tensor, is_name: Tensor, gap: Tensor, axis: bool
) -> dict[str, Tensor]:
    """Each cell's first-order influence ``[layer, word, family]`` on the objects' and the
    names' calibrated shift: through its own shift (the group's cells over their number)
    and, for a centroid axis (``axis``), through the axis (its mean reading moves its
    type's centroid, which moves every shift by the mean shift vector's projection)."""
    n_families = x.shape[2]
    sign = is_name.to(x.dtype) * 2 - 1  # the axis is the name centroid minus the object one
    size = torch.where(is_name, is_name.sum(), (~is_name).sum()).to(x.dtype)
    means = x.mean(3)  # [layer, word, family, d]
    diffs = x[:, :, :, 0] - x[:, :, :, 1]
    out = {}
    for key, member in (("objects", ~is_name), ("names", is_name)):
        own = cells * member.to(x.dtype)[:, None] / (int(member.sum()) * n_families)
        if axis:
            shift = diffs[:, member].mean((1, 2)) / gap[:, None]  # [layer, d]
            through = torch.einsum("lkfd,ld->lkf", means, shift) * (sign / size)[:, None]
            own = own + through / n_families
        out[key] = own
    return out


def _word_scoped(
    values: Tensor, is_name: Tensor, overlap: Tensor, confidence: float, dtype: torch.dtype
) -> ScopedShift:
    """The inference for these templates of an estimate, from its data and word replicates."""
    n_families = 2  # unused: no family replicates enter the word scope
    dummy = torch.zeros(n_families, values.shape[1], dtype=values.dtype, device=values.device)
    full = torch.cat([values[: 1 + is_name.shape[0]], dummy])
    zero = torch.zeros_like(values[0])
    return jackknife_scopes(
        full,
        is_name,
        n_families,
        residual=zero,
        overlap=overlap,
        confidence=confidence,
        dtype=dtype,
    )[SCOPES[0]]


def role_shift_inference(
    cells: Cells,
    is_name: Bool[Tensor, " word"],
    *,
    method: str = "centroid",
    n_folds: int | None = None,
    ridge: float = 1.0,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> RoleShifts:
    """The objects' and names' shifts (subject minus object position) and their
    interaction, with the inference described in the module docstring.

    Args:
        cells: ``[layer, word, family, role, d_model]``, each word's reading in each
            template family in subject (role 0) and object (role 1) position.
        is_name: per word, True for names, False for objects.
        method: ``"centroid"`` or ``"probe"``.
        n_folds: folds of words for the axis; None (the centroid's default): each word
            left out alone; the probe needs folds (default 5).
        ridge: the probe's relative penalty.
        confidence: the intervals' level.
        seed: deals words into folds (folds only).
    """
    x, name = _check_cells(cells, is_name)
    n_layers, n_words, n_families = x.shape[:3]
    ww, fw = replicate_weights(n_words, n_families)
    if method not in ("centroid", "probe"):
        raise StatsInputError(f"method must be 'centroid' or 'probe', got {method!r}")
    if method == "probe" and n_folds is None:
        n_folds = 5
    if n_folds is None:
        rep = _lowo_centroid(x, name, ww, fw)
    else:
        rep = _folded(x, name, ww, fw, unit_folds(name, n_folds, seed), method=method, ridge=ridge)
    cal = _calibrate(rep, name, ww, fw)
    gap = cal.held_names[0] - cal.held_objects[0]
    infl = _influences(x, cal.cells[0], name, gap, axis=method == "centroid")
    res = {k: _double_count(v, name) for k, v in infl.items()}
    res["interaction"] = _double_count(infl["objects"] - infl["names"], name)
    if method == "centroid":
        over = {
            k: v / gap.reshape(-1, *[1] * (v.ndim - 1)).pow(2)
            for k, v in _axis_overlap(x, name).items()
        }
    else:  # a probe's noise has no closed form: the jackknife may count it twice
        zero = torch.zeros(n_layers, 1 + n_families, dtype=x.dtype, device=x.device)
        over = {"objects": zero[:, 0], "names": zero[:, 0]}
        over |= {"family_objects": zero[:, 1:], "family_names": zero[:, 1:]}
    scoped = {
        key: jackknife_scopes(
            values,
            name,
            n_families,
            residual=res_v,
            overlap=over_v,
            confidence=confidence,
            dtype=cells.dtype,
        )
        for key, values, res_v, over_v in (
            ("objects", cal.objects, res["objects"], over["objects"]),
            ("names", cal.names, res["names"], over["names"]),
            ("interaction", cal.objects - cal.names, res["interaction"],
             over["objects"] + over["names"]),
        )
    }  # fmt: skip
    fam_over = over["family_objects"] + over["family_names"]
    zero, one = rep.own[..., 0], rep.own[..., 1]
    held_own = (rep.held[0] - zero) / (one - zero)  # [layer, word]: own centroids 0 and 1
    return RoleShifts(
        objects=scoped["objects"],
        names=scoped["names"],
        interaction=scoped["interaction"],
        family_objects=tuple(
            _word_scoped(
                cal.family_objects[..., f],
                name,
                over["family_objects"][:, f],
                confidence,
                cells.dtype,
            )
            for f in range(n_families)
        ),
        family_interaction=tuple(
            _word_scoped(
                cal.family_objects[..., f] - cal.family_names[..., f],
                name,
                fam_over[:, f],
                confidence,
                cells.dtype,
            )
            for f in range(n_families)
        ),  # fmt: skip
        direction=(rep.direction / gap[:, None, None]).to(cells.dtype),
        offset=((rep.offset - cal.held_objects[0][:, None]) / gap[:, None]).to(cells.dtype),
        held_out_names=held_own[:, name].mean(1).to(cells.dtype),
        held_out_objects=held_own[:, ~name].mean(1).to(cells.dtype),
        method=method,
        n_folds=n_folds,
        n_names=int(name.sum()),
        n_objects=int((~name).sum()),
        n_families=n_families,
    )


def _check_cells(cells: Tensor, is_name: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(cells, Tensor) or cells.ndim != 5 or cells.shape[3] != 2:
        shape = tuple(cells.shape) if isinstance(cells, Tensor) else type(cells).__name__
        raise StatsInputError(
            f"cells must be [layer, word, family, role (subject, object), d_model], got {shape}"
        )
    if not cells.is_floating_point():
        raise StatsInputError(f"cells must be floating point, got {cells.dtype}")
    name = torch.as_tensor(is_name, dtype=torch.bool).to(cells.device)
    if name.shape != (cells.shape[1],):
        raise StatsInputError(f"is_name has {name.shape[0]} entries for {cells.shape[1]} words")
    n_names, n_objects = int(name.sum()), int((~name).sum())
    if n_names < 3 or n_objects < 3:
        raise StatsInputError(
            f"role shifts need at least 3 names and 3 objects, got {n_names} and {n_objects}"
        )
    if cells.shape[2] < 2:
        raise StatsInputError("role shifts need at least 2 template families")
    x = cells.detach().to(torch.float64)  # jackknife differences are small: float64
    if not bool(torch.isfinite(x).all()):
        raise StatsInputError("cells hold NaN or infinite values")
    return x, name
