"""Every statistic of mi_cluster.methods.stats against an independent reference (scipy, sklearn,
statsmodels or a numpy hand computation) on fixed data, plus reproducibility and errors."""

import numpy as np
import pytest
import scipy.stats as ss
import torch
from scipy.special import ndtr, ndtri
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import calinski_harabasz_score, silhouette_score
from statsmodels.stats.multitest import multipletests

import mi_cluster.methods.stats as S
from mi_cluster.methods.stats.probe import ridge_alpha
from mi_cluster.methods.stats.resampling import stratified_bootstrap_counts
from mi_cluster.methods.stats.separation import reduce_to_units, weighted_statistic


def _data(layers=3, n=24, d=7, shift=0.8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(layers, n, d, generator=g, dtype=torch.float64)
    lab = torch.zeros(n, dtype=torch.bool)
    lab[: n // 2 - 2] = True
    x[:, lab] += shift
    return x.to(dtype), lab


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_separation_statistics_equal_sklearn(dtype):
    x, lab = _data(dtype=dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    sil, ch = S.silhouette(x, lab), S.variance_ratio(x, lab)
    assert sil.dtype == dtype
    for layer in range(3):
        xl = x[layer].double().numpy()
        assert sil[layer].item() == pytest.approx(silhouette_score(xl, lab.numpy()), rel=tol)
        assert ch[layer].item() == pytest.approx(calinski_harabasz_score(xl, lab.numpy()), rel=tol)
        xa, xb = xl[lab.numpy()], xl[~lab.numpy()]
        dev = np.concatenate([xa - xa.mean(0), xb - xb.mean(0)])
        ref = np.linalg.norm(xa.mean(0) - xb.mean(0)) / np.sqrt((dev**2).sum(1).mean())
        assert S.centroid_separation(x, lab)[layer].item() == pytest.approx(ref, rel=tol)


def test_weighted_statistics_equal_the_duplicated_dataset():
    """A bootstrap resample weighs a row by how often it was drawn: every statistic must
    equal the plain statistic on the dataset with those rows duplicated."""
    x, lab = _data(n=20, d=5)
    g = torch.Generator().manual_seed(3)
    w = torch.randint(0, 3, (1, 20), generator=g).double()
    w[0, :2] = 1  # keep both groups non-empty
    w[0, -2:] = 1
    idx = torch.repeat_interleave(torch.arange(20), w[0].long())
    for stat, ref in (
        ("silhouette", silhouette_score),
        ("variance_ratio", calinski_harabasz_score),
    ):
        got = weighted_statistic(reduce_to_units(x, torch.arange(20), 20, stat), w, lab[None])[:, 0]
        want = [ref(x[layer, idx].numpy(), lab[idx].numpy()) for layer in range(3)]
        np.testing.assert_allclose(
            got.numpy(), want, rtol=1e-7
        )  # sklearn: sqrt(rounding) between duplicates
    centroid = reduce_to_units(x, torch.arange(20), 20, "centroid")
    got = weighted_statistic(centroid, w, lab[None])[:, 0]
    torch.testing.assert_close(got, S.centroid_separation(x[:, idx], lab[idx]))


@pytest.mark.parametrize("n,d", [(24, 7), (16, 40)])  # primal (n > d) and dual (n <= d) solves
def test_probe_equals_sklearn_ridge_classifier(n, d):
    x, lab = _data(n=n, d=d)
    units = torch.arange(n) // 2
    res = S.probe_accuracy(x, lab, units, n_folds=4, ridge=0.5)
    row_fold = res.folds[units].numpy()
    for layer in range(3):
        dec = np.zeros(n)
        for f in range(4):
            tr, te = row_fold != f, row_fold == f
            alpha = float(ridge_alpha(x[layer : layer + 1, torch.from_numpy(tr)], 0.5))
            clf = RidgeClassifier(alpha=alpha).fit(x[layer, tr].numpy(), lab.numpy()[tr])
            dec[te] = clf.decision_function(x[layer, te].numpy())
        np.testing.assert_allclose(res.decision[layer].numpy(), dec, atol=1e-9)
        assert res.accuracy[layer].item() == pytest.approx(((dec > 0) == lab.numpy()).mean())
    # whole units are held out together; folds hold both groups
    for u in range(n // 2):
        assert len(set(row_fold[units.numpy() == u])) == 1


def test_ridge_fit_equals_sklearn():
    x, lab = _data(n=30, d=6)
    w, b = S.ridge_fit(x, lab.double() * 2 - 1, ridge=2.0)
    for layer in range(3):
        alpha = float(ridge_alpha(x[layer : layer + 1], 2.0))
        clf = RidgeClassifier(alpha=alpha).fit(x[layer].numpy(), lab.numpy())
        np.testing.assert_allclose(w[layer].numpy(), np.ravel(clf.coef_), atol=1e-10)
        assert b[layer].item() == pytest.approx(np.ravel(clf.intercept_)[0], abs=1e-10)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_sign_flip_test_equals_scipy_exact(alternative):
    g = torch.Generator().manual_seed(1)
    d = torch.randn(4, 11, generator=g, dtype=torch.float64) + torch.tensor(
        [[0.0], [0.3], [0.8], [-0.5]]
    )
    res = S.paired_test(d, alternative=alternative, n_permutations=5_000, n_bootstrap=100)
    assert res.exact and res.n_permutations == 2**11
    for layer in range(4):
        ref = ss.permutation_test(
            (d[layer].numpy(),), np.mean, permutation_type="samples", n_resamples=np.inf,
            alternative=alternative,
        )  # fmt: skip
        assert res.p_value[layer].item() == pytest.approx(ref.pvalue, rel=1e-12)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_two_sample_test_equals_scipy_exact(alternative):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 7, generator=g, dtype=torch.float64) + torch.tensor([[0.0], [0.6], [1.2]])
    b = torch.randn(3, 6, generator=g, dtype=torch.float64)
    res = S.two_sample_test(a, b, alternative=alternative, n_permutations=5_000, n_bootstrap=100)
    assert res.exact and res.n_permutations == 1716  # C(13, 7)

    def diff(u, v, axis=-1):
        return u.mean(axis) - v.mean(axis)

    for layer in range(3):
        ref = ss.permutation_test(
            (a[layer].numpy(), b[layer].numpy()), diff, permutation_type="independent",
            n_resamples=np.inf, alternative=alternative, vectorized=True,
        )  # fmt: skip
        assert res.p_value[layer].item() == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.estimate.numpy() == pytest.approx((a.mean(1) - b.mean(1)).numpy())


def test_random_permutations_approach_the_exact_p_value():
    g = torch.Generator().manual_seed(4)
    d = torch.randn(2, 16, generator=g, dtype=torch.float64) + 0.4
    exact = S.paired_test(d, n_permutations=2**16, n_bootstrap=100).p_value
    random = S.paired_test(d, n_permutations=20_000, n_bootstrap=100)
    assert not random.exact
    np.testing.assert_allclose(random.p_value.numpy(), exact.numpy(), atol=0.01)


def _numpy_intervals(values, strata, counts, confidence=0.95):
    """Percentile and BCa intervals by hand (Efron & Tibshirani; scipy's conventions) for
    the mean (one stratum) or the difference of two stratum means."""
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]

    def stat(w):
        means = [(w[:, g] * values[g]).sum(1) / w[:, g].sum(1) for g in groups]
        return means[0] if len(means) == 1 else means[0] - means[1]

    est = stat(np.ones((1, len(values))))[0]
    boot = stat(counts.astype(float))
    alpha = (1 - confidence) / 2
    pct = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)])
    z0 = ndtri(((boot < est).sum() + (boot <= est).sum()) / (2 * len(boot)))
    num = den = 0.0
    for g in groups:
        theta = []
        for i in g:
            w = np.ones((1, len(values)))
            w[0, i] = 0
            theta.append(stat(w)[0])
        theta = np.array(theta)
        u = (len(g) - 1) * (theta.mean() - theta)
        num += (u**3).sum() / len(g) ** 3
        den += (u**2).sum() / len(g) ** 2
    a = num / (6 * den**1.5)
    levels = [ndtr(z0 + (z0 + z) / (1 - a * (z0 + z))) for z in (ndtri(alpha), -ndtri(alpha))]
    return pct, np.quantile(boot, levels)


