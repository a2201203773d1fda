"""Attention views that export to PNG: model, head and neuron views, and head summaries.

    python experiments/attention_views.py

MiniLM (offline) on the sentence pair "The cat sat on the mat" / "The cat lay on the rug"
(segments A/B, as bertviz's neuron-view notebook), and the toy model on an IOI prompt. For
each: the model view (every layer and head), a head view of one layer (all heads overlaid),
the neuron view of one head for one query token, and the head-summary table (previous
token, special tokens, self, earlier duplicates, induction score on repeated random
sequences), with the most extreme head of each kind named.

Writes ``attention_views_<model>.json`` and figures ``attention_views_<model>_<kind>``
(``.html``, ``.png``) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PAIR = ("The cat sat on the mat", "The cat lay on the rug")
IOI = "When Mary and John went to the store , John gave a drink to"
# (model, text, text_b, head-view layer, neuron-view layer, head, query label)
CASES = (
    ("minilm", PAIR[0], PAIR[1], 2, 2, 0, "cat 1"),
    ("toy-ioi", IOI, None, 2, 2, 2, "to 2"),
)
# Prompts for the head summaries (plain sentences of each model's vocabulary).
SUMMARY_PROMPTS = {
    "minilm": [
        "The cat sat on the mat and the dog sat on the rug.",
        "When Mary and John went to the store, John gave a drink to Mary.",
        "The keys to the cabinet are on the table by the door.",
        "Heathrow airport is in the city of London, and the city is busy.",
    ],
    "toy-ioi": [
        IOI,
        "Then , Anna and Peter had a long argument . Peter said to",
        "After Lisa and Grace went to the park , Lisa handed a book to",
        "Mary liked the book . John liked the book .",
    ],
}


def focused_heads(p, layer: int, n: int = 4) -> list[int]:
    """The ``n`` heads of ``layer`` whose attention is most concentrated (largest mean of
    each query's top weight): an all-heads head view is a tangle on paper."""
    top = p.pattern[p.layer_index(layer)].max(-1).values.mean(-1)
    return sorted(top.topk(min(n, top.shape[0])).indices.tolist())


def run(
    name: str, text: str, text_b: str | None, hv_layer: int, nv: tuple, out: Path, png: bool
) -> dict:
    from mi_cluster.core.provenance import provenance
    from mi_cluster.methods.attention import attention_patterns, head_summary, neuron_view
    from mi_cluster.models.loading import load_model
    from mi_cluster.plotting import write_experiment
    from mi_cluster.plotting.attention import (
        plot_head_view,
        plot_model_view,
        plot_neuron_view,
        plot_pattern,
    )

    model = load_model(name)
    p = attention_patterns(model, text, text_b)
    view = neuron_view(model, text, *nv, text_b=text_b)
    summary = head_summary(model, SUMMARY_PROMPTS[name])
    layer, head = nv[0], nv[1]
    figs = {
        "model_view": plot_model_view(p),
        "head_view": plot_head_view(p, hv_layer, heads=focused_heads(p, hv_layer)),
        "neuron_view": plot_neuron_view(view, model_name=name),
        "pattern": plot_pattern(p, layer, head),
    }
    extremes = {}
    for stat in ("previous", "special", "self", "duplicate", "induction"):
        values = getattr(summary, stat)
        flat = int(values.nan_to_num(-1).argmax())
        a, b = divmod(flat, values.shape[1])
        extremes[stat] = {"head": f"L{a}H{b}", "value": round(float(values[a, b]), 4)}
    record = {
        "model": name,
        "text": text,
        "text_b": text_b,
        "tokens": list(p.labels),
        "segments": list(p.segment),
        "neuron_view": {
            "head": f"L{layer}H{head}",
            "query": view.labels[view.query],
            "attention": {
                lab: round(float(w), 4) for lab, w in zip(view.labels, view.pattern, strict=True)
            },
        },
        "head_summary": {
            "n_prompts": summary.n_prompts,
            "n_queries": summary.n_queries,
            "heads": summary.table(),
        },
        "strongest_head": extremes,
    }
    record["headline"] = ", ".join(
        f"{k} {v['head']} ({v['value']:.2f})" for k, v in extremes.items()
    )
    prompts = [text if text_b is None else f"{text} [SEP] {text_b}", *SUMMARY_PROMPTS[name]]
    prov = provenance([model], prompts, seed=0)
    files, failed = write_experiment(
        out, f"attention_views_{name}", record, figs, png=png, indent=1, provenance=prov
    )
    for message in failed:
        print(message, file=sys.stderr)
    record["files"] = [str(f) for f in files]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--no-png", action="store_true")
    args = parser.parse_args(argv)
    for name, text, text_b, hv_layer, *nv in CASES:
        record = run(name, text, text_b, hv_layer, tuple(nv), args.out, not args.no_png)
        strongest = ", ".join(
            f"{k} {v['head']} ({v['value']:.2f})" for k, v in record["strongest_head"].items()
        )
        q = record["neuron_view"]
        top = max(q["attention"], key=q["attention"].get)
        print(f"== {name} ==\nstrongest heads: {strongest}")
        print(
            f"neuron view {q['head']}: {q['query']!r} attends most to {top!r} "
            f"({q['attention'][top]:.2f})"
        )
        for path in record["files"]:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
