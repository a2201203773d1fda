"""The compiled IOI model: exact by construction, and every method recovers its card."""

from __future__ import annotations

import tempfile

import pytest
import torch

from mi_cluster.core.hooks import hook_name
from mi_cluster.core.ioi_prompts import abc_corruption, ioi_prompts, name_flip
from mi_cluster.methods.patching import activation_patching, path_patching
from mi_cluster.methods.patching import logit_difference as ld_metric
from mi_cluster.models.compiled import NAMES, OBJECTS, PLACES, TEMPLATES, save_compiled_ioi
from mi_cluster.models.loading import load_model
from mi_cluster.studies.ioi.heads import (
    attention_between,
    copy_scores,
    head_direct_logit_attribution,
    head_mean_ablation,
    logit_difference,
)

MOVERS = {(2, 0): 2.0, (2, 1): 1.5, (2, 2): -0.5}


@pytest.fixture(scope="module")
def compiled():
    return load_model("ioi-compiled", device="cpu", dtype=torch.float64)


@pytest.fixture(scope="module")
def prompts(compiled):
    return ioi_prompts(
        compiled, 40, templates=TEMPLATES, names=NAMES, places=PLACES, objects=OBJECTS
    )


def _only(values: torch.Tensor, expected: dict[tuple[int, int], float], atol: float = 1e-4) -> None:
    want = torch.zeros_like(values)
    for (layer, head), v in expected.items():
        want[layer, head] = v
    torch.testing.assert_close(values, want, atol=atol, rtol=0)


def test_the_construction_is_exact_in_float64():
    from transformers import AutoTokenizer, GPT2LMHeadModel

    with tempfile.TemporaryDirectory() as tmp:
        save_compiled_ioi(tmp)
        hf = GPT2LMHeadModel.from_pretrained(tmp, torch_dtype=torch.float64).eval()
        tok = AutoTokenizer.from_pretrained(tmp)
    vocab = tok.get_vocab()
    for template in TEMPLATES:
        for order in ("ABBA", "BABA"):
            from mi_cluster.core.ioi_prompts import fill_template

            text = fill_template(template, "Kate", "Paul", order, "park", "cup")
            ids = torch.tensor([[tok.bos_token_id] + tok(text)["input_ids"]])
            with torch.no_grad():
                out = hf(ids, output_hidden_states=True)
            for layer, h in enumerate(out.hidden_states[:-1]):  # the last one is after ln_f
                norms = h[0].pow(2).sum(-1)
                torch.testing.assert_close(
                    norms, torch.full_like(norms, 3 + 12 * layer), atol=1e-12, rtol=0
                )
            gap = out.logits[0, -1, vocab["Kate"]] - out.logits[0, -1, vocab["Paul"]]
            assert abs(float(gap) - 3.0) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_prompt_gets_the_constructed_answer(dtype):
    model = load_model("ioi-compiled", device="cpu", dtype=dtype)
    prompts = ioi_prompts(
        model, 200, templates=TEMPLATES, names=NAMES, places=PLACES, objects=OBJECTS, seed=1
    )
    assert {p.template for p in prompts} == {0, 1, 2} and {p.order for p in prompts} == {
        "ABBA",
        "BABA",
    }
    torch.testing.assert_close(
        logit_difference(model, prompts), torch.full((200,), 3.0), atol=1e-5, rtol=0
    )
    flipped = logit_difference(model, name_flip(prompts))  # S2 -> IO: now S is the answer
    torch.testing.assert_close(flipped, torch.full((200,), -3.0), atol=1e-5, rtol=0)
    abc = abc_corruption(prompts, names=NAMES)  # nothing repeats: no name is preferred
    with torch.no_grad():
        last = model(model.to_tokens([p.text for p in abc]))[:, -1]
    io = torch.tensor([model.to_single_token(p.io) for p in prompts])
    s = torch.tensor([model.to_single_token(p.s) for p in prompts])
    none = last.gather(1, io[:, None])[:, 0] - last.gather(1, s[:, None])[:, 0]
    torch.testing.assert_close(none, torch.zeros(200, dtype=dtype), atol=1e-5, rtol=0)
    # LayerNorm is a known constant per layer: the same at every position
    _, cache = model.run_with_cache(model.to_tokens(prompts[0].text))
    for layer in range(4):
        scale = cache[f"blocks.{layer}.ln1.hook_scale"]
        assert float(scale.max() / scale.min() - 1) < (3e-7 if dtype == torch.float32 else 1e-7)


