"""The logit lens over many prompts: mi_cluster's ``logit_lens`` vs TransformerLens 4's own
``transformer_lens.tools.analysis.logit_lens`` (the peer), on a GPT-2-small-shaped model
with GPT-2's real 50,257-token vocabulary (random weights; offline).

Task: for N prompts of different lengths, at the last token of each, the top-10 tokens and
the rank of each prompt's answer token at every layer. TransformerLens's function reads one
position index for a whole batch, so the baseline groups prompts of equal length into
batches (no padding at all, its best case), runs each batch once with the residual hooks
cached and reads that cache twice (top-k, then ranks: its selectors are exclusive);
mi_cluster pads batches of mixed lengths and gets both in one pass.
Each method runs in its own subprocess, so peak memory is measured cleanly.

    python benchmarks/bench_lens.py [--n 256] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from bench_collect import PeakRSS, prompts, run_children  # noqa: E402


def child(method: str, args: argparse.Namespace) -> None:
    import torch

    from mi_cluster.methods.lens.logit import logit_lens
    from mi_cluster.models.loading import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.model_dir, device="cpu")
    texts = prompts(args.n)
    answer = [model.to_single_token(" " + t.split()[-3]) for t in texts]  # the given object
    logit_lens(model, texts[:2], progress=False)  # warm-up
    meter = PeakRSS()
    meter.start()
    start = time.perf_counter()
    if method == "mi_cluster":
        r = logit_lens(
            model,
            texts,
            "last",
            k=10,
            answers=[(a, a) for a in answer],
            batch_size=args.batch_size,
            progress=False,
        )
        top = r.top_ids
        ranks = r.answer_ranks[..., 0]
    else:
        from transformer_lens.tools.analysis.logit_lens import logit_lens as tl_logit_lens

        tokens = [model.to_tokens(t)[0] for t in texts]
        by_length: dict[int, list[int]] = {}
        for i, t in enumerate(tokens):
            by_length.setdefault(len(t), []).append(i)
        n_layers = model.cfg.n_layers + 1
        top = torch.empty(n_layers, len(texts), 10, dtype=torch.long)
        ranks = torch.empty(n_layers, len(texts), dtype=torch.long)
        for rows in by_length.values():
            for s in range(0, len(rows), args.batch_size):
                batch = rows[s : s + args.batch_size]
                toks = torch.stack([tokens[i] for i in batch])
                targets = torch.tensor([answer[i] for i in batch])
                with torch.no_grad():  # one forward pass, two readouts of its cache
                    _, cache = model.run_with_cache(toks, names_filter=lambda n: "resid" in n)
                    res = tl_logit_lens(cache, top_k=10, return_type="log_probs")
                    top[:, batch] = res.readout.top_ids.cpu()
                    ranked = tl_logit_lens(cache, targets=targets)
                ranks[:, batch] = ranked.rank_trajectory().cpu()
    elapsed = time.perf_counter() - start
    peak = meter.stop()
    print(
        json.dumps(
            {
                "time_s": elapsed,
                "peak_mib": peak,
                "top": top[:, :, 0].tolist(),
                "ranks": ranks.tolist(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--child", choices=["mi_cluster", "transformer_lens"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return
    import torch

    from mi_cluster.models.gpt2 import save_gpt2_shaped

    with tempfile.TemporaryDirectory() as tmp:
        args.model_dir = str(save_gpt2_shaped(tmp))
        results = run_children(__file__, ("transformer_lens", "mi_cluster"), args)
    a, b = results["transformer_lens"], results["mi_cluster"]
    print(
        f"logit lens, last token, top-10 + answer rank at 13 layers: {args.n} prompts through a "
        f"GPT-2-small-shaped model (50,257 tokens), batch {args.batch_size}, {args.threads} threads"
    )
    print(f"{'method':<18}{'time (s)':>10}{'peak extra RSS (MiB)':>24}")
    for name, r in results.items():
        print(f"{name:<18}{r['time_s']:>10.2f}{r['peak_mib']:>24.1f}")
    print(f"speed-up (TransformerLens time / mi_cluster time): {a['time_s'] / b['time_s']:.2f}x")
    ratio = a["peak_mib"] / max(b["peak_mib"], 1e-3)
    print(f"memory   (TransformerLens peak / mi_cluster peak): {ratio:.1f}x")
    ra, rb = (torch.tensor(r["ranks"]) for r in (a, b))
    diff = (ra - rb).abs()
    print(
        f"same top-1 tokens: {a['top'] == b['top']}; answer ranks equal in "
        f"{100 * float((diff == 0).double().mean()):.2f}% of (layer, prompt) cells, max difference "
        f"{int(diff.max())} (matrix products of other shapes round differently; a random model's "
        "50,257 logits have near-ties)"
    )


if __name__ == "__main__":
    main()
