"""The role-shift attribution (:mod:`~mi_cluster.studies.subject_object.role_shift`) in
words and as a JSON record: what it found, with its numbers and the scope of each claim."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mi_cluster.core.records import rounded
from mi_cluster.methods.stats import SCOPES

if TYPE_CHECKING:  # the results this module reads; it computes nothing itself
    from mi_cluster.studies.subject_object.role_shift import (
        ComponentShare,
        ReliableComponent,
        RoleShiftAttribution,
    )

__all__ = ["role_shift_answer", "role_shift_record"]


_KIND_NAMES = {
    "head_out": "heads (all positions)",
    "head_out_by_pos": "heads at one position",
    "mlp_out_all": "MLPs (all positions)",
    "mlp_out": "MLPs at one position",
    "resid_pre": "residual-stream positions (a whole residual at one position)",
}


def _pct(f: float, lo: float, hi: float) -> str:
    return f"{100 * f:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def _listed(rows: list[ReliableComponent], n: int = 4, interval: str = "crossed") -> str:
    tag = " (these templates)" if interval == "words" else ""
    shown = ", ".join(f"{r.component} {_pct(r.fraction, r.low, r.high)}{tag}" for r in rows[:n])
    return shown + (f" and {len(rows) - n} more" if len(rows) > n else "")


def _shift_text(a: RoleShiftAttribution, scope: str) -> str:
    t = a.shift(scope)
    p = "< 0.0001" if t["p"] < 1e-4 else f"= {t['p']:.4f}"
    return (
        f"{t['estimate']:+.3f} (95% CI [{t['low']:+.3f}, {t['high']:+.3f}], p {p}, "
        f"{t['df']:.1f} df)"
    )


def role_shift_answer(a: RoleShiftAttribution) -> str:
    """The attribution in words, with its numbers."""
    lines = _shift_lines(a)
    component_lines = [_component_line(a, site, share) for site, share in a.components.items()]
    lines += [text for text, _ in component_lines]
    if not any(found for _, found in component_lines):
        lines.append("No component carries a reliable share of the shift on its own.")
    lines += [_path_line(a, receiver, share) for receiver, share in a.paths.items()]
    lines.append(
        "Fractions are sum(effect) / sum(shift) over words and families, with 95% intervals "
        "for templates in general unless marked; one component at a time, so they need not "
        "add to 100%. Every interval and test carries the axis's estimation error (each "
        "jackknife replicate refits every axis), so a component that moves words off the "
        "name-object direction does not register; they are conservative."
    )
    return " ".join(lines)


def _shift_lines(a: RoleShiftAttribution) -> list[str]:
    """The total shift at the read layer in both scopes, and what it means for the rest."""
    n_w, n_f = len(a.pairs.words), len(a.pairs.families)
    chosen = {
        "peak": " (the layer of the largest shift, chosen on these data, so its test is "
        "optimistic)",
        "last": " (the last block)",
    }.get(a.layer_chosen, "")
    lines = [
        f"Model {a.model_name}, read layer {a.layer_label}{chosen}: {a.word_type}s' "
        f"subjecthood (held-out objects 0, names 1) is higher in subject than in object "
        f"position by {_shift_text(a, SCOPES[0])} for these templates, "
        f"{_shift_text(a, SCOPES[1])} for templates in general ({n_w} words x {n_f} "
        f"families; the axis refitted in every jackknife replicate)."
    ]
    if a.shift(SCOPES[0])["p"] >= a.alpha:
        lines.append(
            "There is no reliable shift at this layer, so the fractions below attribute noise."
        )
    elif a.shift(SCOPES[1])["p"] >= a.alpha:
        lines.append(
            "The shift does not hold for templates in general (its test there is not "
            "significant), so every fraction's interval for templates in general is wide; "
            "the intervals for these templates speak for these families alone."
        )
    return lines


def _component_line(a: RoleShiftAttribution, site: str, share: ComponentShare) -> tuple[str, bool]:
    """What one kind of component carries, and whether any carries a reliable share."""
    kind, n_f = _KIND_NAMES.get(site, site), len(a.pairs.families)
    rows = [r for r in a.reliable(share) if r.fraction > 0]
    local = [r for r in a.reliable(share, "words") if r.fraction > 0]
    r_txt = (
        f" (attribution patching vs exact: r = {share.attribution_r:.3f})"
        if share.attribution_r is not None
        else ""
    )
    if rows:
        return (
            f"{kind.capitalize()} carrying a reliable share for templates in general "
            f"(Holm p < {a.alpha}): {_listed(rows)}{r_txt}.",
            True,
        )
    if local:
        return (
            f"Among {kind}, none carries a share that holds for templates in general; "
            f"for these {n_f} templates (Holm p < {a.alpha}): "
            f"{_listed(local, interval='words')}{r_txt}.",
            True,
        )
    best = int(share.fraction.flatten().argmax())
    f, lo, hi = (float(t.flatten()[best]) for t in (share.fraction, share.low, share.high))
    return (
        f"No single component among {kind} carries a reliable share; the largest is "
        f"{share.component_labels()[best]} {_pct(f, lo, hi)}{r_txt}.",
        False,
    )


def _path_line(a: RoleShiftAttribution, receiver: str, share: ComponentShare) -> str:
    """Which upstream heads write what a carrier head reads."""
    rows = [r for r in a.reliable(share) if r.fraction > 0]
    local = [r for r in a.reliable(share, "words") if r.fraction > 0]
    if rows:
        return f"{receiver} reads its share (queries, keys, values) from {_listed(rows)}."
    if local:
        shown = _listed(local, interval="words")
        return f"For these templates, {receiver} reads its share from {shown}."
    return f"No single upstream head reliably writes what {receiver} reads."


def _reliable_json(r: ReliableComponent) -> dict[str, Any]:
    return {"component": r.component, "fraction": r.fraction, "ci95": [r.low, r.high],
            "p_holm": r.p_holm}  # fmt: skip


def _share_json(a: RoleShiftAttribution, share: ComponentShare) -> dict[str, Any]:
    return {
        "axes": list(share.axes),
        "labels": share.labels,
        "fraction": rounded(share.fraction),
        "inference": "jackknife over words (these templates) and words and families "
        "(templates in general), every axis refitted; conservative",
        "these_templates": {
            "ci95": [rounded(share.low_words), rounded(share.high_words)],
            "p": rounded(share.p_value),
            "p_holm": rounded(share.p_holm),
        },
        "templates_in_general": {
            "ci95": [rounded(share.low), rounded(share.high)],
            "p": rounded(share.p_value_general),
            "p_holm": rounded(share.p_holm_general),
        },
        "attribution_r": share.attribution_r,
        "reliable": [_reliable_json(r) for r in a.reliable(share)],
        "reliable_within_these_families": [_reliable_json(r) for r in a.reliable(share, "words")],
    }


def role_shift_record(a: RoleShiftAttribution) -> dict[str, Any]:
    """Every number of the attribution, JSON-ready, with its answer."""
    return {
        "answer": a.answer(),
        "model": a.model_name,
        "read_layer": a.layer_label,
        "word_type": a.word_type,
        "words": list(a.pairs.words),
        "families": list(a.pairs.families),
        "n_pairs": len(a.pairs.subject),
        "metric": "subjecthood of the read word on the centroid axis fitted without the word, "
        "calibrated: held-out objects average 0, held-out names 1",
        "shift": {scope: {k: round(v, 6) for k, v in a.shift(scope).items()} for scope in SCOPES},
        "shift_inference": "jackknife over words (and families, for templates in general) "
        "with the axis refitted in every replicate; t with Satterthwaite's degrees of freedom",
        "layer_chosen": a.layer_chosen,
        "components": {site: _share_json(a, sh) for site, sh in a.components.items()},
        "paths": {recv: _share_json(a, sh) for recv, sh in a.paths.items()},
        "alpha": a.alpha,
    }
