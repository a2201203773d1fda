"""The subject/object clustering study: does subject position make an object word look
like a name?

:func:`run_subject_object_study` runs a
:class:`~mi_cluster.studies.subject_object.design.RoleDesign` through a model, reads the
residual stream at the word at every layer, scores each reading on a name-vs-object axis
fitted without that word, and tests per layer
(:func:`~mi_cluster.methods.stats.role_shift_inference`):

- objects' shift: subject minus object position, averaged over object words and template
  families; names' shift: the same for names;
- the interaction: objects' shift minus names' shift. This is the question: a shift
  common to both word types is an effect of the template, not of subjecthood;
- each in two scopes: "these templates" (the five families fixed) and "templates in
  general" (families a random sample crossed with words: wider intervals, few degrees
  of freedom); the axis's own estimation error is carried by refitting it in every
  jackknife replicate, and the scale is calibrated so that held-out names average 1 and
  held-out objects 0;
- the objects' shift and the interaction per template family, so no answer rests on one
  template;
- how well names and objects separate, alone and in each role, with four statistics and a
  label-permutation test each.

p-values are corrected across layers (Holm and Benjamini-Hochberg). The study's
:meth:`~SubjectObjectStudy.answer` states the result in words, whatever it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mi_cluster.collection.activations import collect
from mi_cluster.core.protocols import HookedModel
from mi_cluster.methods.projections import LayerProjection, pca_by_layer
from mi_cluster.methods.stats import (
    STATISTICS,
    RoleShifts,
    ScopedShift,
    SeparationTest,
    make_generator,
    role_shift_inference,
    separation_test,
)
from mi_cluster.methods.stats.resampling import DEFAULT_MAX_MEMORY
from mi_cluster.studies.subject_object.design import RoleDesign, role_design
from mi_cluster.studies.subject_object.study_report import study_answer, study_record

__all__ = ["ROLES", "SubjectObjectStudy", "run_subject_object_study"]

ROLES: tuple[str, ...] = ("alone", "subject", "object")


@dataclass(frozen=True)
class SubjectObjectStudy:
    """What the study measured on one model.

    Fields:
        model_name: the model.
        layer_labels: ``("embed", "L0", ...)``.
        design: the prompts, words and families used.
        method: the subjecthood axis (``"centroid"`` or ``"probe"``), on the calibrated
            scale: held-out objects average 0, held-out names 1.
        scores: ``Float[Tensor, "layer item"]``, the calibrated subjecthood of every
            prompt's word, scored by the axis fitted without that word (or its fold).
        group_means: mean score per ``"<word type> <role>"`` (e.g. ``"object subject"``),
            each ``Float[Tensor, "layer"]``.
        shifts: the objects' and names' shifts (subject minus object position), their
            interaction, in both scopes, and per template family
            (:class:`~mi_cluster.methods.stats.RoleShifts`; families in design order).
        separation: ``separation[role][statistic]`` for names vs objects, with words
            averaged over families, per role (``"alone"``, ``"subject"``, ``"object"``).
        projection: aligned PCA of the in-context word vectors (each word in subject and
            in object position, averaged over families).
        point_words, point_groups: the word and group (``"object · subject"``, ...) of
            each projected point; point ``i`` (subject) pairs with ``i + n_words`` (object).
        alpha: significance level used in :meth:`answer`.
    """

    model_name: str
    layer_labels: tuple[str, ...]
    design: RoleDesign
    method: str
    scores: Tensor
    group_means: dict[str, Tensor]
    shifts: RoleShifts
    separation: dict[str, dict[str, SeparationTest]]
    projection: LayerProjection
    point_words: tuple[str, ...]
    point_groups: tuple[str, ...]
    alpha: float = 0.05

    def significant_layers(self, test: ScopedShift, correction: str = "holm") -> list[str]:
        """Labels of the layers where ``test``'s corrected p-value is below ``alpha``."""
        p = test.p_holm if correction == "holm" else test.p_bh
        return [lab for lab, v in zip(self.layer_labels, p.tolist(), strict=True) if v < self.alpha]

    def family(self, key: str) -> dict[str, ScopedShift]:
        """Family name -> its ``"objects"`` shift or ``"interaction"`` (these templates)."""
        per = self.shifts.family_objects if key == "objects" else self.shifts.family_interaction
        return {f.name: t for f, t in zip(self.design.families, per, strict=True)}

    def answer(self) -> str:
        """The result in words, with its numbers."""
        return study_answer(self)

    def summary(self) -> dict[str, Any]:
        """Every number of the study, JSON-ready (per layer lists in layer order)."""
        return study_record(self)


