"""Parameters and activations in embedding space (Dar, Geva, Gupta & Berant 2023), offline.

1. **Layer alignment on MiniLM** (MLP keys and values, read through the embedding, to
   which BERT's decoder is tied): MiniLM against itself (must be the identity), against a
   copy whose layers are permuted (must recover the permutation), and against a copy
   trained for a few hundred steps of masked-language modelling on text shipped with the
   project (``experiments/data/underground.txt`` and the clustering study's prompts). Each
   alignment: the layer x layer Pearson correlation of the layers' token-by-token
   similarity in vocabulary space, the one-to-one matching, and a p-value from shuffling
   the second model's vocabulary.
2. **Heads read in vocabulary space**: the top token pairs of the OV circuits of the heads
   the circuit experiment singles out on MiniLM (the largest shares of the
   object-to-subject shift: L2H8, L2H3, L2H11); and on the toy IOI model, every name's OV
   reading by the heads its card names: L2H2 must put the name itself at the bottom (a
   negative copier), L1H0, L1H1 and L1H3 near the top (intro-name copiers).
3. **The subject/object shift in vocabulary space**, per layer on MiniLM: the objects'
   mean reading in subject minus object position read as tokens, and how alike the two
   readings are in vocabulary space (Pearson r of their token scores) beside their cosine.

Writes ``embedding_space.json``, the alignment heatmaps
``embedding_space_{self,permuted,trained}.{html,png,svg}`` and the token tables
``embedding_space_{minilm_heads,toy_heads,shift}.{html,png,svg}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).resolve().parent / "data" / "underground.txt"
PERMUTATION = (3, 5, 0, 4, 1, 2)  # layer k of the permuted copy is MiniLM's layer PERMUTATION[k]
MINILM_HEADS = ((2, 8), (2, 3), (2, 11))  # the object-to-subject circuit's largest shares
TOY_HEADS = {"L2H2": "negative", "L1H0": "positive", "L1H1": "positive", "L1H3": "positive"}
KINDS = ("keys", "values")


def minilm_copies(directory: Path, steps: int, texts: list[str]) -> dict[str, Path]:
    """MiniLM with its layers permuted, and MiniLM after ``steps`` steps of masked-language
    modelling on ``texts``, each saved as a directory ``load_model`` reads."""
    import torch
    from transformers import AutoTokenizer, BertForMaskedLM

    from mi_cluster.models.minilm import minilm_directory

    source = minilm_directory()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    out = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        permuted = BertForMaskedLM.from_pretrained(str(source))
        layers = permuted.bert.encoder.layer
        permuted.bert.encoder.layer = torch.nn.ModuleList([layers[i] for i in PERMUTATION])
        out["permuted"] = _save(permuted, tokenizer, directory / "minilm-permuted")
        torch.manual_seed(0)
        trained = BertForMaskedLM.from_pretrained(str(source))
        _train_mlm(trained, tokenizer, texts, steps)
        out["trained"] = _save(trained, tokenizer, directory / f"minilm-mlm-{steps}")
    return out


def _save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def _train_mlm(model, tokenizer, texts: list[str], steps: int, batch: int = 16) -> None:
    """Masked-language modelling, BERT's recipe: 15% of tokens chosen, 80% of those
    masked, 10% replaced by a random token, 10% kept; AdamW, learning rate 1e-4."""
    import torch

    enc = tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    specials = torch.tensor(tokenizer.all_special_ids)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(texts), (batch,), generator=gen)
        ids, mask = enc["input_ids"][rows].clone(), enc["attention_mask"][rows]
        real = (mask == 1) & ~torch.isin(ids, specials)
        chosen = real & (torch.rand(ids.shape, generator=gen) < 0.15)
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        roll = torch.rand(ids.shape, generator=gen)
        ids[chosen & (roll < 0.8)] = tokenizer.mask_token_id
        swap = chosen & (roll >= 0.8) & (roll < 0.9)
        ids[swap] = torch.randint(len(tokenizer), (int(swap.sum()),), generator=gen)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def training_texts(design_texts: list[str]) -> list[str]:
    """The shipped passage's sentences and the clustering study's prompts."""
    passage = DATA.read_text().replace("\n", " ")
    sentences = [s.strip() + "." for s in passage.split(".") if len(s.split()) > 3]
    return sentences + design_texts


def alignments(minilm, copies: dict[str, Path], n_permutations: int) -> dict:
    """Every alignment (self, permuted, trained) of every kind."""
    from mi_cluster.methods.embedding_space.alignment import vocab_alignment, vocab_layers
    from mi_cluster.models.loading import load_model

    base = {kind: vocab_layers(minilm, kind, "embedding") for kind in KINDS}
    others = {"self": minilm} | {name: load_model(path) for name, path in copies.items()}
    out = {}
    for name, other in others.items():
        for kind in KINDS:
            layers = base[kind] if other is minilm else vocab_layers(other, kind, "embedding")
            out[(name, kind)] = vocab_alignment(
                base[kind], layers, kind, n_permutations=n_permutations, seed=0
            )
    return out


def toy_head_checks(toy) -> tuple[dict, list]:
    """Each card head's OV reading of every name: where the name itself ranks among all
    tokens (0: the top for a positive copier, the bottom for a negative one)."""
    from mi_cluster.methods.embedding_space.readings import circuit_rows, ov_circuit
    from mi_cluster.models.toy.data import NAMES

    ids = [toy.tokenizer.convert_tokens_to_ids(n) for n in NAMES]
    checks, tables = {}, []
    for label, sign in TOY_HEADS.items():
        ov = ov_circuit(toy, int(label[1]), int(label[3]))
        rows = ov.rows(ids)  # [name, d_vocab]
        own = rows[range(len(ids)), ids][:, None]
        rank = ((rows > own) if sign == "positive" else (rows < own)).sum(-1)
        checks[label] = {
            "card": f"{sign} copier",
            "names_ranked_first": int((rank == 0).sum()),
            "names_in_first_3": int((rank < 3).sum()),
            "n_names": len(ids),
            "mean_own_score": round(float(own.mean()), 3),
        }
        tables.append(circuit_rows(toy, ov, ids[:3], k=6))
    return checks, tables


def shift_in_vocabulary(minilm) -> tuple[dict, object, list[str]]:
    """The objects' reading in subject minus object position, averaged over words and
    families, read as tokens per layer; and per layer the mean Pearson r of the two
    readings' token scores, beside their mean cosine."""
    import warnings

    import torch

    from mi_cluster.collection.activations import Positions, collect
    from mi_cluster.methods.embedding_space.readings import read_vectors, vocab_correlation
    from mi_cluster.studies.subject_object.design import role_design

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the design names any word it drops, in its record
        design = role_design(minilm)
    words = [it.word for it in design.items]
    acts = collect(minilm, design.texts, "resid_post", Positions.word(words), progress=False)
    is_object = torch.tensor([w in design.objects for w in design.words])
    subj, obj = (acts.tensor[:, design.cell_index(r)[is_object]] for r in ("subject", "object"))
    diff = (subj - obj).flatten(1, 2).mean(1).double()  # [layer, d_model]
    labels = [f"{lab}: subject - object" for lab in acts.layer_labels]
    reading = read_vectors(minilm, diff, "embedding", k=8, labels=labels)
    subj, obj = subj.double(), obj.double()
    r = vocab_correlation(minilm, subj, obj, "embedding").flatten(1).mean(1)
    cos = torch.nn.functional.cosine_similarity(subj, obj, dim=-1).flatten(1).mean(1)
    record = {
        "layers": list(acts.layer_labels),
        "vocab_pearson_r": [round(float(v), 4) for v in r],
        "cosine": [round(float(v), 4) for v in cos],
        "top_tokens": [list(t) for t in reading.top_tokens],
        "bottom_tokens": [list(t) for t in reading.bottom_tokens],
        "n_objects": int(is_object.sum()),
        "n_families": len(design.families),
    }
    return record, reading, design.texts


