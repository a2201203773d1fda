"""From clusters to circuits: which components move an object toward the subjects?

The clustering study (``subject_object_clustering.py``) finds that an object word read in
subject position ("... Lamp went to the store.") scores as more name-like than the same
word in object position ("... saw lamp at the store."). This experiment asks which
components carry that shift, with the same design, words, template families and calibrated
subjecthood axis (each word's fitted without it)
(``mi_cluster/studies/subject_object/role_shift.py``):

1. **Attribution.** At the read layer (default the last block, fixed in advance; or the
   block with the largest object shift, ``--layer peak``, which the answer flags as chosen
   on the data), each head's output (all positions and one position), each
   MLP's output (models with MLPs) and the residual stream at each position is patched
   from the subject form into the object form of every word and family; the fraction of
   the shift each carries, with intervals and Holm-corrected tests for these templates and
   for templates in general that carry the axis's error (every axis refitted in a jackknife
   over words and families; conservative); attribution patching's correlation with the
   exact patches; path patching into the heads that carry the most.
2. **Paired-prompt divergence.** Each object in a family's subject form against the same
   prompt with a name in its place ("X had fun. Lamp went to the store." / "X had fun.
   Adam went to the store."): per layer, JS and KL of the logit-lens distributions (models
   with real logits), cosine and CKA of the residuals, at the read word, with intervals
   over pairs; and a layer x position heatmap for the first family.
3. **Before and after a head.** For the head with the largest share, every in-context
   prompt's residual at the read word just before the head writes and just after, on the
   head's top OV write direction and the subject/object axis.

Offline it runs on the toy model (attention only, causal) and MiniLM (bidirectional, with
MLPs); ``--models gpt2`` with network. For each model it writes to ``--out``:
``object_to_subject_circuit_<model>.json`` (the answer in words and every number) and the
figures ``_heads``, ``_positions``, ``_forest``, ``_paired``, ``_paired_positions`` and
``_head_write`` (HTML, and PNG/SVG where a Chromium exists).
"""

from __future__ import annotations

import sys
from pathlib import Path

from study_cli import parse_study_args, print_record, record_written, study_design, study_parser

OFFLINE_MODELS = ("toy-ioi", "minilm")


def _carrier(attribution) -> tuple[int, int]:
    """The head whose output (all positions) carries the largest positive fraction."""
    frac = attribution.components["head_out"].fraction
    layer, head = divmod(int(frac.flatten().argmax()), frac.shape[1])
    return layer, head


def _paired_summary(c, key: str) -> dict:
    from mi_cluster.core.records import rounded

    mean = c.per_pair[key].mean(-1)
    out = {"mean": rounded(mean)}
    if c.ci_low is not None:
        out["ci95"] = [rounded(c.ci_low[key]), rounded(c.ci_high[key])]
    return out


def _paired_answer(c, heat, labels, key: str) -> str:
    mean = c.per_pair[key].mean(-1)
    first = 1  # the embedding differs only by the word itself
    lo, hi = c.ci_low[key], c.ci_high[key]
    what = {"js": "JS divergence of the logit-lens distributions", "cosine": "cosine"}[key]
    text = (
        f"Swapping the object for a name in subject position, the {what} at the read word is "
        f"{float(mean[first]):.4f} [{float(lo[first]):.4f}, {float(hi[first]):.4f}] after "
        f"{c.layer_labels[first]} and {float(mean[-1]):.4f} [{float(lo[-1]):.4f}, "
        f"{float(hi[-1]):.4f}] after {c.layer_labels[-1]} (mean over {c.per_pair[key].shape[1]} "
        "pairs, 95% CI)"
    )
    last = heat[-1]
    pos = int(last.argmax()) if key == "js" else int(last.argmin())
    return text + (
        f"; in the first family the prompts differ most at position {pos} ({labels[pos]!r}) "
        f"at the last layer ({key} {float(last[pos]):.4f})."
    )


