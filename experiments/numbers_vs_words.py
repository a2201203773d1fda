"""Numbers vs words, from the original clustering notes: do "1 2 3 4" and "one two three
four" converge token by token across layers, and does a principal direction of pooled
sequences track their length?

1. Per token and per layer: the cosine of each digit with its number word ("3" vs
   "three") in "1 2 3 4" and "one two three four", against the mean cosine of mismatched
   pairs; and, over 1..10 vs one..ten, a correspondence test per layer (are matched pairs
   more similar than random re-pairings? exact permutation of the pairing when feasible).
2. The sequences "1 2 3" ... "1 2 ... 10" (and "one two three" ... "one ... ten"), each
   mean-pooled over its tokens to one point per layer: Pearson's r of each layer's first
   principal coordinate with sequence length, with an exact permutation p-value (8! = 40,320
   orderings) and a Holm correction across layers. (PC1's sign is arbitrary, so the test is
   two-sided and figures show |r|.)

Writes ``numbers_vs_words.json``, ``numbers_vs_words_cosine.{html,png}``,
``numbers_vs_words_length.{html,png}`` and ``numbers_vs_words_sequences.html`` (aligned-PCA
animation of the pooled sequences) to ``--out``. Default model: MiniLM, offline.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DIGITS = [str(i) for i in range(1, 11)]
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
LENGTHS = list(range(3, 11))


def token_vectors(model, items: list[str]):
    """``[layer, item, d_model]`` of each item of the space-separated sequence, requiring
    one token per item."""
    from mi_cluster.collection.activations import Positions, collect

    text = " ".join(items)
    acts = collect(model, [text], "resid_post", Positions.all(exclude_special=True), progress=False)
    got = ["".join(t).strip() for t in acts.tokens]
    if [g.lower() for g in got] != [i.lower() for i in items]:
        raise SystemExit(f"{text!r} does not tokenize one token per item for this model: {got}")
    return acts.tensor.double(), acts.layer_labels


def cosine_matrix(a, b):
    """``[layer, i, j]`` cosine of ``a[:, i]`` with ``b[:, j]``."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    return a @ b.transpose(1, 2)


