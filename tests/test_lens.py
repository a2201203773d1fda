"""Logit lens and tuned lens: against the model's own output, Hugging Face's hidden
states through its own final norm and head, and scipy's KL."""

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from mi_cluster.core.model_info import LogitsUnavailableError
from mi_cluster.methods.lens.logit import logit_lens, token_id
from mi_cluster.methods.lens.tuned import TunedLens, train_tuned_lens
from mi_cluster.models.gpt2 import save_gpt2_shaped
from mi_cluster.models.loading import load_model
from mi_cluster.models.toy import TOY_TUNED_LENS
from mi_cluster.models.toy.data import training_texts

PROMPTS = [
    "When Mary and John went to the store , John gave a drink to",
    "Then , Anna and Peter had a long argument . Peter said to",
    "The cat sat on the mat",
]


@pytest.fixture(scope="module")
def gpt2_shaped(tmp_path_factory):
    return load_model(str(save_gpt2_shaped(tmp_path_factory.mktemp("gpt2"))))


def _model_log_probs(model, text):
    tokens = model.to_tokens(text)
    with torch.no_grad():
        return torch.log_softmax(model(tokens)[0].float(), -1)


@pytest.mark.parametrize("which", ["toy", "gpt2_shaped"])
def test_last_layer_is_the_models_output(which, request):
    model = request.getfixturevalue(which)
    texts = (
        PROMPTS[:2] if which == "toy" else [" Heathrow airport is in the city of", "Hello world"]
    )
    r = logit_lens(model, texts, "all", keep_log_probs=True, k=5, progress=False)
    for i, text in enumerate(texts):
        want = _model_log_probs(model, text)
        rows = r.rows_of(i)
        got = r.log_probs[-1, rows]
        torch.testing.assert_close(
            got, want[list(r.positions[j] for j in rows)], atol=1e-4, rtol=1e-4
        )
    assert torch.all(r.kl_to_final[-1] == 0)
    assert r.layer_labels[0] == "embed" and len(r.layer_labels) == model.cfg.n_layers + 1


def test_every_layer_equals_hugging_face_hidden_states_through_ln_f_and_head(toy, hf_toy):
    """An independent lens: HF's hidden states (before its final norm) through HF's own
    ``ln_f`` and ``lm_head``."""
    hf = hf_toy
    text = PROMPTS[0]
    tokens = toy.to_tokens(text)
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
        hidden = out.hidden_states[:-1]  # the last one already has ln_f applied
        want = [torch.log_softmax(hf.lm_head(hf.transformer.ln_f(h))[0], -1) for h in hidden]
        want.append(torch.log_softmax(out.logits[0], -1))
    r = logit_lens(toy, [text], "all", keep_log_probs=True, progress=False)
    for layer, w in enumerate(want):
        torch.testing.assert_close(r.log_probs[layer], w, atol=1e-4, rtol=1e-4)


def test_ranks_topk_kl_and_logit_difference(toy):
    watch = [" Mary", " John", "store"]
    r = logit_lens(
        toy,
        PROMPTS[:2],
        "last",
        k=7,
        watch=watch,
        answers=[(" Mary", " John"), (" Anna", " Peter")],
        keep_log_probs=True,
        progress=False,
    )
    lp = r.log_probs.double()
    # ranks: number of tokens strictly more likely, from a full sort
    for layer in range(r.n_layers):
        for row in range(2):
            order = lp[layer, row].argsort(descending=True).tolist()
            assert r.top_ids[layer, row].tolist() == order[:7]
            assert r.watch_ranks[layer, row, 0] == int(
                (lp[layer, row] > lp[layer, row, r.watch_ids[0]]).sum()
            )
            top_rank = int((lp[layer, row] > lp[layer, row, order[0]]).sum())
            assert top_rank == 0  # the argmax has rank 0
            # KL(final || layer) against scipy
            p, q = lp[-1, row].exp().numpy(), lp[layer, row].exp().numpy()
            assert r.kl_to_final[layer, row].item() == pytest.approx(entropy(p, q), abs=1e-5)
    ids = r.answer_ids
    assert ids.tolist() == [
        [token_id(toy, " Mary"), token_id(toy, " John")],
        [token_id(toy, " Anna"), token_id(toy, " Peter")],
    ]
    want = lp[:, [0, 1], ids[:, 0]] - lp[:, [0, 1], ids[:, 1]]
    torch.testing.assert_close(r.logit_diff.double(), want, atol=1e-5, rtol=1e-5)
    for j in range(2):
        answer = lp.gather(2, ids[None, :, j : j + 1].expand(r.n_layers, -1, -1))
        assert torch.equal(r.answer_ranks[..., j], (lp > answer).sum(-1))
    assert [t.strip() for t in r.watch_tokens] == [
        t.strip() for t in watch
    ]  # word-level vocabulary


@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_lens_equals_each_prompt_alone(toy, side):
    together = logit_lens(
        toy, PROMPTS, "last", k=5, padding_side=side, batch_size=3, progress=False
    )
    for i, text in enumerate(PROMPTS):
        alone = logit_lens(toy, [text], "last", k=5, progress=False)
        assert together.top_ids[:, i].tolist() == alone.top_ids[:, 0].tolist()
        torch.testing.assert_close(
            together.kl_to_final[:, i], alone.kl_to_final[:, 0], atol=1e-5, rtol=1e-5
        )


