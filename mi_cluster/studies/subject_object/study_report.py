"""The subject/object study (:mod:`~mi_cluster.studies.subject_object.study`) in words and
as a JSON record: the answer per scope with its numbers, and every number behind it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mi_cluster.core.records import rounded
from mi_cluster.methods.stats import SCOPES, ScopedShift, SeparationTest

if TYPE_CHECKING:  # the result this module reads; it computes nothing itself
    from mi_cluster.studies.subject_object.study import SubjectObjectStudy

__all__ = ["study_answer", "study_record"]


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


def study_answer(s: SubjectObjectStudy) -> str:
    """The study's result in words, per scope, with its numbers."""
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
    low = min(per_family, key=lambda name: per_family[name])
    high = max(per_family, key=lambda name: per_family[name])
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


def _scoped_json(t: ScopedShift) -> dict[str, Any]:
    r = rounded
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
            "names": rounded(sh.held_out_names),
            "objects": rounded(sh.held_out_objects),
            "meaning": "each word's axis puts its own training centroids at 0 (objects) and "
            "1 (names); no shrinkage would give names 1 and objects 0",
        },
        **{
            key: {scope: _scoped_json(t) for scope, t in getattr(sh, key).items()}
            for key in ("objects", "names", "interaction")
        },
    }


def _separation_json(t: SeparationTest) -> dict[str, Any]:
    r = rounded
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


def study_record(s: SubjectObjectStudy) -> dict[str, Any]:
    """Every number of the study, JSON-ready, with its answer."""
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
            "group_means": {k: rounded(t) for k, t in s.group_means.items()},
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
            "explained_variance_ratio": rounded(s.projection.explained_variance_ratio, 4),
        },
        "alpha": s.alpha,
    }
