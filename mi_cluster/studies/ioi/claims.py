"""Head-role claims as hypothesis tests: "these heads are name movers", with an effect
size, a confidence interval, a p-value and the null it was compared with.

- :func:`ablation_test`: the drop in logit difference when the heads are ablated (mean over
  a reference distribution, or resampled from it), bootstrap interval over prompts, p-value
  against random head sets of the same size (from the same layers, or from every layer).
- :func:`attention_test`: "these heads attend END -> IO more than END -> S", a paired test
  over prompts (sign flips of the per-prompt difference).
- :func:`copy_score_test`: the heads' copy score against random head sets.
- :func:`direct_effect_test`: the direct effect on the logits (path patching, noising), with
  an interval over prompts, against random head sets.

Comparison with other head sets: when few distinct sets of the same size exist, every one
of them (the claimed set included), and the p-value is exact: ``#{sets with an effect at
least as large} / #sets``; otherwise random draws and ``(1 + #{as large}) / (1 + n)``. Either
is uniform when the claimed set is itself drawn like the others (``tests/test_head_claims.py``
checks the false-positive rate). Its resolution is limited by how many sets exist: one head
against the 12 heads of its layer can never score below 1/12, so single heads are better
compared with every layer's heads (``pool="all"``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mi_cluster.collection.activations import pad_tokens
from mi_cluster.core.hooks import hook_name
from mi_cluster.core.ioi_prompts import IOIPrompt
from mi_cluster.core.model_info import require_meaningful_logits
from mi_cluster.core.prompts import tokenize_prompt
from mi_cluster.core.protocols import HookedModel
from mi_cluster.methods.stats import paired_test
from mi_cluster.methods.stats.resampling import Alternative, make_generator
from mi_cluster.studies.ioi.heads import (
    PaddedBatch,
    PreparedPrompts,
    attention_between,
    copy_hits,
    prepare_prompts,
    prepared_logit_difference,
    read_each_layer,
    run_hooked,
    token_mean,
)

__all__ = [
    "HeadClaim",
    "ablation_drops",
    "ablation_hooks",
    "ablation_setup",
    "ablation_test",
    "attention_test",
    "bootstrap_ci",
    "check_heads",
    "copy_score_test",
    "direct_effect_test",
    "random_head_sets",
    "random_set_p_value",
]

Head = tuple[int, int]
Pool = Literal["same_layers", "all"]


@dataclass(frozen=True)
class HeadClaim:
    """One tested claim about a set of heads.

    Fields:
        claim: the claim in words.
        heads: the heads, ``(layer, head)``.
        effect: the effect size (its unit in ``claim``).
        ci_low, ci_high: its 95% bootstrap (BCa) interval over prompts.
        p_value: against ``null``.
        null: what the effect was compared with.
        n_prompts: prompts the effect was measured on.
        p_min: the smallest p-value the null allows (1 / number of head sets when all
            are enumerated): a set that beats every other can score no lower.
        unit: the effect's unit (a figure's axis title).
    """

    claim: str
    heads: tuple[Head, ...]
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    null: str
    n_prompts: int
    p_min: float = 0.0
    unit: str = ""

    def supported(self, alpha: float = 0.05, min_effect: float = 0.0) -> bool:
        """p below ``alpha``, the interval excludes zero on the effect's side, and the
        effect is at least ``min_effect`` in size (a 1e-18 preference can be significant
        and still mean nothing)."""
        side = self.ci_low > 0 if self.effect >= 0 else self.ci_high < 0
        return self.p_value < alpha and side and abs(self.effect) >= min_effect

    def __str__(self) -> str:
        names = ", ".join(f"L{a}H{b}" for a, b in self.heads)
        floor = f" (smallest possible {self.p_min:.3g})" if self.p_min >= 0.01 else ""
        return (
            f"{self.claim} [{names}]: {self.effect:+.3f} (95% CI [{self.ci_low:+.3f}, "
            f"{self.ci_high:+.3f}]), p = {self.p_value:.3g}{floor} vs {self.null}; "
            f"n = {self.n_prompts}"
        )


def check_heads(model: HookedModel, heads: Sequence[Head]) -> tuple[Head, ...]:
    """The heads as distinct ``(layer, head)`` int pairs of ``model``, or an error."""
    out = tuple((int(a), int(b)) for a, b in heads)
    if not out or len(set(out)) != len(out):
        raise ValueError("give one or more distinct heads (layer, head)")
    for a, b in out:
        if not (0 <= a < model.cfg.n_layers and 0 <= b < model.cfg.n_heads):
            raise ValueError(
                f"head L{a}H{b} does not exist ({model.cfg.n_layers} x {model.cfg.n_heads})"
            )
    return out


def _pool_sets(
    model: HookedModel, heads: tuple[Head, ...], pool: Pool
) -> tuple[list[list[Head]], list[int]]:
    """Per group of the pool, (the heads to choose from, how many to choose)."""
    n_heads, n_layers = model.cfg.n_heads, model.cfg.n_layers
    if pool == "all":
        return [[(a, b) for a in range(n_layers) for b in range(n_heads)]], [len(heads)]
    if pool == "same_layers":
        layers = sorted({a for a, _ in heads})
        groups = [[(layer, b) for b in range(n_heads)] for layer in layers]
        return groups, [sum(1 for a, _ in heads if a == layer) for layer in layers]
    raise ValueError(f"pool must be 'same_layers' or 'all', got {pool!r}")


def random_head_sets(
    model: HookedModel, heads: Sequence[Head], n: int, pool: Pool = "same_layers", seed: int = 0
) -> tuple[list[tuple[Head, ...]], bool]:
    """Head sets like ``heads`` to compare a claim with, and whether they are exhaustive.

    ``pool="same_layers"``: as many heads from each layer as ``heads`` has there;
    ``pool="all"``: the same number from any layer. When no more than ``n`` distinct sets
    exist, every one of them (the claimed set included) is returned and the flag is True
    (an exact test); otherwise ``n`` random draws (seeded)."""
    heads = check_heads(model, heads)
    groups, counts = _pool_sets(model, heads, pool)
    if n < 1:
        raise ValueError(f"n_random must be positive, got {n}")
    total = math.prod(math.comb(len(g), k) for g, k in zip(groups, counts, strict=True))
    if total <= n:
        per_group = [itertools.combinations(g, k) for g, k in zip(groups, counts, strict=True)]
        return [sum(combo, ()) for combo in itertools.product(*per_group)], True
    gen = make_generator(seed)
    out = []
    for _ in range(n):
        chosen: list[Head] = []
        for g, k in zip(groups, counts, strict=True):
            chosen += [g[int(i)] for i in torch.randperm(len(g), generator=gen)[:k]]
        out.append(tuple(chosen))
    return out, False


def random_set_p_value(
    effect: float,
    null: Sequence[float] | Tensor,
    alternative: Alternative = "greater",
    exact: bool = False,
) -> float:
    """One-sided p-value of ``effect`` among other head sets' effects (ties count against).

    ``exact``: ``null`` holds every possible set, the claimed one included (p = rank / N);
    otherwise it holds random draws (p = (1 + #{as extreme}) / (1 + n))."""
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    null_t = torch.as_tensor(null, dtype=torch.float64)
    if null_t.numel() == 0:
        raise ValueError("the null needs at least one head set")
    tol = 1e-9 * max(1.0, abs(effect))
    extreme = (null_t >= effect - tol) if alternative == "greater" else (null_t <= effect + tol)
    count = int(extreme.sum())
    if exact:
        return max(count, 1) / len(null_t)
    return (1 + count) / (1 + len(null_t))


def _against_sets(
    claim: str,
    heads: tuple[Head, ...],
    per_unit: Tensor,
    null: Sequence[float],
    *,
    sets: list,
    exact: bool,
    pool: Pool,
    alternative: Alternative,
    seed: int,
    unit: str,
    note: str = "",
) -> HeadClaim:
    """A claim whose effect is the mean of ``per_unit`` (prompts or names; bootstrapped for
    the interval) in ``unit``, compared with the same effect of other head sets
    (``null``)."""
    effect = float(per_unit.mean())
    low, high = bootstrap_ci(per_unit, seed)
    where = "from the same layers" if pool == "same_layers" else "from any layer"
    count = f"all {len(sets)}" if exact else f"{len(sets)} random"
    return HeadClaim(
        claim=claim,
        heads=heads,
        effect=effect,
        ci_low=low,
        ci_high=high,
        p_value=random_set_p_value(effect, null, alternative, exact),
        null=f"{count} head sets of the same size {where}{note}",
        n_prompts=len(per_unit),
        p_min=1 / len(sets) if exact else 1 / (1 + len(sets)),
        unit=unit,
    )


def bootstrap_ci(per_prompt: Tensor, seed: int) -> tuple[float, float]:
    """The 95% BCa bootstrap interval of the prompts' mean (percentile when the bootstrap
    is degenerate: every prompt the same)."""
    iv = paired_test(
        per_prompt.double()[None], n_permutations=100, n_bootstrap=4000, seed=seed
    ).interval
    low, high = float(iv.bca_low[0]), float(iv.bca_high[0])
    if low != low:  # a degenerate bootstrap (every prompt the same): the percentile interval
        low, high = float(iv.low[0]), float(iv.high[0])
    return low, high


def ablation_drops(
    model: HookedModel, prep, sets: Sequence[Sequence[Head]], replace: dict[int, Tensor], rows: int
) -> Tensor:
    """Drop in logit difference, ``[set, prompt]``, when each set's heads' z are replaced
    (``replace[layer]`` broadcast to z). Several sets share one forward pass: the prompts
    are repeated once per set (up to ``rows`` rows a pass) and each copy ablates its set."""
    n, n_heads = prep.tokens.shape[0], model.cfg.n_heads
    clean = prepared_logit_difference(model, prep, [])
    per_pass = max(1, rows // n)
    out = []
    for start in range(0, len(sets), per_pass):
        chunk = sets[start : start + per_pass]
        k = len(chunk)
        chosen = torch.zeros(model.cfg.n_layers, k, n_heads, dtype=torch.bool)
        for i, hs in enumerate(chunk):
            for a, b in hs:
                chosen[a, i, b] = True

        layers = sorted({a for hs in chunk for a, _ in hs})
        hooks = [(hook_name("z", a), _set_ablation(chosen[a], replace[a], n)) for a in layers]
        repeated = PreparedPrompts(
            prep.tokens.repeat(k, 1), prep.mask.repeat(k, 1), prep.pos.repeat(k)
        )
        out.append(clean - prepared_logit_difference(model, repeated, hooks).view(k, n))
    return torch.cat(out)


def _reference(model: HookedModel, prompts: Sequence[IOIPrompt | str]) -> PaddedBatch:
    """Reference prompts as a padded batch (their names need not be located: ABC prompts
    mention neither IO nor S)."""
    texts = [p if isinstance(p, str) else p.text for p in prompts]
    tokens, mask, _ = pad_tokens(model, [tokenize_prompt(model, t) for t in texts], "right")
    return PaddedBatch(tokens, mask)


def _set_ablation(chosen: Tensor, replacement: Tensor, n: int):
    """Hook replacing, in the ``i``-th copy of ``n`` prompts, the z of the heads that
    ``chosen[i]`` marks."""

    def ablate(z: Tensor, hook: Any) -> Tensor:
        z = z.view(chosen.shape[0], n, *z.shape[1:])  # [set, prompt, pos, head, d_head]
        where = chosen.to(z.device)[:, None, None, :, None]
        new = torch.where(where, replacement.to(z.dtype), z)
        return new.reshape(-1, *z.shape[2:])

    return ablate


def _replacements(
    model: HookedModel,
    prep: PaddedBatch,
    ref: PaddedBatch,
    method: str,
    seed: int,
    same_prompts: bool,
) -> dict[int, Tensor]:
    """What each layer's z is replaced by: its mean over the reference's tokens, or, per
    prompt, the z of a random reference prompt of the same token length."""
    zs: dict[int, Tensor] = {}
    run_hooked(
        model, ref.tokens, ref.mask, read_each_layer("z", range(model.cfg.n_layers), zs.__setitem__)
    )
    if method == "mean":
        return {layer: token_mean(z, ref.mask) for layer, z in zs.items()}
    if method != "resample":
        raise ValueError(f"method must be 'mean' or 'resample', got {method!r}")
    gen = make_generator(seed)
    lengths, ref_lengths = prep.mask.sum(1), ref.mask.sum(1)
    chosen = []
    for i, n in enumerate(lengths.tolist()):
        same = (ref_lengths == n).nonzero()[:, 0]
        if same_prompts and len(same) > 1:
            same = same[same != i]  # resample from another prompt, not the prompt itself
        if len(same) == 0:
            raise ValueError(
                f"resample ablation: no reference prompt has {n} tokens like prompt {i}; "
                "give reference prompts of the same lengths (e.g. the same templates)"
            )
        chosen.append(int(same[torch.randint(len(same), (1,), generator=gen)]))
    width = prep.tokens.shape[1]
    return {layer: z[chosen, :width] for layer, z in zs.items()}


def ablation_setup(
    model: HookedModel,
    prompts: Sequence[IOIPrompt],
    reference: Sequence[IOIPrompt | str] | None,
    method: Literal["mean", "resample"],
    seed: int,
    repeated: bool = True,
) -> tuple[PreparedPrompts, dict[int, Tensor]]:
    """The prepared prompts and, per layer, what replaces an ablated head's ``hook_z``
    (its mean over ``reference``, default the prompts, or a resampled reference prompt)."""
    prep = prepare_prompts(model, prompts, repeated=repeated)
    ref = _reference(model, reference) if reference is not None else prep
    return prep, _replacements(model, prep, ref, method, seed, reference is None)


def ablation_hooks(
    model: HookedModel,
    prompts: Sequence[IOIPrompt],
    heads: Sequence[Head],
    reference: Sequence[IOIPrompt | str] | None = None,
    method: Literal["mean", "resample"] = "mean",
    seed: int = 0,
) -> list:
    """Hooks that ablate ``heads`` when running ``prompts`` (as :func:`ablation_test` does),
    to measure anything else under the ablation, e.g. which heads take over."""
    heads = check_heads(model, heads)
    prep, replace = ablation_setup(model, prompts, reference, method, seed, repeated=False)
    chosen = torch.zeros(model.cfg.n_layers, 1, model.cfg.n_heads, dtype=torch.bool)
    for a, b in heads:
        chosen[a, 0, b] = True
    layers = sorted({a for a, _ in heads})
    return [(hook_name("z", a), _set_ablation(chosen[a], replace[a], len(prompts))) for a in layers]


def ablation_test(
    model: HookedModel,
    prompts: Sequence[IOIPrompt],
    heads: Sequence[Head],
    *,
    reference: Sequence[IOIPrompt | str] | None = None,
    method: Literal["mean", "resample"] = "mean",
    alternative: Alternative = "greater",
    pool: Pool = "same_layers",
    n_random: int = 200,
    seed: int = 0,
    rows_per_pass: int = 512,
) -> HeadClaim:
    """Drop in logit difference (IO - S) when ``heads`` are ablated together, compared with
    the drops of other head sets of the same size.

    ``method="mean"`` replaces their output (``hook_z``) by its mean over the ``reference``
    prompts' tokens (default: ``prompts``); ``"resample"`` by its value, position by
    position, in a random reference prompt of the same token length. ``alternative``:
    ``"greater"`` for heads that help (a positive drop), ``"less"`` for heads that hurt
    (negative movers). A set ablated together can drop less than its heads do one at a
    time when other heads compensate (backup name movers). Sets are ablated many at a time,
    ``rows_per_pass`` prompt rows in one forward pass."""
    require_meaningful_logits(model, "an ablation test")
    heads = check_heads(model, heads)
    prep, replace = ablation_setup(model, prompts, reference, method, seed)

    sets, exact = random_head_sets(model, heads, n_random, pool, seed)
    drops = ablation_drops(model, prep, [heads, *sets], replace, rows_per_pass)
    claim = f"logit difference drop under {method} ablation"
    null = drops[1:].mean(-1).tolist()
    return _against_sets(
        claim,
        heads,
        drops[0],
        null,
        sets=sets,
        exact=exact,
        pool=pool,
        alternative=alternative,
        seed=seed,
        unit="drop in logit difference IO − S",
    )


def attention_test(
    model: HookedModel,
    prompts: Sequence[IOIPrompt],
    heads: Sequence[Head],
    *,
    query: str = "end",
    key: str = "io",
    versus: str = "s1",
    n_permutations: int = 10_000,
    seed: int = 0,
) -> HeadClaim:
    """The claim "the heads attend ``query`` -> ``key`` more than ``query`` -> ``versus``": the
    per-prompt difference of attention probabilities, averaged over the heads, tested by
    flipping the signs of whole prompts' differences (one-sided; exact for few prompts)."""
    heads = check_heads(model, heads)
    a = attention_between(model, prompts, query, key)
    b = attention_between(model, prompts, query, versus)
    diff = torch.stack([a[h] - b[h] for h in heads]).mean(0).double()  # [prompt]
    test = paired_test(
        diff[None], alternative="greater", n_permutations=n_permutations, n_bootstrap=100, seed=seed
    )
    low, high = bootstrap_ci(diff, seed)
    return HeadClaim(
        claim=f"attention {query}->{key} minus {query}->{versus}",
        heads=heads,
        effect=float(diff.mean()),
        ci_low=low,
        ci_high=high,
        p_value=float(test.p_value[0]),
        null="sign flips of the per-prompt differences (no preference)",
        n_prompts=len(prompts),
        p_min=2.0 ** -len(prompts) if test.exact else 1 / (1 + test.n_permutations),
        unit="attention probability difference",
    )


def copy_score_test(
    model: HookedModel,
    heads: Sequence[Head],
    names: Sequence[str],
    *,
    negative: bool = False,
    k: int = 5,
    variant: str = "embedding",
    prompts: Sequence[IOIPrompt] | None = None,
    pool: Pool = "all",
    n_random: int = 1000,
    seed: int = 0,
) -> HeadClaim:
    """The heads' mean copy score (:func:`~mi_cluster.studies.ioi.heads.copy_scores`;
    ``negative`` for
    negative movers) against head sets of the same size, by default from every layer (the
    IOI paper compares with the distribution over all heads). The interval is a bootstrap
    over names (``n_prompts`` counts names here; with ``variant="paper"``, the IO and S
    names of every prompt)."""
    heads = check_heads(model, heads)
    hits = copy_hits(model, names, k=k, negative=negative, variant=variant, prompts=prompts)
    scores = hits.double().mean(-1)  # [layer, head]
    per_name = torch.stack([hits[h].double() for h in heads]).mean(0)  # [name]
    sets, exact = random_head_sets(model, heads, n_random, pool, seed)
    null = [float(torch.stack([scores[h] for h in hs]).mean()) for hs in sets]
    claim = f"{'negative ' if negative else ''}copy score (top-{k}, {variant})"
    return _against_sets(
        claim,
        heads,
        per_name,
        null,
        sets=sets,
        exact=exact,
        pool=pool,
        alternative="greater",
        seed=seed,
        unit=f"fraction of names in the top {k}",
    )


def direct_effect_test(
    model: HookedModel,
    clean: Sequence[IOIPrompt],
    corrupted: Sequence[IOIPrompt],
    heads: Sequence[Head],
    *,
    alternative: Alternative = "greater",
    pool: Pool = "same_layers",
    n_random: int = 1000,
    seed: int = 0,
    final_ln: Literal["frozen", "recompute"] = "frozen",
    path: Any = None,
) -> HeadClaim:
    """The heads' direct effect on the logit difference: each head's path to the logits
    patched from the ``corrupted`` prompts into the clean run (noising, Wang et al.'s path
    patching), as the drop clean - patched summed over the set (positive for name movers,
    negative for negative movers: ``alternative="less"``). Other sets' effects are sums of
    the same single-head drops. ``final_ln="frozen"`` (default) keeps the final
    LayerNorm's scale at the clean run's, so a head is credited with what it writes towards
    the answer, not with shrinking the other heads' contributions by writing a larger
    vector (``"recompute"``: the paper's path patching, which counts both; see
    :func:`mi_cluster.methods.patching.path_patching`). ``path``: a
    :class:`mi_cluster.methods.patching.PatchResult` of path patching to the logits already computed
    on these prompts (one run serves every head, so several claims can share it)."""
    from mi_cluster.methods.patching import logit_difference, path_patching

    heads = check_heads(model, heads)
    if path is None:
        metric = logit_difference(model, [(p.io, p.s) for p in clean])
        texts = [p.text for p in clean], [p.text for p in corrupted]
        path = path_patching(model, *texts, metric, final_ln=final_ln, progress=False)
    if path.values.shape[-1] != len(clean):
        raise ValueError(
            f"path patching result has {path.values.shape[-1]} prompts, not {len(clean)}"
        )
    drop = (path.clean - path.values).double().cpu()  # [layer, head, prompt]
    per_prompt = torch.stack([drop[h] for h in heads]).sum(0)
    mean_drop = drop.mean(-1)
    sets, exact = random_head_sets(model, heads, n_random, pool, seed)
    null = [float(sum(mean_drop[h] for h in hs)) for hs in sets]
    ln = "frozen" if "frozen" in path.site else "recomputed"
    return _against_sets(
        f"direct effect (path to logits, final LN {ln})",
        heads,
        per_prompt,
        null,
        sets=sets,
        exact=exact,
        pool=pool,
        alternative=alternative,
        seed=seed,
        unit="drop in logit difference IO − S",
        note=", sums of single-head effects",
    )
