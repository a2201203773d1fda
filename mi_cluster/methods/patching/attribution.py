"""Attribution patching (Nanda 2023; Syed et al. 2023): a first-order estimate of every
activation patch at once, from two forward passes and one backward pass.

For a site with base activation ``a`` and source activation ``a'``, the patched metric is
approximated by ``m(base) + (a' - a) . dm/da``, the gradient taken on the base run. The
estimate is exact for metrics linear in the site and degrades with curvature; compare it
with exact patching (:func:`correlation_with`) before trusting it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mi_cluster.core.hooks import hook_name
from mi_cluster.core.protocols import HookedModel
from mi_cluster.methods.patching.activation import (
    SITE_KINDS,
    PatchResult,
    axis_labels,
    check_site,
    metric_hook_layer,
)
from mi_cluster.methods.patching.inputs import PromptPair, prepare_pair, resolve_positions
from mi_cluster.methods.patching.metrics import Metric, MetricInput, check_metric_output, validate
from mi_cluster.methods.patching.runner import PatchingError

__all__ = ["ATTRIBUTION_SITES", "attribution_patching", "correlation_with"]

# site kind -> how the attribution is summed: over which axes of the activation
ATTRIBUTION_SITES: tuple[str, ...] = (
    "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "attn_out_all", "mlp_out_all",
    "head_out", "head_out_by_pos",
)  # fmt: skip


def _reduce(product: Tensor, site: str) -> Tensor:
    """``(a' - a) * grad`` summed to one value per (prompt, site index): ``[prompt, ...]``."""
    if site == "head_out":  # [prompt, pos, head, d] -> [prompt, head]
        return product.sum((1, 3))
    if site == "head_out_by_pos":  # -> [prompt, pos, head]
        return product.sum(-1)
    if site in ("attn_out_all", "mlp_out_all"):  # [prompt, pos, d] -> [prompt]
        return product.sum((1, 2))
    return product.sum(-1)  # [prompt, pos, d] -> [prompt, pos]


def attribution_patching(
    model: HookedModel,
    clean: Sequence[str] | Tensor,
    corrupted: Sequence[str] | Tensor,
    metric: Metric,
    sites: Sequence[str] = ("head_out", "resid_pre"),
    *,
    direction: Literal["denoise", "noise"] = "denoise",
    lengths: Literal["equal", "pad"] = "equal",
) -> dict[str, PatchResult]:
    """Estimated patched metric at every site of each kind in ``sites``, per prompt.

    The metric may read the logits, activations (``metric.reads``, e.g. a subjecthood
    score of one layer's residual), or both; the gradient flows to every site before what
    it reads. ``lengths`` as for activation patching.

    Returns one :class:`PatchResult` per site kind (``site="attribution <kind>"``), with
    the same axes as :func:`~mi_cluster.methods.patching.activation.activation_patching` and values
    ``m(base) + (a' - a) . grad``, so they are compared with exact patching directly.
    """
    _check_request(sites, direction, metric)
    pair = prepare_pair(model, clean, corrupted, lengths)
    validate(metric, pair.batch, pair.n_pos, model.cfg.d_vocab, model.cfg.dtype)
    layers = range(model.cfg.n_layers)
    names = {s: [hook_name(SITE_KINDS[s].act, layer) for layer in layers] for s in sites}
    for s in sites:
        check_site(model, SITE_KINDS[s], list(layers))
    for name in metric.reads:
        metric_hook_layer(name)
    # The gradient at resid_mid is taken where attention's output is added to form it
    # (equal in every block that adds it, which patching checks): TransformerLens hooks
    # resid_mid at the MLP norm's input, which on some architectures (OPT) is a reshaped
    # copy of the residual, so a gradient there would miss the residual path.
    grad_at = {
        n: hook_name("attn_out", metric_hook_layer(n)) if SITE_KINDS[s].act == "resid_mid" else n
        for s, ns in names.items()
        for n in ns
    }
    run = _gradient_run(
        model, pair, metric, direction, sorted(set(grad_at) | set(grad_at.values()))
    )
    out = {}
    for s in sites:
        per_layer = [run.first_order(n, grad_at[n], s) for n in names[s]]
        # [layer, prompt, ...], gathered where the metric is (layers may sit on several GPUs)
        effect = torch.stack([e.to(run.base_value.device) for e in per_layer])
        values = run.base_value + effect.movedim(1, -1)  # [layer, ..., prompt]
        kind = SITE_KINDS[s]
        out[s] = PatchResult(
            values=values.detach(),
            site=f"attribution {s}",
            axes=("layer", *kind.axes),
            labels=axis_labels(model, pair, layers, kind.axes),
            direction=direction,
            metric=metric.name,
            clean=run.clean_value,
            corrupted=run.corrupted_value,
        )
    return out


def _check_request(sites: Sequence[str], direction: str, metric: Metric) -> None:
    bad = [s for s in sites if s not in ATTRIBUTION_SITES]
    if bad:
        raise PatchingError(f"attribution patching supports {ATTRIBUTION_SITES}, not {bad}")
    if direction not in ("denoise", "noise"):
        raise PatchingError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    if metric.shape:
        raise PatchingError(
            f"attribution patching needs a metric of one number per prompt (one gradient); "
            f"{metric.name!r} gives shape {metric.shape}"
        )


@dataclass(frozen=True)
class _GradientRun:
    """The source run's activations, the base run's (kept in the graph) and the metric's
    gradient at each, with the metric on both runs."""

    source: dict[str, Tensor]
    base: dict[str, Tensor]
    grad: dict[str, Tensor]
    base_value: Tensor
    clean_value: Tensor
    corrupted_value: Tensor

    def first_order(self, name: str, grad_name: str, site: str) -> Tensor:
        """``(a' - a) . grad`` at hook ``name`` (the gradient taken at ``grad_name``),
        reduced to the site kind's components, ``[prompt, ...]``."""
        delta = self.source[name] - self.base[name].detach()
        return _reduce(delta * self.grad[grad_name], site)


def _gradient_run(
    model: HookedModel, pair: PromptPair, metric: Metric, direction: str, wanted: list[str]
) -> _GradientRun:
    """Forward the source run; forward the base run keeping ``wanted`` in the graph, and
    take the metric's gradient at each (two forward passes, one backward)."""
    cached = sorted(set(wanted) | set(metric.reads))
    positions = resolve_positions(metric.positions, pair)
    base, source = ("corrupted", "clean") if direction == "denoise" else ("clean", "corrupted")

    def mask_kw(which: str) -> dict[str, Tensor]:
        mask = pair.attention_mask(which)
        return {} if mask is None else {"attention_mask": mask}

    def at(logits: Tensor) -> Tensor | None:
        if positions is None:
            return None
        index = positions.to(logits.device)[..., None].expand(-1, -1, logits.shape[-1])
        return logits.gather(1, index)

    tokens = {"clean": pair.clean, "corrupted": pair.corrupted}
    with torch.no_grad():  # forward 1: the source run
        source_logits, source_cache = model.run_with_cache(
            tokens[source], names_filter=lambda n: n in cached, **mask_kw(source)
        )
    kept: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: Any, name: str) -> Tensor:
        if name in wanted and not act.requires_grad:  # frozen weights: the graph starts here
            act = act.detach().requires_grad_(True)
        kept[name] = act
        return act

    hooks = [(n, lambda act, hook, n=n: keep(act, hook, n)) for n in cached]
    prompt = torch.arange(pair.batch)
    with torch.enable_grad():  # forward 2 and the backward pass: the base run
        base_logits = model.run_with_hooks(tokens[base], fwd_hooks=hooks, **mask_kw(base))
        source_at, base_at = at(source_logits), at(base_logits)
        clean_at = source_at if direction == "denoise" else at(base_logits.detach())
        reads = {n: kept[n] for n in metric.reads}
        value = metric.fn(MetricInput(prompt, base_at, reads, clean_at))
        check_metric_output(metric, value, pair.batch)
        grads = torch.autograd.grad(value.sum(), [kept[n] for n in wanted], allow_unused=True)
    grad = {
        n: torch.zeros_like(kept[n]) if g is None else g  # a site after what the metric reads
        for n, g in zip(wanted, grads, strict=True)
    }
    base_value = value.detach()
    with torch.no_grad():
        source_reads = {n: source_cache[n] for n in metric.reads}
        source_value = metric.fn(MetricInput(prompt, source_at, source_reads, clean_at)).detach()
    clean_value, corrupted_value = (
        (source_value, base_value) if direction == "denoise" else (base_value, source_value)
    )
    source_acts = {n: source_cache[n] for n in cached}
    return _GradientRun(source_acts, kept, grad, base_value, clean_value, corrupted_value)


def correlation_with(estimate: PatchResult, exact: PatchResult) -> float:
    """Pearson r between an attribution estimate and exact patching of the same sites
    (prompt-averaged patched metric, over every site)."""
    a, b = estimate.mean().flatten().double(), exact.mean().flatten().double()
    if a.shape != b.shape:
        raise PatchingError(
            f"results over different sites: {tuple(estimate.values.shape)} vs "
            f"{tuple(exact.values.shape)}"
        )
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))
