"""Patching against TransformerLens's own patching functions (to 1e-5, float32 and
float64, on a GPT-2-architecture tiny random model, the toy model and MiniLM), path
patching against a plain four-pass implementation, attribution patching against finite
differences, and the errors raised before any forward pass."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import transformer_lens.patching as TLP

from mi_cluster.core.hooks import hook_name
from mi_cluster.core.prompts import single_token_id
from mi_cluster.methods.patching import (
    Metric,
    MetricInput,
    PatchingError,
    activation_metric,
    activation_patching,
    answer_probability,
    attribution_patching,
    correlation_with,
    kl_to_clean,
    logit_difference,
    path_patching,
)
from mi_cluster.models.loading import load_model
from mi_cluster.models.tiny import TinyConfig

TL_FUNCTIONS = {
    "resid_pre": TLP.get_act_patch_resid_pre,
    "resid_mid": TLP.get_act_patch_resid_mid,
    "attn_out": TLP.get_act_patch_attn_out,
    "mlp_out": TLP.get_act_patch_mlp_out,
    "head_out": TLP.get_act_patch_attn_head_out_all_pos,
    "head_out_by_pos": TLP.get_act_patch_attn_head_out_by_pos,
    "q": TLP.get_act_patch_attn_head_q_all_pos,
    "k": TLP.get_act_patch_attn_head_k_all_pos,
    "v": TLP.get_act_patch_attn_head_v_all_pos,
    "q_by_pos": TLP.get_act_patch_attn_head_q_by_pos,
    "k_by_pos": TLP.get_act_patch_attn_head_k_by_pos,
    "v_by_pos": TLP.get_act_patch_attn_head_v_by_pos,
    "pattern": TLP.get_act_patch_attn_head_pattern_all_pos,
}
GPT_CLEAN = [
    "When Mary and John went to the store, John gave a book to",
    "When Eve and Paul went to the store, Paul gave a cup to",
]
GPT_CORRUPT = [
    "When Mary and John went to the store, Adam gave a book to",
    "When Eve and Paul went to the store, Mark gave a cup to",
]
TOY_CLEAN = [
    "When Mary and John went to the store , John gave a book to",
    "When Anna and Tom went to the park , Tom gave a cup to",
]
TOY_CORRUPT = [
    "When Mary and John went to the store , Kate gave a book to",
    "When Anna and Tom went to the park , Lucy gave a cup to",
]
BERT_CLEAN = ["the cat sat on the mat", "a dog ran in the park"]
BERT_CORRUPT = ["the cat sat on the rug", "a dog ran in the yard"]


def _logit_gap(model, a: str, b: str, position: int = -1):
    """A metric of the logits at one position (usable on MiniLM, whose logits are random
    but deterministic): logit of token ``a`` minus ``b``. Returns (ours, TransformerLens's)."""
    ia, ib = single_token_id(model, a), single_token_id(model, b)

    def ours(inp: MetricInput) -> torch.Tensor:
        return inp.logits[:, 0, ia] - inp.logits[:, 0, ib]

    def theirs(logits):
        return (logits[:, position, ia] - logits[:, position, ib]).mean()

    return Metric(f"logit {a} - {b}", ours, "last"), theirs


def _compare_with_transformer_lens(model, clean, corrupted, metric, tl_metric, sites, atol):
    tokens_clean, tokens_corrupt = model.to_tokens(clean), model.to_tokens(corrupted)
    assert tokens_clean.shape == tokens_corrupt.shape
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens_clean)
    for site in sites:
        ours = activation_patching(
            model, tokens_clean, tokens_corrupt, metric, site, progress=False
        )
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = TL_FUNCTIONS[site](model, tokens_corrupt, cache, tl_metric)
        assert ours.mean().shape == ref.shape, site
        torch.testing.assert_close(
            ours.mean(), ref.to(ours.values.dtype), atol=atol, rtol=0, msg=site
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equal_to_transformer_lens_on_a_gpt2_architecture(tiny, tiny64, dtype):
    model = tiny if dtype == torch.float32 else tiny64
    metric, tl_metric = _logit_gap(model, "Mary", "John")
    _compare_with_transformer_lens(
        model, GPT_CLEAN, GPT_CORRUPT, metric, tl_metric, TL_FUNCTIONS, 1e-5
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equal_to_transformer_lens_on_the_toy_model(toy, dtype):
    model = toy if dtype == torch.float32 else load_model("toy-ioi", device="cpu", dtype=dtype)
    metric = logit_difference(model, [("Mary", "John"), ("Anna", "Tom")])
    io = torch.tensor([model.to_single_token(w) for w in ("Mary", "Anna")])
    s = torch.tensor([model.to_single_token(w) for w in ("John", "Tom")])

    def tl_metric(logits):
        last = logits[:, -1]
        return (last.gather(1, io[:, None]) - last.gather(1, s[:, None])).mean()

    sites = [s for s in TL_FUNCTIONS if s != "mlp_out"]  # attention-only: refused (below)
    _compare_with_transformer_lens(model, TOY_CLEAN, TOY_CORRUPT, metric, tl_metric, sites, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equal_to_transformer_lens_on_minilm(minilm, dtype):
    """Bidirectional, post-LayerNorm, with MLPs and BERT's MLM head; the metric reads the
    [SEP] position's logits (random but deterministic in MiniLM)."""
    model = minilm if dtype == torch.float32 else load_model("minilm", device="cpu", dtype=dtype)
    metric, tl_metric = _logit_gap(model, "mat", "rug")
    sites = ["resid_pre", "attn_out", "mlp_out", "head_out", "v"]
    _compare_with_transformer_lens(model, BERT_CLEAN, BERT_CORRUPT, metric, tl_metric, sites, 1e-5)


def test_pattern_patching_is_refused_where_the_bridge_ignores_it(minilm):
    """TransformerLens's bridge reads BERT's attention pattern after the Hugging Face
    module has used it, so its own pattern sweep changes nothing (every value equals the
    corrupted run's metric): mi_cluster refuses the site instead of returning that."""
    metric, tl_metric = _logit_gap(minilm, "mat", "rug")
    clean, corrupt = minilm.to_tokens(BERT_CLEAN), minilm.to_tokens(BERT_CORRUPT)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, cache = minilm.run_with_cache(clean)
        theirs = TL_FUNCTIONS["pattern"](minilm, corrupt, cache, tl_metric)
        corrupted_value = tl_metric(minilm(corrupt))
    torch.testing.assert_close(theirs, torch.full_like(theirs, float(corrupted_value)))
    with pytest.raises(PatchingError, match="BertForMaskedLM's attention patterns cannot be"):
        activation_patching(minilm, clean, corrupt, metric, "pattern", progress=False)


def test_resid_post_and_noising_equal_plain_hooks(tiny64):
    metric, _ = _logit_gap(tiny64, "Mary", "John")
    clean, corrupt = tiny64.to_tokens(GPT_CLEAN), tiny64.to_tokens(GPT_CORRUPT)
    with torch.no_grad():
        _, cc = tiny64.run_with_cache(clean)
        _, xc = tiny64.run_with_cache(corrupt)
    for direction, base, source in (("denoise", corrupt, cc), ("noise", clean, xc)):
        res = activation_patching(
            tiny64, clean, corrupt, metric, "resid_post", direction=direction, progress=False
        )
        for layer in range(2):
            for pos in (0, 5, clean.shape[1] - 1):
                name = hook_name("resid_post", layer)

                def hook(act, hook, name=name, pos=pos, source=source):
                    act[:, pos] = source[name][:, pos]
                    return act

                with torch.no_grad():
                    logits = tiny64.run_with_hooks(base, fwd_hooks=[(name, hook)])
                want = metric.fn(MetricInput(torch.arange(2), logits[:, -1:], {}, None))
                torch.testing.assert_close(res.values[layer, pos], want, atol=1e-10, rtol=0)


def test_chunking_and_padding_do_not_change_results(tiny64):
    metric = logit_difference(tiny64, [("Mary", "John"), ("Eve", "Paul"), ("Mary", "John")])
    clean = GPT_CLEAN + ["When Mary and John went to the park, John gave a book to"]
    corrupt = GPT_CORRUPT + ["When Mary and John went to the park, Adam gave a book to"]
    whole = activation_patching(tiny64, clean, corrupt, metric, "head_out", progress=False)
    small = activation_patching(
        tiny64, clean, corrupt, metric, "head_out", max_batch_size=3, progress=False
    )
    torch.testing.assert_close(whole.values, small.values)
    # a pair of another length pads the batch; each prompt's values equal running it alone
    longer_c = ["When Mary and John went to the big store, John gave a book to"]
    longer_x = ["When Mary and John went to the big store, Adam gave a book to"]
    mixed = activation_patching(
        tiny64, GPT_CLEAN + longer_c, GPT_CORRUPT + longer_x,
        logit_difference(tiny64, [("Mary", "John"), ("Eve", "Paul"), ("Mary", "John")]),
        "head_out", progress=False,
    )  # fmt: skip
    alone = activation_patching(
        tiny64,
        longer_c,
        longer_x,
        logit_difference(tiny64, [("Mary", "John")]),
        "head_out",
        progress=False,
    )
    torch.testing.assert_close(mixed.values[..., 2], alone.values[..., 0], atol=1e-10, rtol=0)
    torch.testing.assert_close(mixed.values[..., :2], whole.values[..., :2], atol=1e-10, rtol=0)


def test_metrics_kl_probability_and_activation(tiny64):
    clean, corrupt = tiny64.to_tokens(GPT_CLEAN), tiny64.to_tokens(GPT_CORRUPT)
    kl = activation_patching(
        tiny64, clean, corrupt, kl_to_clean(tiny64), "resid_pre", progress=False
    )
    torch.testing.assert_close(kl.clean, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    # the prompts differ at one position: patching layer 0's residual there restores the
    # clean run exactly (KL 0); anywhere else it changes nothing (KL of the corrupted run)
    first = activation_patching(
        tiny64, clean, corrupt, kl_to_clean(tiny64), "resid_pre", layers=[0], progress=False
    )
    changed = (clean != corrupt).any(0)
    torch.testing.assert_close(
        first.values[0, changed], torch.zeros(1, 2, dtype=torch.float64), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        first.values[0, ~changed], first.corrupted.expand(int((~changed).sum()), -1)
    )
    assert (first.corrupted > 0).all()
    probs = answer_probability(tiny64, [("Mary", "John"), ("Eve", "Paul")])
    res = activation_patching(tiny64, clean, corrupt, probs, "head_out", progress=False)
    with torch.no_grad():
        p = tiny64(clean)[:, -1].softmax(-1)
    torch.testing.assert_close(
        res.clean, p[[0, 1], [tiny64.to_single_token(" Mary"), tiny64.to_single_token(" Eve")]]
    )
    # an activation metric stops at its layer: patching a later layer leaves it unchanged
    probe = torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    name = hook_name("resid_post", 0)
    score = activation_metric("probe at L0", name, lambda act, prompt: act[:, -1] @ probe)
    rep = activation_patching(tiny64, clean, corrupt, score, "head_out", progress=False)
    torch.testing.assert_close(rep.values[1], rep.corrupted.expand(4, -1))  # layer 1 cannot move it
    with torch.no_grad():
        _, cc = tiny64.run_with_cache(clean)
    z = hook_name("z", 0)

    def patch_head(act, hook):
        act[:, :, 2] = cc[z][:, :, 2]
        return act

    with torch.no_grad():
        store = {}
        tiny64.run_with_hooks(
            corrupt,
            fwd_hooks=[
                (z, patch_head),
                (name, lambda act, hook: store.__setitem__("a", act.clone())),
            ],
        )
    torch.testing.assert_close(rep.values[0, 2], store["a"][:, -1] @ probe)
    assert rep.normalised().shape == (2, 4)


def _plain_path_patching(model, base_tokens, source_tokens, metric, receivers, frozen_ln=False):
    """The four passes of Algorithm 1, one sender at a time, with run_with_hooks
    (``frozen_ln``: the final LayerNorm's scale hooked to the base run's)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    with torch.no_grad():
        _, base = model.run_with_cache(base_tokens)
        _, source = model.run_with_cache(source_tokens)
    out = torch.zeros(n_layers, n_heads, base_tokens.shape[0], dtype=torch.float64)
    for sender_layer in range(n_layers):
        for sender in range(n_heads):
            hooks = []
            for layer in range(n_layers):

                def freeze(act, hook, layer=layer, s_layer=sender_layer, s_head=sender):
                    act[:] = base[hook_name("z", layer)]
                    if layer == s_layer:
                        act[:, :, s_head] = source[hook_name("z", layer)][:, :, s_head]
                    return act

                hooks.append((hook_name("z", layer), freeze))
            if frozen_ln:
                hooks.append(("ln_final.hook_scale", lambda act, hook: base["ln_final.hook_scale"]))
            seen = {}
            for layer, _, which in receivers:
                name = hook_name(which, layer)
                hooks.append(
                    (
                        name,
                        lambda act, hook, name=name, seen=seen: seen.__setitem__(name, act.clone()),
                    )
                )
            with torch.no_grad():
                logits = model.run_with_hooks(base_tokens, fwd_hooks=hooks)  # pass 3
            if receivers:
                patches = []
                for layer, head, which in receivers:
                    name = hook_name(which, layer)

                    def patch(act, hook, name=name, head=head, seen=seen):
                        act[:, :, head] = seen[name][:, :, head]
                        return act

                    patches.append((name, patch))
                with torch.no_grad():
                    logits = model.run_with_hooks(base_tokens, fwd_hooks=patches)  # pass 4
            out[sender_layer, sender] = metric.fn(
                MetricInput(torch.arange(2), logits[:, -1:], {}, None)
            )
    return out


@pytest.mark.parametrize(
    "receivers", ["logits", [(1, 0, "q")], [(1, 2, "k"), (1, 3, "v")]], ids=["logits", "q", "k+v"]
)
@pytest.mark.parametrize("direction", ["noise", "denoise"])
def test_path_patching_equals_a_plain_four_pass_implementation(tiny64, receivers, direction):
    metric, _ = _logit_gap(tiny64, "Mary", "John")
    clean, corrupt = tiny64.to_tokens(GPT_CLEAN), tiny64.to_tokens(GPT_CORRUPT)
    got = path_patching(
        tiny64, clean, corrupt, metric, receivers, direction=direction, progress=False
    )
    base, source = (clean, corrupt) if direction == "noise" else (corrupt, clean)
    want = _plain_path_patching(
        tiny64, base, source, metric, [] if receivers == "logits" else receivers
    )
    torch.testing.assert_close(got.values, want, atol=1e-10, rtol=0)
    if receivers != "logits":  # senders at or after every receiver have no path to it
        base_value = got.clean if direction == "noise" else got.corrupted
        torch.testing.assert_close(got.values[1], base_value.expand(4, -1))


@pytest.mark.parametrize("direction", ["noise", "denoise"])
def test_path_patching_with_a_frozen_final_layer_norm(tiny64, direction):
    """final_ln="frozen" equals a plain run whose final LayerNorm scale is hooked to the
    base run's; on the attention-only toy model it is then exactly linear: each sender's
    effect is its change of output projected through the base run's LayerNorm scale."""
    metric, _ = _logit_gap(tiny64, "Mary", "John")
    clean, corrupt = tiny64.to_tokens(GPT_CLEAN), tiny64.to_tokens(GPT_CORRUPT)
    got = path_patching(tiny64, clean, corrupt, metric, direction=direction, final_ln="frozen",
                        progress=False)  # fmt: skip
    base, source = (clean, corrupt) if direction == "noise" else (corrupt, clean)
    want = _plain_path_patching(tiny64, base, source, metric, [], frozen_ln=True)
    torch.testing.assert_close(got.values, want, atol=1e-10, rtol=0)
    assert "frozen" in got.site
    toy64 = load_model("toy-ioi", device="cpu", dtype=torch.float64)
    metric, _ = _logit_gap(toy64, "Mary", "Anna")
    got = path_patching(toy64, TOY_CLEAN, TOY_CORRUPT, metric, final_ln="frozen", progress=False)
    with torch.no_grad():
        _, c = toy64.run_with_cache(toy64.to_tokens(TOY_CLEAN))
        _, x = toy64.run_with_cache(toy64.to_tokens(TOY_CORRUPT))
    direction_io = (
        toy64.W_U[:, single_token_id(toy64, "Mary")] - toy64.W_U[:, single_token_id(toy64, "Anna")]
    )
    for layer, head in [(0, 2), (1, 0), (2, 2)]:
        z = hook_name("z", layer)
        change = (x[z][:, -1, head] - c[z][:, -1, head]) @ toy64.W_O[layer, head]
        want = got.clean + (change / c["ln_final.hook_scale"][:, -1]) @ direction_io
        torch.testing.assert_close(got.values[layer, head], want, atol=1e-9, rtol=0)
    with pytest.raises(PatchingError, match="final_ln"):
        path_patching(tiny64, clean, corrupt, metric, [(1, 0, "q")], final_ln="frozen")


@pytest.mark.parametrize(
    "receivers", ["logits", [(1, 0, "q"), (1, 2, "v")]], ids=["logits", "heads"]
)
def test_path_patching_batches_senders_across_layers(tiny64, receivers):
    metric, _ = _logit_gap(tiny64, "Mary", "John")
    a = path_patching(tiny64, GPT_CLEAN, GPT_CORRUPT, metric, receivers, progress=False)
    # 2 prompts: 1, 3 or 5 senders a pass, so passes start mid-layer and span layers
    for kw in ({"max_batch_size": 2}, {"max_batch_size": 6}, {"max_batch_size": 10}):
        b = path_patching(tiny64, GPT_CLEAN, GPT_CORRUPT, metric, receivers, progress=False, **kw)
        torch.testing.assert_close(a.values, b.values, atol=1e-10, rtol=0, msg=str(kw))


def test_passes_spanning_layers_give_the_same_values(tiny64):
    metric, _ = _logit_gap(tiny64, "Mary", "John")
    for site in ("head_out", "resid_pre", "pattern"):
        a = activation_patching(tiny64, GPT_CLEAN, GPT_CORRUPT, metric, site, progress=False)
        for kw in ({"max_batch_size": 6}, {"max_batch_size": 10}, {"max_batch_size": 2}):
            b = activation_patching(
                tiny64, GPT_CLEAN, GPT_CORRUPT, metric, site, progress=False, **kw
            )
            torch.testing.assert_close(a.values, b.values, atol=1e-10, rtol=0, msg=f"{site} {kw}")


def test_attribution_equals_the_directional_derivative(tiny64):
    """Attribution is m(base) + (a' - a) . grad: the derivative of the metric along the
    patch, checked by a central finite difference with plain hooks (float64)."""
    metric, _ = _logit_gap(tiny64, "Mary", "John")
    clean, corrupt = tiny64.to_tokens(GPT_CLEAN), tiny64.to_tokens(GPT_CORRUPT)
    att = attribution_patching(tiny64, clean, corrupt, metric, ("head_out", "resid_pre"))
    with torch.no_grad():
        _, cc = tiny64.run_with_cache(clean)
        _, xc = tiny64.run_with_cache(corrupt)
    eps = 1e-5

    def moved(name, select, t):
        def hook(act, hook):
            act[select] = act[select] + t * (cc[name] - xc[name])[select]
            return act

        with torch.no_grad():
            logits = tiny64.run_with_hooks(corrupt, fwd_hooks=[(name, hook)])
        return metric.fn(MetricInput(torch.arange(2), logits[:, -1:], {}, None))

    for layer, head in ((0, 1), (1, 3)):
        name, select = hook_name("z", layer), (slice(None), slice(None), head)
        slope = (moved(name, select, eps) - moved(name, select, -eps)) / (2 * eps)
        torch.testing.assert_close(
            att["head_out"].values[layer, head] - att["head_out"].corrupted,
            slope,
            atol=1e-6,
            rtol=1e-5,
        )
    name, select = hook_name("resid_pre", 1), (slice(None), 7)
    slope = (moved(name, select, eps) - moved(name, select, -eps)) / (2 * eps)
    torch.testing.assert_close(
        att["resid_pre"].values[1, 7] - att["resid_pre"].corrupted, slope, atol=1e-6, rtol=1e-5
    )


def test_attribution_tracks_exact_patching_on_the_toy_model(toy):
    metric = logit_difference(toy, [("Mary", "John"), ("Anna", "Tom")])
    att = attribution_patching(toy, TOY_CLEAN, TOY_CORRUPT, metric, ("head_out",))
    exact = activation_patching(toy, TOY_CLEAN, TOY_CORRUPT, metric, "head_out", progress=False)
    assert correlation_with(att["head_out"], exact) > 0.9
    torch.testing.assert_close(att["head_out"].clean, exact.clean)
    torch.testing.assert_close(att["head_out"].corrupted, exact.corrupted)


ROLE_CLEAN = ["adam had fun . lamp went to the store .", "so after lunch pen went to the store ."]
ROLE_CORRUPT = ["adam went and saw lamp at the store .", "so they saw pen at the store ."]
ROLE_POS = torch.tensor([5, 4])  # the read word, at one index in both prompts of a pair


def _projection(model, layer, seed=0):
    """A non-logit metric: the read word's residual after ``layer`` projected on a random
    direction (as a subjecthood or probe score is)."""
    d = torch.randn(
        model.cfg.d_model, generator=torch.Generator().manual_seed(seed), dtype=model.cfg.dtype
    )
    name = hook_name("resid_post", layer)
    metric = activation_metric(
        "projection", name, lambda act, p: act[torch.arange(len(p)), ROLE_POS[p]] @ d
    )
    return metric, d


@pytest.mark.parametrize("site", ["mlp_out_all", "attn_out_all"])
def test_padded_pairs_with_an_activation_metric_equal_plain_torch_hooks(minilm, hf_minilm, site):
    """Pairs of different token lengths (lengths="pad", MiniLM, bidirectional): patching a
    layer's whole MLP or attention output from the subject-position prompt into the
    object-position prompt, scored by a projection of the read word's residual three
    layers up, equals the same patch done with forward hooks on Hugging Face's BertModel
    (no TransformerLens, no padding)."""
    read = 3
    metric, d = _projection(minilm, read)
    ours = activation_patching(
        minilm, ROLE_CLEAN, ROLE_CORRUPT, metric, site, lengths="pad", progress=False
    )
    tok = minilm.tokenizer
    for layer in range(read + 1):
        layer_mod = hf_minilm.encoder.layer[layer]
        # TransformerLens's bridge hooks BERT's (post-LN) attention output after its LayerNorm
        module = layer_mod.output.dense if site == "mlp_out_all" else layer_mod.attention.output
        for i in range(2):
            a, b = (
                tok(ROLE_CLEAN[i], return_tensors="pt"),
                tok(ROLE_CORRUPT[i], return_tensors="pt"),
            )
            store = {}
            h = module.register_forward_hook(
                lambda m, x, out, store=store: store.__setitem__("src", out.clone())
            )
            with torch.no_grad():
                hf_minilm(**a)
            h.remove()
            h = module.register_forward_hook(
                lambda m, x, out, store=store: store["src"][:, : out.shape[1]]
            )
            with torch.no_grad():
                hidden = hf_minilm(**b, output_hidden_states=True).hidden_states[read + 1]
            h.remove()
            want = hidden[0, ROLE_POS[i]] @ d
            torch.testing.assert_close(ours.values[layer, i], want, atol=2e-4, rtol=1e-5)
    # layers above the one read cannot move it
    torch.testing.assert_close(ours.values[read + 1 :], ours.corrupted.expand(2, -1))


def test_non_logit_metrics_equal_a_hand_computed_patch(tiny64):
    """A projection and a cosine to a reference set, through the same batched sweeps as
    logit metrics (no special path): each head's output at the read word patched from the
    clean into the corrupted prompt of unequal length equals a hand patch with hooks on
    the corrupted prompt alone; attribution of the same metric is exact where the metric
    is linear in the site (the residual it reads) and tracks exact patching elsewhere."""
    clean = ["When Mary and John went to the store", "When Eve and Paul went home"]
    corrupt = ["When Mary and John were at the big store", "When Eve and Paul had gone home"]
    proj, d = _projection(tiny64, 1)
    reference = torch.randn(5, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    name = hook_name("resid_post", 1)

    def cos_score(x):
        return torch.nn.functional.cosine_similarity(x[:, None], reference[None], dim=-1).mean(1)

    def cosine(act, p):
        return cos_score(act[torch.arange(len(p)), ROLE_POS[p]])

    cos = activation_metric("cosine to reference", name, cosine)
    kw = {"lengths": "pad", "progress": False}
    for metric, score in ((proj, lambda x: x @ d), (cos, cos_score)):
        res = activation_patching(tiny64, clean, corrupt, metric, "head_out_by_pos", **kw)
        with torch.no_grad():
            _, cache = tiny64.run_with_cache(tiny64.to_tokens(clean[1]))
        for layer, pos, head in ((0, 4, 1), (1, 2, 3), (1, 4, 0)):
            z = hook_name("z", layer)

            def patch(act, hook, z=z, pos=pos, head=head, cache=cache):
                act[:, pos, head] = cache[z][:, pos, head]
                return act

            store = {}
            with torch.no_grad():
                tiny64.run_with_hooks(
                    tiny64.to_tokens(corrupt[1]),
                    fwd_hooks=[
                        (z, patch),
                        (name, lambda a, hook, store=store: store.__setitem__("x", a)),
                    ],
                )
            want = score(store["x"][:, ROLE_POS[1]])
            torch.testing.assert_close(
                res.values[layer, pos, head, 1], want.squeeze(), rtol=1e-9, atol=1e-12
            )
    exact = activation_patching(tiny64, clean, corrupt, proj, "resid_post", **kw)
    att = attribution_patching(
        tiny64, clean, corrupt, proj, ("resid_post", "head_out"), lengths="pad"
    )
    torch.testing.assert_close(att["resid_post"].values[1], exact.values[1])
    torch.testing.assert_close(att["resid_post"].clean, exact.clean)
    head_exact = activation_patching(tiny64, clean, corrupt, proj, "head_out", **kw)
    assert correlation_with(att["head_out"], head_exact) > 0.9
    with pytest.raises(PatchingError, match="end at different positions"):
        activation_patching(
            tiny64, clean, corrupt, logit_difference(tiny64, [("Mary", "John")] * 2), **kw
        )


class _AttentionOnly:
    """The tiny model as an attention-only model would look: no MLP hooks. Any forward
    pass through it fails, so errors raised here come before one."""

    def __init__(self, model):
        self._model = model
        self.cfg = copy.copy(model.cfg)
        self.cfg.attn_only = True
        self.hook_dict = {k: v for k, v in model.hook_dict.items() if "mlp" not in k}
        self.tokenizer = model.tokenizer

    def to_str_tokens(self, *a, **k):
        return self._model.to_str_tokens(*a, **k)

    def to_tokens(self, *a, **k):
        return self._model.to_tokens(*a, **k)

    def __getattr__(self, name):
        raise AssertionError(f"a forward pass was attempted ({name})")


@pytest.mark.unchecked
def test_bad_inputs_fail_before_any_forward_pass(tiny):
    fake = _AttentionOnly(tiny)
    metric, _ = _logit_gap(tiny, "Mary", "John")
    tokens = tiny.to_tokens(GPT_CLEAN)
    with pytest.raises(PatchingError, match=r"no MLP output: it is attention-only"):
        activation_patching(fake, tokens, tokens, metric, "mlp_out")
    with pytest.raises(
        PatchingError,
        match=r"prompt pair 0 has 15 clean and \d+ corrupted tokens; patching needs equal",
    ):
        activation_patching(
            fake,
            GPT_CLEAN,
            ["When Mary and John went to the big store, Adam gave a book to", GPT_CORRUPT[1]],
            metric,
        )
    with pytest.raises(
        PatchingError,
        match=r"answers\[1\]: word .Zyxwv. \(with a leading space\) is not a single token",
    ):
        logit_difference(tiny, [("Mary", "John"), ("Zyxwv", "John")])
    scalar = Metric("mean only", lambda inp: inp.logits[:, 0, 0].mean(), "last")
    with pytest.raises(
        PatchingError, match=r"'mean only' must return one value per prompt .* got \(\)"
    ):
        activation_patching(fake, tokens, tokens, scalar, "head_out")
    with pytest.raises(PatchingError, match="unknown site 'mlp_in'"):
        activation_patching(fake, tokens, tokens, metric, "mlp_in")
    with pytest.raises(PatchingError, match=r"layers \[7\] do not exist"):
        activation_patching(fake, tokens, tokens, metric, "head_out", layers=[7])
    with pytest.raises(PatchingError, match="2 clean and 1 corrupted"):
        activation_patching(fake, GPT_CLEAN, GPT_CORRUPT[:1], metric)
    with pytest.raises(PatchingError, match=r"receiver L5H0 'q' does not exist"):
        path_patching(fake, tokens, tokens, metric, [(5, 0, "q")])
    with pytest.raises(PatchingError, match="positions must be"):
        Metric("x", lambda inp: inp.logits[:, 0, 0], "first")
    from mi_cluster.core.model_info import LogitsUnavailableError

    with pytest.raises(LogitsUnavailableError):
        logit_difference(load_model("minilm", device="cpu"), [("cat", "dog")])


def test_patched_runs_build_no_autograd_graph(minilm):
    """Exact patching needs no gradients. With autograd on, the bridge's BERT blocks kept
    every patched run's graph alive (MiniLM's head sweep of 175 word pairs grew to 21 GB);
    the runner turns it off, whatever the caller's grad mode."""
    seen = []

    def spy(act, hook):
        seen.append((torch.is_grad_enabled(), act.requires_grad))

    name = hook_name("resid_post", 1)
    metric = activation_metric("norm at L1", name, lambda act, p: act[:, 1].norm(dim=-1))
    minilm.add_hook(hook_name("resid_post", 0), spy)
    try:
        with torch.enable_grad():
            res = activation_patching(
                minilm, ["The cat sat down"], ["The dog sat down"], metric, "head_out",
                layers=[0], progress=False,
            )  # fmt: skip
    finally:
        minilm.reset_hooks()
    assert len(seen) > 1 and not any(grad or req for grad, req in seen)
    assert not res.values.requires_grad and res.values.shape == (1, 12, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_patching_on_cuda_equals_cpu(tiny):
    metric, _ = _logit_gap(tiny, "Mary", "John")
    cpu = activation_patching(tiny, GPT_CLEAN, GPT_CORRUPT, metric, "head_out", progress=False)
    gpu_model = load_model(TinyConfig(n_layers=2, d_model=64, n_heads=4), device="cuda")
    gpu_metric, _ = _logit_gap(gpu_model, "Mary", "John")
    gpu = activation_patching(
        gpu_model, GPT_CLEAN, GPT_CORRUPT, gpu_metric, "head_out", progress=False
    )
    assert gpu.values.device.type == "cuda"
    torch.testing.assert_close(gpu.values.cpu(), cpu.values, atol=1e-4, rtol=1e-4)
    path = path_patching(gpu_model, GPT_CLEAN, GPT_CORRUPT, gpu_metric, progress=False)
    torch.testing.assert_close(
        path.values.cpu(),
        path_patching(tiny, GPT_CLEAN, GPT_CORRUPT, metric, progress=False).values,
        atol=1e-4,
        rtol=1e-4,
    )


def test_patching_maps():
    """Maps use one diverging scale centred at zero, layers down (the IOI experiment runs
    every sweep end to end in tests/test_ioi_name_movers.py)."""
    from mi_cluster.methods.patching import PatchResult
    from mi_cluster.plotting.patching import patching_maps

    z = torch.tensor([[[1.0, 3.0], [2.0, 2.0]], [[0.0, 0.0], [1.0, 1.0]]])  # [layer, head, prompt]
    r = PatchResult(z, "head_out", ("layer", "head"), {"layer": ["L0", "L1"], "head": ["H0", "H1"]},
                    "denoise", "m", torch.tensor([3.0, 3.0]), torch.tensor([1.0, 1.0]))  # fmt: skip
    torch.testing.assert_close(r.normalised(), torch.tensor([[0.5, 0.5], [-0.5, 0.0]]))
    fig = patching_maps([r, r], title="t")
    assert fig.layout.coloraxis.cmid == 0 and fig.layout.coloraxis.cmax == 0.5
    assert list(fig.data[0].y) == ["L0", "L1"] and fig.layout.yaxis.autorange == "reversed"
    axes = ("layer", "pos", "head")
    by_pos = PatchResult(z[..., None].expand(2, 2, 2, 2), "head_out_by_pos", axes, {},
                         "denoise", "m", r.clean, r.corrupted)  # fmt: skip
    with pytest.raises(ValueError, match=r"axes \('layer', 'pos', 'head'\)"):
        patching_maps([by_pos])


def test_mlp_sites_of_an_attention_only_model_are_refused(toy):
    """The toy model has MLP hooks (the bridge's GPT-2 blocks), but its card makes it
    attention-only and they read 0: patching them would report a flat zero effect."""
    metric = logit_difference(toy, [("Mary", "John"), ("Anna", "Tom")])
    with pytest.raises(PatchingError, match="no MLP output, all positions: it is attention"):
        activation_patching(toy, TOY_CLEAN, TOY_CORRUPT, metric, "mlp_out_all", progress=False)
    with pytest.raises(PatchingError, match="no MLP output: it is attention-only"):
        attribution_patching(toy, TOY_CLEAN, TOY_CORRUPT, metric, ("head_out", "mlp_out"))


def test_a_metric_of_several_numbers_equals_one_sweep_per_number(tiny64):
    """An activation metric with ``shape=(3,)`` (a residual projected on three directions)
    gives, in one sweep, what three scalar sweeps give, for activation and path patching;
    attribution patching (one gradient) refuses it by name."""
    clean, corrupt = tiny64.to_tokens(GPT_CLEAN), tiny64.to_tokens(GPT_CORRUPT)
    dirs = torch.randn(64, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    name = hook_name("resid_post", 1)
    several = activation_metric("3 projections", name, lambda a, p: a[:, -1] @ dirs, (3,))
    ones = [
        activation_metric(f"projection {k}", name, lambda a, p, k=k: a[:, -1] @ dirs[:, k])
        for k in range(3)
    ]
    for site in ("head_out", "resid_pre"):
        got = activation_patching(tiny64, clean, corrupt, several, site, progress=False)
        assert got.values.shape[-2:] == (2, 3) and got.value_shape == (3,)
        for k, metric in enumerate(ones):
            want = activation_patching(tiny64, clean, corrupt, metric, site, progress=False)
            torch.testing.assert_close(got.values[..., k], want.values, atol=1e-10, rtol=0)
            torch.testing.assert_close(got.corrupted[:, k], want.corrupted)
            torch.testing.assert_close(got.mean()[..., k], want.mean())
            torch.testing.assert_close(got.normalised()[..., k], want.normalised())
    got = path_patching(tiny64, clean, corrupt, several, [(1, 0, "q")], progress=False)
    for k, metric in enumerate(ones):
        want = path_patching(tiny64, clean, corrupt, metric, [(1, 0, "q")], progress=False)
        torch.testing.assert_close(got.values[..., k], want.values, atol=1e-10, rtol=0)
    with pytest.raises(PatchingError, match="one number per prompt"):
        attribution_patching(tiny64, clean, corrupt, several, ("head_out",))
    wrong = activation_metric("wrong", name, lambda a, p: a[:, -1] @ dirs, (4,))
    with pytest.raises(PatchingError, match=r"shape \[2, 4\]\), got \(2, 3\)"):
        activation_patching(tiny64, clean, corrupt, wrong, "head_out", progress=False)
    with pytest.raises(PatchingError, match="shape must be positive ints"):
        activation_metric("bad", name, lambda a, p: a[:, -1], (0,))
