import pytest
import torch

from mi_cluster.core.model_info import LogitsUnavailableError
from mi_cluster.core.prompts import NotSingleTokenError
from mi_cluster.studies.ioi.heads import (
    IOIPrompt,
    attention_between,
    copy_scores,
    head_direct_logit_attribution,
    head_mean_ablation,
    ioi_positions,
    logit_difference,
    patch_head_attention_effect,
    replace_subject,
)

PROMPTS = [
    IOIPrompt("When Mary and John went to the store, John gave a lamp to", "Mary", "John"),
    IOIPrompt("When Adam and Eve went to the store, Adam gave a ball to", "Eve", "Adam"),
]


def test_positions(tiny):
    pos = ioi_positions(tiny, PROMPTS)
    tokens = tiny.to_str_tokens(PROMPTS[0].text)
    assert (
        tokens[pos.io[0]] == " Mary"
        and tokens[pos.s1[0]] == " John"
        and tokens[pos.s2[0]] == " John"
    )
    assert pos.s1[0] < pos.s2[0] and pos.end[0] == len(tokens) - 1
    assert pos.io_id[0] == tiny.to_single_token(" Mary")


def test_positions_errors(tiny):
    with pytest.raises(NotSingleTokenError, match="Zyxwv"):
        ioi_positions(
            tiny, [IOIPrompt("When Zyxwv and John went, John gave it to", "Zyxwv", "John")]
        )
    with pytest.raises(ValueError, match="unknown position 'start'"):
        attention_between(tiny, PROMPTS, "start", "io")
    with pytest.raises(ValueError, match="mentioned only once"):
        ioi_positions(tiny, [IOIPrompt("When Mary and John went, Paul gave it to", "Mary", "John")])
    once = IOIPrompt("When Mary and Paul went to the store, John gave a lamp to", "Mary", "John")
    logits = tiny(once.text)[0, -1]  # S mentioned once is fine for the logit difference
    expected = logits[tiny.to_single_token(" Mary")] - logits[tiny.to_single_token(" John")]
    assert logit_difference(tiny, [once])[0].item() == pytest.approx(expected.item(), abs=1e-4)


def test_logit_difference_and_attention_match_cache(tiny):
    pos = ioi_positions(tiny, PROMPTS)
    ld = logit_difference(tiny, PROMPTS)
    att = attention_between(tiny, PROMPTS, "end", "io")
    for i, p in enumerate(PROMPTS):
        logits, cache = tiny.run_with_cache(p.text)
        end = logits[0, -1]
        assert ld[i].item() == pytest.approx(
            (end[pos.io_id[i]] - end[pos.s_id[i]]).item(), abs=1e-4
        )
        for layer in range(2):
            ref = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, -1, pos.io[i]]
            torch.testing.assert_close(att[layer, :, i], ref, atol=1e-6, rtol=0)


def test_replace_subject():
    p = IOIPrompt("When Mary and John went to the store , John gave a lamp to", "Mary", "John")
    assert replace_subject(p, "s1", "Kate").text.startswith("When Mary and Kate went")
    assert replace_subject(p, "s2", "Kate").text.endswith(", Kate gave a lamp to")
    assert replace_subject(p, "s2", "Kate").s == "John"
    first = IOIPrompt("John and Mary met . Then John gave a lamp to", "Mary", "John")
    assert (
        replace_subject(first, "s1", "Kate").text == "Kate and Mary met . Then John gave a lamp to"
    )
    with pytest.raises(ValueError, match="'John' is not a word of"):
        replace_subject(IOIPrompt("Johnny went .", "Mary", "John"), "s1", "Kate")
    with pytest.raises(ValueError, match="mention must be"):
        replace_subject(p, "io", "Kate")


