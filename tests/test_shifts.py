""":func:`mi_cluster.methods.stats.role_shift_inference` against plain loops: the closed-form
leave-one-word-out centroid against the folded fit with one word a fold, the calibrated
scores and shifts against a direct recomputation, the jackknife variances against the
whole pipeline rerun on the data with each word or family left out, and its input errors.
Its calibration under realistic nulls is in ``test_shift_calibration.py``."""

from __future__ import annotations

import pytest
import torch
from role_data import generate

from mi_cluster.methods.stats import SCOPES, StatsInputError, role_shift_inference
from mi_cluster.methods.stats.student_t import t_quantile, t_two_sided_p


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(3)
    kw = {"n_names": 7, "n_objects": 6, "d": 8, "off": 1.0, "on_objects": 0.3}
    x, is_name, _ = generate(gen, n_datasets=3, **kw)
    return x, is_name


def _loop_estimates(x, is_name):
    """Objects' and names' calibrated shifts ``[layer]`` by a plain loop: each word's
    readings scored on the centroid axis of the other words (their readings averaged over
    families and roles), the scale set by the held-out means; and the held-out means of
    names and objects where each axis puts its own centroids at 0 and 1."""
    means = x.mean((2, 3))  # [layer, word, d]
    n_words = x.shape[1]
    raw_shift = x.new_empty(x.shape[0], n_words)
    held = x.new_empty(x.shape[0], n_words)
    own = x.new_empty(x.shape[0], n_words)
    for k in range(n_words):
        others = torch.arange(n_words) != k
        c_name = means[:, others & is_name].mean(1)
        c_obj = means[:, others & ~is_name].mean(1)
        axis = c_name - c_obj
        score = torch.einsum("lfrd,ld->lfr", x[:, k] - c_obj[:, None, None], axis)
        raw_shift[:, k] = (score[..., 0] - score[..., 1]).mean(-1)
        held[:, k] = score.mean((1, 2))
        own[:, k] = held[:, k] / axis.pow(2).sum(-1)  # own centroids at 0 and 1
    gap = held[:, is_name].mean(1) - held[:, ~is_name].mean(1)
    shrunk = own[:, is_name].mean(1), own[:, ~is_name].mean(1)
    return raw_shift[:, ~is_name].mean(1) / gap, raw_shift[:, is_name].mean(1) / gap, shrunk


def test_estimates_equal_a_direct_recomputation(data):
    x, is_name = data
    res = role_shift_inference(x, is_name)
    objects, names, (held_names, held_objects) = _loop_estimates(x, is_name)
    torch.testing.assert_close(res.held_out_names, held_names)
    torch.testing.assert_close(res.held_out_objects, held_objects)
    assert bool((held_names < 1).all() and (held_objects > 0).all())  # the shrinkage
    for scope in SCOPES:
        torch.testing.assert_close(res.objects[scope].estimate, objects)
        torch.testing.assert_close(res.names[scope].estimate, names)
        torch.testing.assert_close(res.interaction[scope].estimate, objects - names)
    # the calibrated scale: held-out names average 1, held-out objects 0
    word = torch.arange(x.shape[1]).repeat_interleave(x.shape[2] * 2)
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    scores = res.score(flat, word).reshape(x.shape[0], x.shape[1], -1).mean(-1)
    torch.testing.assert_close(scores[:, is_name].mean(1), torch.ones(x.shape[0], dtype=x.dtype))
    torch.testing.assert_close(scores[:, ~is_name].mean(1), torch.zeros(x.shape[0], dtype=x.dtype))


def test_closed_form_leave_one_out_equals_one_word_a_fold(data):
    x, is_name = data
    closed = role_shift_inference(x, is_name)
    folded = role_shift_inference(x, is_name, n_folds=x.shape[1])
    for key in ("objects", "names", "interaction"):
        for scope in SCOPES:
            a, b = getattr(closed, key)[scope], getattr(folded, key)[scope]
            torch.testing.assert_close(a.estimate, b.estimate)
            torch.testing.assert_close(a.se, b.se)
    torch.testing.assert_close(closed.direction, folded.direction)
    torch.testing.assert_close(closed.offset, folded.offset)
    torch.testing.assert_close(closed.held_out_names, folded.held_out_names)
    torch.testing.assert_close(closed.held_out_objects, folded.held_out_objects)
    probe = role_shift_inference(x, is_name, method="probe")
    assert bool((probe.held_out_names < 1).all() and (probe.held_out_objects > 0).all())


def _jackknife(values: list[torch.Tensor], n: int) -> torch.Tensor:
    v = torch.stack(values)
    return (n - 1) / n * (v - v.mean(0)).pow(2).sum(0)


