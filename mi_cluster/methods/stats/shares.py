"""The share of a role shift that each component carries, with the axis's error carried.

A component's effect on a word read at some layer (patching its output from the subject
into the object form) is scored on the word's name-vs-object axis, fitted without the word;
its share is ``sum(effect) / sum(shift)`` over the pairs (words x families). The axis is
estimated, and a component that moves words *off* the name-object direction registers
through the axis's error: all pairs lean the same way, and a test over words that holds the
axis fixed rejects far too often (0.74 and 0.93 at 0.05 with the component moving words
1 and 3 times the name-object gap off the axis, in ``tests/test_shares.py``).

Every centroid axis is a difference of averages of the words' per-family mean readings, so
a component's effect on every replicate's axis is known from its effect projected on those
readings (:func:`share_basis`; patching measures them in one sweep with a metric of several
numbers). Each replicate (each word, each family left out:
:mod:`~mi_cluster.methods.stats.jackknife`)
refits every axis and recomputes the share; the two scopes' t inference follows. No part of
the double count is subtracted, so the tests are conservative (measured false-positive
rates 0-0.025, coverage 0.975-1.0, in ``tests/test_shares.py``).
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

__all__ = ["ComponentShares", "component_share_inference", "share_basis"]


@dataclass(frozen=True)
class ComponentShares:
    """Each component's share of the shift, in both scopes.

    Fields:
        share: scope -> :class:`~mi_cluster.methods.stats.ScopedShift` over components (estimate:
            the fraction ``sum(effect) / sum(shift)``; tests of fraction 0; Holm and BH
            across the components).
        n_pairs: pairs (words x families) the shares sum over.
    """

    share: dict[str, ScopedShift]
    n_pairs: int

    def __repr__(self) -> str:
        n = self.share[SCOPES[0]].estimate.shape[0]
        return f"ComponentShares({n} components, {self.n_pairs} pairs)"


def share_basis(
    cells: Float[Tensor, "word family role d_model"],
) -> Float[Tensor, "word_family d_model"]:
    """The readings every axis is built from: each word's mean over roles in each family,
    ``[word * family, d_model]`` (word-major). Project each pair's effect on these rows."""
    return cells.mean(2).reshape(-1, cells.shape[-1])


def _axis_coefficients(is_name: Tensor, ww: Tensor, fw: Tensor) -> Tensor:
    """``[J, word, word', family]``: word ``w``'s centroid axis in replicate ``j`` as a
    combination of the per-family mean readings (``w`` itself left out)."""
    n_words = is_name.shape[0]
    others = 1 - torch.eye(n_words, dtype=ww.dtype, device=ww.device)
    coef = torch.zeros(ww.shape[0], n_words, n_words, fw.shape[1], dtype=ww.dtype)
    for member, sign in ((is_name, 1.0), (~is_name, -1.0)):
        w = ww[:, None, :] * member.to(ww.dtype)[None, None, :] * others  # [J, w, k]
        total = w.sum(-1) * fw.sum(-1)[:, None]
        coef = coef + sign * w[..., None] * fw[:, None, None, :] / total[..., None, None]
    return coef


def component_share_inference(
    cells: Float[Tensor, "word family role d_model"],
    is_name: Bool[Tensor, " word"],
    effects: Float[Tensor, "component pair word_family"],
    pair_word: Int[Tensor, " pair"],
    pair_family: Int[Tensor, " pair"],
    *,
    confidence: float = 0.95,
) -> ComponentShares:
    """The share of the shift each component carries, in both scopes.

    Args:
        cells: each word's reading at the read layer in subject (role 0) and object
            (role 1) position of each family; every word, names and objects (they all
            make the axes).
        is_name: per word, True for names.
        effects: each component's effect on each pair's reading (patched minus
            unpatched) projected on :func:`share_basis`'s rows.
        pair_word: each pair's word (an index into ``cells``).
        pair_family: each pair's family (an index into ``cells``).
        confidence: the intervals' level.
    """
    x, name, e, pw, pf = _check(cells, is_name, effects, pair_word, pair_family)
    n_words, n_families = x.shape[:2]
    ww, fw = replicate_weights(n_words, n_families)
    coef = _axis_coefficients(name, ww, fw)[:, pw].reshape(ww.shape[0], len(pw), -1)
    keep = ww[:, pw] * fw[:, pf]  # [J, pair]: the pairs each replicate keeps
    diff = x[pw, pf, 0] - x[pw, pf, 1]  # [pair, d]
    shift = torch.einsum("pd,md->pm", diff, share_basis(x))  # the shift's projections
    weights = keep[..., None] * coef  # [J, pair, word_family]
    num = torch.einsum("jpm,cpm->jc", weights, e)
    den = torch.einsum("jpm,pm->j", weights, shift)
    if bool((den.abs() < 1e-12 * den.abs().max().clamp_min(1e-300)).any()):
        raise StatsInputError("the shift sums to zero in a replicate: shares are undefined")
    values = num / den[:, None]  # [J, component]
    zero = torch.zeros_like(values[0])
    share = jackknife_scopes(
        values,
        name,
        n_families,
        residual=zero,
        overlap=zero,
        confidence=confidence,
        dtype=effects.dtype,
    )
    return ComponentShares(share=share, n_pairs=len(pw))


def _check(cells, is_name, effects, pair_word, pair_family):
    if not isinstance(cells, Tensor) or cells.ndim != 4 or cells.shape[2] != 2:
        raise StatsInputError("cells must be [word, family, role (subject, object), d_model]")
    n_words, n_families = cells.shape[:2]
    name = torch.as_tensor(is_name, dtype=torch.bool)
    if name.shape != (n_words,) or int(name.sum()) < 3 or int((~name).sum()) < 3:
        raise StatsInputError("is_name needs one entry per word, at least 3 names and 3 objects")
    if n_families < 2:
        raise StatsInputError("shares need at least 2 template families")
    pw, pf = torch.as_tensor(pair_word).long(), torch.as_tensor(pair_family).long()
    if effects.ndim != 3 or effects.shape[1:] != (len(pw), n_words * n_families):
        raise StatsInputError(
            f"effects must be [component, pair ({len(pw)}), word x family "
            f"({n_words * n_families})], got {tuple(effects.shape)}"
        )
    if pf.shape != pw.shape or bool((pw < 0).any() | (pw >= n_words).any()):
        raise StatsInputError("pair_word and pair_family must index the cells' words, families")
    if bool((pf < 0).any() | (pf >= n_families).any()):
        raise StatsInputError("pair_family must index the cells' families")
    x, e = cells.detach().double().cpu(), effects.detach().double().cpu()
    if not bool(torch.isfinite(x).all() and torch.isfinite(e).all()):
        raise StatsInputError("cells or effects hold NaN or infinite values")
    return x, name.cpu(), e, pw.cpu(), pf.cpu()