def test_induction_position_is_the_token_after_s1(tiny):
    pos = ioi_positions(tiny, PROMPTS)
    att = attention_between(tiny, PROMPTS, "s2", "s1_next")
    for i, (p, after_s1) in enumerate(zip(PROMPTS, [" went", " and"], strict=True)):
        _, cache = tiny.run_with_cache(p.text)
        assert tiny.to_str_tokens(p.text)[pos.s1[i] + 1] == after_s1
        for layer in range(2):
            ref = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, pos.s2[i], pos.s1[i] + 1]
            torch.testing.assert_close(att[layer, :, i], ref, atol=1e-6, rtol=0)


NAMES = ["Mary", "John", "Adam", "Eve"]


@pytest.mark.parametrize("negative", [False, True])
def test_copy_scores_match_a_forward_pass(tiny, negative):
    """Reference: each name run alone through the model with the positional embedding
    zeroed, so a layer-0 head attends only to it; its output (hook_result) through
    torch's LayerNorm and the unembedding gives the logits the copy score ranks."""
    k = 100  # of 378 tokens: a random model's scores then differ between heads
    scores = copy_scores(tiny, NAMES, k=k, negative=negative)
    assert scores.shape == (2, 4) and ((scores >= 0) & (scores <= 1)).all()
    hits = torch.zeros(4)
    for name in NAMES:
        tok = tiny.to_single_token(" " + name)
        with tiny.hooks(fwd_hooks=[("hook_pos_embed", lambda x, hook: torch.zeros_like(x))]):
            _, cache = tiny.run_with_cache(torch.tensor([[tok]]))
        out = cache["blocks.0.attn.hook_result"][0, 0]  # [head, d_model]
        out = -out if negative else out
        normed = torch.nn.functional.layer_norm(out, (out.shape[-1],), eps=tiny.cfg.eps)
        logits = normed @ tiny.W_U + tiny.b_U
        hits += (logits.topk(k, dim=-1).indices == tok).any(-1).float()
    assert len(set(hits.tolist())) > 1
    torch.testing.assert_close(scores[0], hits / len(NAMES))
    with pytest.raises(NotSingleTokenError, match="Zyxwv"):
        copy_scores(tiny, ["Zyxwv"])


def test_direct_logit_attribution_matches_cache(tiny):
    pos = ioi_positions(tiny, PROMPTS)
    dla = head_direct_logit_attribution(tiny, PROMPTS)
    assert dla.shape == (2, 4, 2)
    for i, p in enumerate(PROMPTS):
        _, cache = tiny.run_with_cache(p.text)
        scale = cache["ln_final.hook_scale"][0, -1]
        direction = tiny.W_U[:, pos.io_id[i]] - tiny.W_U[:, pos.s_id[i]]
        for layer in range(2):
            res = cache[f"blocks.{layer}.attn.hook_result"][0, -1]  # [head, d_model]
            ref = (res / scale) @ direction
            torch.testing.assert_close(dla[layer, :, i], ref.detach(), atol=1e-4, rtol=1e-4)


def test_mean_ablation_and_patching_shapes(tiny):
    eff = head_mean_ablation(tiny, PROMPTS)
    assert eff.shape == (2, 4) and torch.isfinite(eff).all()
    corrupt = [
        IOIPrompt(p.text.replace(f", {p.s} gave", ", Paul gave"), p.io, p.s) for p in PROMPTS
    ]
    out = patch_head_attention_effect(tiny, PROMPTS, corrupt, (0, 1), [(1, 0), (1, 2)])
    assert out.shape == (2,)
    same = patch_head_attention_effect(tiny, PROMPTS, PROMPTS, (0, 1), [(1, 0)])
    assert same.abs().max() < 1e-6  # patching a run into itself changes nothing
    with pytest.raises(ValueError, match="after the sender"):
        patch_head_attention_effect(tiny, PROMPTS, corrupt, (1, 1), [(1, 0)])


