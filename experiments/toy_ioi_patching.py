"""Patching the shipped toy IOI model: which components carry its answer?

40 IOI prompts of one template ("When A and B went to the P , S gave a O to", name pairs
drawn at random), corrupted by replacing the repeated subject S2 with a third name (the
IOI paper's ABC corruption, which removes the repetition the model relies on); the metric
is the logit difference IO - S. Sweeps, all with mi_cluster.patching:

- head outputs, all positions (denoising: clean into corrupted);
- the residual stream by layer and position (denoising);
- path patching of every head to the logits (noising, the IOI paper's direction);
- attribution patching of both, with its correlation to the exact sweeps.

Writes ``toy_ioi_patching.json`` and ``toy_ioi_patching_{heads,resid}.{html,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def prompts(n: int = 40, seed: int = 0) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Clean prompts of template 0, the same prompts with S2 replaced by a third name, and
    (IO, S) answers."""
    from mi_cluster.heads import IOIPrompt, replace_subject
    from mi_cluster.toy.data import NAMES, ioi_example

    rng = random.Random(seed)
    clean, corrupted, answers = [], [], []
    for _ in range(n):
        ex = ioi_example(rng, NAMES, range(1))
        third = rng.choice([x for x in NAMES if x not in (ex.io, ex.s)])
        clean.append(ex.text)
        corrupted.append(replace_subject(IOIPrompt(ex.text, ex.io, ex.s), "s2", third).text)
        answers.append((ex.io, ex.s))
    return clean, corrupted, answers


def run(out: Path, n: int = 40, png: bool = True, progress: bool = True) -> dict:
    from mi_cluster.atomic import atomic_write_text
    from mi_cluster.models import load_model
    from mi_cluster.patching import (
        activation_patching,
        attribution_patching,
        correlation_with,
        logit_difference,
        path_patching,
    )
    from mi_cluster.plotting import save_formats
    from mi_cluster.plotting.patching import patching_maps

    model = load_model("toy-ioi")
    clean, corrupted, answers = prompts(n)
    metric = logit_difference(model, answers)
    heads = activation_patching(model, clean, corrupted, metric, "head_out", progress=progress)
    resid = activation_patching(model, clean, corrupted, metric, "resid_pre", progress=progress)
    path = path_patching(model, clean, corrupted, metric, "logits", progress=progress)
    attr = attribution_patching(model, clean, corrupted, metric, ("head_out", "resid_pre"))
    r_heads = correlation_with(attr["head_out"], heads)
    r_resid = correlation_with(attr["resid_pre"], resid)

    def table(t):
        return [[round(float(v), 4) for v in row] for row in t.tolist()]

    def top(result, k=3):
        flat = result.normalised().flatten()
        order = flat.abs().argsort(descending=True)[:k]
        n_heads = result.values.shape[1]
        return [
            (f"L{int(i) // n_heads}H{int(i) % n_heads}", round(float(flat[i]), 3)) for i in order
        ]

    record = {
        "model": "toy-ioi",
        "n_prompts": n,
        "template": "When {A} and {B} went to the {P} , {S} gave a {O} to",
        "corruption": "S2 replaced by a third name",
        "metric": metric.name,
        "clean_logit_difference": round(float(heads.clean.mean()), 4),
        "corrupted_logit_difference": round(float(heads.corrupted.mean()), 4),
        "head_out_normalised": table(heads.normalised()),
        "path_to_logits_normalised": table(path.normalised()),
        "resid_pre_normalised": table(resid.normalised()),
        "positions": resid.labels["pos"],
        "largest_heads_denoising": top(heads),
        "largest_heads_path_to_logits": top(path),
        "attribution_correlation": {"head_out": round(r_heads, 4), "resid_pre": round(r_resid, 4)},
    }
    figures = {
        "heads": patching_maps(
            [heads, path, attr["head_out"]],
            ["activation patching (denoise)", "path to logits (noise)", "attribution (denoise)"],
            title=f"toy-ioi: which heads carry IO − S? ({n} prompts, S2 replaced by a third name)",
        ),
        "resid": patching_maps(
            [resid, attr["resid_pre"]],
            ["activation patching (denoise)", f"attribution (r = {r_resid:.2f})"],
            title="toy-ioi: the residual stream by layer and position",
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    files = [atomic_write_text(out / "toy_ioi_patching.json", json.dumps(record, indent=2) + "\n")]
    for stem, fig in figures.items():
        written, failed = save_formats(
            fig, out / f"toy_ioi_patching_{stem}", ("html", "png") if png else ("html",)
        )
        files += written
        for message in failed:
            print(message, file=sys.stderr)
    record["files"] = [str(f) for f in files]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--no-png", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    record = run(args.out, args.n, png=not args.no_png, progress=not args.quiet)
    for key in ("clean_logit_difference", "corrupted_logit_difference", "largest_heads_denoising",
                "largest_heads_path_to_logits", "attribution_correlation"):  # fmt: skip
        print(f"{key}: {record[key]}")
    for path in record["files"]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