def test_bootstrap_intervals_equal_a_hand_computation_on_the_same_resamples():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 25, generator=g, dtype=torch.float64).exp()  # skewed: BCa != percentile
    res = S.paired_test(x, n_bootstrap=4_000, n_permutations=100, seed=11)
    gen = S.make_generator(11)
    S.sign_flips(25, 100, gen)  # the test draws its sign flips first, then the resamples
    counts = stratified_bootstrap_counts(torch.zeros(25, dtype=torch.long), 4_000, gen).numpy()
    pct, bca = _numpy_intervals(x[0].numpy(), np.zeros(25), counts)
    iv = res.interval
    np.testing.assert_allclose([iv.low.item(), iv.high.item()], pct, rtol=1e-12)
    np.testing.assert_allclose([iv.bca_low.item(), iv.bca_high.item()], bca, rtol=1e-12)
    assert iv.bca_high.item() > iv.high.item()  # right skew moves the BCa interval right


def test_two_sample_bootstrap_equals_hand_computation():
    g = torch.Generator().manual_seed(6)
    a = torch.randn(1, 9, generator=g, dtype=torch.float64).exp()
    b = torch.randn(1, 12, generator=g, dtype=torch.float64)
    res = S.two_sample_test(a, b, n_bootstrap=3_000, n_permutations=50, seed=3)
    gen = S.make_generator(3)
    S.label_permutations(torch.arange(21) < 9, 50, gen)
    strata = (torch.arange(21) >= 9).long()
    counts = stratified_bootstrap_counts(strata, 3_000, gen).numpy()
    pct, bca = _numpy_intervals(torch.cat([a, b], 1)[0].numpy(), strata.numpy(), counts)
    iv = res.interval
    np.testing.assert_allclose([iv.low.item(), iv.high.item()], pct, rtol=1e-12)
    np.testing.assert_allclose([iv.bca_low.item(), iv.bca_high.item()], bca, rtol=1e-12)


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_bootstrap_intervals_agree_with_scipy(method):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 30, generator=g, dtype=torch.float64).exp()
    res = S.paired_test(x, n_bootstrap=60_000, n_permutations=100)
    ref = ss.bootstrap((x[0].numpy(),), np.mean, method=method, n_resamples=60_000, rng=0)
    iv = res.interval
    got = (iv.low, iv.high) if method == "percentile" else (iv.bca_low, iv.bca_high)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert abs(got[0].item() - ref.confidence_interval.low) < 0.03 * width
    assert abs(got[1].item() - ref.confidence_interval.high) < 0.03 * width