def run(
    model_name: str,
    out: Path,
    png: bool = True,
    words: int | None = None,
    layer: int | str | None = None,
    sites: tuple[str, ...] | None = None,
    n_receivers: int = 3,
    progress: bool = True,
) -> dict:
    """Run the three analyses on one model and write its files; returns the JSON record."""
    from mi_cluster.collection.activations import Positions
    from mi_cluster.core.model_info import model_info
    from mi_cluster.core.provenance import provenance
    from mi_cluster.core.records import rounded
    from mi_cluster.methods.paired import compare_prompts
    from mi_cluster.methods.stats import SCOPES
    from mi_cluster.models.loading import load_model
    from mi_cluster.plotting import write_experiment
    from mi_cluster.plotting.head_write import head_write_scatter
    from mi_cluster.plotting.paired import paired_heatmap, paired_lines
    from mi_cluster.plotting.role_shift import (
        role_shift_forest,
        role_shift_heads,
        role_shift_positions,
    )
    from mi_cluster.studies.subject_object.design import name_swap_pairs
    from mi_cluster.studies.subject_object.head_write import head_write_view
    from mi_cluster.studies.subject_object.role_shift import DEFAULT_SITES, attribute_role_shift

    model = load_model(model_name)
    design = study_design(model, model_name, words)

    attribution = attribute_role_shift(
        model,
        design,
        layer=layer,
        sites=sites or DEFAULT_SITES,
        n_receivers=n_receivers,
        progress=progress,
    )

    swaps = name_swap_pairs(design)
    use_lens = model_info(model).logits_meaningful
    key = "js" if use_lens else "cosine"
    at_word = compare_prompts(
        model,
        swaps.objects,
        swaps.names,
        positions=Positions.word(list(swaps.object_words)),
        positions_b=Positions.word(list(swaps.name_words)),
        use_lens=use_lens,
    )
    first = swaps.of_family(design.families[0].name)
    by_token = compare_prompts(model, first.objects, first.names, "all", use_lens=use_lens)
    heat, labels = by_token.by_position(key)

    layer_c, head_c = _carrier(attribution)
    in_context = [it for it in design.items if it.role != "alone"]
    view = head_write_view(
        model,
        [it.text for it in in_context],
        Positions.word([it.word for it in in_context]),
        layer_c,
        head_c,
        is_name=[it.word_type == "name" for it in in_context],
        groups=[f"{it.word_type} · {it.role}" for it in in_context],
        labels=[f"{it.text} [{it.word}]" for it in in_context],
    )
    moves = view.group_shift()

    paired_text = _paired_answer(at_word, heat, labels, key)
    head_text = (
        f"Before and after {view.head_label} (the head carrying the largest share) at the "
        "read word, its write moves each group along the subject/object axis by "
        + ", ".join(f"{g} {v:+.3f}" for g, v in moves.items())
        + f" (cosine of the axis with its top OV write direction {view.axis_cosine:+.2f})."
    )
    record = {
        "answer": " ".join([attribution.answer(), paired_text, head_text]),
        "role_shift": attribution.summary(),
        "paired": {
            "pairs": "each object in a family's subject form vs the same prompt with a name "
            "in its place, compared at the read word",
            "n_pairs": len(swaps.objects),
            "lens": at_word.lens,
            "layers": list(at_word.layer_labels),
            **{m: _paired_summary(at_word, m) for m in at_word.per_pair},
            "cka": rounded(at_word.cka),
            "by_position_first_family": {
                "family": design.families[0].name,
                "measure": key,
                "positions": labels,
                "values": [[round(float(v), 6) for v in row] for row in heat],
            },
            "answer": paired_text,
        },
        "head_write": {
            "head": view.head_label,
            "basis": list(view.basis_labels),
            "mean_write_along_axis": {g: round(v, 6) for g, v in moves.items()},
            "axis_cosine_with_ov_write": round(view.axis_cosine, 6),
            "ov_singular_values": [round(float(v), 6) for v in view.singular_values],
            "answer": head_text,
        },
        "settings": {
            "inference": "jackknife (no resamples); paired comparison: seed 0",
            "layer": layer,
            "sites": list(attribution.components),
        },
    }
    these, general = (record["role_shift"]["shift"][scope] for scope in SCOPES)
    heads = record["role_shift"]["components"]["head_out"]
    across = [r["component"] for r in heads["reliable"] if r["fraction"] > 0]
    within = [
        f"{r['component']} {100 * r['fraction']:.0f}%"
        for r in heads["reliable_within_these_families"]
        if r["fraction"] > 0
    ][:3]
    record["headline"] = (
        f"{attribution.model_name}: object subjecthood shift {these['estimate']:+.3f} at "
        f"{attribution.layer_label} (templates in general: CI {general['low']:+.3f} to "
        f"{general['high']:+.3f}); heads carrying it across families: "
        f"{', '.join(across) or 'none'}; within these families: {', '.join(within) or 'none'}."
    )
    fam = design.families[0].name
    figures = {"heads": role_shift_heads(attribution)}
    if {"resid_pre", "mlp_out"} & set(attribution.components):
        figures["positions"] = role_shift_positions(attribution)
    figures |= {
        "forest": role_shift_forest(attribution),
        "paired": paired_lines(
            at_word,
            note="object vs name in the same subject slot, at the read word; bands: 95% CI "
            "over pairs",
        ),
        "paired_positions": paired_heatmap(
            by_token, key, note=f"family {fam!r}: object vs name, mean over pairs"
        ),
        "head_write": head_write_scatter(view),
    }
    stem = f"object_to_subject_circuit_{attribution.model_name.replace('/', '_')}"
    prov = provenance([model], design.texts, seed=0)
    written, failed = write_experiment(out, stem, record, figures, png=png, provenance=prov)
    return record_written(record, written, failed)


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(__doc__.splitlines()[0], OFFLINE_MODELS, resamples=False)
    parser.add_argument(
        "--layer",
        default="last",
        help="read layer: a block index, 'last' (default) or 'peak' (largest object shift)",
    )
    args = parse_study_args(parser, argv, OFFLINE_MODELS)
    layer = {"peak": "peak", "last": None}.get(args.layer)
    if layer is None and args.layer != "last":
        if not args.layer.isdigit():
            parser.error(f"--layer must be a block index, 'last' or 'peak', got {args.layer!r}")
        layer = int(args.layer)
    for name in args.models:
        record = run(
            name,
            args.out,
            png=not args.no_png,
            words=args.words,
            layer=layer,
            progress=not args.quiet,
        )
        print_record(name, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
