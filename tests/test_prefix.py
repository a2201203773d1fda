"""Prefix reuse: patched runs of a causal model that start at the patched position,
reading earlier positions' keys and values from the unpatched run. Equal to
TransformerLens's own sweeps (which recompute every position) and to the same sweep with
reuse off, padded pairs included; refused or bypassed where it would not be exact; and no
more memory than the rows of one pass. Every architecture against plain Hugging Face
hooks: ``test_architectures.py``."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformer_lens.patching as TLP
from test_patching import GPT_CLEAN as CLEAN
from test_patching import GPT_CORRUPT as CORRUPT

from mi_cluster.core.hooks import hook_name
from mi_cluster.methods.patching import (
    PatchingError,
    activation_metric,
    activation_patching,
    logit_difference,
)
from mi_cluster.methods.patching import runner as runner_module
from mi_cluster.methods.patching.prefix import (
    PrefixKeys,
    UnknownArgument,
    prefix_bytes,
    suffix_argument,
)
from mi_cluster.methods.patching.runner import LayerRunner, row_bytes, rows_per_pass
from mi_cluster.models.loading import load_model
from mi_cluster.models.tiny import TinyConfig

TL_BY_POSITION = {
    "resid_pre": TLP.get_act_patch_resid_pre,
    "resid_mid": TLP.get_act_patch_resid_mid,
    "attn_out": TLP.get_act_patch_attn_out,
    "mlp_out": TLP.get_act_patch_mlp_out,
    "head_out_by_pos": TLP.get_act_patch_attn_head_out_by_pos,
    "q_by_pos": TLP.get_act_patch_attn_head_q_by_pos,
    "k_by_pos": TLP.get_act_patch_attn_head_k_by_pos,
    "v_by_pos": TLP.get_act_patch_attn_head_v_by_pos,
}


@pytest.fixture(scope="module")
def llama64():
    """Rotary embeddings and grouped key/value heads."""
    cfg = TinyConfig(architecture="llama", n_layers=2, d_model=64, n_heads=4, n_key_value_heads=2)
    return load_model(cfg, device="cpu", dtype=torch.float64)


def _without_prefix(monkeypatch) -> None:
    monkeypatch.setattr(LayerRunner, "_enable_prefix", lambda self, rows: "switched off")


def _metrics(model, pairs):
    metric = logit_difference(model, pairs)
    io = torch.tensor([model.to_single_token(" " + a) for a, _ in pairs])
    s = torch.tensor([model.to_single_token(" " + b) for _, b in pairs])

    def tl_metric(logits):
        last = logits[:, -1]
        return (last.gather(1, io[:, None]) - last.gather(1, s[:, None])).mean()

    return metric, tl_metric


@pytest.mark.parametrize("model_name", ["tiny64", "llama64"])
@pytest.mark.parametrize("rows", [2, 7])
def test_equal_to_transformer_lens(request, model_name, rows, run_starts):
    """One site per pass (each run starts at its site's position) and passes of several
    positions (a run starts at its first): TransformerLens's sweep, to float64 rounding."""
    model = request.getfixturevalue(model_name)
    metric, tl_metric = _metrics(model, [("Mary", "John"), ("Eve", "Paul")])
    clean, corrupt = model.to_tokens(CLEAN), model.to_tokens(CORRUPT)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
    for site, tl_sweep in TL_BY_POSITION.items():
        if site == "resid_mid" and model_name == "llama64":
            continue
        run_starts.clear()
        ours = activation_patching(
            model, clean, corrupt, metric, site, max_batch_size=rows, progress=False
        )
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = tl_sweep(model, corrupt, cache, tl_metric)
        # TransformerLens returns float32 whatever the model's dtype
        torch.testing.assert_close(ours.mean().float(), ref, atol=1e-6, rtol=0, msg=site)
        assert max(run_starts) > clean.shape[1] // 2, (site, run_starts)


def test_padded_pairs_equal_the_sweep_without_reuse(tiny64, monkeypatch, run_starts):
    """Pairs of different lengths padded into one batch (the attention mask's key columns
    kept whole, its query rows cut): the same values as recomputing every position."""
    clean = [*CLEAN, "When Mary and John went to the big store, John gave a book to"]
    corrupt = [*CORRUPT, "When Mary and John went to the big store, Adam gave a book to"]
    metric = logit_difference(tiny64, [("Mary", "John"), ("Eve", "Paul"), ("Mary", "John")])
    kw = {"lengths": "pad", "max_batch_size": 3, "progress": False}
    sites = ("resid_pre", "head_out_by_pos", "mlp_out")
    reused = {s: activation_patching(tiny64, clean, corrupt, metric, s, **kw) for s in sites}
    assert max(run_starts) > 0
    _without_prefix(monkeypatch)
    for site in sites:
        plain = activation_patching(tiny64, clean, corrupt, metric, site, **kw)
        torch.testing.assert_close(reused[site].values, plain.values, atol=1e-10, rtol=0)


def test_a_metric_that_reads_activations_recomputes_every_position(tiny64, run_starts):
    """Such a metric reads every position of an activation, so its runs start at 0."""
    hook = hook_name("resid_post", 1)
    metric = activation_metric("mean", hook, lambda act, prompt: act.mean((1, 2)))
    activation_patching(
        tiny64, CLEAN, CORRUPT, metric, "resid_pre", max_batch_size=2, progress=False
    )
    assert set(run_starts) == {0}


def test_an_argument_without_a_rule_turns_reuse_off(tiny64, monkeypatch, run_starts):
    """A block argument that carries positions but has no rule to cut it: the runner says
    so, recomputes every position, and the values stay those of the full runs."""
    metric, _ = _metrics(tiny64, [("Mary", "John"), ("Eve", "Paul")])
    kw = {"max_batch_size": 2, "progress": False}
    want = activation_patching(tiny64, CLEAN, CORRUPT, metric, "resid_pre", **kw)

    def unknown(name, value, start, n_pos):
        if start and name == "attention_mask":
            raise UnknownArgument(f"block argument {name!r}: no rule to cut it")
        return suffix_argument(name, value, start, n_pos)

    monkeypatch.setattr(runner_module, "suffix_argument", unknown)
    runner = LayerRunner(tiny64, tiny64.to_tokens(CLEAN), reuse_prefix=[0, 1])
    assert runner.prefix is None and "no rule" in (runner.prefix_refusal or "")
    run_starts.clear()
    got = activation_patching(tiny64, CLEAN, CORRUPT, metric, "resid_pre", **kw)
    assert set(run_starts) == {0}
    torch.testing.assert_close(got.values, want.values, atol=1e-10, rtol=0)


def test_runs_from_a_position_refuse_bad_requests(tiny64):
    tokens = tiny64.to_tokens(CLEAN)
    plain = LayerRunner(tiny64, tokens)
    with pytest.raises(PatchingError, match="not asked for"):
        plain.run(torch.arange(2), 0, [], from_pos=3)
    with pytest.raises(PatchingError, match="rows of the 2 prompts"):
        LayerRunner(tiny64, tokens, reuse_prefix=[2])
    reusing = LayerRunner(tiny64, tokens, reuse_prefix=[1])
    assert reusing.prefix is not None and reusing.prefix_refusal is None
    for bad in (tokens.shape[1], -1):
        with pytest.raises(PatchingError, match="must be a position"):
            reusing.run(torch.tensor([1]), 0, [], from_pos=bad)
    with pytest.raises(ValueError, match="whose keys were not kept"):
        reusing.run(torch.tensor([0]), 0, [], from_pos=3)


def test_suffix_arguments_are_cut_by_name():
    n, start = 6, 2
    mask4 = torch.zeros(3, 1, n, n)
    assert suffix_argument("attention_mask", mask4, start, n).shape == (3, 1, n - start, n)
    mask2 = torch.ones(3, n)
    assert suffix_argument("attention_mask", mask2, start, n) is mask2  # keys: kept whole
    ids = torch.arange(n)[None].expand(3, -1)
    assert torch.equal(suffix_argument("position_ids", ids, start, n), ids[:, start:])
    cos, sin = torch.randn(3, n, 8), torch.randn(3, n, 8)
    got = suffix_argument("position_embeddings", (cos, sin), start, n)
    assert torch.equal(got[0], cos[:, start:]) and torch.equal(got[1], sin[:, start:])
    assert suffix_argument("position_ids", ids, 0, n) is ids  # from the start: unchanged
    with pytest.raises(UnknownArgument, match="alibi_bias"):
        suffix_argument("alibi_bias", torch.zeros(3, 4, n, n), start, n)
    with pytest.raises(UnknownArgument, match="attention_mask"):
        suffix_argument("attention_mask", torch.zeros(3, 1, n + 1, n + 1), start, n)


def test_prefix_keys_put_each_rows_prompt_in_front():
    """Recording keeps the keys of a run of the named rows (rows 1 and 3 of a batch);
    reusing puts each row's prompt's first positions in front of the new ones."""
    keys = PrefixKeys(torch.tensor([1, 3]))
    k, v = torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)
    assert keys.update(k, v, 0) == (k, v) and keys.recording
    with pytest.raises(ValueError, match="recording 2 rows"):
        keys.update(k[:1], v[:1], 1)
    reuse = PrefixKeys(torch.tensor([1, 3]), keys.recorded)
    reuse.prompt, reuse.start = torch.tensor([3, 1, 3]), 3
    new_k, new_v = torch.randn(3, 2, 2, 4), torch.randn(3, 2, 2, 4)
    got_k, got_v = reuse.update(new_k, new_v, 0)
    assert torch.equal(got_k, torch.cat([k[[1, 0, 1], :, :3], new_k], dim=-2))
    assert torch.equal(got_v, torch.cat([v[[1, 0, 1], :, :3], new_v], dim=-2))
    assert reuse.get_seq_length() == 3 and reuse.calls == {0: 1}


