"""Attention patterns, head summaries and the neuron view, against TransformerLens's cache,
Hugging Face's own attentions and plain-torch forward hooks; the attention figures."""

import math
import shutil

import pytest
import torch

from mi_cluster.methods.attention import (
    attention_patterns,
    head_summary,
    induction_scores,
    neuron_view,
    repeated_tokens,
    summarise_patterns,
)
from mi_cluster.plotting import save_figure
from mi_cluster.plotting.attention import (
    plot_head_view,
    plot_model_view,
    plot_neuron_view,
    plot_pattern,
)

PAIR = ("The cat sat on the mat", "The cat lay on the rug")
IOI = "When Mary and John went to the store , John gave a drink to"


def test_sentence_pair_patterns_equal_hugging_face_attentions(minilm, hf_minilm):
    p = attention_patterns(minilm, *PAIR)
    assert p.labels[:4] == ("[CLS]", "the 1", "cat 1", "sat")
    assert p.segment == (0,) * 8 + (1,) * 7 and p.special[0] and p.special[7] and p.special[-1]
    enc = minilm.tokenizer(*PAIR, return_tensors="pt")
    with torch.no_grad():
        out = hf_minilm(**enc, output_attentions=True)
    want = torch.stack([a[0] for a in out.attentions])
    torch.testing.assert_close(p.pattern, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p.pattern.sum(-1), torch.ones(p.pattern.shape[:-1]))
    # without the segment ids (as one text) the patterns differ: the pair is really a pair
    one_text = attention_patterns(minilm, " ".join(PAIR)).pattern
    assert not torch.allclose(p.pattern[..., :7, :7], one_text[..., :7, :7], atol=1e-3)


def test_patterns_equal_run_with_cache_and_select(toy):
    p = attention_patterns(toy, IOI, layers=[0, 2])
    _, cache = toy.run_with_cache(toy.to_tokens(IOI))
    for i, layer in enumerate((0, 2)):
        torch.testing.assert_close(p.pattern[i], cache[f"blocks.{layer}.attn.hook_pattern"][0])
    assert p.labels.count("John 1") == 1 and "John 2" in p.labels
    q = p.select(show_special=False, window=(0, 6))
    assert (
        q.positions == (1, 2, 3, 4, 5)
        and q.pattern.shape[-1] == 5
        and "<|endoftext|>" not in q.tokens
    )
    with pytest.raises(ValueError, match="layers must be in"):
        attention_patterns(toy, IOI, layers=[3])


def test_summaries_on_hand_built_patterns():
    # one prompt: BOS a b a c (a repeats); 4 heads with known behaviour
    ids = torch.tensor([[0, 5, 6, 5, 7]])
    special = torch.tensor([[True, False, False, False, False]])
    n = 5
    prev = torch.zeros(n, n)
    prev[0, 0] = 1
    prev[torch.arange(1, n), torch.arange(0, n - 1)] = 1
    bos = torch.zeros(n, n)
    bos[:, 0] = 1
    selfp = torch.eye(n)
    dup = torch.eye(n)
    dup[3] = 0
    dup[3, 1] = 0.75  # the second "a" gives 0.75 to the first
    dup[3, 3] = 0.25
    patterns = torch.stack([prev, bos, selfp, dup])[None, None]  # [batch, layer, head, q, k]
    s = summarise_patterns(patterns, ids, special=special)
    # real queries are positions 1..4 (BOS is special); all have a real previous token
    # (the BOS head's query 1 attends position 0, which is also its previous token)
    assert s["previous"][0].tolist() == [1.0, 0.25, 0.0, 0.0]
    assert s["special"][0].tolist() == [0.25, 1.0, 0.0, 0.0]  # prev head: query 1 -> BOS
    assert s["self"][0].tolist() == [0.0, 0.0, 1.0, (1 + 1 + 0.25 + 1) / 4]
    assert s["duplicate"][0].tolist() == [0.0, 0.0, 0.0, 0.75]  # only query 3 has a duplicate


def test_head_summary_equals_summaries_of_cached_patterns(toy):
    prompts = [IOI, "Then , Anna and Peter had a long argument . Peter said to", "The store"]
    got = head_summary(toy, prompts, batch_size=2, induction=False)
    sums = {k: torch.zeros(3, 4) for k in ("previous", "special", "self", "duplicate")}
    counts = {k: 0.0 for k in sums}
    for text in prompts:
        ids = toy.to_tokens(text)
        _, cache = toy.run_with_cache(ids)
        pats = torch.stack([cache[f"blocks.{x}.attn.hook_pattern"] for x in range(3)], 1)
        special = torch.zeros_like(ids, dtype=torch.bool)
        special[0, 0] = True
        one = summarise_patterns(pats, ids, special=special)
        n_q = ids.shape[1] - 1
        dup_q = sum(1 for i in range(1, ids.shape[1]) if ids[0, i] in ids[0, 1:i])
        for k, w in (("previous", n_q), ("special", n_q), ("self", n_q), ("duplicate", dup_q)):
            if w:
                sums[k] += one[k] * w
                counts[k] += w
    for k in sums:
        torch.testing.assert_close(getattr(got, k), sums[k] / counts[k], atol=1e-5, rtol=1e-5)
    assert got.n_queries["previous"] == counts["previous"]
    assert len(got.table()) == 12 and got.induction is None


