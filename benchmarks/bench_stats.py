"""Permutation tests, vectorised vs a Python loop over permutations, in one run.

10,000 permutations x 13 layers x 60 words (30 names, 30 objects) x 384 dims (MiniLM's
width, BERT-base's depth). For each separation statistic, ``mi_cluster.methods.stats.
separation_test`` (one batched pass per chunk of permutations, all layers at once) against
a loop that applies the *same* label permutations one at a time, each computing the
statistic for all 13 layers with plain torch; and the paired sign-flip test likewise. Both
count the same permutations (the last column: the largest difference in counts over
layers; in float32 a near-tie can round either way, in float64 they agree exactly); the
ratio of their times is printed.

    python benchmarks/bench_stats.py [--device cuda] [--permutations 10000]
"""

from __future__ import annotations

import argparse
import time

import torch

from mi_cluster.methods.stats import paired_test, separation_test
from mi_cluster.methods.stats.resampling import label_permutations, make_generator, sign_flips


def centroid_stat(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    xa, xb = x[:, a], x[:, ~a]
    ca, cb = xa.mean(1), xb.mean(1)
    within = torch.cat([xa - ca[:, None], xb - cb[:, None]], 1).pow(2).sum(-1).mean(-1)
    return (ca - cb).norm(dim=-1) / within.sqrt()


def variance_ratio_stat(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    xa, xb = x[:, a], x[:, ~a]
    na, nb = xa.shape[1], xb.shape[1]
    ca, cb = xa.mean(1), xb.mean(1)
    wss = (xa - ca[:, None]).pow(2).sum((1, 2)) + (xb - cb[:, None]).pow(2).sum((1, 2))
    bss = na * nb / (na + nb) * (ca - cb).pow(2).sum(-1)
    return bss / (wss / (na + nb - 2))


def silhouette_stat(dist: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    to_a, to_b = dist[:, :, a].sum(-1), dist[:, :, ~a].sum(-1)
    na, nb = int(a.sum()), int((~a).sum())
    own = torch.where(a, to_a / (na - 1), to_b / (nb - 1))
    other = torch.where(a, to_b / nb, to_a / na)
    return ((other - own) / torch.maximum(own, other)).mean(-1)


def loop_p_value(stat, data, labels, perms) -> torch.Tensor:
    observed = stat(data, labels)
    count = torch.zeros_like(observed)
    for p in perms:  # the Python loop over permutations
        value = stat(data, p)
        count += value >= observed - observed.abs() * torch.finfo(observed.dtype).eps * 100
    return (count + 1) / (len(perms) + 1)


def count_difference(p_a: torch.Tensor, p_b: torch.Tensor, n_perm: int) -> int:
    """The largest difference, over layers, in how many permutations the two p-values count."""
    return int(((p_a.double() - p_b.double()).abs() * (n_perm + 1)).round().max())


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--words", type=int, default=60)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--float64", action="store_true", help="run in float64 (default float32)")
    args = parser.parse_args()
    dev = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.layers, args.words, args.dims, generator=gen)
    labels = torch.arange(args.words) < args.words // 2
    x[:, labels, 0] += torch.linspace(0, 0.8, args.layers)[:, None]  # separation grows with depth
    x = x.to(dev, torch.float64 if args.float64 else torch.float32)
    n_perm = args.permutations
    perms, _ = label_permutations(labels, n_perm, make_generator(0))  # what separation_test draws
    perms_dev = perms.to(dev)
    lab_dev = labels.to(dev)
    centred = x - x.mean(1, keepdim=True)
    dist = torch.cdist(centred, centred, compute_mode="donot_use_mm_for_euclid_dist")
    name = (
        torch.cuda.get_device_name()
        if dev.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"{n_perm} permutations x {args.layers} layers x {args.words} words x {args.dims} dims, "
        f"{x.dtype} ({name})"
    )
    print(f"{'test':<28} {'vectorised':>11} {'loop':>10} {'ratio':>8}  counts differ by")
    loops = {
        "centroid": (centroid_stat, x),
        "variance_ratio": (variance_ratio_stat, x),
        "silhouette": (silhouette_stat, dist),
    }
    for statistic, (stat, data) in loops.items():
        separation_test(x, labels, statistic, n_permutations=64, n_bootstrap=10)  # warm-up
        res, t_vec = timed(
            lambda s=statistic: separation_test(
                x, labels, s, n_permutations=n_perm, n_bootstrap=1, seed=0
            )
        )
        p_loop, t_loop = timed(lambda s=stat, d=data: loop_p_value(s, d, lab_dev, perms_dev))
        diff = count_difference(res.p_value, p_loop, n_perm)
        row = f"{statistic + ' separation':<28} {t_vec:>10.2f}s {t_loop:>9.2f}s"
        print(f"{row} {t_loop / t_vec:>7.0f}x  {diff}")
    diffs = x[:, :, 0] - x[:, :, 1]  # a [layer, word] table of paired differences
    flips, _ = sign_flips(args.words, n_perm, make_generator(0))
    flips_dev = flips.to(dev, dtype=x.dtype)
    paired_test(diffs, n_permutations=64, n_bootstrap=10)
    res, t_vec = timed(lambda: paired_test(diffs, n_permutations=n_perm, n_bootstrap=1, seed=0))

    def loop_signflip():
        observed = diffs.mean(-1)
        ge, le = torch.zeros_like(observed), torch.zeros_like(observed)
        gamma = observed.abs() * torch.finfo(observed.dtype).eps * 100
        for f in flips_dev:
            value = (diffs * f).mean(-1)
            ge += value >= observed - gamma
            le += value <= observed + gamma
        return (2 * torch.minimum(ge + 1, le + 1) / (n_perm + 1)).clamp(max=1)

    p_loop, t_loop = timed(loop_signflip)
    diff = count_difference(res.p_value, p_loop, n_perm)
    print(
        f"{'paired sign-flip':<28} {t_vec:>10.2f}s {t_loop:>9.2f}s {t_loop / t_vec:>7.0f}x  {diff}"
    )


if __name__ == "__main__":
    main()
