"""IOI prompts for real tokenizers: GPT-2's (offline), the toy model's and templates in
both orders, positions checked against an independent token-id search."""

from __future__ import annotations

import pytest
import torch

from mi_cluster.core.ioi_prompts import (
    NAMES,
    TEMPLATES,
    IOIPrompt,
    abc_corruption,
    check_names,
    fill_template,
    ioi_positions,
    ioi_prompts,
    name_flip,
    replace_subject,
)
from mi_cluster.core.prompts import NotSingleTokenError
from mi_cluster.models.gpt2 import gpt2_tokenizer


class GPT2Tokens:
    """GPT-2's real tokenizer as TransformerLens's gpt2 uses it: BOS prepended."""

    def __init__(self):
        self.tokenizer = gpt2_tokenizer()

        class Cfg:
            n_ctx, default_prepend_bos = 1024, True

        self.cfg = Cfg()

    def to_tokens(self, text, prepend_bos=True):
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor([[self.tokenizer.bos_token_id] * bool(prepend_bos) + ids])

    # the rest of what mi_cluster asks of a model (core.protocols.HookedModel): no weights
    hook_dict: dict = {}

    def _no_weights(self, *args, **kwargs):
        raise NotImplementedError("a tokenizer-only stand-in for GPT-2 has no weights")

    run_with_hooks = run_with_cache = parameters = __call__ = _no_weights


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokens()


def test_the_papers_names_are_single_gpt2_tokens(gpt2):
    check_names(gpt2, NAMES)  # the paper chose names that are one GPT-2 token
    assert len(NAMES) == 109 and len(TEMPLATES) == 15  # the released dataset's lists
    with pytest.raises(NotSingleTokenError, match=r"2 of 3 names .*Zyxwv -> \[.*Qwrt"):
        check_names(gpt2, ["Mary", "Zyxwv", "Qwrtplk"])


@pytest.mark.parametrize("order", ["ABBA", "BABA"])
def test_positions_for_every_template_match_a_token_id_search(gpt2, order):
    tok = gpt2.tokenizer
    prompts = [
        IOIPrompt(
            fill_template(t, "Mary", "John", order, "store", "drink"), "Mary", "John", k, order
        )
        for k, t in enumerate(TEMPLATES)
    ]
    pos = ioi_positions(gpt2, prompts)
    mary, john = tok(" Mary")["input_ids"][0], tok(" John")["input_ids"][0]
    for k, p in enumerate(prompts):
        ids = gpt2.to_tokens(p.text)[0].tolist()
        assert ids[0] == tok.bos_token_id
        johns = [i for i, t in enumerate(ids) if t == john]
        assert int(pos.io[k]) == ids.index(mary)
        assert (int(pos.s1[k]), int(pos.s2[k])) == (johns[0], johns[-1])
        assert int(pos.end[k]) == len(ids) - 1 and ids[-1] == tok(" to")["input_ids"][0]
        assert int(pos.s1_next[k]) == johns[0] + 1
        assert (pos.io[k] < pos.s1[k]) == (order == "ABBA")
    assert (pos.io_id == mary).all() and (pos.s_id == john).all()


def test_generator_and_corruptions(gpt2):
    prompts = ioi_prompts(gpt2, 40, seed=3)
    assert prompts == ioi_prompts(gpt2, 40, seed=3) and prompts != ioi_prompts(gpt2, 40, seed=4)
    assert {p.order for p in prompts} == {"ABBA", "BABA"}
    pos = ioi_positions(gpt2, prompts)
    for corrupted in (abc_corruption(prompts), name_flip(prompts)):
        lengths = [len(gpt2.to_tokens(c.text)[0]) for c in corrupted]
        assert lengths == [int(e) + 1 for e in pos.end]  # same token positions as the clean
    for p, c in zip(prompts, abc_corruption(prompts), strict=True):
        words = [w.rstrip(",.") for w in c.text.split(" ") if w.rstrip(",.") in NAMES]
        assert len(words) == len(set(words)) == 3 and not {p.io, p.s} & set(words)
    for p, c in zip(prompts, name_flip(prompts), strict=True):
        names = [w.rstrip(",.") for w in c.text.split(" ") if w.rstrip(",.") in (p.io, p.s)]
        assert names.count(p.io) == 2 and names.count(p.s) == 1
    s2 = replace_subject(prompts[0], "s2", "Zoe")
    assert s2.text.count(prompts[0].s) == 1 and "Zoe" in s2.text
    with pytest.raises(NotSingleTokenError):
        ioi_prompts(gpt2, 2, names=["Mary", "John", "Zyxwv"])


def test_the_toy_generator_makes_the_same_kind_of_prompt():
    from mi_cluster.models.toy import load_toy_ioi
    from mi_cluster.models.toy.data import NAMES as TOY_NAMES
    from mi_cluster.models.toy.data import eval_examples

    toy = load_toy_ioi()
    examples = eval_examples("held_out_pairs", n=30)
    assert all(isinstance(e, IOIPrompt) and e.order in ("ABBA", "BABA") for e in examples)
    check_names(toy, TOY_NAMES)
    pos = ioi_positions(toy, examples)
    assert ((pos.io < pos.s1) == torch.tensor([e.order == "ABBA" for e in examples])).all()