def test_corrections_equal_statsmodels():
    g = torch.Generator().manual_seed(8)
    p = torch.rand(5, 13, generator=g, dtype=torch.float64) ** 3
    holm, bh = S.holm(p), S.benjamini_hochberg(p)
    for row in range(5):
        np.testing.assert_allclose(
            holm[row].numpy(), multipletests(p[row].numpy(), method="holm")[1]
        )
        np.testing.assert_allclose(
            bh[row].numpy(), multipletests(p[row].numpy(), method="fdr_bh")[1]
        )


def test_separation_test_is_exact_for_few_units_and_matches_a_loop():
    x, lab = _data(layers=2, n=10, d=4, shift=1.5)
    res = S.separation_test(x, lab, "centroid", n_permutations=500, n_bootstrap=200)
    assert res.exact and res.n_permutations == 120  # C(10, 3)
    from itertools import combinations

    for layer in range(2):
        null = []
        for chosen in combinations(range(10), 3):
            perm = torch.zeros(10, dtype=torch.bool)
            perm[list(chosen)] = True
            null.append(S.centroid_separation(x[layer : layer + 1], perm).item())
        obs = S.centroid_separation(x[layer : layer + 1], lab).item()
        p = np.mean(np.array(null) >= obs * (1 - 1e-12))
        assert res.p_value[layer].item() == pytest.approx(p)


