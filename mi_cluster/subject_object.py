"""The subject/object clustering study: does subject position make an object word look
like a name?

:func:`run_subject_object_study` runs a :class:`~mi_cluster.designs.RoleDesign` through a
model, reads the residual stream at the word at every layer, scores each reading on a
name-vs-object axis fitted without that word (cross-fitting), and tests per layer:

- objects' shift: for each object word, its subjecthood in subject position minus in
  object position, averaged over template families; the mean over words with bootstrap
  intervals and a sign-flip test;
- names' shift: the same for names;
- the interaction: objects' shift minus names' shift (label-permutation test). This is the
  question: a shift common to both word types is an effect of the template, not of
  subjecthood;
- the same per template family, so no answer rests on one template;
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

from mi_cluster.activations import collect
from mi_cluster.designs import RoleDesign, role_design
from mi_cluster.projections import LayerProjection, pca_by_layer
from mi_cluster.stats import (
    STATISTICS,
    EffectTest,
    SeparationTest,
    cross_fitted_subjecthood,
    make_generator,
    paired_test,
    separation_test,
    two_sample_test,
)
from mi_cluster.stats.resampling import DEFAULT_MAX_MEMORY

__all__ = ["ROLES", "SubjectObjectStudy", "run_subject_object_study"]

ROLES: tuple[str, ...] = ("alone", "subject", "object")


@dataclass(frozen=True)
class SubjectObjectStudy:
    """What the study measured on one model.

    Fields:
        model_name: the model.
        layer_labels: ``("embed", "L0", ...)``.
        design: the prompts, words and families used.
        method: the subjecthood axis (``"centroid"``: 0 = objects, 1 = names; or ``"probe"``).
        scores: ``Float[Tensor, "layer item"]``, cross-fitted subjecthood of every prompt.
        group_means: mean score per ``"<word type> <role>"`` (e.g. ``"object subject"``),
            each ``Float[Tensor, "layer"]``.
        object_shift, name_shift: subject minus object position, per word averaged over
            families, tested over words.
        interaction: ``object_shift`` minus ``name_shift``.
        family_object_shift, family_interaction: the same per template family.
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
    object_shift: EffectTest
    name_shift: EffectTest
    interaction: EffectTest
    family_object_shift: dict[str, EffectTest]
    family_interaction: dict[str, EffectTest]
    separation: dict[str, dict[str, SeparationTest]]
    projection: LayerProjection
    point_words: tuple[str, ...]
    point_groups: tuple[str, ...]
    alpha: float = 0.05

    def significant_layers(self, test: EffectTest, correction: str = "holm") -> list[str]:
        """Labels of the layers where ``test``'s corrected p-value is below ``alpha``."""
        p = test.p_holm if correction == "holm" else test.p_bh
        return [lab for lab, v in zip(self.layer_labels, p.tolist(), strict=True) if v < self.alpha]

    def answer(self) -> str:
        """The result in words, with its numbers."""
        return _answer(self)

    def summary(self) -> dict[str, Any]:
        """Every number of the study, JSON-ready (per layer lists in layer order)."""
        return _summary(self)


def _index(design: RoleDesign, role: str) -> Tensor:
    """``[word, family]`` item indices of ``role`` (families in design order; one column,
    ``"alone"``, for the bare words)."""
    words = design.words
    fams = ["alone"] if role == "alone" else [f.name for f in design.families]
    out = torch.full((len(words), len(fams)), -1, dtype=torch.long)
    where = {w: i for i, w in enumerate(words)}
    for k, it in enumerate(design.items):
        if it.role == role:
            out[where[it.lemma], fams.index(it.family)] = k
    missing = (out < 0).nonzero()
    if len(missing):
        w, f = (int(i) for i in missing[0])
        raise ValueError(
            f"the design has no {role!r} reading of {words[w]!r} in family {fams[f]!r}: "
            "every word needs every family in every role"
        )
    return out


