"""Collecting resid_post at the last token for N prompts: mi_cluster vs a plain
``run_with_cache`` of everything followed by slicing (same batches, same model).

Each method runs in its own subprocess so its peak memory (max RSS above the RSS after
loading the model) is measured cleanly. Prints times, peak memory and the ratios.

    python benchmarks/bench_collect.py [--n 512] [--batch-size 32] [--layers 12] [--d-model 768]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def prompts(n: int) -> list[str]:
    from mi_cluster.studies.subject_object.design import NAMES, OBJECTS

    out = []
    for i in range(n):
        a, b = NAMES[i % 10], NAMES[(i * 3 + 1) % 10]
        o = OBJECTS[(i * 7) % 10]
        clauses = ["When", a, "and", b, "went to the store,"] + ["then"] * (i % 9)
        out.append(" ".join(clauses + [b, "gave a", o, "to"]))
    return out


class PeakRSS:
    """Samples this process's resident memory every 2 ms; ``peak_mib`` is the highest
    value seen above the level at ``start()``."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.base = self.peak = 0
        self.running = False

    def start(self) -> None:
        import threading

        gc.collect()
        self.base = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        return (self.peak - self.base) / 2**20


def run_children(script: str, methods: tuple[str, ...], args: argparse.Namespace) -> dict:
    """Run ``script --child METHOD`` with the same arguments for each method, each in its
    own process (clean peak-memory readings); returns each child's last JSON line."""
    results = {}
    for method in methods:
        cmd = [sys.executable, script, "--child", method] + [
            f"--{k.replace('_', '-')}={v}"
            for k, v in vars(args).items()
            if k != "child" and v is not None
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def child(method: str, args: argparse.Namespace) -> None:
    import torch

    from mi_cluster.collection.activations import collect
    from mi_cluster.core.hooks import hook_name
    from mi_cluster.models.loading import load_model
    from mi_cluster.models.tiny import TinyConfig

    torch.set_num_threads(args.threads)
    cfg = TinyConfig(
        n_layers=args.layers,
        d_model=args.d_model,
        n_heads=args.d_model // 64,
        d_mlp=4 * args.d_model,
        n_ctx=64,
    )
    model = load_model(cfg, device="cpu")
    texts = prompts(args.n)
    collect(model, texts[:4], progress=False)  # warm-up
    meter = PeakRSS()
    meter.start()
    start = time.perf_counter()
    if method == "mi_cluster":
        out = collect(
            model, texts, "resid_post", "last", batch_size=args.batch_size, progress=False
        ).tensor
    else:
        tok = model.tokenizer
        rows = []
        names = [hook_name("resid_pre", 0)] + [
            hook_name("resid_post", i) for i in range(args.layers)
        ]
        for s in range(0, len(texts), args.batch_size):
            batch = texts[s : s + args.batch_size]
            ids = [model.to_tokens(t)[0] for t in batch]
            width = max(len(i) for i in ids)
            toks = torch.full((len(ids), width), tok.pad_token_id)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for b, i in enumerate(ids):
                toks[b, : len(i)], mask[b, : len(i)] = i, 1
            with torch.no_grad():
                _, cache = model.run_with_cache(toks, attention_mask=mask)
            last = torch.tensor([len(i) - 1 for i in ids])
            rows.append(torch.stack([cache[n][torch.arange(len(ids)), last] for n in names]))
            del cache
        out = torch.cat(rows, dim=1)
    elapsed = time.perf_counter() - start
    peak = meter.stop()
    print(
        json.dumps(
            {
                "time_s": elapsed,
                "peak_mib": peak,
                "checksum": float(out.double().pow(2).sum()),
                "shape": list(out.shape),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["mi_cluster", "run_with_cache"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return
    results = run_children(__file__, ("run_with_cache", "mi_cluster"), args)
    a, b = results["run_with_cache"], results["mi_cluster"]
    same = abs(a["checksum"] - b["checksum"]) <= 1e-5 * abs(a["checksum"])
    print(
        f"collect resid_post @ last token: {args.n} prompts, {args.layers} layers x d_model "
        f"{args.d_model}, batch {args.batch_size}, {args.threads} threads; result {b['shape']}"
    )
    print(f"{'method':<16}{'time (s)':>10}{'peak extra RSS (MiB)':>24}")
    for name, r in results.items():
        print(f"{name:<16}{r['time_s']:>10.2f}{r['peak_mib']:>24.1f}")
    print(f"speed-up  (run_with_cache time / mi_cluster time):   {a['time_s'] / b['time_s']:.2f}x")
    print(
        "memory    (run_with_cache peak / mi_cluster peak):   "
        f"{a['peak_mib'] / max(b['peak_mib'], 1e-3):.1f}x"
    )
    print(f"same vectors: {same}")


if __name__ == "__main__":
    main()
