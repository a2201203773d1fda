"""Attribution patching (Nanda 2023; Syed et al. 2023): a first-order estimate of every
activation patch at once, from two forward passes and one backward pass.

For a site with base activation ``a`` and source activation ``a'``, the patched metric is
approximated by ``m(base) + (a' - a) . dm/da``, the gradient taken on the base run. The
estimate is exact for metrics linear in the site and degrades with curvature; compare it
with exact patching (:func:`correlation_with`) before trusting it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from mi_cluster.activations import hook_name
from mi_cluster.patching.activation import SITE_KINDS, PatchResult, _check_site, axis_labels
from mi_cluster.patching.inputs import prepare_pair, resolve_positions
from mi_cluster.patching.metrics import Metric, MetricInput, _check_output, validate
from mi_cluster.patching.runner import PatchingError

__all__ = ["ATTRIBUTION_SITES", "attribution_patching", "correlation_with"]

# site kind -> how the attribution is summed: over which axes of the activation
ATTRIBUTION_SITES: tuple[str, ...] = (
    "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out", "head_out_by_pos",
)  # fmt: skip


def _reduce(product: Tensor, site: str) -> Tensor:
    """``(a' - a) * grad`` summed to one value per (prompt, site index): ``[prompt, ...]``."""
    if site == "head_out":  # [prompt, pos, head, d] -> [prompt, head]
        return product.sum((1, 3))
    if site == "head_out_by_pos":  # -> [prompt, pos, head]
        return product.sum(-1)
    return product.sum(-1)  # [prompt, pos, d] -> [prompt, pos]


def attribution_patching(
    model: Any,
    clean: Sequence[str] | Tensor,
    corrupted: Sequence[str] | Tensor,
    metric: Metric,
    sites: Sequence[str] = ("head_out", "resid_pre"),
    *,
    direction: Literal["denoise", "noise"] = "denoise",
) -> dict[str, PatchResult]:
    """Estimated patched metric at every site of each kind in ``sites``, per prompt.

    Returns one :class:`PatchResult` per site kind (``site="attribution <kind>"``), with
    the same axes as :func:`~mi_cluster.patching.activation.activation_patching` and values
    ``m(base) + (a' - a) . grad``, so they are compared with exact patching directly.
    """
    bad = [s for s in sites if s not in ATTRIBUTION_SITES]
    if bad:
        raise PatchingError(f"attribution patching supports {ATTRIBUTION_SITES}, not {bad}")
    if direction not in ("denoise", "noise"):
        raise PatchingError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    if metric.reads:
        raise PatchingError(
            "attribution patching needs a metric of the logits (it differentiates them)"
        )
    pair = prepare_pair(model, clean, corrupted)
    validate(metric, pair.batch, pair.n_pos, model.cfg.d_vocab, model.cfg.dtype)
    layers = range(model.cfg.n_layers)
    names = {s: [hook_name(SITE_KINDS[s].act, layer) for layer in layers] for s in sites}
    for s in sites:
        _check_site(model, SITE_KINDS[s], list(layers))
    wanted = sorted({n for ns in names.values() for n in ns})
    positions = resolve_positions(metric.positions, pair)
    kw = {} if pair.mask is None else {"attention_mask": pair.mask}
    base_tokens, source_tokens = (
        (pair.corrupted, pair.clean) if direction == "denoise" else (pair.clean, pair.corrupted)
    )
    with torch.no_grad():  # forward 1: the source run
        source_logits, source_cache = model.run_with_cache(
            source_tokens, names_filter=lambda n: n in wanted, **kw
        )
    kept: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: Any, name: str) -> Tensor:
        if not act.requires_grad:  # frozen parameters: make the graph start here
            act = act.detach().requires_grad_(True)
        kept[name] = act
        return act

    hooks = [(n, lambda act, hook, n=n: keep(act, hook, n)) for n in wanted]
    with torch.enable_grad():  # forward 2 and the backward pass: the base run
        base_logits = model.run_with_hooks(base_tokens, fwd_hooks=hooks, **kw)
        prompt = torch.arange(pair.batch)
        at = positions.to(base_logits.device)[..., None].expand(-1, -1, base_logits.shape[-1])
        source_at = source_logits.gather(1, at)
        clean_at = source_at if direction == "denoise" else base_logits.detach().gather(1, at)
        value = metric.fn(MetricInput(prompt, base_logits.gather(1, at), {}, clean_at))
        _check_output(metric, value, pair.batch)
        grads = torch.autograd.grad(value.sum(), [kept[n] for n in wanted])
    grad = dict(zip(wanted, grads, strict=True))
    base_value = value.detach()
    with torch.no_grad():
        source_value = metric.fn(MetricInput(prompt, source_at, {}, clean_at)).detach()
    clean_value, corrupted_value = (
        (source_value, base_value) if direction == "denoise" else (base_value, source_value)
    )
    out = {}
    for s in sites:
        per_layer = [_reduce((source_cache[n] - kept[n].detach()) * grad[n], s) for n in names[s]]
        effect = torch.stack(per_layer)  # [layer, prompt, ...]
        values = base_value + effect.movedim(1, -1)  # [layer, ..., prompt]
        kind = SITE_KINDS[s]
        out[s] = PatchResult(
            values=values.detach(),
            site=f"attribution {s}",
            axes=("layer", *kind.axes),
            labels=axis_labels(model, pair, layers, kind.axes),
            direction=direction,
            metric=metric.name,
            clean=clean_value,
            corrupted=corrupted_value,
        )
    return out


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