def run_subject_object_study(
    model: HookedModel,
    design: RoleDesign | None = None,
    *,
    method: str = "centroid",
    n_permutations: int = 10_000,
    n_bootstrap: int = 10_000,
    n_folds: int = 5,
    ridge: float = 1.0,
    statistics: Sequence[str] = STATISTICS,
    seed: int = 0,
    alpha: float = 0.05,
    batch_size: int = 64,
    progress: bool = True,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> SubjectObjectStudy:
    """Run the study on ``model`` (see the module docstring).

    Args:
        model: a TransformerLens model.
        design: the prompts; default
            :func:`~mi_cluster.studies.subject_object.design.role_design` for the model.
        method: subjecthood axis, ``"centroid"`` (each word left out alone, in closed form)
            or ``"probe"`` (fitted on ``n_folds`` folds of words).
        n_permutations: label permutations of the separation tests (the shifts'
            inference is a jackknife and needs none).
        n_bootstrap: bootstrap resamples of the separation intervals (at most 2,000).
        n_folds: folds of words for the probe (axis and separation).
        ridge: the probe's relative penalty.
        statistics: separation statistics to test.
        seed: one seed for every resample of the study.
        alpha: significance level for :meth:`SubjectObjectStudy.answer`.
        batch_size: prompts per forward pass.
        progress: a progress bar over batches.
        max_memory: bytes of intermediates per chunk of resamples.
    """
    design = design if design is not None else role_design(model)
    acts = collect(
        model,
        design.texts,
        "resid_post",
        design.positions(),
        batch_size=batch_size,
        progress=progress,
    )
    x = acts.tensor
    gen = make_generator(seed)
    subj, obj = design.cell_index("subject"), design.cell_index("object")
    n_names = len(design.names)
    is_name_word = torch.arange(len(design.words)) < n_names
    shifts = role_shift_inference(
        torch.stack([x[:, subj], x[:, obj]], dim=3),  # [layer, word, family, role, d]
        is_name_word,
        method=method,
        n_folds=None if method == "centroid" else n_folds,
        ridge=ridge,
        seed=seed,
    )
    scores = shifts.score(x, design.units)
    word_vectors = {
        "subject": x[:, subj].mean(2),
        "object": x[:, obj].mean(2),
    }
    if bool(design.mask("alone").any()):
        alone = design.cell_index("alone")[:, 0]
        word_vectors = {"alone": x[:, alone], **word_vectors}
    separation: dict[str, dict[str, SeparationTest]] = {}
    for role, vecs in word_vectors.items():
        separation[role] = {
            st: separation_test(
                vecs,
                is_name_word,
                st,  # type: ignore[arg-type]
                n_permutations=n_permutations,
                n_bootstrap=min(n_bootstrap, 2_000),
                n_folds=n_folds,
                ridge=ridge,
                seed=gen,
                max_memory=max_memory,
            )
            for st in statistics
        }
    group_means = {}
    types = design.is_name
    for wt, is_nm in (("name", True), ("object", False)):
        for role in ROLES:
            m = design.mask(role) & (types == is_nm)
            if bool(m.any()):
                group_means[f"{wt} {role}"] = scores[:, m].mean(-1)
    points = torch.cat([word_vectors["subject"], word_vectors["object"]], dim=1)
    projection = pca_by_layer(points, n_components=2, basis="aligned")
    words = design.words
    groups = [("name" if i < n_names else "object") + " · subject" for i in range(len(words))]
    groups += [("name" if i < n_names else "object") + " · object" for i in range(len(words))]
    return SubjectObjectStudy(
        model_name=acts.model_name,
        layer_labels=acts.layer_labels,
        design=design,
        method=method,
        scores=scores,
        group_means=group_means,
        shifts=shifts,
        separation=separation,
        projection=projection,
        point_words=tuple(words) * 2,
        point_groups=tuple(groups),
        alpha=alpha,
    )