def test_induction_scores_equal_the_cached_patterns(toy):
    tokens, start = repeated_tokens(toy, seq_len=8, n_prompts=5, seed=3)
    assert start == 1 and tokens.shape == (5, 17)
    assert torch.equal(tokens[:, 1:9], tokens[:, 9:17])
    _, cache = toy.run_with_cache(tokens)
    q = torch.arange(9, 17)
    for layer in range(3):
        want = cache[f"blocks.{layer}.attn.hook_pattern"][:, :, q, q - 7].mean((0, 2))
        torch.testing.assert_close(induction_scores(toy, 8, 5, seed=3)[layer], want)


def test_repeated_tokens_wrap_bert_inputs(minilm):
    tokens, start = repeated_tokens(minilm, seq_len=4, n_prompts=2)
    assert start == 1 and tokens[0, 0] == minilm.tokenizer.cls_token_id
    assert tokens[0, -1] == minilm.tokenizer.sep_token_id and tokens.shape == (2, 10)


def test_neuron_view_equals_plain_torch_query_and_key(toy, hf_toy):
    layer, head, query = 1, 2, 12
    captured = {}
    hf_attn = hf_toy.transformer.h[layer].attn
    handle = hf_attn.c_attn.register_forward_hook(
        lambda m, i, o: captured.setdefault("qkv", o.detach())
    )
    try:
        with torch.no_grad():
            hf_toy(toy.to_tokens(IOI).cpu())
    finally:
        handle.remove()
    nv = neuron_view(toy, IOI, layer, head, query)
    d, d_head = toy.cfg.d_model, toy.cfg.d_head
    q_all, k_all, _ = captured["qkv"][0].split(d, dim=-1)
    torch.testing.assert_close(
        nv.q, q_all[query, head * d_head : (head + 1) * d_head], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        nv.k, k_all[:, head * d_head : (head + 1) * d_head], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        nv.scores[: query + 1], nv.product.sum(-1)[: query + 1] / math.sqrt(d_head)
    )
    assert torch.isinf(nv.scores[query + 1 :]).all()
    torch.testing.assert_close(torch.softmax(nv.scores, -1), nv.pattern, atol=1e-6, rtol=1e-5)
    _, cache = toy.run_with_cache(toy.to_tokens(IOI))
    torch.testing.assert_close(
        nv.pattern, cache[f"blocks.{layer}.attn.hook_pattern"][0, head, query]
    )
    assert neuron_view(toy, IOI, layer, head, "John 2").query == nv.labels.index("John 2")
    with pytest.raises(ValueError, match="no token labelled"):
        neuron_view(toy, IOI, layer, head, "Zed")


def test_neuron_view_of_a_bidirectional_pair(minilm):
    nv = neuron_view(minilm, PAIR[0], 2, 0, "cat 1", PAIR[1])
    assert torch.isfinite(nv.scores).all()  # BERT masks no key
    torch.testing.assert_close(torch.softmax(nv.scores, -1), nv.pattern, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(nv.pattern, attention_patterns(minilm, *PAIR).pattern[2, 0, 2])


def test_figure_builders(minilm):
    p = attention_patterns(minilm, *PAIR)
    model_view = plot_model_view(p)
    assert len(model_view.data) == 6 * 12 and all(t.type == "heatmap" for t in model_view.data)
    head_view = plot_head_view(p, 2, heads=[0, 3])
    groups = {t.legendgroup for t in head_view.data if t.mode == "lines"}
    assert groups == {"H0", "H3"}
    assert [t.name for t in head_view.data if t.showlegend is not False] == ["H0", "H3"]
    texts = [t for t in head_view.data if t.mode == "text"]
    assert len(texts) == 2 and list(texts[0].text) == list(p.labels)
    # every drawn line is a weight of at least min_weight
    n_lines = sum(len(t.x) // 3 for t in head_view.data if t.mode == "lines" and len(t.x) > 1)
    li = p.layer_index(2)
    assert n_lines == int((p.pattern[li, [0, 3]] >= 0.02).sum())
    pattern = plot_pattern(p, 2, 3, show_special=False)
    assert pattern.data[0].type == "heatmap" and len(pattern.data[0].x) == 12
    neuron = plot_neuron_view(neuron_view(minilm, PAIR[0], 2, 0, 2))
    assert [t.type for t in neuron.data] == ["heatmap", "heatmap", "heatmap", "bar", "bar"]


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="static export needs Chromium: apt-get install chromium",
)
def test_long_passage_head_view_exports_to_png_and_svg(minilm, tmp_path):
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 34)  # 300+ tokens
    p = attention_patterns(minilm, text)
    assert len(p.labels) > 300
    fig = plot_head_view(p, 3, heads=[0, 1])
    for fmt in ("png", "svg"):
        (out,) = save_figure(fig, tmp_path / f"head.{fmt}")
        assert out.stat().st_size > 10_000
    assert (tmp_path / "head.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "head.svg").read_bytes()[:500]
    window = plot_head_view(p, 3, window=(100, 140))
    assert len([t for t in window.data if t.mode == "text"][0].text) == 40