def test_separation_test_permutes_whole_units():
    """Rows of one word carry one label: with 3 rows per word, the permutation test must
    shuffle words (C(8, 4) = 70 relabellings), not rows."""
    x, _ = _data(layers=1, n=24, d=4)
    units = torch.arange(24) // 3
    lab = units < 4
    res = S.separation_test(x, lab, "silhouette", units, n_permutations=1000, n_bootstrap=100)
    assert res.exact and res.n_permutations == 70 and res.n_units == (4, 4)


@pytest.mark.parametrize("statistic", S.STATISTICS)
def test_separation_test_is_reproducible_and_memory_bounded(statistic):
    x, lab = _data(layers=3, n=30, d=6, shift=0.5)
    a = S.separation_test(x, lab, statistic, n_permutations=300, n_bootstrap=200, seed=5)
    b = S.separation_test(
        x, lab, statistic, n_permutations=300, n_bootstrap=200, seed=5, max_memory=2_000
    )
    c = S.separation_test(
        x,
        lab,
        statistic,
        n_permutations=300,
        n_bootstrap=200,
        seed=torch.Generator().manual_seed(5),
    )
    for other in (b, c):
        torch.testing.assert_close(a.p_value, other.p_value)
        torch.testing.assert_close(a.interval.low, other.interval.low)
        torch.testing.assert_close(a.null_high, other.null_high)
    d = S.separation_test(x, lab, statistic, n_permutations=300, n_bootstrap=200, seed=6)
    assert not torch.equal(a.p_value, d.p_value) or not torch.equal(a.interval.low, d.interval.low)


def test_paired_test_is_memory_bounded_and_float32_works():
    g = torch.Generator().manual_seed(9)
    d = torch.randn(5, 40, generator=g) + 0.2
    a = S.paired_test(d, n_permutations=2_000, n_bootstrap=1_000)
    b = S.paired_test(d, n_permutations=2_000, n_bootstrap=1_000, max_memory=4_096)
    assert a.estimate.dtype == torch.float32
    torch.testing.assert_close(a.p_value, b.p_value)
    torch.testing.assert_close(a.interval.bca_low, b.interval.bca_low)
    sd = d.std(1)
    torch.testing.assert_close(a.effect_size, d.mean(1) / sd)


def test_subjecthood_axis_centroids_score_zero_and_one():
    x, lab = _data(n=20, d=6)
    axis = S.fit_subjecthood_axis(x, lab)
    c_name, c_obj = x[:, lab].mean(1), x[:, ~lab].mean(1)
    torch.testing.assert_close(
        axis.score(c_name[:, None])[:, 0], torch.ones(3, dtype=torch.float64)
    )
    torch.testing.assert_close(
        axis.score(c_obj[:, None])[:, 0], torch.zeros(3, dtype=torch.float64)
    )
    probe = S.fit_subjecthood_axis(x, lab, method="probe")
    w, b = S.ridge_fit(x, lab.double() * 2 - 1)
    torch.testing.assert_close(probe.score(x), torch.einsum("lnd,ld->ln", x, w) + b[:, None])


