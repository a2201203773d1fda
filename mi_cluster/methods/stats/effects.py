"""Mean effects per layer with bootstrap intervals and permutation tests.

- :func:`paired_test`: the mean of paired differences (e.g. each object word's
  subjecthood in subject position minus in object position), tested by flipping the
  signs of whole differences (exact under the null that each difference is symmetric
  about zero, as ``scipy.stats.permutation_test(..., permutation_type="samples")``).
- :func:`two_sample_test`: a difference of two means (e.g. objects' shift minus names'
  shift: the interaction), tested by shuffling group labels
  (``permutation_type="independent"``).
- :func:`correlation_test`: Pearson's correlation of a per-unit value with a covariate
  (e.g. a sequence's first principal coordinate with its length), tested by permuting
  the covariate (``permutation_type="pairings"``).
- :func:`correspondence_test`: whether matched items of two sets (the token "3" and
  "three") are more similar than random pairings, by re-pairing the items.

Both draw one set of resamples and apply it to every layer at once by a matrix product,
in chunks bounded by ``max_memory``; p-values are corrected across layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.methods.stats.corrections import benjamini_hochberg, holm
from mi_cluster.methods.stats.inputs import StatsInputError, check_layered
from mi_cluster.methods.stats.resampling import (
    DEFAULT_MAX_MEMORY,
    Alternative,
    BootstrapInterval,
    Draws,
    Seed,
    bootstrap_interval,
    chunk_rows,
    label_permutation_draws,
    make_generator,
    permutation_draws,
    permutation_p_value,
    sign_flip_draws,
)

__all__ = [
    "EffectTest",
    "correlation_test",
    "correspondence_test",
    "paired_test",
    "two_sample_test",
]


@dataclass(frozen=True)
class EffectTest:
    """A mean effect at every layer, with its uncertainty and its test.

    Fields:
        kind: ``"paired"`` (one-sample mean of differences), ``"two-sample"``
            (difference of two means), ``"correlation"`` (Pearson's r) or
            ``"correspondence"`` (matched minus average similarity).
        estimate: ``Float[Tensor, "layer"]``, the mean difference (or r).
        interval: bootstrap intervals (percentile and BCa) over units.
        effect_size: standardised effect: ``mean / sd`` of the differences (Cohen's
            ``d_z``) when paired, ``(mean_a - mean_b) / pooled sd`` (Cohen's ``d``) for two
            samples, r itself for a correlation; NaN where the spread is zero.
        p_value: permutation p-value per layer (``alternative`` as given).
        p_holm, p_bh: ``p_value`` corrected across layers (Holm; Benjamini-Hochberg).
        alternative: ``"two-sided"``, ``"greater"`` or ``"less"``.
        n_permutations: resamples of the test (all of them when ``exact``).
        exact: whether every sign pattern / relabelling was enumerated.
        n: units per sample: ``(n,)`` paired, ``(n_a, n_b)`` two-sample.
    """

    kind: str
    estimate: Float[Tensor, " layer"]
    interval: BootstrapInterval
    effect_size: Float[Tensor, " layer"]
    p_value: Float[Tensor, " layer"]
    p_holm: Float[Tensor, " layer"]
    p_bh: Float[Tensor, " layer"]
    alternative: str
    n_permutations: int
    exact: bool
    n: tuple[int, ...]


def _observed_and_null(
    values: Tensor,
    identity: Tensor,
    draws: Draws,
    weights: Callable[[Tensor], Tensor],
    max_memory: int,
) -> tuple[Tensor, Tensor]:
    """Each pattern, made a chunk at a time and turned into ``[resample, unit]`` weights
    by ``weights``, applied to the units' values (``[layer, unit]``) by one matrix product
    per chunk: ``(observed [layer], null [resample, layer])``. The observed statistic goes
    through the first chunk's product (the identity weights first), so it ties exactly
    with the identity among the resamples."""
    item = torch.finfo(values.dtype).bits // 8
    width = identity.numel()
    bytes_per = (width + values.shape[0]) * item * 2 + width * 8  # weights, products, draws
    out = []
    for k, chunk in enumerate(draws.chunks(chunk_rows(bytes_per, max_memory))):
        rows = weights(chunk).to(device=values.device, dtype=values.dtype)
        if k == 0:
            rows = torch.cat([identity[None].to(rows), rows])
        out.append(rows @ values.T)
    null = torch.cat(out)
    return null[0], null[1:]


def _result(kind, estimate, interval, *, size, p, alternative, n_perm, exact, n) -> EffectTest:
    return EffectTest(
        kind=kind,
        estimate=estimate,
        interval=interval,
        effect_size=size,
        p_value=p,
        p_holm=holm(p),
        p_bh=benjamini_hochberg(p),
        alternative=alternative,
        n_permutations=n_perm,
        exact=exact,
        n=n,
    )


def paired_test(
    diffs: Float[Tensor, "layer unit"],
    *,
    alternative: Alternative = "two-sided",
    n_permutations: int = 10_000,
    n_bootstrap: int = 10_000,
    confidence: float = 0.95,
    seed: Seed = 0,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> EffectTest:
    """Mean of paired differences per layer: bootstrap intervals and a sign-flip test
    (exact when ``2**n <= n_permutations``)."""
    d = check_layered(diffs, "diffs", 2)
    n = d.shape[1]
    if n < 2:
        raise StatsInputError(f"a paired test needs at least 2 units, got {n}")
    gen = make_generator(seed)
    flips = sign_flip_draws(n, n_permutations, gen)
    estimate = d.mean(-1)
    observed, null = _observed_and_null(d / n, torch.ones(n), flips, lambda f: f, max_memory)
    p = permutation_p_value(null, observed, alternative, flips.exact)
    interval = bootstrap_interval(
        lambda w: (d @ w.T) / w.sum(-1),
        torch.zeros(n, dtype=torch.long),
        n_resamples=n_bootstrap,
        confidence=confidence,
        seed=gen,
        bytes_per_resample=(n + d.shape[0]) * 16,
        max_memory=max_memory,
        dtype=d.dtype,
        device=d.device,
    )
    sd = d.std(-1)
    size = torch.where(sd > 0, estimate / sd, torch.full_like(sd, float("nan")))
    n_flips, exact = flips.n_resamples, flips.exact
    return _result(
        "paired",
        estimate,
        interval,
        size=size,
        p=p,
        alternative=alternative,
        n_perm=n_flips,
        exact=exact,
        n=(n,),
    )


def two_sample_test(
    a: Float[Tensor, "layer unit_a"],
    b: Float[Tensor, "layer unit_b"],
    *,
    alternative: Alternative = "two-sided",
    n_permutations: int = 10_000,
    n_bootstrap: int = 10_000,
    confidence: float = 0.95,
    seed: Seed = 0,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> EffectTest:
    """``mean(a) - mean(b)`` per layer: bootstrap intervals (each sample resampled
    within itself) and a label-permutation test (exact when the distinct splits number
    at most ``n_permutations``)."""
    a = check_layered(a, "a", 2)
    b = check_layered(b, "b", 2)
    if a.shape[0] != b.shape[0]:
        raise StatsInputError(f"a has {a.shape[0]} layers and b has {b.shape[0]}")
    na, nb = a.shape[1], b.shape[1]
    if na < 2 or nb < 2:
        raise StatsInputError(f"each sample needs at least 2 units, got {na} and {nb}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    pooled = torch.cat([a, b], dim=1).to(dtype)
    in_a = torch.cat([torch.ones(na, dtype=torch.bool), torch.zeros(nb, dtype=torch.bool)])
    gen = make_generator(seed)
    labels = label_permutation_draws(in_a, n_permutations, gen)
    exact = labels.exact

    def weights(lab: Tensor) -> Tensor:
        return torch.where(lab, 1.0 / na, -1.0 / nb).to(torch.float64)

    estimate = a.mean(-1).to(dtype) - b.mean(-1).to(dtype)
    observed, null = _observed_and_null(pooled, weights(in_a), labels, weights, max_memory)
    p = permutation_p_value(null, observed, alternative, exact)
    in_a_d = in_a.to(pooled.device)

    def stat(w: Tensor) -> Tensor:
        wa, wb = w * in_a_d, w * ~in_a_d
        return (pooled @ wa.T) / wa.sum(-1) - (pooled @ wb.T) / wb.sum(-1)

    interval = bootstrap_interval(
        stat,
        (~in_a).long(),
        n_resamples=n_bootstrap,
        confidence=confidence,
        seed=gen,
        bytes_per_resample=(na + nb + a.shape[0]) * 32,
        max_memory=max_memory,
        dtype=dtype,
        device=pooled.device,
    )
    pooled_var = ((na - 1) * a.var(-1) + (nb - 1) * b.var(-1)) / (na + nb - 2)
    sd = pooled_var.sqrt().to(dtype)
    size = torch.where(sd > 0, estimate / sd, torch.full_like(sd, float("nan")))
    n_perm = labels.n_resamples
    return _result(
        "two-sample",
        estimate,
        interval,
        size=size,
        p=p,
        alternative=alternative,
        n_perm=n_perm,
        exact=exact,
        n=(na, nb),
    )


def _standardise(v: Tensor) -> Tensor:
    c = v - v.mean(-1, keepdim=True)
    return c / c.norm(dim=-1, keepdim=True)


def correlation_test(
    x: Float[Tensor, "layer unit"],
    y: Float[Tensor, " unit"],
    *,
    alternative: Alternative = "two-sided",
    n_permutations: int = 10_000,
    n_bootstrap: int = 10_000,
    confidence: float = 0.95,
    seed: Seed = 0,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> EffectTest:
    """Pearson's r between each layer's values ``x`` and one covariate ``y``, with a
    permutation test (``y`` shuffled; exact when ``n! <= n_permutations``) and bootstrap
    intervals over units (pairs resampled together)."""
    x = check_layered(x, "x", 2)
    y = torch.as_tensor(y, dtype=x.dtype, device=x.device)
    n = x.shape[1]
    if y.shape != (n,):
        raise StatsInputError(f"y has shape {tuple(y.shape)}; expected one value per unit ({n})")
    if n < 3:
        raise StatsInputError(f"a correlation test needs at least 3 units, got {n}")
    for name, v in (("x", x), ("y", y[None])):
        flat = (v - v.mean(-1, keepdim=True)).norm(dim=-1) == 0
        if bool(flat.any()):
            raise StatsInputError(
                f"{name} is constant (at layer {int(flat.nonzero()[0])}): r is undefined"
            )
    gen = make_generator(seed)
    orders = permutation_draws(n, n_permutations, gen)
    exact = orders.exact
    zy = _standardise(y)

    def shuffled(order: Tensor) -> Tensor:  # [P, unit]: the standardised covariate, shuffled
        return zy[order.to(x.device)]

    observed, null = _observed_and_null(_standardise(x), zy, orders, shuffled, max_memory)
    p = permutation_p_value(null, observed, alternative, exact)

    def stat(w: Tensor) -> Tensor:  # weighted Pearson r, [layer, R]
        wn = w / w.sum(-1, keepdim=True)
        mx, my = x @ wn.T, wn @ y  # [layer, R], [R]
        sxy = (x * y) @ wn.T - mx * my
        sxx = (x * x) @ wn.T - mx**2
        syy = wn @ (y * y) - my**2
        return sxy / (sxx * syy).clamp_min(torch.finfo(x.dtype).tiny).sqrt()

    interval = bootstrap_interval(
        stat,
        torch.zeros(n, dtype=torch.long),
        n_resamples=n_bootstrap,
        confidence=confidence,
        seed=gen,
        bytes_per_resample=(n + x.shape[0]) * 32,
        max_memory=max_memory,
        dtype=x.dtype,
        device=x.device,
    )
    return _result(
        "correlation",
        observed,
        interval,
        size=observed,
        p=p,
        alternative=alternative,
        n_perm=orders.n_resamples,
        exact=exact,
        n=(n,),
    )


def correspondence_test(
    similarity: Float[Tensor, "layer item item"],
    *,
    n_permutations: int = 10_000,
    seed: Seed = 0,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> EffectTest:
    """Are matched items more similar than random pairings? ``similarity[l, i, j]`` compares
    item ``i`` of one set with item ``j`` of another (e.g. the token "3" with "three");
    the statistic is the mean matched similarity (the diagonal) minus the mean of all
    pairs, tested by re-pairing the second set (columns permuted; exact when
    ``n! <= n_permutations``, one-sided: matched pairs more similar). No bootstrap: the
    interval fields hold the estimate."""
    sim = torch.as_tensor(similarity)
    if sim.ndim != 3 or sim.shape[1] != sim.shape[2]:
        raise StatsInputError(f"similarity must be [layer, item, item], got {tuple(sim.shape)}")
    sim = check_layered(sim.reshape(sim.shape[0], -1), "similarity", 2).reshape(sim.shape)
    n = sim.shape[1]
    if n < 3:
        raise StatsInputError(f"a correspondence test needs at least 3 items, got {n}")
    orders = permutation_draws(n, n_permutations, make_generator(seed))
    exact = orders.exact
    # a pairing is a permutation matrix; its mean similarity is a linear map of sim
    flat = sim.reshape(sim.shape[0], n * n) / n - sim.mean((1, 2))[:, None] / n
    rows = torch.arange(n)

    def pairing(order: Tensor) -> Tensor:  # [P, n * n] permutation matrices, flattened
        patterns = torch.zeros((order.shape[0], n * n), dtype=torch.float64)
        patterns[torch.arange(order.shape[0])[:, None], rows * n + order] = 1.0
        return patterns

    observed, null = _observed_and_null(flat, pairing(rows[None])[0], orders, pairing, max_memory)
    p = permutation_p_value(null, observed, "greater", exact)
    interval = BootstrapInterval(observed, observed, observed, observed, observed, 0.0, 0)
    size = torch.full_like(observed, float("nan"))
    return _result(
        "correspondence",
        observed,
        interval,
        size=size,
        p=p,
        alternative="greater",
        n_perm=orders.n_resamples,
        exact=exact,
        n=(n,),
    )
