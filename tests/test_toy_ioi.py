"""The shipped toy IOI model: loads offline, meets its model card's numbers, and its
documented head roles hold. These are the ground truth later analyses must recover."""

import json
import random
import subprocess
import sys

import pytest
import torch

from mi_cluster.core.model_info import model_info
from mi_cluster.models.toy import TOY_IOI_DIR
from mi_cluster.models.toy.data import NAMES, eval_examples
from mi_cluster.studies.ioi.heads import (
    IOIPrompt,
    attention_between,
    copy_scores,
    head_direct_logit_attribution,
    logit_difference,
    patch_head_attention_effect,
    replace_subject,
)

CARD = json.loads((TOY_IOI_DIR / "training.json").read_text())


def prompts(kind, n=200):
    return [IOIPrompt(e.text, e.io, e.s) for e in eval_examples(kind, n=n)]


def test_loads_offline_attention_only(toy):
    assert model_info(toy).name == "toy-ioi" and model_info(toy).logits_meaningful
    _, cache = toy.run_with_cache("When Mary and John went to the store , John gave a lamp to")
    for layer in range(toy.cfg.n_layers):
        assert torch.count_nonzero(cache[f"blocks.{layer}.hook_mlp_out"]) == 0


@pytest.mark.parametrize("kind", ["held_out_pairs", "held_out_templates"])
def test_accuracy_matches_model_card(toy, kind):
    ld = logit_difference(toy, prompts(kind, 400))
    acc = (ld > 0).float().mean().item()
    assert acc == pytest.approx(CARD["metrics"][kind]["accuracy"], abs=0.01)
    assert acc >= ACCURACY_FLOOR[kind]


ACCURACY_FLOOR = {"held_out_pairs": 0.97, "held_out_templates": 0.97}


def replaced(ps, mention):
    """The prompts with S's ``mention`` ("s1" or "s2") replaced by a third name."""
    rng = random.Random(0)
    return [
        replace_subject(p, mention, rng.choice([n for n in NAMES if n not in (p.io, p.s)]))
        for p in ps
    ]


def test_documented_circuit(toy):
    """MODEL_CARD.md: duplicate-token heads L0H0 and L0H2 attend S2 -> S1; L2H2 finds S2
    from END through what they write there, and suppresses S (negative copying); no head
    prefers IO over S1 (no name movers); the answer rests on S being repeated."""
    ps = prompts("held_out_pairs")
    s2_s1 = attention_between(toy, ps, "s2", "s1").mean(-1)
    assert s2_s1[0, 0] >= 0.35 and s2_s1[0, 2] >= 0.45
    to_s2 = attention_between(toy, ps, "end", "s2").mean(-1)
    dla = head_direct_logit_attribution(toy, ps).mean(-1)
    neg = copy_scores(toy, NAMES, negative=True)
    assert to_s2[2, 2] >= 0.85 and dla[2, 2] >= 6.0 and neg[2, 2] >= 0.9
    corrupt = replaced(ps, "s2")
    for sender, floor in (((0, 2), 0.2), ((0, 0), 0.12)):
        eff = patch_head_attention_effect(toy, ps, corrupt, sender, [(2, 2)], at="s2", key="s2")
        assert eff.item() >= floor
    gap = attention_between(toy, ps, "end", "io") - attention_between(toy, ps, "end", "s1")
    assert gap.mean(-1).max() < 0.2
    clean = logit_difference(toy, ps).mean()
    assert logit_difference(toy, replaced(ps, "s1")).mean() < 0.6 * clean


def test_train_toy_cli_help():
    out = subprocess.run(
        [sys.executable, "-m", "mi_cluster.cli", "train-toy", "--help"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "--steps" in out.stdout


@pytest.mark.slow
def test_retraining_reproduces_accuracy(tmp_path):
    from mi_cluster.models.toy.train import TrainConfig, train

    record = train(TrainConfig(**CARD["config"]), tmp_path / "toy", log=lambda line: None)
    for kind in ("held_out_pairs", "held_out_templates"):
        assert record["metrics"][kind]["accuracy"] == pytest.approx(
            CARD["metrics"][kind]["accuracy"], abs=0.02
        )
