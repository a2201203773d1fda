"""Calibration of every test in mi_cluster.methods.stats (and the Mantel test): on null data the
false-positive rate at alpha 0.05 lies in [0.02, 0.08] over 600 simulated datasets, for
several generators (Gaussian, heavy-tailed, correlated features, skewed); planted effects
are detected with the power an analytic reference predicts; bootstrap intervals cover the
true mean at about their nominal rate.

Every statistic is vectorised over its leading "layer" axis, so 600 independent datasets
are run as 600 "layers" in one call."""

import numpy as np
import pytest
import scipy.stats as ss
import torch

import mi_cluster.methods.stats as S
from mi_cluster.methods.similarity import mantel_test

N_DATASETS = 600
ALPHA = 0.05
FPR_BAND = (0.02, 0.08)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _noise(kind, shape, g):
    """Null noise: standard normal, Student t with 3 dof (heavy tails), centred log-normal
    (skewed), or features correlated with an AR(1) structure (rho 0.8) along the last axis."""
    if kind == "gaussian":
        return torch.randn(shape, generator=g, dtype=torch.float64)
    if kind == "heavy":
        z = torch.randn(shape, generator=g, dtype=torch.float64)
        chi2 = torch.randn((*shape, 3), generator=g, dtype=torch.float64).pow(2).sum(-1)
        return z / (chi2 / 3).sqrt()
    if kind == "skewed":
        return torch.randn(shape, generator=g, dtype=torch.float64).exp() - np.exp(0.5)
    if kind == "correlated":
        d = shape[-1]
        idx = torch.arange(d, dtype=torch.float64)
        cov = 0.8 ** (idx[:, None] - idx[None]).abs()
        return torch.randn(shape, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    raise ValueError(kind)


def _rate(p):
    return float((p < ALPHA).double().mean())


def _assert_fpr(p, what):
    rate = _rate(p)
    assert FPR_BAND[0] <= rate <= FPR_BAND[1], f"{what}: false-positive rate {rate:.3f}"


@pytest.mark.parametrize("kind", ["gaussian", "heavy", "correlated"])
def test_sign_flip_test_false_positive_rate(kind):
    # paired differences symmetric about 0 (the sign-flip null); "correlated" draws them as
    # the first of AR(1)-correlated features projected on a fixed direction
    raw = _noise(kind, (N_DATASETS, 20, 6), _gen(1))
    diffs = raw @ torch.linspace(1, -0.5, 6, dtype=torch.float64)
    res = S.paired_test(diffs, n_permutations=999, n_bootstrap=50)
    _assert_fpr(res.p_value, f"sign-flip, {kind}")


@pytest.mark.parametrize("kind", ["gaussian", "heavy", "skewed"])
def test_two_sample_test_false_positive_rate(kind):
    data = _noise(kind, (N_DATASETS, 28), _gen(2))
    res = S.two_sample_test(data[:, :12], data[:, 12:], n_permutations=999, n_bootstrap=50)
    _assert_fpr(res.p_value, f"two-sample, {kind}")


@pytest.mark.parametrize("statistic", S.STATISTICS)
@pytest.mark.parametrize("kind", ["gaussian", "heavy", "correlated"])
def test_separation_tests_false_positive_rate(statistic, kind):
    x = _noise(kind, (N_DATASETS, 24, 6), _gen(3))
    lab = torch.arange(24) < 10
    res = S.separation_test(x, lab, statistic, n_permutations=499, n_bootstrap=20, n_folds=4)
    _assert_fpr(res.p_value, f"{statistic} separation, {kind}")


def test_separation_false_positive_rate_with_words_read_in_several_templates():
    """Rows of one word are correlated (a word effect plus template noise); permuting whole
    words keeps the test calibrated where permuting rows would not."""
    g = _gen(4)
    word = torch.randn(N_DATASETS, 16, 1, 5, generator=g, dtype=torch.float64)
    rows = (
        word + 0.3 * torch.randn(N_DATASETS, 16, 3, 5, generator=g, dtype=torch.float64)
    ).reshape(N_DATASETS, 48, 5)
    units = torch.arange(48) // 3
    lab = units < 8
    res = S.separation_test(rows, lab, "centroid", units, n_permutations=499, n_bootstrap=20)
    _assert_fpr(res.p_value, "centroid separation over words")


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
def test_correlation_test_false_positive_rate(kind):
    x = _noise(kind, (N_DATASETS, 12), _gen(5))
    res = S.correlation_test(x, torch.arange(12.0), n_permutations=999, n_bootstrap=50)
    _assert_fpr(res.p_value, f"correlation, {kind}")


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
def test_mantel_test_false_positive_rate(kind):
    g = _gen(6)
    a = _noise(kind, (N_DATASETS, 10, 4), g)
    b = _noise(kind, (N_DATASETS, 10, 4), g)
    sa, sb = a @ a.transpose(1, 2), b @ b.transpose(1, 2)
    p = torch.stack(
        [
            mantel_test(sa[i], sb[i], n_permutations=299, seed=i).p_value[0]
            for i in range(N_DATASETS)
        ]
    )
    _assert_fpr(p, f"Mantel, {kind}")


def _design(n_sets, words=16, families=3, d=8, role_effect=0.0, common_role=False, seed=7):
    """Simulated readings of the study's design: a vector per word, a template effect per
    family (per family and role with ``common_role``: a role effect shared by names and
    objects), noise per reading, and (optionally) a role effect on objects only, along the
    name-object direction."""
    g = _gen(seed)
    is_name = torch.arange(words) < words // 2
    axis = torch.zeros(d, dtype=torch.float64)
    axis[0] = 1.0
    word = torch.randn(n_sets, words, 1, 1, d, generator=g, dtype=torch.float64)
    word = word + 2.0 * is_name[None, :, None, None, None] * axis
    template = torch.randn(
        n_sets, 1, families, 2 if common_role else 1, d, generator=g, dtype=torch.float64
    )
    noise = 0.5 * torch.randn(n_sets, words, families, 2, d, generator=g, dtype=torch.float64)
    planted = torch.zeros(1, words, 1, 2, 1, dtype=torch.float64)
    planted[0, ~is_name, 0, 0, 0] = role_effect  # objects in subject position move to names
    x = word + template + noise + planted * axis
    x = x.reshape(n_sets, words * families * 2, d)
    units = torch.arange(words).repeat_interleave(families * 2)
    role = torch.tensor([0, 1]).repeat(words * families)  # 0 subject, 1 object
    return x, is_name[units], units, role, is_name


def _shifts(x, is_name_rows, units, role, families=3):
    scores = S.cross_fitted_subjecthood(x, is_name_rows, units, n_folds=4).scores
    s = scores.reshape(scores.shape[0], -1, families, 2)
    return (s[..., 0] - s[..., 1]).mean(-1)  # [dataset, word]


def test_whole_pipeline_is_calibrated_without_a_role_effect():
    """Cross-fitted subjecthood, then the objects' paired test, on simulated readings with
    word and template effects but no role effect."""
    x, is_name_rows, units, role, is_name = _design(N_DATASETS)
    shift = _shifts(x, is_name_rows, units, role)
    objects = S.paired_test(shift[:, ~is_name], n_permutations=999, n_bootstrap=50)
    _assert_fpr(objects.p_value, "objects' shift through the pipeline")


def test_interaction_is_calibrated_when_role_moves_both_word_types_alike():
    """A role effect common to names and objects (each template's subject form differs
    from its object form) is a real shift of both, so the objects' test detects it, but the
    interaction, the study's question, must stay at its nominal error rate."""
    x, is_name_rows, units, role, is_name = _design(N_DATASETS, common_role=True)
    shift = _shifts(x, is_name_rows, units, role)
    inter = S.two_sample_test(
        shift[:, ~is_name], shift[:, is_name], n_permutations=999, n_bootstrap=50
    )
    objects = S.paired_test(shift[:, ~is_name], n_permutations=999, n_bootstrap=50)
    _assert_fpr(inter.p_value, "interaction through the pipeline, common role effect")
    assert _rate(objects.p_value) > 0.3  # the common shift is there and is seen


def test_holm_controls_the_family_wise_error_across_correlated_layers():
    g = _gen(8)
    base = torch.randn(N_DATASETS, 1, 20, generator=g, dtype=torch.float64)
    layers = 0.7 * base + 0.7 * torch.randn(N_DATASETS, 7, 20, generator=g, dtype=torch.float64)
    res = S.paired_test(layers.reshape(-1, 20), n_permutations=999, n_bootstrap=50)
    p = res.p_value.reshape(N_DATASETS, 7)
    fwer_holm = float((S.holm(p) < ALPHA).any(-1).double().mean())
    fwer_raw = float((p < ALPHA).any(-1).double().mean())
    assert 0.01 <= fwer_holm <= 0.07, fwer_holm
    assert fwer_raw > 0.1  # uncorrected, seven looks inflate the error


def test_sign_flip_power_matches_the_t_test_reference():
    n, delta = 20, 0.55
    x = _noise("gaussian", (N_DATASETS, n), _gen(9)) + delta
    power = _rate(S.paired_test(x, n_permutations=999, n_bootstrap=50).p_value)
    crit = ss.t.ppf(1 - ALPHA / 2, n - 1)
    nc = delta * np.sqrt(n)
    ref = ss.nct.sf(crit, n - 1, nc) + ss.nct.cdf(-crit, n - 1, nc)
    assert abs(power - ref) < 0.08, (power, ref)


def test_two_sample_power_matches_the_t_test_reference():
    n, delta = 15, 0.9
    g = _gen(10)
    a = _noise("gaussian", (N_DATASETS, n), g) + delta
    b = _noise("gaussian", (N_DATASETS, n), g)
    power = _rate(S.two_sample_test(a, b, n_permutations=999, n_bootstrap=50).p_value)
    df, nc = 2 * n - 2, delta / np.sqrt(2 / n)
    crit = ss.t.ppf(1 - ALPHA / 2, df)
    ref = ss.nct.sf(crit, df, nc) + ss.nct.cdf(-crit, df, nc)
    assert abs(power - ref) < 0.08, (power, ref)


def test_separation_power_matches_the_noncentral_f_reference():
    """With isotropic Gaussian noise, the centroid statistic is monotone in
    F = (BSS / d) / (WSS / ((n - 2) d)) ~ F(d, (n - 2) d, lambda), lambda = na nb / n |delta|^2."""
    n, na, d, delta = 24, 12, 6, 0.9
    x = _noise("gaussian", (N_DATASETS, n, d), _gen(11))
    lab = torch.arange(n) < na
    x[:, lab, 0] += delta
    power = _rate(S.separation_test(x, lab, "centroid", n_permutations=499, n_bootstrap=20).p_value)
    df1, df2, lam = d, (n - 2) * d, na * (n - na) / n * delta**2
    ref = ss.ncf.sf(ss.f.ppf(1 - ALPHA, df1, df2), df1, df2, lam)
    assert abs(power - ref) < 0.08, (power, ref)


def test_pipeline_detects_a_planted_role_effect():
    x, is_name_rows, units, role, is_name = _design(200, words=24, role_effect=1.5, seed=12)
    shift = _shifts(x, is_name_rows, units, role)
    inter = S.two_sample_test(
        shift[:, ~is_name], shift[:, is_name], n_permutations=999, n_bootstrap=50
    )
    objects = S.paired_test(shift[:, ~is_name], n_permutations=999, n_bootstrap=50)
    assert _rate(inter.p_value) > 0.9 and _rate(objects.p_value) > 0.9
    assert float(objects.estimate.mean()) > 0  # toward the names


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
def test_bootstrap_intervals_cover_the_true_mean_at_about_the_nominal_rate(kind):
    """95% intervals of the mean of 40 draws. With Gaussian data both cover at 0.91-0.98.
    With Student-t(3) tails every bootstrap interval under-covers somewhat at this size (a
    property of the method, not of the code): there, coverage must match scipy.stats.bootstrap's
    on the same 600 datasets within 0.03, and stay above 0.88."""
    x = _noise(kind, (N_DATASETS, 40), _gen(13)) + 1.0  # true mean 1
    iv = S.paired_test(x, n_permutations=10, n_bootstrap=2_000).interval
    lowest = 0.91 if kind == "gaussian" else 0.88
    for low, high, method in ((iv.low, iv.high, "percentile"), (iv.bca_low, iv.bca_high, "BCa")):
        cover = float(((low <= 1.0) & (high >= 1.0)).double().mean())
        assert lowest <= cover <= 0.98, f"{method} coverage {cover:.3f} ({kind})"
        ref = ss.bootstrap((x.numpy(),), np.mean, axis=-1, method=method, n_resamples=2_000, rng=0)
        ci = ref.confidence_interval
        ref_cover = float(((ci.low <= 1.0) & (ci.high >= 1.0)).mean())
        assert abs(cover - ref_cover) <= 0.03, (method, kind, cover, ref_cover)