def test_attribution_methods_recover_the_movers(compiled, prompts):
    _only(head_direct_logit_attribution(compiled, prompts).mean(-1).double(), MOVERS)
    positive, negative = (
        copy_scores(compiled, list(NAMES)),
        copy_scores(compiled, list(NAMES), negative=True),
    )
    _only(positive.double(), {(2, 0): 1.0, (2, 1): 1.0, (3, 0): 1.0})
    _only(negative.double(), {(2, 2): 1.0})
    _only(
        attention_between(compiled, prompts, "end", "io").mean(-1).double(),
        {(2, 0): 1, (2, 1): 1, (2, 2): 1},
    )
    _only(attention_between(compiled, prompts, "s2", "s1").mean(-1).double(), {(0, 0): 1})


def test_patching_recovers_every_edge(compiled, prompts):
    metric = ld_metric(compiled, [(p.io, p.s) for p in prompts])
    clean, corrupt = (
        [p.text for p in prompts],
        [p.text for p in abc_corruption(prompts, names=NAMES)],
    )
    to_logits = path_patching(compiled, clean, corrupt, metric, "logits", progress=False)
    _only(to_logits.mean() - to_logits.clean.mean(), {k: -v for k, v in MOVERS.items()})
    receivers = [(2, h, "q") for h in range(3)]
    to_movers = path_patching(compiled, clean, corrupt, metric, receivers, progress=False)
    _only(to_movers.mean() - to_movers.clean.mean(), {(1, 0): -1.0})
    to_si = path_patching(compiled, clean, corrupt, metric, [(1, 0, "k")], progress=False)
    _only(to_si.mean() - to_si.clean.mean(), {(0, 0): -3.0})  # L0H0 -> L1H0 via the key
    to_backup = path_patching(compiled, clean, corrupt, metric, [(3, 0, "q")], progress=False)
    # what the movers write keeps the backup off; corrupted, it lets the backup copy IO
    _only(to_backup.mean() - to_backup.clean.mean(), {(2, 0): 1.02, (2, 1): 1.02}, atol=0.01)
    frozen = path_patching(compiled, clean, corrupt, metric, final_ln="frozen", progress=False)
    torch.testing.assert_close(frozen.values, to_logits.values, atol=1e-6, rtol=0)
    noise = activation_patching(
        compiled, clean, corrupt, metric, "head_out", direction="noise", progress=False
    )
    effect = noise.mean() - noise.clean.mean()
    assert effect[0, 0] == pytest.approx(-3.0, abs=1e-4) and effect[1, 0] == pytest.approx(
        -3.0, abs=1e-4
    )
    distractors = [
        (layer, h)
        for layer in range(4)
        for h in range(12)
        if (layer, h) not in {(0, 0), (1, 0), (3, 0), *MOVERS}
    ]
    assert all(abs(float(effect[layer, h])) < 1e-6 for layer, h in distractors)
    denoise = activation_patching(compiled, clean, corrupt, metric, "head_out", progress=False)
    _only(denoise.normalised(), {(2, 0): 2 / 3, (2, 1): 0.5, (2, 2): -1 / 6})  # L0H0, L1H0: an AND


def test_the_backup_mover_takes_over_when_the_movers_are_ablated(compiled, prompts):
    single = head_mean_ablation(compiled, prompts).double()
    assert single[2, 0] > -2.0 + 0.2 and single[2, 1] > -1.5 + 0.2  # the backup makes up part
    tokens = compiled.to_tokens([p.text for p in prompts])
    with torch.no_grad():
        _, cache = compiled.run_with_cache(tokens)
    mean_z = cache[hook_name("z", 2)].mean((0, 1))

    def ablate(z, hook):
        z[:, :, :2] = mean_z[:2]
        return z

    both = logit_difference(compiled, prompts, [(hook_name("z", 2), ablate)])
    pattern = {}

    def keep(act, hook):
        pattern["p"] = act[:, 0].clone()

    logit_difference(
        compiled, prompts, [(hook_name("z", 2), ablate), (hook_name("pattern", 3), keep)]
    )
    assert float(both.mean()) > 1.4 and float(both.min()) > 1.0  # -0.5 without the backup
    end = torch.tensor([len(compiled.to_str_tokens(p.text)) - 1 for p in prompts])
    io = torch.tensor([compiled.to_str_tokens(p.text).index(p.io) for p in prompts])
    assert (pattern["p"][torch.arange(40), end, io] > 0.99).all()  # L3H0 now attends to IO
