"""Measure the toy IOI model's circuit with mi_cluster's own head analyses and write the
numbers (``figures/toy_ioi_circuit.json``) and a per-head figure.

    python experiments/toy_ioi_circuit.py [--model toy-ioi | DIR] [--n 200]

Head classes, as in the IOI paper (Wang et al. 2022), measured on held-out name pairs:
- duplicate-token heads: attention from S2 to S1; induction heads: from S2 to the token
  after S1;
- S-inhibition heads: patching their END output from prompts where S2 is replaced by a
  third name (so nothing is duplicated) moves the name movers' attention from IO to S;
- name movers: attention from END to IO (vs S1), direct logit attribution to IO - S, and
  the copy score of their OV circuit (negative copy score for heads that suppress).
Behaviour: the logit difference when S1 is replaced by a third name, so S is no longer
repeated: a model that finds S by its repetition loses it, one that suppresses whichever
name gives the object does not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plotly.graph_objects as go  # noqa: E402
from plotly.subplots import make_subplots  # noqa: E402

from mi_cluster.atomic import atomic_write_text  # noqa: E402
from mi_cluster.heads import (  # noqa: E402
    IOIPrompt,
    attention_between,
    copy_scores,
    head_direct_logit_attribution,
    head_mean_ablation,
    logit_difference,
    patch_head_attention_effect,
    replace_subject,
)
from mi_cluster.models import load_model  # noqa: E402
from mi_cluster.plotting import save_figure  # noqa: E402
from mi_cluster.plotting.style import apply_paper_style  # noqa: E402
from mi_cluster.toy.data import NAMES, eval_examples  # noqa: E402


def measure(model, n: int = 200) -> dict:
    examples = eval_examples("held_out_pairs", n=n)
    clean = [IOIPrompt(e.text, e.io, e.s) for e in examples]
    rng = random.Random(0)
    thirds = [rng.choice([x for x in NAMES if x not in (p.io, p.s)]) for p in clean]
    corrupt = [replace_subject(p, "s2", c) for p, c in zip(clean, thirds, strict=True)]
    s1_replaced = [replace_subject(p, "s1", c) for p, c in zip(clean, thirds, strict=True)]
    ld = logit_difference(model, clean)
    end_io = attention_between(model, clean, "end", "io").mean(-1)
    end_s1 = attention_between(model, clean, "end", "s1").mean(-1)
    end_s2 = attention_between(model, clean, "end", "s2").mean(-1)
    s2_s1 = attention_between(model, clean, "s2", "s1").mean(-1)
    s2_s1_next = attention_between(model, clean, "s2", "s1_next").mean(-1)
    dla = head_direct_logit_attribution(model, clean).mean(-1)
    ablation = head_mean_ablation(model, clean)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    heads = [(layer, h) for layer in range(1, n_layers) for h in range(n_heads)]
    movers = [  # attend END -> IO (more than to S1) and push IO up
        (a, h) for a, h in heads if end_io[a, h] > max(0.2, end_s1[a, h]) and dla[a, h] > 0.5
    ]
    receivers = movers or [(n_layers - 1, h) for h in range(n_heads)]

    def patch_table(receivers, **where) -> dict:
        """{sender: {receiver: effect}} for every head in a layer before some receiver."""
        table = {}
        for layer in range(max((a for a, _ in receivers), default=0)):
            later = [r for r in receivers if r[0] > layer]
            for head in range(n_heads):
                eff = patch_head_attention_effect(
                    model, clean, corrupt, (layer, head), later, **where
                )
                table[f"L{layer}H{head}"] = {
                    f"L{a}H{h}": round(float(v), 4) for (a, h), v in zip(later, eff, strict=True)
                }
        return table

    s_inhibition = patch_table(receivers)
    # Heads that find S2 from END; does what earlier heads write at S2 (a duplicate flag)
    # steer them? Patch each earlier head's S2 output from the S2-replaced prompts.
    s_movers = [(a, h) for a, h in heads if end_s2[a, h] > 0.5]
    duplicate_patch = patch_table(s_movers, at="s2", key="s2")

    def grid(t):
        return [[round(float(v), 4) for v in row] for row in t]

    return {
        "n_prompts": n,
        "accuracy": float((ld > 0).float().mean()),
        "mean_logit_diff": float(ld.mean()),
        "s1_replaced_mean_logit_diff": float(logit_difference(model, s1_replaced).mean()),
        "attn_end_to_io": grid(end_io),
        "attn_end_to_s1": grid(end_s1),
        "attn_end_to_s2": grid(end_s2),
        "attn_s2_to_s1": grid(s2_s1),
        "attn_s2_to_s1_next": grid(s2_s1_next),
        "copy_score": grid(copy_scores(model, NAMES)),
        "negative_copy_score": grid(copy_scores(model, NAMES, negative=True)),
        "dla_io_minus_s": grid(dla),
        "mean_ablation_logit_diff_change": grid(ablation),
        "name_mover_candidates": [f"L{a}H{h}" for a, h in movers],
        "s_inhibition_receivers": [f"L{a}H{h}" for a, h in receivers],
        "s_inhibition_patch_effect": s_inhibition,
        "s2_attending_heads": [f"L{a}H{h}" for a, h in s_movers],
        "duplicate_patch_effect_on_io_minus_s2": duplicate_patch,
    }


def figure(r: dict, name: str) -> go.Figure:
    panels = [
        ("attn_s2_to_s1", "S2 → S1 attention<br>(duplicate token)"),
        ("attn_s2_to_s1_next", "S2 → S1+1 attention<br>(induction)"),
        ("attn_end_to_io", "END → IO attention<br>(name mover)"),
        ("attn_end_to_s2", "END → S2 attention"),
        ("dla_io_minus_s", "direct logit attr.<br>IO − S"),
        ("copy_score", "OV copy score"),
        ("negative_copy_score", "OV negative<br>copy score"),
        ("mean_ablation_logit_diff_change", "mean-ablation<br>Δ logit diff"),
    ]
    fig = make_subplots(
        rows=2,
        cols=4,
        subplot_titles=[t for _, t in panels],
        horizontal_spacing=0.07,
        vertical_spacing=0.2,
    )
    for i, (key, _) in enumerate(panels):
        z = r[key]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=[f"H{h}" for h in range(len(z[0]))],
                y=[f"L{a}" for a in range(len(z))],
                colorscale="RdBu_r",
                zmid=0,
                text=[[f"{v:.2f}" for v in row] for row in z],
                texttemplate="%{text}",
                showscale=False,
            ),
            row=i // 4 + 1,
            col=i % 4 + 1,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=f"IOI head roles — {name} (held-out name pairs, n={r['n_prompts']}, "
        f"accuracy {100 * r['accuracy']:.1f}%)"
    )
    return apply_paper_style(fig, width=1100, height=640)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy-ioi")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("figures"))
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    r = measure(model, args.n)
    atomic_write_text(args.out / "toy_ioi_circuit.json", json.dumps(r, indent=2) + "\n")
    save_figure(figure(r, args.model), args.out / "toy_ioi_circuit.html")
    scalars = {
        k: v for k, v in r.items() if not (isinstance(v, list) and v and isinstance(v[0], list))
    }
    print(json.dumps(scalars, indent=1))


if __name__ == "__main__":
    main()
