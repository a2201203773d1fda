""":func:`mi_cluster.methods.stats.component_share_inference` against a plain loop (the share
recomputed with each word's axis fitted by hand, on the data and with each word and family
left out), and its calibration on simulated studies (``tests/role_data.py``): a component
that moves words at right angles to the name-object axis carries no share, and the test that
holds the axis fixed says it does in 74-93% of datasets (measured below); this one in at
most 7% (measured 0-0.025: conservative), with coverage of the population share at least
0.93 and power on a real share."""

from __future__ import annotations

import math

import pytest
import torch
from role_data import generate

from mi_cluster.methods.stats import (
    SCOPES,
    StatsInputError,
    component_share_inference,
    share_basis,
    word_variance,
)


def _pairs(is_name, n_families):
    objects = (~is_name).nonzero().squeeze(1)
    return objects.repeat_interleave(n_families), torch.arange(n_families).repeat(len(objects))


def _simulate(seed, n, off_component, share, off=1.0):
    """``n`` datasets; one component whose effect on each object pair is ``share`` of the
    pair's shift along the population axis, plus ``off_component`` at right angles to it,
    plus noise. Returns cells ``[n, word, family, role, d]``, is_name, pairs and each
    pair's effect vector ``[n, pair, d]``."""
    g = torch.Generator().manual_seed(seed)
    x, is_name, _ = generate(g, n_datasets=n, on_objects=0.3, off=off)
    pw, pf = _pairs(is_name, x.shape[2])
    d = x.shape[-1]
    along, perp = torch.zeros(d, dtype=x.dtype), torch.zeros(d, dtype=x.dtype)
    along[0], perp[2] = 1.0, 1.0  # the population axis; a direction at right angles to it
    diff = x[:, pw, pf, 0] - x[:, pw, pf, 1]
    noise = 0.1 * torch.randn(n, len(pw), d, generator=g, dtype=x.dtype)
    effect = share * (diff @ along)[..., None] * along + off_component * perp + noise
    return x, is_name, pw, pf, effect


def _projected(x, effect):
    return torch.einsum("pd,md->pm", effect, share_basis(x))[None]


def _loop_share(x, is_name, pw, pf, effect, drop_word=None, drop_family=None):
    """sum(effect . axis_w) / sum(shift . axis_w) over the kept pairs, each word's centroid
    axis fitted by hand on the other kept words' readings in the kept families."""
    words = [k for k in range(x.shape[0]) if k != drop_word]
    fams = [f for f in range(x.shape[1]) if f != drop_family]
    means = x[:, fams].mean((1, 2))  # [word, d]
    num = den = 0.0
    for p, (w, f) in enumerate(zip(pw.tolist(), pf.tolist(), strict=True)):
        if w == drop_word or f == drop_family:
            continue
        others = [k for k in words if k != w]
        names = [k for k in others if is_name[k]]
        objects = [k for k in others if not is_name[k]]
        axis = means[names].mean(0) - means[objects].mean(0)
        num += float(effect[p] @ axis)
        den += float((x[w, f, 0] - x[w, f, 1]) @ axis)
    return num / den


def test_shares_equal_a_plain_loop_on_every_replicate():
    x, is_name, pw, pf, effect = _simulate(0, 1, 0.5, 0.4)
    x, effect = x[0, :, :, :, :], effect[0]
    res = component_share_inference(x, is_name, _projected(x, effect), pw, pf)
    data = _loop_share(x, is_name, pw, pf, effect)
    assert float(res.share[SCOPES[0]].estimate[0]) == pytest.approx(data, rel=1e-9)
    by_word = torch.tensor(
        [[_loop_share(x, is_name, pw, pf, effect, k)] for k in range(40)], dtype=torch.float64
    )
    by_family = torch.tensor(
        [_loop_share(x, is_name, pw, pf, effect, None, f) for f in range(5)], dtype=torch.float64
    )
    v_words, _ = word_variance(by_word, is_name)
    v_fam = 4 / 5 * (by_family - by_family.mean()).pow(2).sum()
    these, general = (res.share[s] for s in SCOPES)
    assert float(these.se[0]) ** 2 == pytest.approx(float(v_words[0]), rel=1e-8)
    assert float(general.se[0]) ** 2 == pytest.approx(float(v_words[0] + v_fam), rel=1e-8)