def run_subject_object_study(
    model: Any,
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
        design: the prompts; default :func:`~mi_cluster.designs.role_design` for the model.
        method: subjecthood axis, ``"centroid"`` or ``"probe"``.
        n_permutations, n_bootstrap: resamples per test (separation bootstraps use at most
            2,000).
        n_folds, ridge: cross-fitting folds over words, and the probe's relative penalty.
        statistics: separation statistics to test.
        seed: one seed for every resample of the study.
        alpha: significance level for :meth:`SubjectObjectStudy.answer`.
        batch_size, progress: collection settings.
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
    in_context = ~design.mask("alone")
    scores = cross_fitted_subjecthood(
        x,
        design.is_name,
        design.units,
        in_context,
        method=method,
        n_folds=n_folds,
        ridge=ridge,
        seed=gen,
    ).scores
    subj, obj = _index(design, "subject"), _index(design, "object")
    n_names = len(design.names)
    diffs = scores[:, subj] - scores[:, obj]  # [layer, word, family]
    shift = diffs.mean(-1)
    kw = {"n_permutations": n_permutations, "n_bootstrap": n_bootstrap, "max_memory": max_memory}
    obj_shift = paired_test(shift[:, n_names:], seed=gen, **kw)
    name_shift = paired_test(shift[:, :n_names], seed=gen, **kw)
    interaction = two_sample_test(shift[:, n_names:], shift[:, :n_names], seed=gen, **kw)
    fam_obj, fam_int = {}, {}
    for k, fam in enumerate(design.families):
        d = diffs[..., k]
        fam_obj[fam.name] = paired_test(d[:, n_names:], seed=gen, **kw)
        fam_int[fam.name] = two_sample_test(d[:, n_names:], d[:, :n_names], seed=gen, **kw)

    is_name_word = torch.arange(len(design.words)) < n_names
    word_vectors = {
        "subject": x[:, subj].mean(2),
        "object": x[:, obj].mean(2),
    }
    if bool(design.mask("alone").any()):
        alone = _index(design, "alone")[:, 0]
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
        object_shift=obj_shift,
        name_shift=name_shift,
        interaction=interaction,
        family_object_shift=fam_obj,
        family_interaction=fam_int,
        separation=separation,
        projection=projection,
        point_words=tuple(words) * 2,
        point_groups=tuple(groups),
        alpha=alpha,
    )


def _fmt(v: float) -> str:
    return f"{v:+.3f}"


def _p(v: float) -> str:
    return "< 0.001" if v < 0.001 else f"= {v:.3f}"


def _at(test: EffectTest, i: int) -> str:
    iv = test.interval
    return (
        f"{_fmt(test.estimate[i].item())} (95% BCa CI [{_fmt(iv.bca_low[i].item())}, "
        f"{_fmt(iv.bca_high[i].item())}], p {_p(test.p_value[i].item())}, Holm p "
        f"{_p(test.p_holm[i].item())})"
    )


def _in_context_gap(s: SubjectObjectStudy, layer: int) -> float:
    """Mean subjecthood of names minus objects, in context, at ``layer``."""
    names = [s.group_means[f"name {r}"][layer].item() for r in ("subject", "object")]
    objects = [s.group_means[f"object {r}"][layer].item() for r in ("subject", "object")]
    return (sum(names) - sum(objects)) / 2


def _answer(s: SubjectObjectStudy) -> str:
    unit = (
        "as the fraction of the way from the object centroid (0) to the name centroid (1)"
        if s.method == "centroid"
        else "as a ridge probe's decision value (objects -1, names +1)"
    )
    labels = s.layer_labels
    inter_sig = s.significant_layers(s.interaction)
    obj_sig = s.significant_layers(s.object_shift)
    i_max = int(s.interaction.estimate.abs().argmax())
    lines = [
        f"Model {s.model_name}: {len(s.design.names)} names and {len(s.design.objects)} objects, "
        f"each read in subject and in object position in {len(s.design.families)} template "
        f"families; subjecthood measured {unit} on an axis fitted without the scored word."
    ]
    if inter_sig:
        direction = "more" if s.interaction.estimate[i_max] > 0 else "less"
        lines.append(
            f"Yes at {len(inter_sig)} of {len(labels)} layers ({', '.join(inter_sig)}; Holm-"
            f"corrected p < {s.alpha}): subject position moves objects toward names {direction} "
            f"than it moves names. Largest at {labels[i_max]}: interaction "
            f"{_at(s.interaction, i_max)}; objects' shift {_at(s.object_shift, i_max)}; names' "
            f"shift {_at(s.name_shift, i_max)}."
        )
    else:
        lines.append(
            f"No: at no layer does subject position move objects toward names more than it "
            f"moves names (Holm-corrected p >= {s.alpha} at all {len(labels)} layers). "
            f"Largest interaction at {labels[i_max]}: {_at(s.interaction, i_max)}."
        )
        if obj_sig:
            lines.append(
                f"Objects do shift with role at {', '.join(obj_sig)}, but names shift alike, so "
                "the shift belongs to the templates, not to subjecthood."
            )
    gap = _in_context_gap(s, i_max)
    obj = s.object_shift.estimate[i_max].item()
    lines.append(
        f"On this scale names and objects sit {gap:.3f} apart at {labels[i_max]} (in context), "
        f"so subject position moves objects {100 * obj / gap:.1f}% of the way to the names."
    )
    agree = [
        name
        for name, t in s.family_interaction.items()
        if torch.sign(t.estimate[i_max]) == torch.sign(s.interaction.estimate[i_max])
    ]
    per_family = {name: t.estimate[i_max].item() for name, t in s.family_interaction.items()}
    low, high = min(per_family, key=per_family.get), max(per_family, key=per_family.get)
    lines.append(
        f"At {labels[i_max]}, {len(agree)} of {len(s.family_interaction)} template families "
        f"give an interaction of the same sign, from {per_family[low]:+.3f} ({low}) to "
        f"{per_family[high]:+.3f} ({high})."
    )
    sep = s.separation
    if "silhouette" in sep.get("subject", {}) and "probe" in sep.get("subject", {}):
        last = len(labels) - 1
        sil, sil_o = sep["subject"]["silhouette"], sep["object"]["silhouette"]
        acc, acc_o = sep["subject"]["probe"], sep["object"]["probe"]
        lines.append(
            f"Names and objects stay apart in both roles: at {labels[last]} a probe with held-"
            f"out words tells them apart with accuracy {acc.value[last].item():.3f} in subject "
            f"and {acc_o.value[last].item():.3f} in object position; silhouette "
            f"{sil.value[last].item():.3f} and {sil_o.value[last].item():.3f} (shuffled labels: "
            f"95th percentile {sil.null_high[last].item():.3f})."
        )
    return " ".join(lines)


