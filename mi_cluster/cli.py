"""The ``mi-cluster`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "run_demo"]


def run_demo(
    model_name: str = "minilm", out_dir: str | Path = "figures", progress: bool = True
) -> dict:
    """Collect the residual stream of the built-in clustering prompts and write the demo
    figures; return a summary (also written as JSON beside the figures)."""
    from mi_cluster.activations import Positions, collect
    from mi_cluster.atomic import atomic_write_text
    from mi_cluster.models import load_model
    from mi_cluster.plotting import layer_lines, layer_scatter, save_figure
    from mi_cluster.projections import pca_by_layer
    from mi_cluster.prompts import clustering_prompt_set
    from mi_cluster.stats import group_separation

    out = Path(out_dir)
    model = load_model(model_name)
    items = clustering_prompt_set()
    texts = [p.text for p in items]
    groups = [p.group for p in items]
    acts = collect(
        model,
        texts,
        "resid_post",
        Positions.word([p.word for p in items], subtoken="mean"),
        progress=progress,
    )
    x = acts.tensor.float()
    proj = pca_by_layer(x, n_components=2)
    name = acts.model_name
    scatter = layer_scatter(
        proj,
        labels=acts.row_labels,
        groups=groups,
        layer_labels=acts.layer_labels,
        hover=[f"{g}: {t}" for g, t in zip(groups, texts, strict=True)],
        title=f"Names vs objects, alone and in subject position — {name}",
    )
    sep_alone = group_separation(x, groups, "name alone", "object alone")
    sep_ctx = group_separation(x, groups, "name in context", "object in context")
    lines = layer_lines(
        {"alone": sep_alone.tolist(), "in context (subject position)": sep_ctx.tolist()},
        acts.layer_labels,
        title=f"Separation of names from objects by layer — {name}<br>"
        "<sup>centroid distance / RMS within-group spread, in the full residual space</sup>",
        y_title="name–object separation",
    )
    written = [
        save_figure(scatter, out / "demo_pca_by_layer.html"),
        save_figure(lines, out / "demo_separation_by_layer.html"),
    ]
    summary = {
        "model": name,
        "site": acts.site,
        "positions": acts.position_spec,
        "n_prompts": len(texts),
        "layers": list(acts.layer_labels),
        "separation_alone": [round(v, 4) for v in sep_alone.tolist()],
        "separation_in_context": [round(v, 4) for v in sep_ctx.tolist()],
        "pca_explained_variance": [
            [round(v, 4) for v in row] for row in proj.explained_variance_ratio.tolist()
        ],
        "figures": [str(p) for p in written],
    }
    written.append(
        atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2) + "\n")
    )
    summary["figures"] = [str(p) for p in written]
    return summary


def _cmd_demo(args: argparse.Namespace) -> int:
    summary = run_demo(args.model, args.out, progress=not args.quiet)
    print(f"model {summary['model']}: {summary['n_prompts']} prompts, {summary['positions']}")
    print(f"{'layer':>6}  {'sep. alone':>10}  {'sep. in context':>15}")
    for layer, a, c in zip(
        summary["layers"],
        summary["separation_alone"],
        summary["separation_in_context"],
        strict=True,
    ):
        print(f"{layer:>6}  {a:>10.3f}  {c:>15.3f}")
    for path in summary["figures"]:
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mi-cluster",
        description="Mechanistic-interpretability toolkit: residual streams by layer, clustering, "
        "similarity metrics and patching on TransformerLens models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="collect residual streams of names vs objects (alone and in context) and write "
        "per-layer PCA figures to figures/",
    )
    demo.add_argument("--model", default="minilm", help="model to load (default: minilm, offline)")
    demo.add_argument("--out", default="figures", help="output directory (default: figures)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)
    train = sub.add_parser(
        "train-toy",
        help="retrain the shipped toy IOI model (1 thread, fixed seed; see its MODEL_CARD.md)",
        add_help=False,
    )
    train.set_defaults(func=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train-toy"]:
        from mi_cluster.toy.train import main as train_main

        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