def test_patching_at_s2_matches_a_manual_patch(tiny):
    corrupt = [
        IOIPrompt(p.text.replace(f", {p.s} gave", ", Paul gave"), p.io, p.s) for p in PROMPTS
    ]
    got = patch_head_attention_effect(tiny, PROMPTS, corrupt, (0, 2), [(1, 3)], at="s2", key="s2")
    pos = ioi_positions(tiny, PROMPTS)
    diffs = []
    for i, (c, k) in enumerate(zip(PROMPTS, corrupt, strict=True)):
        _, corrupt_cache = tiny.run_with_cache(k.text)
        z_corrupt = corrupt_cache["blocks.0.attn.hook_z"][0, pos.s2[i], 2].clone()

        def patch(z, hook, i=i, z_corrupt=z_corrupt):
            z = z.clone()
            z[0, pos.s2[i], 2] = z_corrupt
            return z

        def pref(cache, i=i):
            pattern = cache["blocks.1.attn.hook_pattern"][0, 3, pos.end[i]]
            return pattern[pos.io[i]] - pattern[pos.s2[i]]

        _, clean_cache = tiny.run_with_cache(c.text)
        with tiny.hooks(fwd_hooks=[("blocks.0.attn.hook_z", patch)]):
            _, patched_cache = tiny.run_with_cache(c.text)
        diffs.append(pref(patched_cache) - pref(clean_cache))
    # a random model's effect is small (~1e-5), so compare relatively
    assert got.abs().item() > 1e-6
    assert got.item() == pytest.approx(torch.stack(diffs).mean().item(), rel=1e-3, abs=1e-9)
    with pytest.raises(ValueError, match="unknown position 'middle'"):
        patch_head_attention_effect(tiny, PROMPTS, corrupt, (0, 2), [(1, 3)], at="middle")


def test_logit_analyses_refuse_minilm(minilm):
    with pytest.raises(LogitsUnavailableError, match="direct logit attribution"):
        head_direct_logit_attribution(minilm, PROMPTS)


@pytest.mark.parametrize("variant", ["arena", "paper"])
def test_copy_score_variants_equal_a_hand_computation(tiny, variant):
    """ARENA's variant reads the name alone through MLP0; the paper's the residual after
    layer 0 at the names' positions in real prompts. Both by hand through one head's OV."""
    k = 100
    names = ["Mary", "John", "Eve", "Adam"]
    scores = copy_scores(tiny, names, k=k, variant=variant, prompts=PROMPTS)
    ln = torch.nn.functional.layer_norm
    d = tiny.cfg.d_model
    with torch.no_grad():
        if variant == "arena":
            ids = torch.tensor([tiny.to_single_token(" " + n) for n in names])
            x = tiny.W_E[ids]
            x = x + tiny.blocks[0].mlp(ln(x, (d,), eps=tiny.cfg.eps)[None])[0]
        else:
            pos = ioi_positions(tiny, PROMPTS)
            xs, ids = [], []
            for i, p in enumerate(PROMPTS):
                _, cache = tiny.run_with_cache(p.text)
                resid = cache["blocks.0.hook_resid_post"][0]
                xs += [resid[pos.io[i]], resid[pos.s1[i]]]
                ids += [int(pos.io_id[i]), int(pos.s_id[i])]
            order = [0, 2, 1, 3]  # the function lists every IO, then every S1
            x, ids = torch.stack(xs)[order], torch.tensor(ids)[order]
        for layer, head in ((0, 1), (1, 3)):
            out = ln(x, (d,), eps=tiny.cfg.eps) @ tiny.W_V[layer, head] + tiny.b_V[layer, head]
            logits = ln(out @ tiny.W_O[layer, head], (d,), eps=tiny.cfg.eps) @ tiny.W_U + tiny.b_U
            hits = (logits.topk(k, dim=-1).indices == ids[:, None]).any(-1).float().mean()
            assert scores[layer, head] == pytest.approx(float(hits))
    with pytest.raises(ValueError, match="variant"):
        copy_scores(tiny, names, variant="ioi")
