"""Which groups of MiniLM's MLP neurons fire together over a passage: NMF, as ecco's run_nmf.

    python experiments/activation_factors.py [--components 8]

The passage is the Dostoevsky extract of the class notebook (Notes from Underground,
``experiments/data/underground.txt``). The MLP neuron activations of all six layers
(``mlp.hook_post``, negatives set to 0 as ecco does) over its tokens are factorised into
eight components; each component is described by the tokens where it is most active. The
factorisation is also run by scikit-learn on the same matrix, and the two objectives are
reported side by side.

Writes ``activation_factors_minilm.json`` and figures ``activation_factors_minilm_<kind>``
(text, heatmap, top_tokens; ``.html``, ``.png``) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PASSAGE = Path(__file__).parent / "data" / "underground.txt"  # shared with layer_similarity.py


def run(out: Path, n_components: int, png: bool) -> dict:
    from sklearn.decomposition import NMF

    from mi_cluster.collection.activations import Positions, collect
    from mi_cluster.core.provenance import provenance
    from mi_cluster.methods.factors import activation_factors
    from mi_cluster.models.loading import load_model
    from mi_cluster.plotting import write_experiment
    from mi_cluster.plotting.factors import (
        plot_factor_heatmap,
        plot_factor_text,
        plot_factor_top_tokens,
    )

    model = load_model("minilm")
    text = PASSAGE.read_text(encoding="utf-8").strip()
    f = activation_factors(model, text, n_components)
    acts = collect(model, [text], "mlp_post", Positions.all(exclude_special=True), progress=False)
    X = acts.tensor.permute(1, 0, 2).reshape(acts.tensor.shape[1], -1).clamp_min(0).double().numpy()
    reference = NMF(n_components, max_iter=2000, tol=1e-6).fit(X)
    ref_rel = float(reference.reconstruction_err_ / (X**2).sum() ** 0.5)
    layer_share = []
    for c in range(f.n_components):
        load = f.loadings[c]
        total = float(load.sum())
        share = [
            float(load[[i for i, x in enumerate(f.neuron_layer) if x == layer]].sum()) / total
            for layer in f.layers
        ]
        layer_share.append([round(s, 4) for s in share])
    components = []
    for c, top in enumerate(f.top_tokens(10)):
        components.append(
            {
                "component": c,
                "top_tokens": [[t, round(v, 4)] for t, v in top],
                "share_of_loading_by_layer": layer_share[c],
            }
        )
    record = {
        "model": "minilm",
        "passage": str(PASSAGE.name),
        "n_tokens": len(f.tokens),
        "n_neurons": int(f.loadings.shape[1]),
        "n_components": n_components,
        "relative_error": round(f.relative_error, 5),
        "scikit_learn_relative_error": round(ref_rel, 5),
        "n_iter": f.n_iter,
        "components": components,
    }
    figs = {
        "text": plot_factor_text(f),
        "heatmap": plot_factor_heatmap(f),
        "top_tokens": plot_factor_top_tokens(f),
    }
    record["headline"] = (
        f"{n_components} components, relative error {record['relative_error']:.3f} "
        f"(scikit-learn {record['scikit_learn_relative_error']:.3f}); C0: "
        + ", ".join(t for t, _ in record["components"][0]["top_tokens"][:4])
    )
    prov = provenance([model], [text], seed=None)
    files, failed = write_experiment(
        out, "activation_factors_minilm", record, figs, png=png, indent=1, provenance=prov
    )
    for message in failed:
        print(message, file=sys.stderr)
    record["files"] = [str(p) for p in files]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--no-png", action="store_true")
    args = parser.parse_args(argv)
    record = run(args.out, args.components, not args.no_png)
    print(
        f"== minilm: {record['n_components']} NMF components of {record['n_neurons']} MLP neurons "
        f"over {record['n_tokens']} tokens ==\nrelative error {record['relative_error']:.4f} "
        f"(scikit-learn {record['scikit_learn_relative_error']:.4f})"
    )
    for c in record["components"]:
        peak = max(
            range(len(c["share_of_loading_by_layer"])),
            key=c["share_of_loading_by_layer"].__getitem__,
        )
        words = ", ".join(t for t, _ in c["top_tokens"][:6])
        print(f"C{c['component']}: {words} (loading heaviest in layer {peak})")
    for path in record["files"]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