@pytest.mark.parametrize("method", S.AXIS_METHODS)
def test_cross_fitting_never_uses_the_scored_word(method):
    """A word's scores come from the axis fitted on the other folds' fitting rows: moving
    the word's own vectors (or any non-fitting row) leaves every other word's score, and
    the axis that scores it, unchanged."""
    x, lab = _data(layers=2, n=40, d=5)
    units = torch.arange(40) // 2  # 20 words, 2 rows each
    fit_rows = torch.arange(40) % 2 == 0  # only each word's first row fits the axis
    res = S.cross_fitted_subjecthood(x, lab, units, fit_rows, method=method, n_folds=4)
    row_fold = res.folds[units]
    for f in range(4):
        train = fit_rows & (row_fold != f)
        axis = S.fit_subjecthood_axis(x[:, train], lab[train], method=method)
        held = row_fold == f
        torch.testing.assert_close(res.scores[:, held], axis.score(x[:, held]))
    moved = x.clone()
    moved[:, units == 3] += 5.0
    again = S.cross_fitted_subjecthood(moved, lab, units, fit_rows, method=method, n_folds=4)
    same_fold = (row_fold == row_fold[6]) & (units != 3)
    torch.testing.assert_close(again.scores[:, same_fold], res.scores[:, same_fold])


@pytest.mark.unchecked
def test_errors_name_the_problem():
    x, lab = _data(n=12, d=3)
    with pytest.raises(S.StatsInputError, match="at least 2"):
        S.silhouette(x, torch.arange(12) == 0)
    with pytest.raises(S.StatsInputError, match="11 entries for 12 rows"):
        S.variance_ratio(x, lab[:11])
    bad = x.clone()
    bad[1, 4, 2] = float("nan")
    with pytest.raises(S.StatsInputError, match=r"non-finite.*\(1, 4, 2\)"):
        S.centroid_separation(bad, lab)
    with pytest.raises(S.StatsInputError, match="inf"):
        S.paired_test(torch.tensor([[1.0, float("inf"), 2.0]]))
    with pytest.raises(S.StatsInputError, match=r"shape \[layer, row, d_model\]"):
        S.silhouette(x[0], lab)
    with pytest.raises(S.StatsInputError, match="all in one group"):
        S.ridge_fit(x, torch.ones(12, dtype=torch.float64))
    with pytest.raises(S.StatsInputError, match="both groups"):
        S.separation_test(x, lab, "probe", torch.zeros(12, dtype=torch.long))
    with pytest.raises(S.StatsInputError, match="n_folds=20"):
        S.probe_accuracy(x, lab, n_folds=20)
    with pytest.raises(S.StatsInputError, match="at least 2 units"):
        S.paired_test(torch.zeros(3, 1))
    with pytest.raises(S.StatsInputError, match="alternative"):
        S.paired_test(torch.randn(2, 5), alternative="bigger")
    with pytest.raises(S.StatsInputError, match="unknown statistic"):
        S.separation_test(x, lab, "gap")
    with pytest.raises(S.StatsInputError, match="identical"):
        S.probe_accuracy(torch.ones(2, 12, 3), lab, n_folds=3)
    with pytest.raises(S.StatsInputError, match="do not match"):
        S.fit_subjecthood_axis(x, lab).score(torch.zeros(3, 2, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_statistics_run_on_cuda_and_equal_cpu():
    x, lab = _data(layers=3, n=30, d=6, shift=0.5)
    for st in S.STATISTICS:
        cpu = S.separation_test(x, lab, st, n_permutations=500, n_bootstrap=300)
        gpu = S.separation_test(x.cuda(), lab, st, n_permutations=500, n_bootstrap=300)
        assert gpu.value.device.type == "cuda"
        torch.testing.assert_close(gpu.p_value.cpu(), cpu.p_value)
        torch.testing.assert_close(gpu.interval.low.cpu(), cpu.interval.low)
    d = torch.randn(4, 25, dtype=torch.float64)
    torch.testing.assert_close(
        S.paired_test(d.cuda()).interval.bca_low.cpu(), S.paired_test(d).interval.bca_low
    )
    scores = S.cross_fitted_subjecthood(x.cuda(), lab, torch.arange(30), method="probe").scores
    torch.testing.assert_close(
        scores.cpu(), S.cross_fitted_subjecthood(x, lab, torch.arange(30), method="probe").scores
    )