def run(model_name: str, out: Path, n_permutations: int = 10_000, png: bool = True) -> dict:
    import torch

    from mi_cluster.collection.activations import Positions, collect
    from mi_cluster.core.provenance import provenance
    from mi_cluster.methods.projections import pca_by_layer
    from mi_cluster.methods.stats import correlation_test, correspondence_test
    from mi_cluster.models.loading import load_model
    from mi_cluster.plotting import Band, layer_bands, layer_scatter, write_experiment

    model = load_model(model_name)
    digits, labels = token_vectors(model, DIGITS)
    words, _ = token_vectors(model, WORDS)
    labels = list(labels)
    cos = cosine_matrix(digits, words)  # [layer, 10, 10]
    four = cos[:, :4, :4]
    matched4 = {f"{DIGITS[i]} vs {WORDS[i]}": four[:, i, i] for i in range(4)}
    off = ~torch.eye(4, dtype=torch.bool)
    mismatched4 = four[:, off].mean(-1)
    corr = correspondence_test(cos, n_permutations=n_permutations)

    sequences = {
        "digits": [" ".join(DIGITS[:n]) for n in LENGTHS],
        "words": [" ".join(WORDS[:n]) for n in LENGTHS],
    }
    pooled = {}
    length_tests = {}
    for kind, texts in sequences.items():
        acts = collect(model, texts, "resid_post", Positions.mean(), progress=False)
        pooled[kind] = acts.tensor.double()
        pc1 = pca_by_layer(pooled[kind], 1, basis="per_layer").coords[..., 0]
        length_tests[kind] = correlation_test(
            pc1,
            torch.tensor(LENGTHS, dtype=torch.float64),
            n_permutations=40_320,
            n_bootstrap=2_000,
        )
    both = torch.cat([pooled["digits"], pooled["words"]], dim=1)
    proj = pca_by_layer(both, 2, basis="aligned")
    name = model_name

    cosine_fig = layer_bands(
        {
            '"1 2 3 4" vs "one two three four": cosine per token': {
                **{k: Band(v.tolist()) for k, v in matched4.items()},
                "mismatched pairs (mean)": Band(mismatched4.tolist(), reference=True),
            },
            "1..10 vs one..ten: matched minus average cosine": {
                "matched − average": Band(
                    corr.estimate.tolist(), significant=(corr.p_holm < 0.05).tolist()
                ),
            },
        },
        labels,
        title=f"Digits vs number words, token by token — {name}",
        y_titles={'"1 2 3 4" vs "one two three four": cosine per token': "cosine"},
        note="right: filled where matched pairs beat random re-pairings "
        "(permutation test, Holm p < 0.05)",
    )
    length_fig = layer_bands(
        {
            "|r| of PC1 with sequence length": {
                kind: Band(t.estimate.abs().tolist(), significant=(t.p_holm < 0.05).tolist())
                for kind, t in length_tests.items()
            }
        },
        labels,
        title=f"Does a principal direction track sequence length? — {name}",
        note='"1 2 3" ... "1 2 ... 10", mean-pooled; filled: exact permutation test, Holm p < 0.05',
        columns=1,
    )
    n_seq = len(LENGTHS)
    seq_labels = [str(n) for n in LENGTHS] * 2
    groups = ["digits"] * n_seq + ["words"] * n_seq
    seq_fig = layer_scatter(
        proj,
        seq_labels,
        groups,
        labels,
        hover=sequences["digits"] + sequences["words"],
        title=f"Pooled sequences by length (label = number of items) — {name}",
        pairs=[(i, i + n_seq) for i in range(n_seq)],
    )

    def r(v):
        from mi_cluster.core.records import rounded

        return rounded(v, 4)

    sig_corr = [lab for lab, p in zip(labels, corr.p_holm.tolist(), strict=True) if p < 0.05]
    answer = [
        f"Model {name}. Matched digit/word tokens are more similar than random re-pairings "
        + (f"at {', '.join(sig_corr)}" if sig_corr else "at no layer")
        + f" (Holm p < 0.05; matched minus average cosine {r(corr.estimate)} by layer)."
    ]
    for kind, t in length_tests.items():
        sig = [lab for lab, p in zip(labels, t.p_holm.tolist(), strict=True) if p < 0.05]
        best = int(t.estimate.abs().argmax())
        answer.append(
            f"PC1 of the pooled {kind} sequences tracks length "
            + (f"at {', '.join(sig)}" if sig else "at no layer")
            + f" (Holm p < 0.05); strongest at {labels[best]}: r = {t.estimate[best].item():+.3f}, "
            f"exact p = {t.p_value[best].item():.2g}"
            + (
                " (the smallest possible, 2 / 8!)."
                if t.p_value[best].item() <= 2 / 40_320 + 1e-12
                else "."
            )
        )
    answer.append(
        "Mean pooling over more tokens also changes a vector's make-up, so a length direction "
        "need not be a counting direction."
    )
    record = {
        "answer": " ".join(answer),
        "model": name,
        "layers": labels,
        "cosine_1234": {k: r(v) for k, v in matched4.items()},
        "cosine_1234_mismatched_mean": r(mismatched4),
        "correspondence_1_to_10": {
            "matched_minus_average_cosine": r(corr.estimate),
            "p": r(corr.p_value),
            "p_holm": r(corr.p_holm),
            "n_permutations": corr.n_permutations,
            "exact": corr.exact,
        },
        "length": {
            kind: {
                "sequences": sequences[kind],
                "r_pc1_length": r(t.estimate),
                "ci_bca": [r(t.interval.bca_low), r(t.interval.bca_high)],
                "p": r(t.p_value),
                "p_holm": r(t.p_holm),
                "n_permutations": t.n_permutations,
                "exact": t.exact,
            }
            for kind, t in length_tests.items()
        },
        "projection_basis": proj.basis,
    }
    figs = {"cosine": cosine_fig, "length": length_fig, "sequences": seq_fig}
    record["headline"] = record["answer"].split(". ")[0] + "."
    prov = provenance([model], [*DIGITS, *WORDS, *sequences["digits"], *sequences["words"]])
    files, failed = write_experiment(
        out,
        "numbers_vs_words",
        record,
        figs,
        png=png,
        html_only={"sequences"},
        provenance=prov,  # animation
    )
    for message in failed:
        print(message, file=sys.stderr)
    record["files"] = [str(f) for f in files]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="minilm", help="default minilm (offline); e.g. gpt2 with network"
    )
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--n-permutations", type=int, default=10_000)
    parser.add_argument("--no-png", action="store_true")
    args = parser.parse_args(argv)
    if args.model == "minilm":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    record = run(args.model, args.out, args.n_permutations, png=not args.no_png)
    print(record["answer"])
    for path in record["files"]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
