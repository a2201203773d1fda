"""Similarity metrics against independent numpy/scipy references and their invariants."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial
import scipy.special
import scipy.stats
import torch

import mi_cluster.methods.similarity as S
from mi_cluster.methods.similarity import SimilarityInputError


def data(n=300, d1=40, d2=50, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1)) + rng.normal(size=d1) * 3
    y = x @ rng.normal(size=(d1, d2)) + noise * rng.normal(size=(n, d2)) + 1.0
    return x, y


def t(a):
    return torch.tensor(a, dtype=torch.float64)


# ---- numpy references: sample-space formulas, a different path from the library's ----


def np_center_gram(k):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return h @ k @ h


def np_unbiased_hsic(k, g):  # Song et al. (2012), eq. 5
    n = k.shape[0]
    k, g = k.copy(), g.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(g, 0)
    one = np.ones(n)
    return (
        np.trace(k @ g)
        + (one @ k @ one) * (one @ g @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ k @ g @ one)
    ) / (n * (n - 3))


def np_cka(k, g, debiased=False):
    if debiased:
        return np_unbiased_hsic(k, g) / np.sqrt(np_unbiased_hsic(k, k) * np_unbiased_hsic(g, g))
    kc, lc = np_center_gram(k), np_center_gram(g)
    return np.sum(kc * lc) / (np.linalg.norm(kc) * np.linalg.norm(lc))


def np_rbf(x, threshold=1.0):
    d2 = scipy.spatial.distance.squareform(scipy.spatial.distance.pdist(x, "sqeuclidean"))
    return np.exp(-d2 / (2 * threshold**2 * np.median(d2)))


def np_inv_sqrt(c):
    w, v = np.linalg.eigh(c)
    return v @ np.diag(w**-0.5) @ v.T


def np_cca(x, y):
    c = np.cov(x.T, y.T)
    d1 = x.shape[1]
    sxx, sxy, syy = c[:d1, :d1], c[:d1, d1:], c[d1:, d1:]
    return np.linalg.svd(np_inv_sqrt(sxx) @ sxy @ np_inv_sqrt(syy), compute_uv=False)


def np_pwcca(x, y):
    d1 = x.shape[1]
    c = np.cov(x.T, y.T)
    wx = np_inv_sqrt(c[:d1, :d1])
    u, rho, _ = np.linalg.svd(wx @ c[:d1, d1:] @ np_inv_sqrt(c[d1:, d1:]), full_matrices=False)
    xc = x - x.mean(0)
    h = xc @ wx @ u
    h /= np.linalg.norm(h, axis=0)
    alpha = np.abs(h.T @ xc).sum(1)
    return np.sum(alpha / alpha.sum() * rho)


def np_svd_reduce(x, variance=0.99):
    u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), variance) + 1)
    return u[:, :k] * s[:k]


# Google's cca_core / compute_pwcca procedure (what ecco calls), written in numpy.
def np_google(a1, a2, eps=1e-10):
    nx = a1.shape[0]
    c = np.cov(a1, a2)
    sxx, sxy, syy = c[:nx, :nx], c[:nx, nx:], c[nx:, nx:]
    xm, ym = np.abs(sxx).max(), np.abs(syy).max()
    sxx, syy, sxy = sxx / xm, syy / ym, sxy / np.sqrt(xm * ym)
    kx, ky = np.abs(np.diag(sxx)) >= eps, np.abs(np.diag(syy)) >= eps
    sxx = sxx[kx][:, kx] + eps * np.eye(kx.sum())
    syy = syy[ky][:, ky] + eps * np.eye(ky.sum())
    sxy = sxy[kx][:, ky]

    def isq(m):
        w, v = np.linalg.eigh(np.linalg.pinv(m))
        return v @ np.diag(np.sqrt(w)) @ v.T

    u, s, _ = np.linalg.svd(isq(sxx) @ sxy @ isq(syy))
    return u, np.abs(s), kx


def np_ecco_cca(a1, a2):
    s = np_google(a1, a2)[1]
    ratio = np.array([s[:i].sum() / s.sum() for i in range(len(s))])
    idx = int(np.argmax(ratio >= 0.98)) if (ratio >= 0.98).any() else None
    return s[:idx].mean()


def np_ecco_svcca(a1, a2, dims=20):
    red = []
    for a in (a1, a2):
        _, s, v = np.linalg.svd(a - a.mean(1, keepdims=True), full_matrices=False)
        red.append(np.diag(s[:dims]) @ v[:dims])
    return np_google(*red)[1].mean()


def np_ecco_pwcca(a1, a2):
    u, s, kx = np_google(a1, a2)
    acts = a1[kx]
    mu = acts.mean(1, keepdims=True)
    q, _ = np.linalg.qr((u.T @ (acts - mu) + mu).T)
    w = np.abs(q.T @ acts.T).sum(1)
    return np.sum(w / w.sum() * s)


# ---- agreement with the references ----


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(200, 30, 45), (60, 100, 80)])  # feature and Gram paths
def test_linear_cka_matches_reference(debiased, shape):
    x, y = data(*shape)
    ref = np_cka(x @ x.T, y @ y.T, debiased)
    assert float(S.linear_cka(t(x), t(y), debiased=debiased)) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_matches_reference(debiased):
    x, y = data(150, 20, 30, noise=3.0)
    for threshold in (0.5, 1.0):
        ref = np_cka(np_rbf(x, threshold), np_rbf(y, threshold), debiased)
        got = S.rbf_cka(t(x), t(y), threshold=threshold, debiased=debiased)
        assert float(got) == pytest.approx(ref, abs=1e-10)


def test_cca_matches_reference():
    x, y = data(400, 20, 30, noise=4.0)
    res = S.cca(t(x), t(y))
    ref = np_cca(x, y)
    np.testing.assert_allclose(res.rho.numpy(), ref, atol=1e-10)
    assert float(res.mean_rho) == pytest.approx(ref.mean(), abs=1e-12)
    assert float(res.mean_rho2) == pytest.approx((ref**2).mean(), abs=1e-12)
    assert (res.dims_x, res.dims_y) == (20, 30)


def test_ridge_cca_reduces_to_cca_and_shrinks():
    x, y = data(400, 20, 30, noise=4.0)
    plain = S.cca(t(x), t(y)).rho
    np.testing.assert_allclose(S.cca(t(x), t(y), ridge=1e-12).rho.numpy(), plain.numpy(), atol=1e-8)
    assert float(S.cca(t(x), t(y), ridge=0.5).mean_rho) < float(plain.mean())
    wide = data(50, 80, 90)  # n <= d: only possible with ridge
    assert 0 < float(S.cca(t(wide[0]), t(wide[1]), ridge=0.1).mean_rho) < 1


def test_svcca_and_pwcca_match_reference():
    x, y = data(500, 30, 40, noise=3.0)
    x = x @ np.diag(np.geomspace(1, 1e-3, 30))  # a spectrum with a tail to cut
    ref = np_cca(np_svd_reduce(x), np_svd_reduce(y))
    res = S.svcca(t(x), t(y))
    assert res.dims_x == np_svd_reduce(x).shape[1] < 30
    assert float(res.mean_rho) == pytest.approx(ref.mean(), abs=1e-10)
    assert float(S.svcca(t(x), t(y), dims=5).dims_y) == 5
    assert float(S.pwcca(t(x), t(y))) == pytest.approx(np_pwcca(x, y), abs=1e-10)


@pytest.mark.parametrize("metric", ["correlation", "cosine", "euclidean"])
@pytest.mark.parametrize("compare", ["spearman", "pearson"])
def test_rsa_matches_scipy(metric, compare):
    x, y = data(60, 10, 25, noise=5.0)
    np.testing.assert_allclose(
        S.rdm(t(x), metric).numpy(), scipy.spatial.distance.pdist(x, metric), atol=1e-10
    )
    a, b = (scipy.spatial.distance.pdist(m, metric) for m in (x, y))
    corr = scipy.stats.spearmanr if compare == "spearman" else scipy.stats.pearsonr
    got = S.rsa(t(x), t(y), rdm_metric=metric, compare=compare)
    assert float(got) == pytest.approx(corr(a, b)[0], abs=1e-10)


def test_rsa_spearman_handles_ties():
    a = torch.tensor([1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 0.5], dtype=torch.float64)
    b = torch.tensor([2.0, 1.0, 1.0, 4.0, 3.0, 3.0, 0.0], dtype=torch.float64)
    ref = scipy.stats.spearmanr(a.numpy(), b.numpy())[0]
    assert float(S.compare_rdms(a, b, "spearman")) == pytest.approx(ref, abs=1e-12)


def test_procrustes_matches_scipy():
    x, y = data(100, 12, 12, noise=2.0)
    disparity = scipy.spatial.procrustes(x, y)[2]  # 1 - nuclear^2
    ref = np.sqrt(2 - 2 * np.sqrt(1 - disparity))
    assert float(S.procrustes_distance(t(x), t(y))) == pytest.approx(ref, abs=1e-10)
    q = scipy.stats.ortho_group.rvs(12, random_state=0)
    assert float(S.procrustes_distance(t(x), t(3 * x @ q + 7))) < 1e-6


def test_cosine_kl_js_spectrum_match_references():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 16)), rng.normal(size=(20, 16))
    ref_cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    np.testing.assert_allclose(S.token_cosine(t(x), t(y)).numpy(), ref_cos, atol=1e-12)
    lp, lq = rng.normal(size=(4, 5, 50)) * 3, rng.normal(size=(4, 5, 50)) * 3
    p, q = scipy.special.softmax(lp, -1), scipy.special.softmax(lq, -1)
    kl = S.kl_divergence(t(lp), t(lq))
    assert kl.shape == (4, 5)
    np.testing.assert_allclose(kl.numpy(), scipy.special.rel_entr(p, q).sum(-1), atol=1e-12)
    js = S.js_divergence(t(lp), t(lq)).numpy()
    np.testing.assert_allclose(
        js, scipy.spatial.distance.jensenshannon(p, q, axis=-1) ** 2, atol=1e-12
    )
    huge = torch.tensor([[1000.0, -1000.0, 0.0]]), torch.tensor([[-1000.0, 1000.0, 0.0]])
    assert torch.isfinite(S.kl_divergence(*huge)).all() and float(S.kl_divergence(*huge)) > 1000
    sx = np.linalg.svd(x - x.mean(0), compute_uv=False)
    sy = np.linalg.svd(y[:, :10] - y[:, :10].mean(0), compute_uv=False)
    ref = np.linalg.norm(sx - np.pad(sy, (0, 6)))
    assert float(S.spectrum_distance(t(x), t(y[:, :10]))) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("shape", [(300, 40, 60), (300, 60, 60), (200, 30, 90)])
def test_ecco_variants_reproduce_googles_procedure(shape):
    x, y = data(*shape, noise=2.0)
    a1, a2 = x.T.copy(), y.T.copy()
    assert float(S.ecco_cca(a1, a2)) == pytest.approx(np_ecco_cca(a1, a2), abs=1e-9)
    assert float(S.ecco_svcca(a1, a2)) == pytest.approx(np_ecco_svcca(a1, a2), abs=1e-9)
    assert float(S.ecco_pwcca(a1, a2)) == pytest.approx(np_ecco_pwcca(a1, a2), abs=1e-9)
    assert float(S.ecco_cka(a1, a2)) == pytest.approx(np_cka(x @ x.T, y @ y.T), abs=1e-10)


def test_ecco_cca_mean_is_over_the_leading_coefficients():
    x, y = data(300, 40, 60, noise=20.0)
    rho = S.cca(t(x), t(y)).rho  # same coefficients, computed the paper-faithful way
    share = torch.cumsum(rho, 0) / rho.sum()
    k = int((share < 0.98).sum()) + 1  # Google: first i with sum(rho[:i]) >= 98%
    assert k < len(rho)
    assert float(S.ecco_cca(x.T, y.T)) == pytest.approx(float(rho[:k].mean()), abs=1e-6)
    assert float(S.ecco_cca(x.T, y.T)) > float(rho.mean()) + 0.01


def test_ecco_pwcca_refuses_the_case_google_crashes_on():
    x, y = data(300, 60, 40)
    with pytest.raises(SimilarityInputError, match="more neurons"):
        S.ecco_pwcca(x.T, y.T)
    with pytest.raises(SimilarityInputError, match="transpose"):
        S.ecco_cca(x, y)  # (tokens, neurons) passed by mistake


# ---- invariants ----


def test_cka_invariances_and_identity():
    x, y = data(150, 20, 20, noise=2.0)
    q = scipy.stats.ortho_group.rvs(20, random_state=1)
    for debiased in (False, True):
        base = float(S.linear_cka(t(x), t(y), debiased=debiased))
        assert float(S.linear_cka(t(x), t(x), debiased=debiased)) == pytest.approx(1, abs=1e-12)
        assert float(S.linear_cka(t(y), t(x), debiased=debiased)) == pytest.approx(base, abs=1e-12)
        moved = S.linear_cka(t(5 * x @ q + 2), t(y), debiased=debiased)
        assert float(moved) == pytest.approx(base, abs=1e-10)
    base = float(S.rbf_cka(t(x), t(y)))
    assert float(S.rbf_cka(t(5 * x @ q - 1), t(y))) == pytest.approx(base, abs=1e-10)


def test_cca_invariant_to_invertible_maps():
    x, y = data(300, 15, 20, noise=3.0)
    a = np.random.default_rng(5).normal(size=(15, 15))
    base = S.cca(t(x), t(y))
    moved = S.cca(t(x @ a + 4), t(y))
    np.testing.assert_allclose(moved.rho.numpy(), base.rho.numpy(), atol=1e-9)
    assert float(S.cca(t(x), t(x)).mean_rho) == pytest.approx(1, abs=1e-12)
    assert float(S.pwcca(t(x), t(x @ a))) == pytest.approx(1, abs=1e-9)


def test_debiased_cka_removes_the_small_sample_bias():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 768)), rng.normal(size=(100, 768))
    assert float(S.linear_cka(t(x), t(y))) > 0.8  # the bias the issue describes
    assert abs(float(S.linear_cka(t(x), t(y), debiased=True))) < 0.05


def test_float32_agrees_with_float64():
    x, y = data(500, 48, 64, noise=2.0)
    x += 100.0  # large means: one-pass formulas would lose digits here
    x32, y32, x64, y64 = (
        torch.tensor(a, dtype=dt) for dt in (torch.float32, torch.float64) for a in (x, y)
    )
    for fn in (
        lambda a, b: S.linear_cka(a, b),
        lambda a, b: S.linear_cka(a, b, debiased=True),
        lambda a, b: S.rbf_cka(a, b),
        lambda a, b: S.cca(a, b).mean_rho,
        lambda a, b: S.svcca(a, b).mean_rho,
        lambda a, b: S.pwcca(a, b),
        lambda a, b: S.rsa(a, b),
        lambda a, b: S.procrustes_distance(a, b),
    ):
        lo, hi = fn(x32, y32), fn(x64, y64)
        assert lo.dtype == torch.float32 and hi.dtype == torch.float64
        assert float(lo) == pytest.approx(float(hi), abs=2e-5)


# ---- clear errors ----


def test_errors_name_the_problem():
    x, y = data(100, 10, 10)
    bad = x.copy()
    bad[3, 4] = np.nan
    with pytest.raises(SimilarityInputError, match="x has 1 non-finite.*row 3, column 4"):
        S.linear_cka(t(bad), t(y))
    with pytest.raises(SimilarityInputError, match="same number of samples"):
        S.linear_cka(t(x), t(y[:50]))
    with pytest.raises(SimilarityInputError, match="2-D"):
        S.cca(t(x)[None], t(y))
    wide = data(50, 80, 10)
    with pytest.raises(SimilarityInputError, match="n=50 samples and d=80 neurons"):
        S.cca(t(wide[0]), t(wide[1]))
    with pytest.raises(SimilarityInputError, match="logits must have the same shape"):
        S.kl_divergence(torch.zeros(2, 5), torch.zeros(2, 6))
    with pytest.raises(SimilarityInputError, match="unknown metric"):
        S.pairwise(t(x)[None], metric="cka2")
    with pytest.raises(SimilarityInputError, match="no variance"):
        S.linear_cka(torch.ones(10, 3), t(y[:10]))
    const = torch.stack([t(x), torch.ones(100, 10, dtype=torch.float64)])
    with pytest.raises(SimilarityInputError, match=r"xs\[1\] has no variance"):
        S.pairwise(const, metric="procrustes")


# ---- minibatch and pairwise ----


def test_minibatch_cka_is_the_mean_of_per_batch_unbiased_hsic():
    x, y = data(240, 20, 30, noise=2.0)
    acc = S.MinibatchCKA()
    xy = xx = yy = 0.0
    for i in range(0, 240, 60):
        xb, yb = x[i : i + 60], y[i : i + 60]
        acc.update(t(xb), t(yb))
        kx, ky = xb @ xb.T, yb @ yb.T
        xy += np_unbiased_hsic(kx, ky)
        xx += np_unbiased_hsic(kx, kx)
        yy += np_unbiased_hsic(ky, ky)
    assert float(acc.compute()) == pytest.approx(xy / np.sqrt(xx * yy), abs=1e-10)
    one = S.MinibatchCKA()
    one.update(t(x), t(y))
    assert float(one.compute()) == pytest.approx(
        float(S.linear_cka(t(x), t(y), debiased=True)), abs=1e-10
    )


def test_minibatch_cka_layer_stacks():
    rng = np.random.default_rng(2)
    xs = rng.normal(size=(3, 120, 16))
    acc = S.MinibatchCKA()
    for i in range(0, 120, 40):
        acc.update(t(xs[:, i : i + 40]))
    m = acc.compute()
    assert m.shape == (3, 3)
    np.testing.assert_allclose(m.diagonal().numpy(), 1, atol=1e-12)
    np.testing.assert_allclose(m.numpy(), m.numpy().T, atol=1e-12)


def single(metric, a, b):
    return {
        "linear_cka": lambda: S.linear_cka(a, b),
        "debiased_cka": lambda: S.linear_cka(a, b, debiased=True),
        "rbf_cka": lambda: S.rbf_cka(a, b),
        "debiased_rbf_cka": lambda: S.rbf_cka(a, b, debiased=True),
        "cca": lambda: S.cca(a, b).mean_rho,
        "svcca": lambda: S.svcca(a, b).mean_rho,
        "pwcca": lambda: S.pwcca(a, b),
        "rsa": lambda: S.rsa(a, b),
        "procrustes": lambda: S.procrustes_distance(a, b),
    }[metric]()


def stack(n_layers, n, d, seed):
    rng = np.random.default_rng(seed)
    layers = [rng.normal(size=(n, d))]
    for _ in range(n_layers - 1):  # drifting layers, like a residual stream
        layers.append(layers[-1] + 0.7 * rng.normal(size=(n, d)) + 2.0)
    return t(np.stack(layers))


@pytest.mark.parametrize("metric", S.METRICS)
def test_pairwise_equals_the_per_pair_loop(metric):
    xs, ys = stack(4, 120, 24, 0), stack(3, 120, 16, 1)
    within = S.pairwise(xs, metric=metric)
    across = S.pairwise(xs, ys, metric=metric)
    assert within.values.shape == (4, 4) and across.values.shape == (4, 3)
    assert within.symmetric == (metric != "pwcca") and not across.symmetric
    for i in range(4):
        for j in range(4):
            ref = float(single(metric, xs[i], xs[j]))
            assert float(within.values[i, j]) == pytest.approx(ref, abs=1e-9)
        for j in range(3):
            ref = float(single(metric, xs[i], ys[j]))
            assert float(across.values[i, j]) == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
def test_pairwise_cka_gram_path_streamed_and_unstreamed(debiased, monkeypatch):
    import mi_cluster.methods.similarity.matrices as pw

    def refuse(*args):
        raise AssertionError("expected the Gram path for n=600, d=300")

    monkeypatch.setattr(pw, "_feature_products", refuse)
    metric = "debiased_cka" if debiased else "linear_cka"
    xs = stack(5, 600, 300, 3)
    full = S.pairwise(xs, metric=metric).values  # one block of samples
    small = 2 * 5 * 8 * 130 * 130  # blocks of 130 samples: 5 blocks, the last one short
    streamed = S.pairwise(xs, metric=metric, max_memory=small).values
    calls = []
    across = S.pairwise(
        xs, xs[:2], metric=metric, max_memory=small, progress=lambda d, n: calls.append((d, n))
    ).values
    for i in range(5):
        for j in range(5):
            ref = float(S.linear_cka(xs[i], xs[j], debiased=debiased))
            assert float(full[i, j]) == pytest.approx(ref, abs=1e-10)
    torch.testing.assert_close(streamed, full, atol=1e-10, rtol=0)
    torch.testing.assert_close(across, full[:, :2], atol=1e-10, rtol=0)
    assert len(calls) > 1 and calls[-1][0] == calls[-1][1]


def test_pairwise_float32_and_list_input():
    xs = stack(3, 400, 32, 4)
    lo = S.pairwise([x.float() + 50 for x in xs], metric="debiased_cka").values
    hi = S.pairwise(xs + 50, metric="debiased_cka").values
    assert lo.dtype == torch.float32
    torch.testing.assert_close(lo.double(), hi, atol=2e-5, rtol=0)
    with pytest.raises(SimilarityInputError, match=r"xs\[1\] has 399 rows|same samples"):
        S.pairwise([xs[0], xs[1][:399]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    xs = stack(3, 200, 32, 5)
    gpu = S.pairwise(xs.cuda(), metric="debiased_cka").values
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), S.pairwise(xs, metric="debiased_cka").values)


def test_rbf_bandwidth_median_is_numpys_over_all_entries():
    from mi_cluster.methods.similarity.cka import median_of_distances, squared_distances

    rng = np.random.default_rng(7)
    for n in (2, 3, 4, 5, 8, 9):
        x = rng.normal(size=(n, 3))
        x[n // 2] = x[0]  # a duplicated row: zero distances off the diagonal, ties
        d2 = squared_distances(t(x))
        assert float(median_of_distances(d2)) == pytest.approx(np.median(d2.numpy()), abs=1e-12)