def test_variances_against_the_pipeline_rerun_without_each_word_and_family(data):
    """The word jackknife is each word type's delete-one spread of the whole pipeline
    (axis refitted, scale recalibrated), less at most three quarters of it for the part
    the axis counts twice; templates in general add the family jackknife, less at most the
    whole word part's word-by-family double count."""
    x, is_name = data
    res = role_shift_inference(x, is_name)
    n_words, n_families = x.shape[1], x.shape[2]
    by_word = {True: [], False: []}
    for k in range(n_words):
        keep = torch.arange(n_words) != k
        by_word[bool(is_name[k])].append(role_shift_inference(x[:, keep], is_name[keep]))
    by_family = [
        role_shift_inference(x[:, :, torch.arange(n_families) != f], is_name)
        for f in range(n_families)
    ]
    for key in ("objects", "names", "interaction"):
        v_words = sum(
            _jackknife([getattr(r, key)[SCOPES[0]].estimate for r in reps], len(reps))
            for reps in by_word.values()
        )
        v_fam = _jackknife([getattr(r, key)[SCOPES[0]].estimate for r in by_family], n_families)
        fixed = getattr(res, key)[SCOPES[0]].se.pow(2)
        crossed = getattr(res, key)[SCOPES[1]].se.pow(2)
        assert bool((fixed <= v_words * (1 + 1e-9)).all() and (fixed >= v_words / 4 * 0.999).all())
        assert bool((crossed >= v_fam * 0.999).all()), key
        assert bool((crossed <= (fixed + v_fam) * (1 + 1e-9)).all()), key


def test_intervals_p_values_and_corrections_agree():
    x, is_name, _ = generate(torch.Generator().manual_seed(4), n_datasets=6, on_objects=0.2)
    res = role_shift_inference(x.float(), is_name)
    from scipy import stats

    for scope in SCOPES:
        t = res.objects[scope]
        assert t.estimate.dtype == torch.float32  # results follow the input's dtype
        q = torch.tensor(stats.t.ppf(0.975, t.df.double().numpy()))
        torch.testing.assert_close(t.high - t.estimate, (q * t.se.double()).float())
        p = 2 * stats.t.sf((t.estimate / t.se).abs().double().numpy(), t.df.double().numpy())
        torch.testing.assert_close(t.p_value.double(), torch.tensor(p), atol=1e-6, rtol=1e-5)
        assert bool((t.p_holm >= t.p_value - 1e-7).all() and (t.p_bh >= t.p_value - 1e-7).all())
    assert bool((res.objects[SCOPES[1]].df < res.objects[SCOPES[0]].df).all())


def test_a_layer_blind_to_role_has_no_effect():
    """The embedding reads a word the same in both roles: estimate 0, p 1 (not 0/0)."""
    x, is_name, _ = generate(torch.Generator().manual_seed(5), n_datasets=2)
    x[0, :, :, 1] = x[0, :, :, 0]
    res = role_shift_inference(x, is_name)
    for key in ("objects", "names", "interaction"):
        for scope in SCOPES:
            t = getattr(res, key)[scope]
            assert float(t.estimate[0].abs()) < 1e-12 and float(t.p_value[0]) == 1.0
            assert bool(torch.isfinite(t.p_value).all() and torch.isfinite(t.df).all())


@pytest.mark.unchecked
def test_bad_input_is_refused_by_name(data):
    x, is_name = data
    cases = [
        ((x[..., 0, :], is_name), {}, r"cells must be \[layer, word, family, role"),
        ((x, is_name[:-1]), {}, "is_name has 12 entries for 13 words"),
        ((x[:, 5:], is_name[5:]), {}, "at least 3 names and 3 objects, got 2 and 6"),
        ((x[:, :9], is_name[:9]), {}, "at least 3 names and 3 objects, got 7 and 2"),
        ((x[:, :, :1], is_name), {}, "at least 2 template families"),
        ((x.long(), is_name), {}, "floating point"),
        ((x, is_name), {"method": "svm"}, "method must be 'centroid' or 'probe'"),
    ]
    for args, kw, match in cases:
        with pytest.raises(StatsInputError, match=match):
            role_shift_inference(*args, **kw)
    nan = x.clone()
    nan[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(StatsInputError, match="NaN"):
        role_shift_inference(nan, is_name)
    res = role_shift_inference(x, is_name)
    with pytest.raises(StatsInputError, match="one word index per item"):
        res.score(x[:, :, 0, 0], torch.arange(3))
    with pytest.raises(StatsInputError, match=r"word indices must lie in \[0, 13\)"):
        res.score(x[:, :2, 0, 0], torch.tensor([0, 13]))
    assert repr(res).startswith("RoleShifts(centroid, 7 names, 6 objects, 5 families")


def test_student_t_equals_scipy():
    from scipy import stats

    df = torch.tensor([1.0, 1.3, 2.5, 4.0, 7.7, 30.0, 1e4], dtype=torch.float64)
    for t in (0.0, 0.01, 0.7, 1.96, 3.0, 12.0, 80.0):
        got = t_two_sided_p(torch.full_like(df, t), df)
        want = 2 * stats.t.sf(t, df.numpy())
        torch.testing.assert_close(got, torch.tensor(want), atol=1e-12, rtol=1e-9)
    for q in (0.6, 0.9, 0.975, 0.995):
        want = stats.t.ppf(q, df.numpy())
        torch.testing.assert_close(t_quantile(q, df), torch.tensor(want), atol=1e-9, rtol=1e-9)
