r"""Evaluating a hypothesised circuit (Wang et al. 2022, Section 4): does a set of heads,
with every other head knocked out, do what the model does?

For a metric F (here the IOI logit difference IO - S, averaged over prompts), M the model
and C the circuit, "X ablated" meaning every head outside X has its output (``hook_z``)
replaced by its mean over a reference distribution (the paper's choice: ABC prompts), or
resampled from a reference prompt of the same length:

- faithfulness: ``|F(M) - F(C)|`` and the share ``F(C) / F(M)`` the circuit keeps;
- completeness: for subsets K of C, ``|F(C \ K) - F(M \ K)|`` (a complete circuit loses
  what the model loses when K is removed), worst and mean over K;
- minimality: each head's marginal contribution ``F(C) - F(C \ {v})``;
- chance: the same F for random circuits of the same size drawn from the same layers, and
  the p-value of "C keeps more than such a circuit".

Intervals are bootstrap intervals over prompts. MLPs and embeddings are never ablated (as
in the paper); every evaluation runs many ablated copies of the prompts in one forward pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from mi_cluster.core.ioi_prompts import IOIPrompt
from mi_cluster.core.model_info import require_meaningful_logits
from mi_cluster.core.protocols import HookedModel
from mi_cluster.methods.stats.resampling import make_generator
from mi_cluster.studies.ioi.claims import (
    Head,
    ablation_drops,
    ablation_setup,
    bootstrap_ci,
    check_heads,
    random_head_sets,
    random_set_p_value,
)
from mi_cluster.studies.ioi.heads import prepared_logit_difference

__all__ = ["CircuitEvaluation", "evaluate_circuit"]


@dataclass(frozen=True)
class CircuitEvaluation:
    r"""A circuit's faithfulness, completeness and minimality, and its comparison with chance.

    Fields:
        heads: the circuit.
        method: ``"mean"`` or ``"resample"`` ablation of the heads outside it.
        model_metric: F(M), the model's mean logit difference; model_ci: its 95% interval.
        circuit_metric: F(C), with every head outside C ablated; circuit_ci: its interval.
        empty_metric: F with every head ablated (what no circuit keeps).
        kept: F(C) / F(M), the share of the model's metric the circuit keeps.
        faithfulness: |F(M) - F(C)|; faithfulness_ci: interval of F(M) - F(C) over prompts.
        completeness_mean, completeness_worst: |F(C \ K) - F(M \ K)| over the subsets K
            tried (``completeness_subsets`` of them, all non-empty ones when few).
        minimality: per head ``"LxHy"``, F(C) - F(C without it).
        random_mean: mean F of the random circuits; random_metrics: each one's F.
        p_value: how often a random circuit keeps at least F(C) (exact when every circuit
            of that shape was tried); null: what it was compared with.
        n_prompts: prompts averaged over.
    """

    heads: tuple[Head, ...]
    method: str
    model_metric: float
    model_ci: tuple[float, float]
    circuit_metric: float
    circuit_ci: tuple[float, float]
    empty_metric: float
    kept: float
    faithfulness: float
    faithfulness_ci: tuple[float, float]
    completeness_mean: float
    completeness_worst: float
    completeness_subsets: int
    minimality: dict
    random_mean: float
    random_metrics: tuple[float, ...]
    p_value: float
    null: str
    n_prompts: int

    def summary(self) -> dict:
        """A JSON-ready dict (heads as ``"LxHy"``)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "random_metrics"}
        out["heads"] = [f"L{a}H{b}" for a, b in self.heads]
        out["n_random"] = len(self.random_metrics)
        return out


def _subsets(heads: tuple[Head, ...], n: int, gen: torch.Generator) -> list[tuple[Head, ...]]:
    """All non-empty subsets when there are at most ``n``, else ``n`` random ones."""
    k = len(heads)
    if 2**k - 1 <= n:
        return [s for r in range(1, k + 1) for s in itertools.combinations(heads, r)]
    out = []
    for _ in range(n):
        mask = torch.rand(k, generator=gen) < 0.5
        if not mask.any():
            mask[int(torch.randint(k, (1,), generator=gen))] = True
        out.append(tuple(h for h, m in zip(heads, mask.tolist(), strict=True) if m))
    return out


