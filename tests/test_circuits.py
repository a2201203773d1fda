"""Circuit evaluation: the full model is perfectly faithful, the empty circuit keeps what
no head gives, each number equals an independent computation with ablation hooks."""

import pytest
import torch

from mi_cluster.models.toy.data import eval_examples
from mi_cluster.studies.ioi.circuits import evaluate_circuit
from mi_cluster.studies.ioi.claims import ablation_hooks
from mi_cluster.studies.ioi.heads import logit_difference


@pytest.fixture(scope="module")
def prompts():
    return eval_examples("held_out_pairs", n=16, seed=3)


def _all_heads(model):
    return [(a, b) for a in range(model.cfg.n_layers) for b in range(model.cfg.n_heads)]


def test_full_model_and_empty_circuit(toy, prompts):
    full = evaluate_circuit(toy, prompts, _all_heads(toy), n_random=5, n_subsets=4)
    assert full.faithfulness == pytest.approx(0, abs=1e-4) and full.kept == pytest.approx(1)
    empty = evaluate_circuit(toy, prompts, [], n_random=5)
    assert empty.circuit_metric == pytest.approx(empty.empty_metric, abs=1e-5)
    assert empty.faithfulness == pytest.approx(abs(empty.model_metric - empty.empty_metric))
    assert empty.minimality == {} and empty.completeness_subsets == 0


@pytest.mark.parametrize("method", ["mean", "resample"])
def test_numbers_equal_ablation_hooks_run_one_at_a_time(toy, prompts, method):
    circuit = [(0, 0), (0, 2), (1, 2), (2, 2)]
    ev = evaluate_circuit(toy, prompts, circuit, method=method, n_random=20)
    others = [h for h in _all_heads(toy) if h not in circuit]

    def metric(ablated):
        hooks = ablation_hooks(toy, prompts, ablated, method=method) if ablated else []
        return float(logit_difference(toy, prompts, hooks).mean())

    assert ev.model_metric == pytest.approx(metric([]), abs=1e-4)
    assert ev.circuit_metric == pytest.approx(metric(others), abs=1e-4)
    assert ev.empty_metric == pytest.approx(metric(_all_heads(toy)), abs=1e-4)
    without = metric(others + [(2, 2)])
    assert ev.minimality["L2H2"] == pytest.approx(ev.circuit_metric - without, abs=1e-4)
    assert ev.completeness_subsets == 15  # all non-empty subsets of four heads
    assert len(ev.random_metrics) == 20 and 0 < ev.p_value <= 1
    assert ev.faithfulness_ci[0] <= ev.model_metric - ev.circuit_metric <= ev.faithfulness_ci[1]


def test_circuit_beats_random_circuits_on_a_planted_model(toy, prompts):
    """L2H2 carries the toy model's answer (its card): with resample ablation, keeping the
    duplicate-token heads, L1H2 and L2H2 keeps far more than random circuits of that shape."""
    ev = evaluate_circuit(
        toy, prompts, [(0, 0), (0, 2), (1, 2), (2, 2)], method="resample", n_random=48
    )
    assert ev.circuit_metric > ev.random_mean + 2
    assert ev.p_value < 0.1
    assert torch.tensor(ev.random_metrics).max() < ev.circuit_metric + 1


def test_the_toy_cards_circuit_keeps_most_and_beats_random_circuits(toy):
    """The circuit the toy card documents (duplicate-token heads L0H0 and L0H2, the layer-1
    copiers L1H0, L1H1 and L1H3, and L2H2), every other head resampled from other prompts:
    on 64 held-out prompts it keeps most of the logit difference (measured 54%; 56% with
    another prompt seed) and random circuits of the same shape keep significantly less
    (measured p = 0.04 and 0.03; they keep about -0.4 of +6.6). Under ABC mean ablation it
    keeps far less (the IOI experiment reports 1%): its named roles are not the whole
    circuit, as the card and the README say."""
    card = [(0, 0), (0, 2), (1, 0), (1, 1), (1, 3), (2, 2)]
    prompts = eval_examples("held_out_pairs", n=64, seed=3)
    ev = evaluate_circuit(toy, prompts, card, method="resample", n_random=99)
    assert ev.kept > 0.5
    assert ev.p_value < 0.05 and ev.random_mean < ev.circuit_metric - 2
