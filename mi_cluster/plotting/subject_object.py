"""The subject/object study's figures: the aligned scatter animation, the per-layer
subjecthood shifts with their intervals, and the separation curves."""

from __future__ import annotations

import plotly.graph_objects as go

from mi_cluster.methods.stats import SCOPES, ScopedShift
from mi_cluster.plotting.lines import Band, layer_bands
from mi_cluster.plotting.projection import layer_scatter
from mi_cluster.studies.subject_object.study import SubjectObjectStudy

__all__ = ["study_scatter", "study_separation", "study_shift"]

SHIFT_COLORS = {
    "objects' shift": "#D55E00",
    "names' shift": "#0072B2",
    "interaction (objects − names)": "#000000",
}
ROLE_COLORS = {"alone": "#777777", "subject position": "#D55E00", "object position": "#0072B2"}
_STAT_TITLES = {
    "centroid": "centroid distance / within-group RMS",
    "variance_ratio": "between / within variance (Calinski-Harabasz)",
    "silhouette": "silhouette width",
    "probe": "probe accuracy, held-out words",
}


def _band(test: ScopedShift, alpha: float) -> Band:
    return Band(
        values=test.estimate.tolist(),
        low=test.low.tolist(),
        high=test.high.tolist(),
        significant=(test.p_holm < alpha).tolist(),
    )


def study_shift(study: SubjectObjectStudy) -> go.Figure:
    """Per layer: objects' and names' shift (subject minus object position) and their
    difference, with 95% intervals, in both scopes (these templates; templates in
    general); filled markers where Holm p < alpha."""
    unit = "share of the held-out object→name gap"
    sh = study.shifts
    panels = {
        f"{scope}{' (families fixed)' if scope == SCOPES[0] else ' (families random)'}": {
            "objects' shift": _band(sh.objects[scope], study.alpha),
            "names' shift": _band(sh.names[scope], study.alpha),
            "interaction (objects − names)": _band(sh.interaction[scope], study.alpha),
        }
        for scope in SCOPES
    }
    d = study.design
    note = (
        f"{len(d.names)} names, {len(d.objects)} objects, {len(d.families)} template families; "
        f"{study.method} axis refitted in every jackknife replicate; 95% t intervals; "
        f"filled: Holm-corrected p < {study.alpha}"
    )
    return layer_bands(
        panels,
        study.layer_labels,
        title=f"Does subject position make objects name-like? — {study.model_name}",
        y_titles={next(iter(panels)): f"shift ({unit})"},
        colors=SHIFT_COLORS,
        zero_line=True,
        note=note,
        columns=2,
        shared_y=True,
    )


def study_separation(study: SubjectObjectStudy) -> go.Figure:
    """Per layer and statistic: how well names and objects separate, alone and in each
    role, with bootstrap bands over words, the shuffled-label 95th percentile (dashed) and
    filled markers where the permutation test's Holm p < alpha."""
    names = {"alone": "alone", "subject": "subject position", "object": "object position"}
    panels: dict[str, dict[str, Band]] = {}
    statistics = list(next(iter(study.separation.values())))
    for st in statistics:
        series: dict[str, Band] = {}
        for role, tests in study.separation.items():
            t = tests[st]
            series[names[role]] = Band(
                values=t.value.tolist(),
                low=t.interval.low.tolist(),
                high=t.interval.high.tolist(),
                significant=(t.p_holm < study.alpha).tolist(),
            )
        chance = next(iter(study.separation.values()))[st]
        series["shuffled labels, 95th percentile"] = Band(
            values=chance.null_high.tolist(), reference=True
        )
        panels[_STAT_TITLES.get(st, st)] = series
    note = f"95% bootstrap bands over words; filled: label-permutation Holm p < {study.alpha}"
    return layer_bands(
        panels,
        study.layer_labels,
        title=f"Names vs objects: separation by layer — {study.model_name}",
        colors=ROLE_COLORS,
        note=note,
    )


def study_scatter(study: SubjectObjectStudy) -> go.Figure:
    """The aligned-PCA animation of every word in subject and in object position
    (averaged over template families), the two readings of a word joined by a line."""
    n = len(study.design.words)
    pairs = [(i, i + n) for i in range(n)]
    hover = [f"{g}: {w}" for w, g in zip(study.point_words, study.point_groups, strict=True)]
    return layer_scatter(
        study.projection,
        labels=list(study.point_words),
        groups=list(study.point_groups),
        layer_labels=list(study.layer_labels),
        hover=hover,
        title=f"Names and objects in subject and object position — {study.model_name}",
        pairs=pairs,
    )
