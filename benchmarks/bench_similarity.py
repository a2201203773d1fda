"""Similarity metrics: mi_cluster (torch) against numpy float64 implementations of the
same formulas, and a layer-by-layer linear-CKA matrix against a per-pair numpy loop.

    python benchmarks/bench_similarity.py [--n 4096] [--d 768] [--layers 24]
        [--baseline-pairs 8] [--device cpu|cuda]

Part 1 times each metric once on (n tokens, d neurons) (a warm-up call first) and prints
numpy time / torch time. Part 2 times ``pairwise(metric="linear_cka")`` on a stack of
``layers`` x n x d against looping a numpy float64 per-pair CKA (Kornblith's feature-space
formula, the fastest per-pair form) over all layers x layers pairs. The loop's pairs all
cost the same, so it is timed on ``--baseline-pairs`` of them and scaled; the printed line
says so. It also prints the matrix's achieved GFLOP/s against this machine's measured
matmul throughput for the same operand shapes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.spatial
import scipy.stats
import torch

import mi_cluster.methods.similarity as S


def timed(fn, repeat: int = 1, sync=lambda: None) -> tuple[float, object]:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, out


# ---- numpy float64 references of the same formulas ----


def np_center(x):
    return x - x.mean(0)


def np_linear_cka(x, y, debiased=False):
    x, y = np_center(x), np_center(y)
    xy = np.linalg.norm(x.T @ y) ** 2
    xx = np.linalg.norm(x.T @ x) ** 2
    yy = np.linalg.norm(y.T @ y) ** 2
    if debiased:
        n = x.shape[0]
        rx, ry = (x * x).sum(1), (y * y).sum(1)

        def fix(v, a, b):
            return v - n / (n - 2) * a @ b + a.sum() * b.sum() / ((n - 1) * (n - 2))

        xy, xx, yy = fix(xy, rx, ry), fix(xx, rx, rx), fix(yy, ry, ry)
    return xy / np.sqrt(xx * yy)


def np_rbf_cka(x, y):
    def gram(a):
        a = np_center(a)
        sq = (a * a).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None] - 2 * a @ a.T, 0)
        k = np.exp(-d2 / (2 * np.median(d2)))
        m = k.mean(0)
        return k - m[:, None] - m[None] + m.mean()

    kx, ky = gram(x), gram(y)
    return (kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum())


def np_basis(x):
    u, s, _ = np.linalg.svd(np_center(x), full_matrices=False)
    return u


def np_cca(x, y):
    return np.linalg.svd(np_basis(x).T @ np_basis(y), compute_uv=False).mean()


def np_svcca(x, y):
    def red(a):
        u, s, _ = np.linalg.svd(np_center(a), full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), 0.99) + 1)
        return u[:, :k] * s[:k]

    return np_cca(red(x), red(y))


def np_pwcca(x, y):
    bx, by = np_basis(x), np_basis(y)
    u, rho, _ = np.linalg.svd(bx.T @ by, full_matrices=False)
    h = bx @ u
    alpha = np.abs(h.T @ np_center(x)).sum(1)
    return (alpha / alpha.sum() * rho).sum()


def np_rsa(x, y):
    a = scipy.spatial.distance.pdist(x, "correlation")
    b = scipy.spatial.distance.pdist(y, "correlation")
    return scipy.stats.spearmanr(a, b)[0]


def np_procrustes(x, y):
    x, y = np_center(x), np_center(y)
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    return np.sqrt(max(0.0, 2 - 2 * np.linalg.svd(x.T @ y, compute_uv=False).sum()))


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_kl(p, q):
    lp, lq = np_log_softmax(p), np_log_softmax(q)
    return (np.exp(lp) * (lp - lq)).sum(-1)


def np_js(p, q):
    lp, lq = np_log_softmax(p), np_log_softmax(q)
    lm = np.logaddexp(lp, lq) - np.log(2)
    return 0.5 * ((np.exp(lp) * (lp - lm)).sum(-1) + (np.exp(lq) * (lq - lm)).sum(-1))


def np_spectrum(x, y):
    sx = np.linalg.svd(np_center(x), compute_uv=False)
    sy = np.linalg.svd(np_center(y), compute_uv=False)
    return np.linalg.norm(sx - sy)


METRICS = [
    ("linear_cka", np_linear_cka, S.linear_cka),
    ("debiased_cka", lambda a, b: np_linear_cka(a, b, True), lambda a, b: S.linear_cka(a, b, True)),
    ("rbf_cka", np_rbf_cka, S.rbf_cka),
    ("cca (mean rho)", np_cca, lambda a, b: S.cca(a, b).mean_rho),
    ("svcca", np_svcca, lambda a, b: S.svcca(a, b).mean_rho),
    ("pwcca", np_pwcca, S.pwcca),
    ("rsa", np_rsa, S.rsa),
    ("procrustes", np_procrustes, S.procrustes_distance),
    (
        "token_cosine",
        lambda a, b: (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1),
        S.token_cosine,
    ),
    ("kl (logits)", np_kl, S.kl_divergence),
    ("js (logits)", np_js, S.js_divergence),
    ("spectrum", np_spectrum, S.spectrum_distance),
]


def part_metrics(n: int, d: int, device: str, sync) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)) + rng.normal(size=d)
    y = x @ rng.normal(size=(d, d)) / np.sqrt(d) + rng.normal(size=(n, d))
    print(f"\n(1) each metric on ({n} tokens, {d} neurons); numpy float64 vs torch on {device}")
    print(
        f"{'metric':<16}{'numpy f64 s':>12}{'torch f64 s':>12}{'torch f32 s':>12}"
        f"{'x f64':>8}{'x f32':>8}{'|f64 - np|':>12}"
    )
    for name, np_fn, fn in METRICS:
        t_np, ref = timed(lambda f=np_fn: f(x, y))
        row = [t_np]
        outs = []
        for dtype in (torch.float64, torch.float32):
            tx = torch.tensor(x, dtype=dtype, device=device)
            ty = torch.tensor(y, dtype=dtype, device=device)
            sec, out = timed(lambda f=fn, a=tx, b=ty: f(a, b), sync=sync)
            row.append(sec)
            outs.append(out)
        err = float(np.max(np.abs(outs[0].cpu().numpy() - ref)))
        print(
            f"{name:<16}{row[0]:>12.3f}{row[1]:>12.3f}{row[2]:>12.3f}"
            f"{row[0] / row[1]:>8.1f}{row[0] / row[2]:>8.1f}{err:>12.1e}"
        )


def matmul_gflops(n: int, d: int, dtype, device: str, sync) -> float:
    a = torch.randn(n, d, dtype=dtype, device=device)
    sec, _ = timed(lambda: a @ a.T, repeat=3, sync=sync)
    return 2 * n * n * d / sec / 1e9


def pairwise_flops(layers: int, n: int, d: int) -> float:
    """Flops of the symmetric Gram-block algorithm: each layer's Gram built from row blocks
    (off-diagonal blocks once), then one product per block for all layer pairs."""
    from mi_cluster.methods.similarity.matrices import BLOCK_ROWS

    blocks = -(-n // BLOCK_ROWS)
    packed = n * n * (blocks + 1) / (2 * blocks)
    return layers * 2 * packed * d + 2 * layers * layers * packed


def part_matrix(layers: int, n: int, d: int, baseline_pairs: int, device: str, sync) -> None:
    rng = np.random.default_rng(1)
    stack = [rng.normal(size=(n, d))]
    for _ in range(layers - 1):
        stack.append(stack[-1] + 0.3 * rng.normal(size=(n, d)))
    stack = np.stack(stack)
    print(
        f"\n(2) {layers} x {layers} linear-CKA matrix, {layers} layers x {n} tokens x {d} neurons"
    )
    start = time.perf_counter()
    pairs = [(i, (i * 7 + 3) % layers) for i in range(baseline_pairs)]
    loop_vals = [np_linear_cka(stack[i], stack[j]) for i, j in pairs]
    per_pair = (time.perf_counter() - start) / len(pairs)
    t_loop = per_pair * layers * layers
    t_triangle = per_pair * layers * (layers + 1) / 2
    print(
        f"numpy f64 per-pair loop: {per_pair:.2f} s a pair (timed on {len(pairs)} pairs), "
        f"so {t_loop:.0f} s for all {layers * layers} pairs "
        f"({t_triangle:.0f} s for the {layers * (layers + 1) // 2} of one triangle)"
    )
    flops = pairwise_flops(layers, n, d)
    for dtype in (torch.float64, torch.float32):
        xs = torch.tensor(stack, dtype=dtype, device=device)
        sec, res = timed(
            lambda a=xs: S.pairwise(a, metric="linear_cka", max_memory=8 * 1024**3), sync=sync
        )
        err = max(
            abs(float(res.values[i, j]) - v) for (i, j), v in zip(pairs, loop_vals, strict=True)
        )
        peak = matmul_gflops(n, d, dtype, device, sync)
        name = str(dtype).replace("torch.", "")
        print(
            f"torch {name} matrix: {sec:.2f} s -> {t_loop / sec:.0f}x the full loop, "
            f"{t_triangle / sec:.0f}x the triangle loop; max |diff| vs numpy {err:.1e}; "
            f"{flops / sec / 1e9:.0f} GFLOP/s achieved vs {peak:.0f} GFLOP/s measured "
            f"matmul ({100 * flops / sec / 1e9 / peak:.0f}%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--baseline-pairs", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-metrics", action="store_true")
    args = parser.parse_args()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    if not args.skip_metrics:
        part_metrics(args.n, args.d, args.device, sync)
    part_matrix(args.layers, args.n, args.d, args.baseline_pairs, args.device, sync)


if __name__ == "__main__":
    main()
