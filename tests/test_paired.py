"""Paired-prompt comparisons per layer: KL and JS against scipy on the lens's own
distributions, identities (0 for identical prompts, JS symmetric), alignment errors."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from mi_cluster.collection.activations import Positions
from mi_cluster.core.model_info import LogitsUnavailableError
from mi_cluster.methods.lens.logit import logit_lens
from mi_cluster.methods.paired import compare_prompts

A = ["When Mary and John went to the store , John gave a drink to", "Mary liked the book ."]
B = ["When Anna and Peter went to the park , Peter gave a drink to", "John liked the ball ."]


def test_identical_prompts_are_at_distance_zero(toy):
    c = compare_prompts(toy, A, A)
    assert torch.all(c.kl.abs() < 1e-6) and torch.all(c.js.abs() < 1e-6)
    assert torch.allclose(c.cosine, torch.ones_like(c.cosine))
    assert torch.allclose(c.cka, torch.ones_like(c.cka), atol=1e-6)


def test_kl_and_js_equal_scipy_and_js_is_symmetric(toy):
    c = compare_prompts(toy, A, B)
    ba = compare_prompts(toy, B, A)
    torch.testing.assert_close(c.js, ba.js, atol=1e-9, rtol=1e-6)
    assert not torch.allclose(c.kl, ba.kl)  # KL is not symmetric
    la = logit_lens(toy, A, "all", keep_log_probs=True, progress=False)
    lb = logit_lens(toy, B, "all", keep_log_probs=True, progress=False)
    for layer in range(c.kl.shape[0]):
        for row in (0, 5, len(c.pair_index) - 1):
            p = la.log_probs[layer, row].double().exp().numpy()
            q = lb.log_probs[layer, row].double().exp().numpy()
            assert c.kl[layer, row] == pytest.approx(entropy(p, q), abs=1e-5)
            assert c.js[layer, row] == pytest.approx(jensenshannon(p, q) ** 2, abs=1e-6)
    # per pair: the mean over that pair's rows; intervals around the mean over pairs
    first = [r for r, i in enumerate(c.pair_index) if i == 0]
    assert c.per_pair["js"][:, 0].numpy() == pytest.approx(c.js[:, first].mean(1).numpy())
    mean = c.per_pair["js"].mean(1)
    assert torch.all(c.ci_low["js"] <= mean + 1e-9) and torch.all(mean <= c.ci_high["js"] + 1e-9)


def test_named_words_align_prompts_of_different_lengths(toy, minilm):
    a = ["Mary went to the store ."]
    b = ["Then , after the lunch , the lamp went to the store ."]
    with pytest.raises(ValueError, match="not aligned"):
        compare_prompts(toy, a, b)
    c = compare_prompts(toy, a, b, Positions.word("went"), positions_b=Positions.word("went"))
    assert c.tokens_a == c.tokens_b == ("went",) and c.kl.shape == (4, 1)
    assert np.isnan(c.cka).all()  # CKA needs at least three rows
    with pytest.raises(LogitsUnavailableError, match="use_lens=False"):
        compare_prompts(minilm, ["The cat sat"], ["The dog sat"])
    enc = compare_prompts(minilm, ["The cat sat"], ["The dog sat"], use_lens=False)
    assert enc.kl is None and enc.cosine.shape == (7, 5)
    assert enc.cosine[0, 0] == pytest.approx(1.0)  # [CLS] embedding is the same


def test_by_position_averages_each_position_over_pairs(toy):
    a = ["Mary went to the store .", "John liked the book ."]
    b = ["John went to the store .", "Anna liked the ball ."]
    c = compare_prompts(toy, a, b)
    js, labels = c.by_position("js")
    rows = [[r for r, i in enumerate(c.pair_index) if i == p] for p in range(2)]
    n_pos = max(len(r) for r in rows)
    assert js.shape == (c.js.shape[0], n_pos) and len(labels) == n_pos
    for k in range(n_pos):  # position k: the mean over the pairs that reach it
        at = [r[k] for r in rows if k < len(r)]
        np.testing.assert_allclose(js[:, k], c.js[:, at].double().mean(1), rtol=1e-12)
    assert labels[1] == "Mary / John" and labels[2] == "went"  # BOS first on the toy model
    with pytest.raises(ValueError, match="kl and js need a lens"):
        compare_prompts(toy, a, b, use_lens=False).by_position("js")


def test_paired_figures(toy):
    from mi_cluster.plotting.paired import paired_heatmap, paired_lines

    a = ["Mary went to the store .", "John liked the book .", "Anna saw the ball ."]
    b = ["John went to the store .", "Anna liked the book .", "Mary saw the lamp ."]
    c = compare_prompts(toy, a, b)
    lines = paired_lines(c)
    names = [ann.text for ann in lines.layout.annotations]
    assert "linear CKA of the residuals" in names and "Jensen-Shannon divergence" in names
    means = [t for t in lines.data if t.name == "mean over pairs (95% CI)" and t.x[0] is not None]
    assert len(means) == 3  # KL, JS, cosine, each with its band (and one legend entry)
    np.testing.assert_allclose(means[1].y, c.per_pair["js"].mean(-1).numpy(), rtol=1e-9)
    heat = paired_heatmap(c, "kl")
    values, labels = c.by_position("kl")
    np.testing.assert_allclose(np.array(heat.data[0].z), values.numpy(), rtol=1e-12)
    assert heat.data[0].x[1] == f"1: {labels[1]}"