def minilm_heads(minilm) -> list:
    """The singular directions of the circuit experiment's heads' OV circuits, read
    through the embedding (what each head reads, and what it writes)."""
    from mi_cluster.methods.embedding_space.readings import circuit_directions, ov_circuit

    return [
        circuit_directions(minilm, ov_circuit(minilm, layer, head, target="embedding"), 1, k=8)
        for layer, head in MINILM_HEADS
    ]


def answer(aligned: dict, toy: dict, shift: dict, steps: int) -> str:
    def one(name: str, kind: str) -> str:
        a = aligned[(name, kind)]
        pairs = ", ".join(f"L{i}-L{j}" for i, j in a.matching)
        return f"{kind}: {pairs} (mean r = {a.score:.3f}, p = {a.p_value:.3g})"

    out = [
        "MiniLM aligned with itself: " + "; ".join(one("self", k) for k in KINDS) + ".",
        "With a copy whose layers are permuted "
        f"(layer k = MiniLM's {list(PERMUTATION)}[k]): "
        + "; ".join(one("permuted", k) for k in KINDS)
        + ".",
        f"With a copy trained {steps} steps of masked-language modelling: "
        + "; ".join(one("trained", k) for k in KINDS)
        + ".",
    ]
    checks = "; ".join(
        f"{h} ({c['card']}): {c['names_ranked_first']}/{c['n_names']} names rank first "
        f"({c['names_in_first_3']} in the first 3)"
        for h, c in toy.items()
    )
    out.append(f"Toy IOI model, each name's OV reading by the card's heads: {checks}.")
    layers = shift["layers"]
    rs = ", ".join(
        f"{lab} {r:.3f}" for lab, r in zip(layers, shift["vocab_pearson_r"], strict=True)
    )
    out.append(
        f"MiniLM, objects in subject vs object position ({shift['n_objects']} words x "
        f"{shift['n_families']} families): the two readings' token scores correlate at {rs}; "
        f"the shift itself, read at {layers[-1]}, scores highest {shift['top_tokens'][-1][:5]}."
    )
    return " ".join(out)


