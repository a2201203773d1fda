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
from mi_cluster.methods.projections import LayerProjection, pca_by_layer
from mi_cluster.methods.stats import (
    SCOPES,
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
        return _answer(self)

    def summary(self) -> dict[str, Any]:
        """Every number of the study, JSON-ready (per layer lists in layer order)."""
        return _summary(self)


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
        design: the prompts; default
            :func:`~mi_cluster.studies.subject_object.design.role_design` for the model.
        method: subjecthood axis, ``"centroid"`` (each word left out alone, in closed form)
            or ``"probe"`` (fitted on ``n_folds`` folds of words).
        n_permutations, n_bootstrap: resamples of the separation tests (bootstraps at most
            2,000); the shifts' inference is a jackknife and needs none.
        n_folds, ridge: folds of words for the probe (axis and separation), and its
            relative penalty.
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


def _fmt(v: float) -> str:
    return f"{v:+.3f}"


def _p(v: float) -> str:
    return "< 0.001" if v < 0.001 else f"= {v:.3f}"


def _at(test: ScopedShift, i: int) -> str:
    return (
        f"{_fmt(test.estimate[i].item())} (95% CI [{_fmt(test.low[i].item())}, "
        f"{_fmt(test.high[i].item())}], p {_p(test.p_value[i].item())}, Holm p "
        f"{_p(test.p_holm[i].item())})"
    )


def _scope_line(s: SubjectObjectStudy, scope: str, i_max: int) -> str:
    """Whether the interaction holds in ``scope``, where, and its numbers at ``i_max``."""
    sh, labels = s.shifts, s.layer_labels
    inter = sh.interaction[scope]
    sig = s.significant_layers(inter)
    where = f"For {scope}"
    if scope == SCOPES[1]:
        df = inter.df[i_max].item()
        where += f" ({s.shifts.n_families} families as a random sample: {df:.1f} df at "
        where += f"{labels[i_max]}, little power)"
    if sig:
        direction = "more" if inter.estimate[i_max] > 0 else "less"
        return (
            f"{where}: yes at {len(sig)} of {len(labels)} layers ({', '.join(sig)}; Holm p < "
            f"{s.alpha}): subject position moves objects toward names {direction} than it "
            f"moves names. At {labels[i_max]}: interaction {_at(inter, i_max)}; objects' "
            f"shift {_at(sh.objects[scope], i_max)}; names' shift "
            f"{_at(sh.names[scope], i_max)}."
        )
    line = (
        f"{where}: no layer shows that subject position moves objects toward names more "
        f"than it moves names (Holm p >= {s.alpha} at all {len(labels)} layers); at "
        f"{labels[i_max]} the interaction is {_at(inter, i_max)}."
    )
    obj_sig = s.significant_layers(sh.objects[scope])
    if obj_sig:
        k = labels.index(obj_sig[0])
        way = "toward" if sh.objects[scope].estimate[k] > 0 else "away from"
        line += (
            f" Objects do shift {way} the names with role at {', '.join(obj_sig)} (at "
            f"{obj_sig[0]}: {_at(sh.objects[scope], k)}; names' shift "
            f"{_at(sh.names[scope], k)}), but without a significant interaction this scope "
            "cannot tell that shift from one the templates give every word."
        )
    return line


def _answer(s: SubjectObjectStudy) -> str:
    sh, labels = s.shifts, s.layer_labels
    unit = (
        "from the object centroid (0) to the name centroid (1)"
        if s.method == "centroid"
        else "along a ridge probe's decision value"
    )
    i_max = int(sh.interaction[SCOPES[0]].estimate.abs().argmax())
    held = sh.held_out_names[i_max].item(), sh.held_out_objects[i_max].item()
    lines = [
        f"Model {s.model_name}: {len(s.design.names)} names and {len(s.design.objects)} objects, "
        f"each read in subject and in object position in {len(s.design.families)} template "
        f"families; subjecthood measured {unit} on an axis fitted without the scored word, "
        f"calibrated so that held-out names average 1 and held-out objects 0 (with each "
        f"axis's own training centroids at 0 and 1, held-out names sat at {held[0]:.3f} and "
        f"objects at {held[1]:.3f} at {labels[i_max]}: the shrinkage the calibration undoes)."
    ]
    lines += [_scope_line(s, scope, i_max) for scope in SCOPES]
    obj = {scope: sh.objects[scope] for scope in SCOPES}
    lines.append(
        f"On this scale subject position moves objects {100 * obj[SCOPES[0]].estimate[i_max]:.1f}"
        f"% of the way to the names at {labels[i_max]} (95% CI "
        f"[{100 * obj[SCOPES[0]].low[i_max]:.1f}%, {100 * obj[SCOPES[0]].high[i_max]:.1f}%] for "
        f"these templates, [{100 * obj[SCOPES[1]].low[i_max]:.1f}%, "
        f"{100 * obj[SCOPES[1]].high[i_max]:.1f}%] for templates in general)."
    )
    per_family = {name: t.estimate[i_max].item() for name, t in s.family("interaction").items()}
    sign = torch.sign(sh.interaction[SCOPES[0]].estimate[i_max]).item()
    agree = [name for name, v in per_family.items() if v * sign > 0]
    low, high = min(per_family, key=per_family.get), max(per_family, key=per_family.get)
    lines.append(
        f"At {labels[i_max]}, {len(agree)} of {len(per_family)} template families "
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


def _scoped_json(t: ScopedShift) -> dict[str, Any]:
    r = _r
    return {
        "scope": t.scope,
        "estimate": r(t.estimate),
        "se": r(t.se),
        "df": r(t.df),
        "ci": [r(t.low), r(t.high)],
        "p": r(t.p_value),
        "p_holm": r(t.p_holm),
        "p_bh": r(t.p_bh),
    }


def _shifts_json(s: SubjectObjectStudy) -> dict[str, Any]:
    sh = s.shifts
    return {
        "scale": "calibrated: held-out objects average 0, held-out names 1",
        "inference": "jackknife over words (and families, for templates in general) with the "
        "axis refitted in every replicate; t with Satterthwaite's degrees of freedom",
        "held_out_on_own_centroid_scale": {
            "names": _r(sh.held_out_names),
            "objects": _r(sh.held_out_objects),
            "meaning": "each word's axis puts its own training centroids at 0 (objects) and "
            "1 (names); no shrinkage would give names 1 and objects 0",
        },
        **{
            key: {scope: _scoped_json(t) for scope, t in getattr(sh, key).items()}
            for key in ("objects", "names", "interaction")
        },
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
            + ("words" if s.method == "centroid" else "folds' words"),
            "group_means": {k: _r(t) for k, t in s.group_means.items()},
        },
        "shifts": _shifts_json(s),
        "per_family": {
            name: {
                "object_shift": _scoped_json(t),
                "interaction": _scoped_json(s.family("interaction")[name]),
            }
            for name, t in s.family("objects").items()
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