def test_bad_input_is_refused(toy, minilm):
    with pytest.raises(LogitsUnavailableError, match="real logits"):
        logit_lens(minilm, ["The cat sat"], progress=False)
    with pytest.raises(ValueError, match="not a single token"):
        logit_lens(toy, PROMPTS[:1], watch=["Mary went"], progress=False)
    with pytest.raises(ValueError, match="single token positions"):
        logit_lens(toy, PROMPTS[:1], "mean", progress=False)
    with pytest.raises(ValueError, match="one per prompt"):
        logit_lens(toy, PROMPTS[:2], answers=[(" Mary", " John")] * 3, progress=False)


def test_shipped_tuned_lens_beats_the_logit_lens_on_held_out_text(toy):
    lens = TunedLens.load(TOY_TUNED_LENS)
    held_out = training_texts(200, seed=999, max_tokens=toy.cfg.n_ctx, tokenizer=toy.tokenizer)
    logit = logit_lens(toy, held_out, "all", progress=False).kl_to_final.mean(1)
    tuned = logit_lens(toy, held_out, "all", lens=lens, progress=False).kl_to_final.mean(1)
    assert torch.all(tuned[:-1] < logit[:-1]), (tuned, logit)
    assert tuned[-1] == 0 and logit[-1] == 0


def test_tuned_lens_training_is_deterministic_and_round_trips(toy, tmp_path, tiny):
    texts = training_texts(60, seed=5, max_tokens=toy.cfg.n_ctx, tokenizer=toy.tokenizer)
    a = train_tuned_lens(toy, texts, steps=6, tokens_per_step=64, progress=False)
    b = train_tuned_lens(toy, texts, steps=6, tokens_per_step=64, progress=False)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert a.weight.abs().max() > 0  # it moved from the identity
    loaded = TunedLens.load(a.save(tmp_path / "lens.safetensors"))
    assert torch.equal(loaded.weight, a.weight) and loaded.info == a.info
    with pytest.raises(ValueError, match="trained for 'toy-ioi'"):
        logit_lens(tiny, ["Adam went"], lens=loaded, progress=False)
    # the model's own parameters are untouched by training
    assert all(p.grad is None for p in toy.parameters())


def test_translate_is_identity_plus_affine():
    w = torch.randn(2, 4, 4, dtype=torch.float64)
    b = torch.randn(2, 4, dtype=torch.float64)
    lens = TunedLens("m", w, b)
    h = torch.randn(3, 4, dtype=torch.float32)
    want = h.double() + h.double() @ w[1] + b[1]
    np.testing.assert_allclose(lens.translate(1, h).double().numpy(), want.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="residual layers 0..1"):
        lens.translate(2, h)


def test_equals_transformer_lens_logit_lens(toy):
    """TransformerLens 4's own logit lens is the peer: same log-probabilities at every
    layer and position, same ranks of a watched token."""
    from transformer_lens.tools.analysis.logit_lens import logit_lens as tl_logit_lens

    text = PROMPTS[0]
    tokens = toy.to_tokens(text)
    ref = tl_logit_lens(toy, tokens, positions=None, return_type="log_probs")
    ranks = tl_logit_lens(toy, tokens, positions=None, targets=" Mary").rank_trajectory(" Mary")
    ours = logit_lens(toy, [text], "all", keep_log_probs=True, watch=[" Mary"], progress=False)
    assert ref.values.shape[0] == ours.n_layers
    torch.testing.assert_close(ours.log_probs, ref.values[:, 0].float(), atol=1e-4, rtol=1e-4)
    assert torch.equal(ours.watch_ranks[..., 0], ranks[:, 0].cpu())


def test_lens_figure_builders(toy):
    from mi_cluster.plotting.lens import plot_lens_positions, plot_lens_predictions, plot_lens_ranks

    r = logit_lens(toy, PROMPTS[:2], "last", k=6, watch=[" Mary", " John"], progress=False)
    pred = plot_lens_predictions(r, 1, k=4)
    assert pred.data[0].type == "heatmap" and len(pred.data[0].x) == 4
    assert list(pred.data[0].y) == list(r.layer_labels)
    assert pred.data[0].text[-1][0] == r.top_tokens[-1][1][0]  # layer L2, row 1, rank 1
    ranks = plot_lens_ranks(r, [0, 1])
    assert len(ranks.data[0].x) == 4  # two watched tokens x two rows
    assert ranks.data[0].text[-1][0] == str(int(r.watch_ranks[-1, 0, 0]))
    everywhere = logit_lens(toy, PROMPTS[:1], "all", k=1, progress=False)
    pos = plot_lens_positions(everywhere, 0)
    assert len(pos.data[0].x) == len(everywhere.rows_of(0)) == len(toy.to_tokens(PROMPTS[0])[0])
    with pytest.raises(ValueError, match="no watched tokens"):
        plot_lens_ranks(logit_lens(toy, PROMPTS[:1], progress=False))