def evaluate_circuit(
    model: HookedModel,
    prompts: Sequence[IOIPrompt],
    heads: Sequence[Head],
    *,
    reference: Sequence[IOIPrompt | str] | None = None,
    method: Literal["mean", "resample"] = "mean",
    n_subsets: int = 64,
    n_random: int = 200,
    seed: int = 0,
    rows_per_pass: int = 512,
) -> CircuitEvaluation:
    """Faithfulness, completeness and minimality of the circuit ``heads`` on ``prompts``
    (see the module docstring), against random circuits of the same size drawn from the
    same layers. ``reference``: the prompts whose mean (or samples) replace ablated heads
    (default: ``prompts`` themselves; the IOI paper uses ABC prompts)."""
    require_meaningful_logits(model, "a circuit evaluation")
    heads = tuple(dict.fromkeys(check_heads(model, heads))) if heads else ()
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    every = tuple((a, b) for a in range(n_layers) for b in range(n_heads))
    prep, replace = ablation_setup(model, prompts, reference, method, seed)
    gen = make_generator(seed)

    def outside(kept: Sequence[Head]) -> tuple[Head, ...]:
        keep = set(kept)
        return tuple(h for h in every if h not in keep)

    subsets = _subsets(heads, n_subsets, gen)
    if heads:
        randoms, exact = random_head_sets(model, heads, n_random, "same_layers", seed)
    else:  # the empty circuit is the only circuit of its size
        randoms, exact = [()], True
    sets = (
        [outside(heads), every]
        + [outside([h for h in heads if h != v]) for v in heads]
        + [outside([h for h in heads if h not in k]) for k in subsets]
        + [tuple(k) for k in subsets]
        + [outside(r) for r in randoms]
    )
    with torch.no_grad():
        clean = prepared_logit_difference(model, prep, [])  # [prompt]
        metric = clean[None] - ablation_drops(model, prep, sets, replace, rows_per_pass)
    f_c, f_empty = metric[0], metric[1]
    n_h, n_k = len(heads), len(subsets)
    minus_v = metric[2 : 2 + n_h]
    c_minus_k = metric[2 + n_h : 2 + n_h + n_k]
    m_minus_k = metric[2 + n_h + n_k : 2 + n_h + 2 * n_k]
    random_f = metric[2 + n_h + 2 * n_k :].mean(-1)
    complete = (c_minus_k.mean(-1) - m_minus_k.mean(-1)).abs()
    model_metric, circuit_metric = float(clean.mean()), float(f_c.mean())
    where = "every circuit" if exact else f"{len(randoms)} random circuits"
    return CircuitEvaluation(
        heads=heads,
        method=method,
        model_metric=model_metric,
        model_ci=bootstrap_ci(clean, seed),
        circuit_metric=circuit_metric,
        circuit_ci=bootstrap_ci(f_c, seed),
        empty_metric=float(f_empty.mean()),
        kept=circuit_metric / model_metric if model_metric else float("nan"),
        faithfulness=abs(model_metric - circuit_metric),
        faithfulness_ci=bootstrap_ci(clean - f_c, seed),
        completeness_mean=float(complete.mean()) if n_k else 0.0,
        completeness_worst=float(complete.max()) if n_k else 0.0,
        completeness_subsets=n_k,
        minimality={
            f"L{a}H{b}": float((f_c - minus_v[i]).mean()) for i, (a, b) in enumerate(heads)
        },
        random_mean=float(random_f.mean()),
        random_metrics=tuple(random_f.tolist()),
        p_value=random_set_p_value(circuit_metric, random_f, "greater", exact),
        null=f"{where} of {n_h} heads with as many from each layer, {method}-ablated the same way",
        n_prompts=len(prompts),
    )