def headline(aligned: dict, steps: int) -> str:
    """The permutation recovered (or not), and how well the trained copy's layers match."""
    moved, trained = aligned[("permuted", "values")], aligned[("trained", "values")]
    n = len(PERMUTATION)
    recovered = moved.matching == tuple((i, PERMUTATION.index(i)) for i in range(n))
    itself = trained.matching == tuple((i, i) for i in range(n))
    return (
        f"MiniLM's permuted layers {'recovered' if recovered else 'NOT recovered'} "
        f"(p = {moved.p_value:.2g}); after {steps} MLM steps each layer "
        f"{'matches itself' if itself else 'does NOT match itself'} "
        f"(values: mean r = {trained.score:.3f})"
    )


def run(out: Path, *, steps: int = 300, n_permutations: int = 100, png: bool = True) -> dict:
    from mi_cluster.core.provenance import provenance
    from mi_cluster.models.loading import load_model
    from mi_cluster.plotting import write_experiment
    from mi_cluster.plotting.embedding_space import alignment_heatmap, token_table

    minilm, toy = load_model("minilm"), load_model("toy-ioi")
    shift, shift_reading, design_texts = shift_in_vocabulary(minilm)
    with tempfile.TemporaryDirectory(prefix="embedding-space-") as tmp:
        copies = minilm_copies(Path(tmp), steps, training_texts(design_texts))
        aligned = alignments(minilm, copies, n_permutations)
    toy_checks, toy_tables = toy_head_checks(toy)
    heads = minilm_heads(minilm)
    figures = {
        name: alignment_heatmap(aligned[(name, "values")], title=f"MiniLM vs {what}")
        for name, what in (
            ("self", "itself"),
            ("permuted", "a copy with permuted layers"),
            ("trained", f"a copy after {steps} steps of masked-language modelling"),
        )
    }
    figures["minilm_heads"] = token_table(heads, "MiniLM heads' OV circuits, top direction")
    figures["toy_heads"] = token_table(toy_tables, "Toy IOI heads' OV readings of names")
    figures["shift"] = token_table(
        [shift_reading], "MiniLM: objects in subject minus object position, as tokens"
    )
    record = {
        "answer": answer(aligned, toy_checks, shift, steps),
        "alignments": {
            f"{name} {kind}": {
                "similarity": [[round(float(v), 4) for v in row] for row in a.similarity],
                "matching": [list(p) for p in a.matching],
                "mean_r": round(a.score, 4),
                "p_value": a.p_value,
                "n_permutations": len(a.null_scores),
                "n_tokens": a.n_tokens,
            }
            for (name, kind), a in aligned.items()
        },
        "permutation": list(PERMUTATION),
        "mlm_steps": steps,
        "readout": "embedding (BERT's decoder is tied to it; MiniLM's MLM transform is random)",
        "toy_heads": toy_checks,
        "shift_in_vocabulary": shift,
    }
    record["headline"] = headline(aligned, steps)
    prov = provenance([minilm, toy], design_texts, seed=0)
    files, failed = write_experiment(
        out, "embedding_space", record, figures, png=png, provenance=prov
    )
    for message in failed:
        print(message, file=sys.stderr)
    record["files"] = [str(f) for f in files]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--steps", type=int, default=300, help="masked-LM steps of the copy")
    parser.add_argument("--n-permutations", type=int, default=100)
    parser.add_argument("--no-png", action="store_true")
    args = parser.parse_args(argv)
    record = run(
        args.out, steps=args.steps, n_permutations=args.n_permutations, png=not args.no_png
    )
    print(record["answer"])
    for path in record["files"]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
