"""Jackknife inference in two scopes, for statistics of words read in template families.

An estimate is recomputed on every replicate: the data, each word left out, each family
left out (:func:`replicate_weights`), with whatever it depends on refitted (an axis, a
scale). :func:`jackknife_scopes` turns the replicates into t intervals and tests with
Satterthwaite's degrees of freedom: "these templates" from the word jackknife (stratified
by word type), "templates in general" adding the family jackknife. Used by
:mod:`~mi_cluster.methods.stats.shifts` (role shifts) and
:mod:`~mi_cluster.methods.stats.shares` (the shares components carry).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.methods.stats.corrections import benjamini_hochberg, holm
from mi_cluster.methods.stats.student_t import t_quantile, t_two_sided_p

__all__ = ["SCOPES", "ScopedShift", "jackknife_scopes", "replicate_weights", "word_variance"]

SCOPES: tuple[str, ...] = ("these templates", "templates in general")


@dataclass(frozen=True)
class ScopedShift:
    """An estimate per entry (each layer of a role shift, each component of a share), with
    its inference in one scope.

    Fields:
        scope: ``"these templates"`` (families fixed) or ``"templates in general"``
            (families a random sample, crossed with words).
        estimate: ``Float[Tensor, "entry"]``; a shift is on the calibrated scale
            (held-out objects 0, held-out names 1), a share is a fraction of the shift.
        se: its jackknife standard error; df: Satterthwaite's degrees of freedom.
        low, high: the ``confidence`` interval ``estimate -/+ t_df se``.
        p_value: two-sided, of the t statistic ``estimate / se``; p_holm, p_bh: corrected
            across the entries.
        confidence: the interval's level.
    """

    scope: str
    estimate: Float[Tensor, " entry"]
    se: Float[Tensor, " entry"]
    df: Float[Tensor, " entry"]
    low: Float[Tensor, " entry"]
    high: Float[Tensor, " entry"]
    p_value: Float[Tensor, " entry"]
    p_holm: Float[Tensor, " entry"]
    p_bh: Float[Tensor, " entry"]
    confidence: float

    def __repr__(self) -> str:
        return f"ScopedShift({self.scope!r}, {self.estimate.shape[0]} entries)"


def replicate_weights(n_words: int, n_families: int) -> tuple[Tensor, Tensor]:
    """Word and family weights of the replicates: all ones, then each word left out, then
    each family left out: ``([J, word], [J, family])``."""
    words = torch.ones(1 + n_words + n_families, n_words, dtype=torch.float64)
    words[1 : 1 + n_words].fill_diagonal_(0)
    fams = torch.ones(1 + n_words + n_families, n_families, dtype=torch.float64)
    fams[1 + n_words :].fill_diagonal_(0)
    return words, fams


def word_variance(values: Tensor, is_name: Tensor) -> tuple[Tensor, Tensor]:
    """Jackknife variance of an estimate from its delete-one-word replicates ``[word,
    layer]``, stratified by word type, and the denominator of Satterthwaite's degrees of
    freedom (each type's part over its ``n - 1``)."""
    variance = torch.zeros_like(values[0])
    df_den = torch.zeros_like(values[0])
    for member in (is_name, ~is_name):
        v, n = values[member], int(member.sum())
        part = (n - 1) / n * (v - v.mean(0)).pow(2).sum(0)
        variance, df_den = variance + part, df_den + part.pow(2) / (n - 1)
    return variance, df_den


def jackknife_scopes(
    values: Tensor,
    is_name: Tensor,
    n_families: int,
    *,
    residual: Tensor,
    overlap: Tensor,
    confidence: float,
    dtype: torch.dtype,
) -> dict[str, ScopedShift]:
    """Both scopes' inference of one estimate from its replicates ``[J, layer]`` (data,
    words left out, families left out); ``overlap`` is what the word jackknife counts twice
    (:func:`_axis_overlap`, calibrated), subtracted but never below a quarter of it. The
    results come in ``dtype`` (the cells')."""
    n_words = is_name.shape[0]
    estimate = values[0]
    v_words, df_den = word_variance(values[1 : 1 + n_words], is_name)
    kept = (v_words - overlap).clamp_min(v_words / 4) / v_words.clamp_min(1e-300)
    v_words, df_den = v_words * kept, df_den * kept.pow(2)
    fam = values[1 + n_words :]
    v_fam = (n_families - 1) / n_families * (fam - fam.mean(0)).pow(2).sum(0)
    # The double count comes off the word part (many words: stable), not the family
    # part (a handful of families: subtracting from it would often leave nothing).
    words_own = (v_words - residual).clamp_min(0) / v_words.clamp_min(1e-300)
    crossed = v_words * words_own + v_fam
    crossed_den = df_den * words_own.pow(2) + v_fam.pow(2) / (n_families - 1)
    out = {}
    for scope, variance, den in ((SCOPES[0], v_words, df_den), (SCOPES[1], crossed, crossed_den)):
        se = variance.sqrt()
        # On the calibrated scale (unit 1), replicates equal to 1e-9 are rounding: the
        # layer cannot see role (the embedding, say), and its estimate is 0 or exact.
        flat = se < 1e-9
        df = torch.where(flat, n_words - 2.0, variance.pow(2) / den.clamp_min(1e-300))
        t = torch.where(flat, (estimate.abs() >= 1e-9) * torch.inf, estimate / se)
        p = t_two_sided_p(t.nan_to_num(0.0), df).to(estimate)
        half = (t_quantile((1 + confidence) / 2, df) * se).to(estimate)
        out[scope] = ScopedShift(
            scope=scope,
            estimate=estimate.to(dtype),
            se=se.to(dtype),
            df=df.to(dtype),
            low=(estimate - half).to(dtype),
            high=(estimate + half).to(dtype),
            p_value=p.to(dtype),
            p_holm=holm(p).to(dtype),
            p_bh=benjamini_hochberg(p).to(dtype),
            confidence=confidence,
        )
    return out