def _rates(off_component, share, n, seed):
    x, is_name, pw, pf, effect = _simulate(seed, n, off_component, share)
    reject, cover = {s: 0 for s in SCOPES}, {s: 0 for s in SCOPES}
    fixed = 0
    for i in range(n):
        res = component_share_inference(x[i], is_name, _projected(x[i], effect[i]), pw, pf)
        for s in SCOPES:
            t = res.share[s]
            reject[s] += bool(t.p_value[0] < 0.05)
            cover[s] += bool(t.low[0] <= share <= t.high[0])
        fixed += _fixed_axis_rejects(x[i], is_name, pw, pf, effect[i])
    return {s: reject[s] / n for s in SCOPES}, {s: cover[s] / n for s in SCOPES}, fixed / n


def _fixed_axis_rejects(x, is_name, pw, pf, effect) -> bool:
    """The test this replaces: each pair's effect on the data's leave-one-word-out axis,
    averaged per word, a t-test over words (the sign-flip test's large-sample twin)."""
    from scipy import stats

    means = x.mean((1, 2))  # [word, d]
    axes = []
    for w in range(x.shape[0]):
        others = torch.arange(x.shape[0]) != w
        axes.append(means[others & is_name].mean(0) - means[others & ~is_name].mean(0))
    per_pair = (effect * torch.stack(axes)[pw]).sum(-1)
    per_word = per_pair.reshape(-1, x.shape[1]).mean(1)
    t = per_word.mean() / (per_word.std() / math.sqrt(len(per_word)))
    return bool(2 * stats.t.sf(abs(float(t)), len(per_word) - 1) < 0.05)


def _check_null(off_component, n, seed):
    reject, cover, fixed = _rates(off_component, 0.0, n=n, seed=seed)
    for s in SCOPES:
        assert reject[s] <= 0.07, (s, reject)
        assert cover[s] >= 0.93, (s, cover)
    if off_component >= 1:
        assert fixed > 0.5, fixed  # what the fixed axis got wrong


@pytest.mark.parametrize("off_component", [1.0, 3.0])
def test_a_component_moving_words_off_the_axis_carries_no_share(off_component):
    """Role also moves every word off the axis (1 x the gap), and the component moves
    the words it patches at right angles to the population axis: its share is 0. The fast
    version, 100 datasets; the slow one below, 400."""
    _check_null(off_component, 100, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("off_component", [0.0, 1.0, 3.0])
def test_a_component_moving_words_off_the_axis_carries_no_share_400_datasets(off_component):
    """Measured over 400 datasets (seed 11), at 0, 1 and 3 x the gap off the axis: the
    fixed-axis test rejects in 0.035, 0.74 and 0.93; this inference in 0.005, 0.025 and
    0.025 (these templates) and 0, 0.008 and 0.008 (templates in general), covering 0 in
    0.975-1.0."""
    _check_null(off_component, 400, seed=11)


def test_power_and_coverage_on_a_real_share():
    """A component carrying 0.3 of the shift along the population axis: found in most
    datasets for these templates, fewer for templates in general (measured over 400: 0.87
    and 0.69); intervals cover 0.3 (0.95 and 0.985)."""
    reject, cover, _ = _rates(0.0, 0.3, n=100, seed=4)
    assert reject[SCOPES[0]] > 0.7 and 0.4 < reject[SCOPES[1]] <= reject[SCOPES[0]], reject
    assert min(cover.values()) >= 0.9, cover


@pytest.mark.unchecked
def test_bad_input_is_refused_by_name():
    x, is_name, pw, pf, effect = _simulate(0, 1, 0.0, 0.2)
    x, effect = x[0], effect[0]
    e = _projected(x, effect)
    with pytest.raises(StatsInputError, match=r"cells must be \[word, family, role"):
        component_share_inference(x[..., 0, :], is_name, e, pw, pf)
    with pytest.raises(StatsInputError, match=r"effects must be \[component, pair \(100\)"):
        component_share_inference(x, is_name, e[:, :-1], pw, pf)
    with pytest.raises(StatsInputError, match="at least 3 names"):
        component_share_inference(x, torch.zeros(40, dtype=torch.bool), e, pw, pf)
    with pytest.raises(StatsInputError, match="pair_family must index"):
        component_share_inference(x, is_name, e, pw, pf + 5)
    with pytest.raises(StatsInputError, match="NaN"):
        component_share_inference(x, is_name, e * float("nan"), pw, pf)
    res = component_share_inference(x, is_name, e, pw, pf)
    assert repr(res) == "ComponentShares(1 components, 100 pairs)"
