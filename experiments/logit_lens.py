"""Logit lens and tuned lens: when does the model know the answer?

    python experiments/logit_lens.py                      # toy-ioi, offline
    python experiments/logit_lens.py --model distilgpt2   # or gpt2; needs the network

On the toy model (offline), for held-out IOI prompts (name pairs never seen in training):
the logit difference IO - S and the rank of IO at every layer, with 95% bootstrap intervals
over prompts, for the logit lens and the shipped tuned lens; the top predictions per layer
for two prompts; the top prediction at every layer and position of one prompt; and KL(final
|| lens) per layer on held-out text of the training distribution, logit vs tuned lens, with
a paired sign-flip test per layer.

With ``--model distilgpt2`` or ``gpt2`` (network): ecco's classic "Heathrow airport is in
the city of" (top predictions per layer, rank of " London" and " Paris") and the IOI logit
difference per layer on the paper's templates (no tuned lens is shipped for them).

Writes ``logit_lens_<model>.json`` and figures ``logit_lens_<model>_<kind>`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HEATHROW = " Heathrow airport is in the city of"
N_BOOT = 4000


def _band(values, seed: int = 0):
    """Per-layer mean over prompts with a percentile bootstrap interval."""
    from mi_cluster.methods.stats import paired_test
    from mi_cluster.plotting import Band

    t = paired_test(values.double(), n_permutations=1, n_bootstrap=N_BOOT, seed=seed)
    return Band(t.estimate.tolist(), t.interval.low.tolist(), t.interval.high.tolist()), t


def _ci_record(t) -> dict:
    return {
        "mean": [round(v, 4) for v in t.estimate.tolist()],
        "ci_low": [round(v, 4) for v in t.interval.low.tolist()],
        "ci_high": [round(v, 4) for v in t.interval.high.tolist()],
    }


def run(name: str, out: Path, n: int, png: bool, progress: bool) -> dict:
    import torch

    from mi_cluster.core.ioi_prompts import ioi_prompts
    from mi_cluster.core.provenance import provenance
    from mi_cluster.methods.lens.logit import logit_lens
    from mi_cluster.methods.stats import paired_test
    from mi_cluster.models.loading import load_model
    from mi_cluster.plotting import layer_bands, write_experiment
    from mi_cluster.plotting.lens import plot_lens_positions, plot_lens_predictions, plot_lens_ranks

    model = load_model(name)
    toy = name == "toy-ioi"
    lenses: dict = {"logit": None}
    if toy:
        from mi_cluster.methods.lens.tuned import TunedLens
        from mi_cluster.models.toy import TOY_TUNED_LENS
        from mi_cluster.models.toy.data import eval_examples, training_texts

        lenses["tuned"] = TunedLens.load(TOY_TUNED_LENS)
        prompts = eval_examples("held_out_pairs", n=n, seed=7)
    else:
        prompts = ioi_prompts(model, n, seed=0)
    texts = [p.text for p in prompts]
    answers = [(" " + p.io, " " + p.s) for p in prompts]
    record: dict = {"model": name, "n_prompts": len(prompts), "lenses": {}}
    ld_panel, rank_panel = {}, {}
    results = {}
    for kind, lens in lenses.items():
        r = logit_lens(model, texts, "last", lens=lens, answers=answers, k=10, progress=progress)
        results[kind] = r
        ld_band, ld_test = _band(r.logit_diff)
        io_rank = r.answer_ranks[..., 0].double()
        rank_band, rank_test = _band(io_rank, seed=1)
        ld_panel[f"{kind} lens"] = ld_band
        rank_panel[f"{kind} lens"] = rank_band
        first = next(
            (r.layer_labels[i] for i in range(r.n_layers) if float(ld_test.interval.low[i]) > 0),
            None,
        )
        record["lenses"][kind] = {
            "logit_difference": _ci_record(ld_test),
            "io_rank": _ci_record(rank_test),
            "accuracy": [
                round(v, 4)
                for v in (r.answer_ranks[..., 0] < r.answer_ranks[..., 1]).double().mean(1).tolist()
            ],
            "io_top1": [
                round(v, 4) for v in (r.answer_ranks[..., 0] == 0).double().mean(1).tolist()
            ],
            "first_layer_logit_difference_ci_above_zero": first,
        }
    labels = list(results["logit"].layer_labels)
    record["layers"] = labels
    figs = {
        "answer": layer_bands(
            {"logit difference IO - S": ld_panel, "rank of IO (0 = top)": rank_panel},
            labels,
            title=f"{name}: the IOI answer through the layers "
            f"({len(prompts)} held-out prompts, 95% CI)",
            zero_line=True,
        )
    }
    shown = texts[:2] if toy else [HEATHROW]
    watch = [" " + prompts[0].io, " " + prompts[0].s] if toy else [" London", " Paris"]
    for kind, lens in lenses.items():
        few = logit_lens(model, shown, "last", lens=lens, k=8, watch=watch, progress=False)
        figs[f"predictions_{kind}"] = plot_lens_predictions(few, 0)
        figs[f"ranks_{kind}"] = plot_lens_ranks(few, [0], vocab_size=model.cfg.d_vocab)
        record["lenses"][kind]["top_predictions"] = {
            shown[i]: {
                lab: list(few.top_tokens[j][i][:5]) for j, lab in enumerate(few.layer_labels)
            }
            for i in range(len(shown))
        }
        record["lenses"][kind]["watched_ranks"] = {
            tok: few.watch_ranks[:, 0, j].tolist() for j, tok in enumerate(few.watch_tokens)
        }
    everywhere = logit_lens(model, shown[:1], "all", k=3, progress=False)
    figs["positions"] = plot_lens_positions(everywhere, 0)
    if toy:
        held = training_texts(300, seed=2024, max_tokens=model.cfg.n_ctx, tokenizer=model.tokenizer)
        per_text = {}
        for kind, lens in lenses.items():
            r = logit_lens(model, held, "all", lens=lens, k=1, progress=progress)
            idx = torch.tensor(r.prompt_index)
            sums = torch.zeros(r.n_layers, len(held), dtype=torch.float64)
            sums.index_add_(1, idx, r.kl_to_final.double())
            per_text[kind] = sums / torch.bincount(idx, minlength=len(held)).double()
        kl_bands = {f"{k} lens": _band(v, seed=2)[0] for k, v in per_text.items()}
        diff = paired_test((per_text["logit"] - per_text["tuned"])[:-1], n_bootstrap=N_BOOT, seed=3)
        record["kl_to_final"] = {
            "n_texts": len(held),
            **{k: _ci_record(_band(v, seed=2)[1]) for k, v in per_text.items()},
            "logit_minus_tuned": {**_ci_record(diff), "p_holm": [float(p) for p in diff.p_holm]},
        }
        figs["kl"] = layer_bands(
            {"KL(final || lens), nats": kl_bands},
            labels,
            title=f"{name}: logit lens vs tuned lens on held-out text ({len(held)} texts, 95% CI)",
        )
    record["answer"] = answer(record)
    stem = f"logit_lens_{name.replace('/', '_')}"
    lens_rec = record["lenses"]["logit"]
    record["headline"] = (
        "logit difference IO - S by layer: "
        + ", ".join(f"{v:+.2f}" for v in lens_rec["logit_difference"]["mean"])
        + f"; first layer above 0: {lens_rec['first_layer_logit_difference_ci_above_zero']}"
    )
    prov = provenance([model], texts, seed=0)
    files, failed = write_experiment(out, stem, record, figs, png=png, indent=1, provenance=prov)
    for message in failed:
        print(message, file=sys.stderr)
    record["files"] = [str(f) for f in files]
    return record


def answer(record: dict) -> str:
    """The result in words."""
    layers = record["layers"]
    lines = []
    for kind, rec in record["lenses"].items():
        ld = rec["logit_difference"]
        lines.append(
            f"{kind} lens: logit difference IO - S "
            + ", ".join(
                f"{lab} {m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
                for lab, m, lo, hi in zip(
                    layers, ld["mean"], ld["ci_low"], ld["ci_high"], strict=True
                )
            )
            + "; IO is top-1 in "
            + ", ".join(f"{100 * v:.0f}%" for v in rec["io_top1"])
            + " of prompts; first layer whose CI is above 0: "
            + str(rec["first_layer_logit_difference_ci_above_zero"])
        )
    kl = record.get("kl_to_final")
    if kl:
        lines.append(
            "KL(final || lens) per layer, logit vs tuned: "
            + ", ".join(
                f"{lab} {a:.2f} vs {b:.2f}"
                for lab, a, b in zip(layers, kl["logit"]["mean"], kl["tuned"]["mean"], strict=True)
            )
            + "; the tuned lens is closer at every layer but the last (Holm p "
            + ", ".join(f"{p:.2g}" for p in kl["logit_minus_tuned"]["p_holm"])
            + ")"
            if all(
                a > b
                for a, b in zip(kl["logit"]["mean"][:-1], kl["tuned"]["mean"][:-1], strict=True)
            )
            else "KL: the tuned lens is NOT closer at every layer"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy-ioi", help="toy-ioi (offline), distilgpt2 or gpt2")
    parser.add_argument("--n", type=int, default=200, help="IOI prompts (default 200)")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--no-png", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    record = run(args.model, args.out, args.n, not args.no_png, not args.quiet)
    print(f"== {record['model']} ==")
    print(record["answer"])
    for path in record["files"]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
