"""ecco's "CCA similarity" study on a real BERT, offline: how similar is each layer's
output to the embeddings, over one long passage (the "piano-key" passage from
Dostoevsky's *Notes from Underground*, as in ecco's notebook).

    python experiments/layer_similarity.py [--model minilm] [--out figures]

Writes ``figures/layer_similarity.json`` (the table below, with settings),
``figures/layer_similarity.md`` (the table) and ``figures/layer_similarity.{html,png}``
(layer-by-layer heatmaps of biased and debiased linear CKA).

The table compares the embeddings with every layer by paper-faithful metrics (biased and
debiased linear CKA on all neurons; CCA, SVCCA and PWCCA) and by the ecco-compatible
functions that reproduce the notebook's numbers. The passage has fewer tokens than MiniLM
has neurons, so, as in ecco's notebook, the CCA family uses the first 50 neurons (CCA is
trivially 1 when tokens <= neurons); SVCCA is also given on all neurons with 20 kept
directions.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mi_cluster.collection.activations import Positions, collect  # noqa: E402
from mi_cluster.core.atomic import atomic_write_text  # noqa: E402
from mi_cluster.core.provenance import provenance  # noqa: E402
from mi_cluster.methods.similarity import (  # noqa: E402
    cca,
    ecco_cca,
    ecco_cka,
    ecco_pwcca,
    ecco_svcca,
    linear_cka,
    pairwise,
    pwcca,
    svcca,
)
from mi_cluster.models.loading import load_model  # noqa: E402
from mi_cluster.plotting import similarity_heatmaps, write_experiment  # noqa: E402

# The Dostoevsky extract of the class notebook (shared with activation_factors.py).
PASSAGE = (Path(__file__).parent / "data" / "underground.txt").read_text(encoding="utf-8").strip()
CCA_NEURONS = 50
SVCCA_DIMS = 20
COLUMNS = {
    "cka": "linear CKA (all neurons)",
    "cka_debiased": "debiased linear CKA (all neurons)",
    "cca_mean_rho": f"CCA mean rho (first {CCA_NEURONS})",
    "svcca_99": f"SVCCA 99% variance (first {CCA_NEURONS})",
    "svcca_20_all": f"SVCCA {SVCCA_DIMS} dims (all neurons)",
    "pwcca": f"PWCCA (first {CCA_NEURONS})",
    "ecco_cka": "ecco cka (all)",
    "ecco_cca": f"ecco cca (first {CCA_NEURONS})",
    "ecco_svcca": f"ecco svcca (first {CCA_NEURONS})",
    "ecco_pwcca": f"ecco pwcca (first {CCA_NEURONS})",
}


def layer_table(acts) -> list[dict]:
    """One row per layer: its similarity to the embeddings by every metric."""
    x = acts.tensor.double()  # (layer, token, d); layer 0 is the embedding output
    emb, k = x[0], CCA_NEURONS
    rows = []
    for i, label in enumerate(acts.layer_labels[1:], start=1):
        h = x[i]
        values = {
            "cka": linear_cka(emb, h),
            "cka_debiased": linear_cka(emb, h, debiased=True),
            "cca_mean_rho": cca(emb[:, :k], h[:, :k]).mean_rho,
            "svcca_99": svcca(emb[:, :k], h[:, :k]).mean_rho,
            "svcca_20_all": svcca(emb, h, dims=SVCCA_DIMS).mean_rho,
            "pwcca": pwcca(emb[:, :k], h[:, :k]),
            "ecco_cka": ecco_cka(emb.T, h.T),
            "ecco_cca": ecco_cca(emb[:, :k].T, h[:, :k].T),
            "ecco_svcca": ecco_svcca(emb[:, :k].T, h[:, :k].T),
            "ecco_pwcca": ecco_pwcca(emb[:, :k].T, h[:, :k].T),
        }
        rows.append({"layer": label, **{c: round(float(v), 4) for c, v in values.items()}})
    return rows


def markdown(rows: list[dict], model: str, n_tokens: int, d: int) -> str:
    head = f"Embeddings vs each layer's output, {model}, {n_tokens} tokens x {d} neurons\n\n"
    cols = list(COLUMNS)
    lines = ["| layer | " + " | ".join(COLUMNS[c] for c in cols) + " |"]
    lines.append("|---" * (len(cols) + 1) + "|")
    for r in rows:
        lines.append(f"| {r['layer']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--no-png", action="store_true", help="skip the static PNG export")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    acts = collect(model, [PASSAGE], "resid_post", Positions.all(), progress=True)
    x = acts.tensor
    n_layers, n_tokens, d = x.shape
    rows = layer_table(acts)
    labels = list(acts.layer_labels)
    biased = pairwise(x, metric="linear_cka")
    debiased = pairwise(x, metric="debiased_cka")
    fig = similarity_heatmaps(
        [biased, debiased],
        labels,
        title=f"Layer-by-layer linear CKA — {acts.model_name}, {n_tokens} tokens<br>"
        "<sup>left: biased (Kornblith 2019); right: debiased (unbiased HSIC)</sup>",
    )
    table = markdown(rows, acts.model_name, n_tokens, d)
    record = {
        "model": acts.model_name,
        "n_tokens": n_tokens,
        "d_model": d,
        "layers": labels,
        "cca_neurons": CCA_NEURONS,
        "columns": COLUMNS,
        "embeddings_vs_layer": rows,
        "linear_cka": [[round(v, 4) for v in r] for r in biased.values.tolist()],
        "debiased_cka": [[round(v, 4) for v in r] for r in debiased.values.tolist()],
    }
    last = rows[-1]
    record["headline"] = (
        f"linear CKA of the embeddings with L0 {rows[0]['cka']:.2f}, with "
        f"{last['layer']} {last['cka']:.2f}"
    )
    prov = provenance([model], [PASSAGE])
    files, failed = write_experiment(
        args.out, "layer_similarity", record, {"cka": fig}, png=not args.no_png, provenance=prov
    )
    atomic_write_text(args.out / "layer_similarity.md", table)
    print(table)
    for path in files:
        print(f"wrote {path}")
    if failed:
        raise SystemExit(f"{failed[0]} (the JSON, table and HTML were written; or pass --no-png)")


if __name__ == "__main__":
    main()
