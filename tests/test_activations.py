import dataclasses

import pytest
import torch
from transformers import BertModel

from mi_cluster.collection.activations import (
    Activations,
    Positions,
    collect,
    collect_many,
    site_hooks,
)
from mi_cluster.models.minilm import minilm_directory

PROMPTS = [
    "Adam went to the store. Lamp went to the",
    "Mary",
    "When Mary and John went to the store, John gave a lamp to",
    "the table",
]
ALL_SITES = ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "result", "z"]


def one_by_one(model, site, positions):
    def for_prompt(i):
        if isinstance(positions, Positions) and isinstance(positions.words, tuple):
            return dataclasses.replace(positions, words=positions.words[i])
        return positions

    parts = [
        collect(model, [p], site, for_prompt(i), progress=False) for i, p in enumerate(PROMPTS)
    ]
    return torch.cat([a.tensor for a in parts], dim=1)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize(
    "positions",
    ["last", "mean", "all", Positions.word(["Lamp", "Mary", "John", "table"], "first", -1)],
)
def test_batched_equals_one_prompt_at_a_time_causal(tiny, padding_side, positions):
    got = collect_many(
        tiny, PROMPTS, ALL_SITES, positions, batch_size=4, padding_side=padding_side, progress=False
    )
    for site in ALL_SITES:
        ref = one_by_one(tiny, site, positions)
        assert got[site].tensor.shape == ref.shape
        torch.testing.assert_close(got[site].tensor, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", ["last", "mean", Positions.word("went", "mean")])
def test_batched_equals_one_prompt_at_a_time_bert(minilm, positions):
    prompts = [p for p in PROMPTS if "went" in p] if not isinstance(positions, str) else PROMPTS
    got = collect(minilm, prompts, "resid_post", positions, batch_size=3, progress=False)
    ref = torch.cat(
        [collect(minilm, [p], "resid_post", positions, progress=False).tensor for p in prompts], 1
    )
    torch.testing.assert_close(got.tensor, ref, atol=1e-4, rtol=1e-4)


def test_minilm_residuals_equal_transformers_hidden_states(minilm):
    path = str(minilm_directory())
    ref_model = BertModel.from_pretrained(path, attn_implementation="eager").eval()
    enc = minilm.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**enc, output_hidden_states=True).hidden_states
    acts = collect(minilm, PROMPTS, "resid_post", "all", progress=False)
    assert acts.layer_labels == ("embed", "L0", "L1", "L2", "L3", "L4", "L5")
    for row, (i, (pos,)) in enumerate(zip(acts.prompt_index, acts.positions, strict=True)):
        for layer in range(7):
            torch.testing.assert_close(
                acts.tensor[layer, row], hidden[layer][i, pos], atol=1e-4, rtol=0
            )


def test_per_head_results_sum_to_attention_output(tiny, minilm):
    acts = collect_many(tiny, PROMPTS, ["result", "attn_out"], "mean", progress=False)
    b_o = tiny.b_O.detach()[:, None, :]
    torch.testing.assert_close(
        acts["result"].tensor.sum(2) + b_o, acts["attn_out"].tensor, atol=1e-5, rtol=1e-5
    )
    # BERT cannot hook per-head results; they are derived from hook_z and W_O.
    res = collect(minilm, PROMPTS[:2], "result", "last", progress=False)
    assert res.tensor.shape == (6, 2, 12, 384)
    assert "@ W_O" in res.hook_names[0]
    _, cache = minilm.run_with_cache(PROMPTS[1])
    dense = cache["blocks.3.attn.o.hook_out"][0, -2]  # last non-special token ([SEP] is last)
    torch.testing.assert_close(
        res.tensor[3, 1].sum(0) + minilm.b_O[3].detach(), dense, atol=1e-4, rtol=0
    )


def test_positions_and_metadata(tiny):
    acts = collect(tiny, PROMPTS, "resid_post", "last", progress=False)
    assert acts.tensor.shape == (3, 4, 64)
    assert acts.row_labels == ["the", "Mary", "to", "table"]
    assert acts.prompts == tuple(PROMPTS) and acts.prompt_index == (0, 1, 2, 3)
    everything = collect(tiny, PROMPTS, "resid_post", "all", progress=False)
    n_tokens = sum(len(tiny.to_tokens(p)[0]) for p in PROMPTS)
    assert everything.n_rows == n_tokens  # BOS kept: exclude_special=False by default
    no_bos = collect(
        tiny, PROMPTS, "resid_post", Positions.all(exclude_special=True), progress=False
    )
    assert no_bos.n_rows == n_tokens - len(PROMPTS)
    mean = collect(tiny, PROMPTS, "resid_post", "mean", progress=False)
    (mary_row,) = [r for r, i in enumerate(no_bos.prompt_index) if i == 1]  # "Mary": one token
    torch.testing.assert_close(mean.tensor[:, 1], no_bos.tensor[:, mary_row])
    word = collect(tiny, PROMPTS[:1], "resid_post", Positions.word("Lamp"), progress=False)
    assert word.tokens == ((" Lamp",),) and word.positions == ((7,),)


def test_site_hooks_labels():
    assert site_hooks("resid_post", 2) == [
        ("blocks.0.hook_resid_pre", "embed"),
        ("blocks.0.hook_resid_post", "L0"),
        ("blocks.1.hook_resid_post", "L1"),
    ]
    assert [h for h, _ in site_hooks("result", 2)] == [
        "blocks.0.attn.hook_result",
        "blocks.1.attn.hook_result",
    ]


def test_save_load_roundtrip(tiny, tmp_path):
    acts = collect(
        tiny, PROMPTS, "z", Positions.word(["Adam", "Mary", "John", "table"]), progress=False
    )
    path = acts.save(tmp_path / "acts.safetensors")
    back = Activations.load(path)
    assert torch.equal(back.tensor, acts.tensor)
    for field in (
        "site",
        "layer_labels",
        "hook_names",
        "prompts",
        "prompt_index",
        "positions",
        "tokens",
        "position_spec",
        "model_name",
    ):
        assert getattr(back, field) == getattr(acts, field), field


def test_save_is_atomic(tiny, tmp_path, monkeypatch):
    acts = collect(tiny, PROMPTS[:1], "resid_post", progress=False)
    target = tmp_path / "acts.safetensors"
    acts.save(target)
    before = target.read_bytes()
    import safetensors.torch

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        acts.save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["acts.safetensors"]


def test_clear_errors(tiny):
    with pytest.raises(ValueError, match="unknown site"):
        collect(tiny, PROMPTS, "resid_final", progress=False)
    with pytest.raises(TypeError, match="not one string"):
        collect(tiny, "Mary went", progress=False)
    with pytest.raises(ValueError, match="no prompts"):
        collect(tiny, [], progress=False)
    with pytest.raises(ValueError, match="more than the model's context of 64"):
        collect(tiny, ["Mary went to the store " * 20], progress=False)
    with pytest.raises(ValueError, match="2 words for 4 prompts"):
        collect(tiny, PROMPTS, positions=Positions.word(["a", "b"]), progress=False)
    with pytest.raises(ValueError, match="positions must be"):
        collect(tiny, PROMPTS, positions="first", progress=False)


def test_storage_dtype(tiny):
    acts = collect(tiny, PROMPTS, positions="mean", dtype=torch.float64, progress=False)
    assert acts.tensor.dtype == torch.float64 and acts.tensor.device.type == "cpu"
