"""Head-role claims as tests: yes for the compiled model's true movers, no for its
distractors, and a false-positive rate at the nominal level when the claimed heads are no
different from the heads they are compared with."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binomtest

from mi_cluster.core.ioi_prompts import abc_corruption
from mi_cluster.methods.patching import logit_difference, path_patching
from mi_cluster.models.compiled import NAMES, compiled_prompts
from mi_cluster.models.loading import load_model
from mi_cluster.studies.ioi.claims import (
    HeadClaim,
    ablation_test,
    attention_test,
    copy_score_test,
    direct_effect_test,
    random_head_sets,
    random_set_p_value,
)
from mi_cluster.studies.ioi.heads import token_mean

MOVERS, NEGATIVE, BACKUP = [(2, 0), (2, 1)], (2, 2), (3, 0)
CIRCUIT = {(0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (3, 0)}
DISTRACTORS = [(a, b) for a in range(4) for b in range(12) if (a, b) not in CIRCUIT]


@pytest.fixture(scope="module")
def compiled():
    return load_model("ioi-compiled", device="cpu")


@pytest.fixture(scope="module")
def data(compiled):
    """Per prompt seed: clean prompts, their ABC corruption and path patching to the logits."""
    out = {}
    for seed in range(3):
        clean = compiled_prompts(compiled, 24, seed=seed)
        abc = abc_corruption(clean, NAMES, seed=seed)
        metric = logit_difference(compiled, [(p.io, p.s) for p in clean])
        texts = [p.text for p in clean], [p.text for p in abc]
        path = path_patching(compiled, *texts, metric, progress=False)
        out[seed] = (clean, abc, path)
    return out


def test_random_head_sets_enumerate_when_few_and_draw_otherwise(compiled):
    sets, exact = random_head_sets(compiled, MOVERS, 100, "same_layers")
    assert exact and len(sets) == math.comb(12, 2) == len(set(sets))
    assert all(a == 2 for hs in sets for a, _ in hs) and tuple(MOVERS) in sets
    sets, exact = random_head_sets(compiled, [(2, 0), (3, 0)], 500, "same_layers")
    assert exact and len(sets) == 144
    sets, exact = random_head_sets(compiled, MOVERS, 100, "all", seed=3)
    assert not exact and len(sets) == 100
    assert all(len(set(hs)) == 2 for hs in sets) and len({a for hs in sets for a, _ in hs}) == 4
    again, _ = random_head_sets(compiled, MOVERS, 100, "all", seed=3)
    assert again == sets


def test_p_values_exact_and_monte_carlo():
    null = [0.0, 1.0, 2.0, 3.0]
    assert random_set_p_value(3.0, null, exact=True) == 0.25  # the claimed set is the largest
    assert random_set_p_value(1.0, null, exact=True) == 0.75  # ties count against
    assert random_set_p_value(3.5, null) == pytest.approx(1 / 5)
    assert random_set_p_value(0.0, null, "less") == pytest.approx(2 / 5)


def test_true_movers_are_supported(compiled, data):
    clean, abc, path = data[0]
    direct = direct_effect_test(compiled, clean, abc, MOVERS, pool="all", path=path)
    assert direct.supported() and direct.effect == pytest.approx(3.5, abs=1e-4)
    assert direct.ci_low == pytest.approx(3.5, abs=1e-4) and direct.n_prompts == 24
    negative = direct_effect_test(
        compiled, clean, abc, [NEGATIVE], alternative="less", pool="all", path=path
    )
    assert negative.supported() and negative.effect == pytest.approx(-0.5, abs=1e-4)
    assert negative.p_value == pytest.approx(1 / 48)  # exact: the most negative of 48 heads
    attention = attention_test(compiled, clean, MOVERS)
    assert attention.supported(min_effect=0.5) and attention.effect == pytest.approx(1.0, abs=1e-4)
    copy = copy_score_test(compiled, MOVERS, NAMES)
    assert copy.supported() and copy.effect == 1.0 and copy.n_prompts == len(NAMES)
    neg_copy = copy_score_test(compiled, [NEGATIVE], NAMES, negative=True)
    assert neg_copy.supported() and neg_copy.p_value == pytest.approx(1 / 48)
    # ablation: movers and backup together (the backup takes over when only movers go)
    few = clean[:8]  # every prompt behaves the same in the compiled model: 8 are plenty
    everything = ablation_test(compiled, few, [*MOVERS, BACKUP], n_random=1000)
    assert everything.supported() and everything.p_value == pytest.approx(1 / 792)
    assert 3.0 < everything.effect < 3.6  # 3.5 if the means carried no trace of the names
    pair = ablation_test(compiled, few, MOVERS, n_random=100)
    single = ablation_test(compiled, few, [MOVERS[0]], n_random=100)
    assert pair.effect < single.effect < 2.0  # backup compensation, as the card documents
    assert not pair.supported()  # and so the pair alone is no outlier among layer-2 pairs
    assert "all 66 head sets" in pair.null and pair.n_prompts == 8


def test_distractors_are_never_supported(compiled, data):
    """Compiled distractors are exactly inert: every test says no for every one of them, for
    every prompt sample (their false-positive rate is 0, below the nominal 0.05)."""
    rejected = []
    for seed, (clean, abc, path) in data.items():
        for head in DISTRACTORS:
            claims = [
                direct_effect_test(compiled, clean, abc, [head], pool="all", path=path),
                attention_test(compiled, clean, [head], n_permutations=2000),
                copy_score_test(compiled, [head], NAMES, n_random=100),
            ]
            rejected += [c for c in claims if c.supported()]
        sets, _ = random_head_sets(compiled, [(1, 1), (2, 3)], 5, "same_layers", seed=seed)
        sets = [hs for hs in sets if not set(hs) & CIRCUIT]
        for hs in sets:
            claim = ablation_test(compiled, clean[:8], hs, n_random=50, seed=seed)
            rejected += [claim] if claim.supported() else []
    assert rejected == []


@pytest.fixture(scope="module")
def toy_path():
    """The toy model (continuous effects) and path patching of every head to the logits."""
    from mi_cluster.models.toy.data import NAMES as TOY_NAMES
    from mi_cluster.models.toy.data import eval_examples

    toy = load_model("toy-ioi", device="cpu")
    clean = eval_examples("held_out_pairs", n=32)
    abc = abc_corruption(clean, TOY_NAMES, seed=0)
    metric = logit_difference(toy, [(p.io, p.s) for p in clean])
    path = path_patching(
        toy, [p.text for p in clean], [p.text for p in abc], metric, progress=False
    )
    return toy, clean, abc, path


def test_false_positive_rate_is_nominal_for_exchangeable_heads(toy_path):
    """When the claimed set is drawn like the sets it is compared with (a set of heads no
    different from random heads), p <= 0.05 happens 5% of the time: Monte Carlo null over
    400 seeds, and the exact null over every possible claimed set."""
    toy, clean, abc, path = toy_path
    hits = 0
    trials = 400
    for seed in range(trials):
        (claimed,), _ = random_head_sets(toy, [(0, 0), (0, 1)], 1, "all", seed=10_000 + seed)
        claim = direct_effect_test(
            toy, clean, abc, claimed, pool="all", n_random=200, seed=seed, path=path
        )
        hits += claim.p_value <= 0.05
    assert binomtest(hits, trials, 0.05).pvalue > 0.01, hits / trials
    every, exact = random_head_sets(toy, [(0, 0), (0, 1)], 100, "all")
    assert exact and len(every) == 66
    ps = [
        direct_effect_test(toy, clean, abc, hs, pool="all", n_random=100, path=path).p_value
        for hs in every
    ]
    assert sum(p <= 0.05 for p in ps) == math.floor(0.05 * 66)  # exactly nominal (no ties)


def test_resample_ablation_and_token_mean(compiled, data):
    clean, _, _ = data[0]
    claim = ablation_test(compiled, clean[:12], [*MOVERS, BACKUP], method="resample")
    assert claim.effect > 1.0 and claim.supported()
    act = torch.randn(3, 5, 2)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    want = torch.cat([act[0, :3], act[1], act[2, :2]]).mean(0)
    torch.testing.assert_close(token_mean(act, mask), want)


@pytest.mark.unchecked
def test_bad_input_is_named(compiled, data):
    clean, abc, path = data[0]
    with pytest.raises(ValueError, match="does not exist"):
        attention_test(compiled, clean, [(4, 0)])
    with pytest.raises(ValueError, match="distinct"):
        attention_test(compiled, clean, [(2, 0), (2, 0)])
    with pytest.raises(ValueError, match="pool"):
        random_head_sets(compiled, MOVERS, 10, "nearby")
    with pytest.raises(ValueError, match="method"):
        ablation_test(compiled, clean, MOVERS, method="zero")
    with pytest.raises(ValueError, match="no reference prompt has"):
        ablation_test(compiled, clean, MOVERS, method="resample", reference=clean[:1])
    with pytest.raises(ValueError, match="24 prompts"):
        direct_effect_test(compiled, clean[:5], abc[:5], MOVERS, path=path)
    with pytest.raises(ValueError, match="alternative"):
        random_set_p_value(1.0, [0.0], "two-sided")


def test_claim_reads_as_a_sentence():
    claim = HeadClaim("copy score", ((2, 0),), 0.9, 0.8, 1.0, 0.01, "48 heads", 12)
    assert str(claim).startswith("copy score [L2H0]: +0.900 (95% CI [+0.800, +1.000]), p = 0.01")
    assert (
        claim.supported() and not claim.supported(alpha=0.01) and not claim.supported(min_effect=1)
    )
