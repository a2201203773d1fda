"""The shipped toy IOI model: loads offline, meets its model card's numbers, and its
documented head roles hold. These are the ground truth later analyses must recover."""

import json
import subprocess
import sys

import pytest
import torch

from mi_cluster.heads import (
    IOIPrompt,
    attention_between,
    head_direct_logit_attribution,
    logit_difference,
)
from mi_cluster.models import load_model, model_info
from mi_cluster.toy import TOY_IOI_DIR
from mi_cluster.toy.data import eval_examples

CARD = json.loads((TOY_IOI_DIR / "training.json").read_text())


def prompts(kind, n=200):
    return [IOIPrompt(e.text, e.io, e.s) for e in eval_examples(kind, n=n)]


@pytest.fixture(scope="module")
def toy():
    return load_model("toy-ioi", device="cpu")


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


def test_documented_shortcut_head(toy):
    """MODEL_CARD.md: L0H1 attends from END to S2 and writes IO - S directly (it suppresses
    the repeated name); it carries the task. No head moves IO (no name movers)."""
    ps = prompts("held_out_pairs")
    to_s2 = attention_between(toy, ps, "end", "s2").mean(-1)
    to_io = attention_between(toy, ps, "end", "io").mean(-1)
    dla = head_direct_logit_attribution(toy, ps).mean(-1)
    assert to_s2[0, 1] >= 0.75 and dla[0, 1] >= 5.0
    assert dla[0, 1] > 0.8 * logit_difference(toy, ps).mean()
    last = toy.cfg.n_layers - 1
    assert to_io[last].max() < 0.2  # no last-layer head attends to IO


def test_train_toy_cli_help():
    out = subprocess.run(
        [sys.executable, "-m", "mi_cluster.cli", "train-toy", "--help"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "--steps" in out.stdout


@pytest.mark.slow
def test_retraining_reproduces_accuracy(tmp_path):
    from mi_cluster.toy.train import TrainConfig, train

    record = train(TrainConfig(**CARD["config"]), tmp_path / "toy", log=lambda line: None)
    for kind in ("held_out_pairs", "held_out_templates"):
        assert record["metrics"][kind]["accuracy"] == pytest.approx(
            CARD["metrics"][kind]["accuracy"], abs=0.02
        )
