"""Parameters and activations in embedding space, against hand computations with the
model's own weights (float64, dense where the vocabulary is small), and the layer
alignment: the Gram correlation against its dense definition, the self-alignment, a
permuted copy recovered, and the permutation null's false-positive rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mi_cluster import TinyConfig, load_model
from mi_cluster.methods.embedding_space.alignment import (
    KINDS,
    VocabLayers,
    shared_vocabulary,
    vocab_alignment,
    vocab_layer_similarity,
    vocab_layers,
)
from mi_cluster.methods.embedding_space.readings import (
    neuron_readings,
    ov_circuit,
    qk_circuit,
    read_vectors,
    residual_tokens,
    vocab_correlation,
)


@pytest.fixture(scope="module", params=["gpt2", "llama", "gpt_neox"])
def small(request):
    """Tiny models in float64: GPT-2 (tied embeddings), Llama (grouped-query attention:
    2 key/value heads for 4 query heads), GPT-NeoX (untied)."""
    cfg = TinyConfig(architecture=request.param, n_layers=2, seed=3)
    return load_model(cfg, device="cpu", dtype=torch.float64)


def _raw(model, layer, which):
    """A head matrix straight from the block (key/value heads not expanded)."""
    return getattr(model.blocks[layer].attn, f"W_{which}").detach()


def test_ov_and_qk_circuits_equal_the_dense_product(small):
    e, u = small.W_E.detach(), small.W_U.detach()
    heads, kv = small.cfg.n_heads, _raw(small, 0, "V").shape[0]
    for layer in range(small.cfg.n_layers):
        for head in range(heads):
            g = head // (heads // kv)  # the key/value head this query head reads
            w_v, w_o = _raw(small, layer, "V")[g], _raw(small, layer, "O")[head]
            dense = e @ w_v @ w_o @ u
            ov = ov_circuit(small, layer, head)
            torch.testing.assert_close(ov.rows(range(len(e))), dense, rtol=1e-10, atol=1e-15)
            torch.testing.assert_close(ov.diagonal(), dense.diagonal(), rtol=1e-10, atol=1e-15)
            ids, values = ov.top_k_per_row(3, [0, 5, 7], largest=False)
            want = dense[[0, 5, 7]].topk(3, largest=False)
            assert torch.equal(ids, want.indices)  # values: the same to rounding
            torch.testing.assert_close(values, want.values, rtol=1e-10, atol=0)
            rows, cols, top = ov.top_entries(4)
            flat = dense.flatten().topk(4)
            torch.testing.assert_close(top, flat.values, rtol=1e-10, atol=0)
            assert torch.equal(rows * dense.shape[1] + cols, flat.indices)
            q, k = _raw(small, layer, "Q")[head], _raw(small, layer, "K")[g]
            qk = qk_circuit(small, layer, head)
            torch.testing.assert_close(
                qk.rows([1, 2]), (e @ q @ k.T @ e.T)[[1, 2]], rtol=0, atol=1e-12
            )


def test_neuron_keys_and_values_are_read_through_the_embedding_and_unembedding(small):
    keys, values = neuron_readings(small, 1, [0, 9], k=4)
    w_in, w_out = small.blocks[1].mlp.W_in.detach(), small.blocks[1].mlp.W_out.detach()
    for row, neuron in enumerate([0, 9]):
        key_scores = small.W_E.detach() @ w_in[:, neuron]
        value_scores = w_out[neuron] @ small.W_U.detach()
        assert torch.equal(keys.top_ids[row], key_scores.topk(4).indices)
        assert torch.equal(values.bottom_ids[row], value_scores.topk(4, largest=False).indices)
        assert keys.top_tokens[row][0] == small.tokenizer.decode([int(key_scores.argmax())])
    assert values.labels == ("L1 N0 value", "L1 N9 value")


def test_residuals_read_through_the_model_head_rank_as_its_logits(small):
    tokens = small.to_tokens("Adam went to the store")
    logits, cache = small.run_with_cache(tokens)
    last = cache[f"blocks.{small.cfg.n_layers - 1}.hook_resid_post"][0]
    reading = residual_tokens(small, last, k=5)
    assert torch.equal(reading.top_ids, logits[0].topk(5).indices)
    raw = residual_tokens(small, last[:2], k=5, final_norm=False)
    assert torch.equal(raw.top_ids, (last[:2] @ small.W_U).topk(5).indices)


def test_vocabulary_correlation_is_the_pearson_r_of_the_token_scores(small):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, small.cfg.d_model, generator=gen, dtype=torch.float64)
    b = a + torch.randn(a.shape, generator=gen, dtype=torch.float64)
    got = vocab_correlation(small, a, b)
    u = small.W_U.detach()
    sa, sb = (a @ u).numpy(), (b @ u).numpy()
    want = [[np.corrcoef(sa[i, j], sb[i, j])[0, 1] for j in range(4)] for i in range(3)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_layer_similarity_is_the_pearson_r_of_the_token_gram_matrices(kind):
    a = load_model(TinyConfig(n_layers=2, seed=1), device="cpu", dtype=torch.float64)
    b = load_model(TinyConfig(n_layers=3, seed=2), device="cpu", dtype=torch.float64)
    got = vocab_layer_similarity(vocab_layers(a, kind), vocab_layers(b, kind))
    assert got.shape == (2, 3)

    def x(model, layer):  # the layer's parameters in vocabulary space, [d_vocab, m]
        blk = model.blocks[layer]
        if kind == "keys":
            return model.W_E @ blk.mlp.W_in
        if kind == "values":
            return (blk.mlp.W_out @ model.W_U).T
        if kind == "ov":
            return (blk.attn.W_O.flatten(0, 1) @ model.W_U).T
        return model.W_E @ blk.attn.W_Q.transpose(0, 1).flatten(1)

    for i in range(2):
        for j in range(3):
            ga, gb = (
                x(m, layer).detach() @ x(m, layer).detach().T for m, layer in ((a, i), (b, j))
            )
            want = np.corrcoef(ga.flatten().numpy(), gb.flatten().numpy())[0, 1]
            assert float(got[i, j]) == pytest.approx(want, rel=1e-9)


def test_a_model_aligns_with_itself_and_a_layer_permuted_copy(tmp_path):
    from transformers import GPT2LMHeadModel

    from mi_cluster.models.tiny import save_tiny_pretrained

    save_tiny_pretrained(TinyConfig(n_layers=4, seed=5), tmp_path / "a")
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "a")
    order = [2, 0, 3, 1]  # layer k of the copy is layer order[k] of the original
    hf.transformer.h = torch.nn.ModuleList([hf.transformer.h[i] for i in order])
    hf.save_pretrained(tmp_path / "b")
    for f in (tmp_path / "a").iterdir():  # the same tokenizer
        if "token" in f.name or f.name.endswith(".txt"):
            (tmp_path / "b" / f.name).write_bytes(f.read_bytes())
    a = load_model(tmp_path / "a", device="cpu", dtype=torch.float64)
    b = load_model(tmp_path / "b", device="cpu", dtype=torch.float64)
    for kind in ("keys", "values"):
        own = vocab_alignment(a, a, kind, n_permutations=49)
        assert own.matching == tuple((i, i) for i in range(4))
        torch.testing.assert_close(own.similarity.diagonal(), torch.ones(4, dtype=torch.float64))
        assert own.p_value == pytest.approx(1 / 50)
        moved = vocab_alignment(a, b, kind, n_permutations=49)
        assert moved.matching == tuple((i, order.index(i)) for i in range(4))
        assert moved.p_value == pytest.approx(1 / 50) and moved.score == pytest.approx(1.0)


def test_models_without_a_shared_vocabulary_are_refused_and_matched_on_request(toy, tiny):
    with pytest.raises(ValueError, match="different vocabularies.*shared_vocabulary"):
        vocab_alignment(toy, tiny, "ov", n_permutations=9)
    ids = shared_vocabulary(toy, tiny)
    assert len(ids[0]) > 3
    aligned = vocab_alignment(toy, tiny, "ov", token_ids=ids, n_permutations=9)
    assert aligned.similarity.shape == (3, 2) and aligned.n_tokens == len(ids[0])


def _random_layers(gen: torch.Generator, n_layers: int, vocab: int, d: int) -> VocabLayers:
    basis = torch.randn(vocab, d, generator=gen, dtype=torch.float64)
    moments = []
    for _ in range(n_layers):
        w = torch.randn(d, 3 * d, generator=gen, dtype=torch.float64)
        moments.append(w @ w.T)
    return VocabLayers("values", "unembedding", basis, tuple(moments), "random")


def test_the_permutation_null_is_calibrated_on_unrelated_random_models():
    gen = torch.Generator().manual_seed(11)
    p = []
    for _ in range(300):
        a, b = (_random_layers(gen, 3, 60, 6) for _ in range(2))
        p.append(vocab_alignment(a, b, "values", n_permutations=39, seed=gen).p_value)
    rejected = float(np.mean(np.asarray(p) <= 0.05))
    assert 0.02 <= rejected <= 0.085  # 0.05 exactly in expectation; Monte Carlo se 0.013
    assert 0.4 <= float(np.mean(p)) <= 0.6  # p-values spread over [0, 1]


def test_readings_refuse_what_they_cannot_read(minilm, tiny):
    with pytest.raises(Exception, match="real logits"):
        ov_circuit(minilm, 0, 0)  # MiniLM's head is random: read it through the embedding
    assert ov_circuit(minilm, 0, 0, target="embedding").left.shape == (30522, 32)
    with pytest.raises(ValueError, match="L5H0 does not exist"):
        ov_circuit(tiny, 5, 0)
    with pytest.raises(ValueError, match=r"vectors must be \[vector, 64\]"):
        read_vectors(tiny, torch.zeros(2, 5))


@pytest.mark.slow
def test_the_null_is_calibrated_on_unrelated_tiny_models():
    """The same, on real (tiny, random) models that share a vocabulary: seeds 2r and
    2r + 1 for 120 draws."""
    p = []
    for r in range(120):
        a, b = (
            load_model(TinyConfig(n_layers=3, seed=s), device="cpu") for s in (2 * r, 2 * r + 1)
        )
        p.append(vocab_alignment(a, b, "values", n_permutations=39, seed=r).p_value)
    assert 0.01 <= float(np.mean(np.asarray(p) <= 0.05)) <= 0.11


MEMORY_PROBE = """
import resource, sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
from mi_cluster import load_model
from mi_cluster.models.gpt2 import gpt2_tokenizer
from mi_cluster.models.tiny import save_hf_model
from mi_cluster.methods.embedding_space.readings import ov_circuit
out = sys.argv[1]
gpt2_tokenizer().save_pretrained(out)
torch.manual_seed(0)
save_hf_model(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=50257)), out)
model = load_model(out, device="cpu")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ov = ov_circuit(model, 0, 1)
ids, _ = ov.top_k_per_row(5, range(2000))  # rows read a chunk at a time
rows, cols, values = ov.top_entries(10)  # the whole 50,257 x 50,257 matrix, scanned
diagonal = ov.diagonal()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(ids.shape[0], len(values), diagonal.shape[0], (after - before) // 1024)
"""


def test_no_vocab_by_vocab_matrix_is_built_on_gpt2s_vocabulary(tmp_path):
    """A dense 50,257 x 50,257 float32 matrix is 10 GB; reading rows, the whole matrix's
    top entries (every entry scanned) and its diagonal must stay within a few hundred MB."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    n_rows, n_top, n_diag, grew_mib = map(int, done.stdout.split())
    assert (n_rows, n_top, n_diag) == (2000, 10, 50257)
    assert grew_mib < 1024, f"peak memory grew by {grew_mib} MiB"


def test_the_experiment_recovers_the_permutation_and_the_toy_models_copiers(tmp_path):
    import json

    from experiment_scripts import experiment

    exp = experiment("embedding_space")
    record = exp.run(tmp_path, steps=5, n_permutations=9, png=False)
    assert json.loads((tmp_path / "embedding_space.json").read_text())["answer"] == record["answer"]
    order = list(exp.PERMUTATION)
    for kind in exp.KINDS:
        own = record["alignments"][f"self {kind}"]
        assert own["matching"] == [[i, i] for i in range(6)] and own["mean_r"] == 1.0
        moved = record["alignments"][f"permuted {kind}"]
        assert moved["matching"] == [[i, order.index(i)] for i in range(6)]
        assert moved["p_value"] == 0.1  # the smallest 9 shuffles allow
        trained = record["alignments"][f"trained {kind}"]
        assert trained["matching"] == [[i, i] for i in range(6)]
    toy = record["toy_heads"]
    assert toy["L2H2"]["names_ranked_first"] == toy["L2H2"]["n_names"]  # the card's suppressor
    assert all(toy[h]["names_in_first_3"] > toy[h]["n_names"] / 2 for h in ("L1H0", "L1H1"))
    shift = record["shift_in_vocabulary"]
    assert len(shift["vocab_pearson_r"]) == 7 and shift["vocab_pearson_r"][0] == 1.0
    for name in ("self", "permuted", "trained", "minilm_heads", "toy_heads", "shift"):
        assert (tmp_path / f"embedding_space_{name}.html").is_file()


@pytest.mark.skipif(
    __import__("shutil").which("chromium") is None,
    reason="PNG export needs a Chromium: apt-get install chromium (.ci/run installs it)",
)
def test_the_figures_mark_the_matching_and_export_to_png_and_svg(toy, tmp_path):
    from mi_cluster.methods.embedding_space.readings import circuit_rows
    from mi_cluster.plotting import save_figure
    from mi_cluster.plotting.embedding_space import alignment_heatmap, token_table

    aligned = vocab_alignment(toy, toy, "ov", n_permutations=9)
    heat = alignment_heatmap(aligned)
    assert heat.data[0].type == "heatmap" and list(heat.data[1].x) == ["L0", "L1", "L2"]
    names = toy.to_tokens("Mary John", prepend_bos=False)[0].tolist()
    table = token_table([circuit_rows(toy, ov_circuit(toy, 2, 2), names, k=3)], "L2H2")
    assert list(table.data[0].cells.values[0]) == ["L2H2 OV: Mary", "L2H2 OV: John"]
    for name, fig in (("heat", heat), ("table", table)):
        written = save_figure(fig, tmp_path / name, formats=("png", "svg"))
        assert all(p.stat().st_size > 5000 for p in written)