def test_reuse_holds_no_more_than_the_rows_of_one_pass(tiny64):
    """What reuse keeps between passes is each layer's keys and values of the prompts,
    copies holding nothing else (GPT-2's keys are views of a fused query-key-value
    tensor three times their size), less than one pass's rows need; what a pass adds is
    one layer's keys and values for its rows at a time."""
    cfg = tiny64.cfg
    tokens = torch.cat([tiny64.to_tokens(CLEAN), tiny64.to_tokens(CORRUPT)])
    base = torch.arange(2, 4)  # the corrupted prompts, whose copies are patched
    runner = LayerRunner(tiny64, tokens, reuse_prefix=base)
    assert runner.prefix is not None
    held = [t for pair in runner.prefix.recorded.values() for t in pair]
    assert len(held) == 2 * cfg.n_layers
    for t in held:
        assert t.shape == (len(base), cfg.n_heads, tokens.shape[1], cfg.d_head)
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
    kept = sum(t.numel() * t.element_size() for t in held)
    n_pos = tokens.shape[1]
    assert kept == prefix_bytes(cfg, len(base), n_pos)
    one_pass = rows_per_pass(tiny64, n_pos, 1, None) * row_bytes(tiny64, n_pos, 1)
    assert kept < one_pass, (kept, one_pass)


def test_keys_larger_than_a_pass_are_not_kept(tiny64, monkeypatch, run_starts):
    """Where the base run's keys and values would take more memory than one pass's rows
    (deep models, many prompts, small passes), the sweep recomputes every position."""
    from mi_cluster.methods.patching import activation as activation_module

    metric, _ = _metrics(tiny64, [("Mary", "John"), ("Eve", "Paul")])
    kw = {"max_batch_size": 2, "progress": False}
    want = activation_patching(tiny64, CLEAN, CORRUPT, metric, "resid_pre", **kw)
    monkeypatch.setattr(activation_module, "prefix_bytes", lambda *a: 2**40)
    run_starts.clear()
    got = activation_patching(tiny64, CLEAN, CORRUPT, metric, "resid_pre", **kw)
    assert set(run_starts) == {0}
    torch.testing.assert_close(got.values, want.values, atol=1e-10, rtol=0)