def _r(v: Tensor) -> list[float]:
    return [round(float(x), 6) for x in v.tolist()]


def _effect_json(t: EffectTest) -> dict[str, Any]:
    r = _r
    return {
        "estimate": r(t.estimate),
        "ci_percentile": [r(t.interval.low), r(t.interval.high)],
        "ci_bca": [r(t.interval.bca_low), r(t.interval.bca_high)],
        "effect_size": r(t.effect_size),
        "p": r(t.p_value),
        "p_holm": r(t.p_holm),
        "p_bh": r(t.p_bh),
        "test": f"{t.kind} ({'sign-flip' if t.kind == 'paired' else 'label-permutation'}, "
        f"{t.alternative}, {'exact' if t.exact else f'{t.n_permutations} resamples'})",
        "n": list(t.n),
    }


def _separation_json(t: SeparationTest) -> dict[str, Any]:
    r = _r
    return {
        "value": r(t.value),
        "ci_percentile": [r(t.interval.low), r(t.interval.high)],
        "null_median": r(t.null_median),
        "null_95": r(t.null_high),
        "p": r(t.p_value),
        "p_holm": r(t.p_holm),
        "p_bh": r(t.p_bh),
        "n_permutations": t.n_permutations,
    }


def _summary(s: SubjectObjectStudy) -> dict[str, Any]:
    d = s.design
    return {
        "answer": s.answer(),
        "model": s.model_name,
        "layers": list(s.layer_labels),
        "design": {
            "names": list(d.names),
            "objects": list(d.objects),
            "families": [
                {
                    "name": f.name,
                    "subject": f.subject,
                    "object": f.object,
                    "initial": f.initial,
                    "preceding_name": f.preceding_name,
                }
                for f in d.families
            ],
            "n_prompts": len(d.items),
            "dropped": [list(x) for x in d.dropped],
            "reduced_multi_token": list(d.reduced),
            "subtoken_rule": d.subtoken,
            "capitalize": d.capitalize,
            "tokenizer": d.tokenizer,
        },
        "subjecthood": {
            "method": s.method,
            "cross_fitting": "axis per layer fitted on the in-context readings of the other "
            "folds' words",
            "group_means": {k: _r(t) for k, t in s.group_means.items()},
        },
        "object_shift": _effect_json(s.object_shift),
        "name_shift": _effect_json(s.name_shift),
        "interaction": _effect_json(s.interaction),
        "per_family": {
            name: {
                "object_shift": _effect_json(s.family_object_shift[name]),
                "interaction": _effect_json(s.family_interaction[name]),
            }
            for name in s.family_object_shift
        },
        "separation": {
            role: {st: _separation_json(t) for st, t in tests.items()}
            for role, tests in s.separation.items()
        },
        "projection": {
            "basis": s.projection.basis,
            "explained_variance_ratio": [
                [round(float(v), 4) for v in row]
                for row in s.projection.explained_variance_ratio.tolist()
            ],
        },
        "alpha": s.alpha,
    }
