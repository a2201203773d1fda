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
    """Run the subject/object study (names vs objects, each in subject and in object
    position of five template families, and alone) on ``model_name`` and write the demo
    figures and a summary with the effect per layer and its confidence interval."""
    from mi_cluster.atomic import atomic_write_text
    from mi_cluster.designs import role_design
    from mi_cluster.models import load_model
    from mi_cluster.plotting import save_figure
    from mi_cluster.plotting.subject_object import study_scatter, study_separation, study_shift
    from mi_cluster.subject_object import run_subject_object_study

    out = Path(out_dir)
    model = load_model(model_name)
    design = role_design(model, capitalize=model_name != "toy-ioi")
    study = run_subject_object_study(model, design, progress=progress)
    written = [
        save_figure(study_scatter(study), out / "demo_pca_by_layer.html"),
        save_figure(study_shift(study), out / "demo_shift_by_layer.html"),
        save_figure(study_separation(study), out / "demo_separation_by_layer.html"),
    ]
    record = study.summary()
    summary = {
        "model": study.model_name,
        "answer": record["answer"],
        "n_prompts": len(design.items),
        "n_names": len(design.names),
        "n_objects": len(design.objects),
        "layers": list(study.layer_labels),
        "object_shift": record["object_shift"],
        "name_shift": record["name_shift"],
        "interaction": record["interaction"],
        "silhouette": {
            role: record["separation"][role]["silhouette"]["value"] for role in record["separation"]
        },
        "projection_basis": study.projection.basis,
    }
    written.append(
        atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2) + "\n")
    )
    summary["figures"] = [str(p) for p in written]
    return summary


def _cmd_demo(args: argparse.Namespace) -> int:
    s = run_demo(args.model, args.out, progress=not args.quiet)
    words = f"{s['n_names']} names, {s['n_objects']} objects"
    print(f"model {s['model']}: {s['n_prompts']} prompts ({words})")
    print("subjecthood shift, subject minus object position (95% BCa CI; Holm-corrected p):")
    print(f"{'layer':>6}  {'objects':>26}  {'names':>26}  {'interaction':>26}")

    def cell(test: dict, i: int) -> str:
        lo, hi = test["ci_bca"][0][i], test["ci_bca"][1][i]
        return f"{test['estimate'][i]:+.3f} [{lo:+.3f}, {hi:+.3f}] p={test['p_holm'][i]:.3f}"

    for i, layer in enumerate(s["layers"]):
        row = [cell(s[k], i) for k in ("object_shift", "name_shift", "interaction")]
        print(f"{layer:>6}  " + "  ".join(f"{c:>26}" for c in row))
    print(f"\n{s['answer']}\n")
    for path in s["figures"]:
        print(f"wrote {path}")
    return 0


def _cmd_train_lens(args: argparse.Namespace) -> int:
    import torch

    from mi_cluster.models import load_model
    from mi_cluster.toy import TOY_TUNED_LENS
    from mi_cluster.toy.data import training_texts
    from mi_cluster.tuned_lens import train_tuned_lens

    torch.set_num_threads(1)  # one thread: the same lens, to the bit, on every machine
    model = load_model(args.model)
    if args.texts:
        texts = [t for t in Path(args.texts).read_text(encoding="utf-8").splitlines() if t.strip()]
    elif args.model == "toy-ioi":
        texts = training_texts(args.n_texts, args.seed + 101, model.cfg.n_ctx, model.tokenizer)
    else:
        print("--texts FILE (one text a line) is needed for models other than toy-ioi")
        return 2
    out = Path(args.out) if args.out else TOY_TUNED_LENS if args.model == "toy-ioi" else None
    if out is None:
        print("--out PATH is needed for models other than toy-ioi")
        return 2
    print(f"training a tuned lens for {args.model} on {len(texts)} texts, {args.steps} steps")
    lens = train_tuned_lens(
        model, texts, steps=args.steps, seed=args.seed, progress=not args.quiet, log=print
    )
    lens.save(out)
    print(f"wrote {out}")
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
        help="test whether subject position makes objects name-like (names vs objects in "
        "subject/object position, per layer, with CIs) and write figures to figures/",
    )
    demo.add_argument("--model", default="minilm", help="model to load (default: minilm, offline)")
    demo.add_argument("--out", default="figures", help="output directory (default: figures)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)
    lens = sub.add_parser(
        "train-lens",
        help="train a tuned lens (per-layer translators, Belrose et al. 2023); for toy-ioi on "
        "its training distribution, written where the package ships it",
    )
    lens.add_argument("--model", default="toy-ioi", help="model (default: toy-ioi)")
    lens.add_argument(
        "--texts",
        help="corpus file, one text a line (default for toy-ioi: its training distribution)",
    )
    lens.add_argument("--n-texts", type=int, default=3000, help="toy-ioi corpus size")
    lens.add_argument("--steps", type=int, default=400)
    lens.add_argument("--seed", type=int, default=0)
    lens.add_argument("--out", help="where to write the lens (.safetensors)")
    lens.add_argument("--quiet", action="store_true", help="no progress bar")
    lens.set_defaults(func=_cmd_train_lens)
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
