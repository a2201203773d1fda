"""Path patching (Wang et al. 2022, "Interpretability in the wild", Appendix B, Algorithm 1).

The effect of sender heads on receivers through the direct path only. With a base run
(the run patched into) and a source run (where the patched values come from):

1-2. run both, caching every head's output;
3.   re-run the base from the sender's layer with the sender head's output taken from the
     source run and every other head's output frozen to its base value (MLPs and
     LayerNorms recomputed), recording the receivers' inputs: the logits, or chosen heads'
     queries, keys or values;
4.   for head receivers, re-run the base with only those inputs patched, everything
     downstream recomputed, and measure the metric.

With ``direction="noise"`` (the paper's default) the base is the clean run and the source
the corrupted one. Senders are batched: one forward pass patches a whole layer's heads
(times every prompt), starting at that layer. Under ``torch.distributed`` the passes are
split across ranks, and every rank returns the whole result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from mi_cluster.collection.distributed import my_share, sum_across_ranks
from mi_cluster.core.hooks import hook_name
from mi_cluster.core.model_info import architecture_name, site_heads
from mi_cluster.core.progress import progress_bar
from mi_cluster.core.protocols import HookedModel
from mi_cluster.methods.patching.activation import (
    PatchResult,
    axis_labels,
    cached_runs,
    metric_hook_layer,
    metric_on_run,
    run_with_metric,
)
from mi_cluster.methods.patching.inputs import prepare_pair, resolve_positions
from mi_cluster.methods.patching.metrics import Metric, n_metric_positions, validate
from mi_cluster.methods.patching.runner import PatchingError, plan_passes, rows_per_pass

__all__ = ["path_patching"]

Receiver = tuple[int, int, str]  # (layer, head, "q" | "k" | "v")


def _check_receivers(model: HookedModel, receivers: str | Sequence[Receiver]) -> list[Receiver]:
    if receivers == "logits":
        return []
    if isinstance(receivers, str) or not receivers:
        raise PatchingError("receivers must be 'logits' or a list of (layer, head, 'q'|'k'|'v')")
    out = []
    for r in receivers:
        if len(r) != 3 or r[2] not in ("q", "k", "v"):
            raise PatchingError(f"receiver {r!r} must be (layer, head, 'q' | 'k' | 'v')")
        layer, head, which = int(r[0]), int(r[1]), r[2]
        n = site_heads(model, which)
        if not (0 <= layer < model.cfg.n_layers and 0 <= head < n):
            kind = "key/value head" if n != model.cfg.n_heads else "head"
            raise PatchingError(
                f"receiver L{layer}H{head} {which!r} does not exist: {which} has "
                f"{model.cfg.n_layers} layers x {n} {kind}s"
            )
        out.append((layer, head, which))
    return out


def path_patching(
    model: HookedModel,
    clean: Sequence[str] | Tensor,
    corrupted: Sequence[str] | Tensor,
    metric: Metric,
    receivers: str | Sequence[Receiver] = "logits",
    *,
    direction: Literal["denoise", "noise"] = "noise",
    final_ln: Literal["recompute", "frozen"] = "recompute",
    lengths: Literal["equal", "pad"] = "equal",
    max_batch_size: int | None = None,
    progress: bool = True,
) -> PatchResult:
    """Path-patch every head as a sender to ``receivers``; the metric per sender and prompt.

    Args:
        model: a TransformerLens model.
        clean: the clean prompts, as for
            :func:`~mi_cluster.methods.patching.activation.activation_patching`.
        corrupted: the corrupted prompts, as there.
        metric: what to measure, as there.
        receivers: ``"logits"``, or ``[(layer, head, "q" | "k" | "v"), ...]``: heads whose
            query, key or value input receives the path.
        direction: ``"noise"`` (source: corrupted, into the clean run; the IOI paper's) or
            ``"denoise"``.
        final_ln: for ``receivers="logits"``: ``"recompute"`` (the paper's: the final
            LayerNorm sees the patched residual) or ``"frozen"`` (it divides by the base
            run's scale, so a sender is credited only with what it writes in the unembedding's
            directions, as direct logit attribution does: a sender whose patched output is
            merely larger shrinks every other head's contribution through the LayerNorm,
            which ``"recompute"`` counts as its direct effect).
        lengths: as for activation patching.
        max_batch_size: rows (sender x prompt copies) per forward pass (default as for
            activation patching).
        progress: a progress bar over forward passes.

    Returns: a :class:`PatchResult` with axes ``("layer", "head")`` over senders.
    """
    if direction not in ("denoise", "noise"):
        raise PatchingError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    recv = _check_receivers(model, receivers)
    _check_final_ln(model, final_ln, recv, metric)
    pair = prepare_pair(model, clean, corrupted, lengths)
    validate(metric, pair.batch, pair.n_pos, model.cfg.d_vocab, model.cfg.dtype)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    z_names = [hook_name("z", layer) for layer in range(n_layers)]
    recv_names = sorted({hook_name(w, layer) for layer, _, w in recv})
    scale_name = ["ln_final.hook_scale"] if final_ln == "frozen" else []
    runs = cached_runs(model, pair, z_names + recv_names + list(metric.reads) + scale_name)
    positions = resolve_positions(metric.positions, pair)
    clean_logits = runs.logits("clean", positions)
    clean_value = metric_on_run(runs, "clean", metric, positions, clean_logits)
    corrupted_value = metric_on_run(runs, "corrupted", metric, positions, clean_logits)
    base, source = ("corrupted", "clean") if direction == "denoise" else ("clean", "corrupted")
    base_z = [runs.cache(name, base) for name in z_names]
    final_scale = None
    if final_ln == "frozen" and positions is not None:  # frozen needs logits: checked above
        scale = runs.cache("ln_final.hook_scale", base)  # [prompt, pos, 1]
        final_scale = scale.gather(1, positions.to(scale.device)[..., None])
    source_z = [runs.cache(name, source) for name in z_names]

    values = torch.zeros(
        (n_layers, n_heads, pair.batch, *metric.shape),
        dtype=clean_value.dtype,
        device=clean_value.device,
    )
    k = n_metric_positions(metric.positions, pair.n_pos)
    rows = rows_per_pass(model, pair.n_pos, k, max_batch_size)
    flat_values = values.view(n_layers * n_heads, pair.batch, *metric.shape)
    for first, stop in progress_bar(
        my_share(plan_passes(n_layers * n_heads, max(1, rows // pair.batch))),
        desc="path patching",
        unit="pass",
        enabled=progress,
    ):
        senders = torch.arange(first, stop)  # numbered layer by layer
        prompt = torch.arange(pair.batch).repeat(len(senders))
        sender_layer = (senders // n_heads).repeat_interleave(pair.batch)
        head = (senders % n_heads).repeat_interleave(pair.batch)
        frozen = _frozen_heads(z_names, base_z, source_z, sender_layer, head, prompt)
        if not recv:
            out = run_with_metric(
                runs,
                base,
                metric,
                prompt,
                row_start=sender_layer,
                hooks=frozen,
                positions=positions,
                clean_logits=clean_logits,
                final_scale=final_scale,
            )
        else:
            out = _to_receivers(
                runs,
                base,
                metric,
                prompt,
                sender_layer=sender_layer,
                frozen=frozen,
                recv=recv,
                positions=positions,
                clean_logits=clean_logits,
            )
        flat_values[senders] = out.view(len(senders), pair.batch, *metric.shape)
    sum_across_ranks(values)  # under torch.distributed each rank ran its share of passes
    return PatchResult(
        values=values,
        site="path to "
        + ("logits" if not recv else ", ".join(f"L{a}H{b}.{w}" for a, b, w in recv))
        + (" (final LayerNorm frozen)" if final_ln == "frozen" else ""),
        axes=("layer", "head"),
        labels=axis_labels(model, pair, range(n_layers), ("head",)),
        direction=direction,
        metric=metric.name,
        clean=clean_value,
        corrupted=corrupted_value,
        value_shape=metric.shape,
    )


def _check_final_ln(
    model: HookedModel, final_ln: str, recv: Sequence[Receiver], metric: Metric
) -> None:
    if final_ln not in ("recompute", "frozen"):
        raise PatchingError(f"final_ln must be 'recompute' or 'frozen', got {final_ln!r}")
    if final_ln == "frozen" and (recv or metric.positions is None):
        raise PatchingError(
            "final_ln='frozen' applies to receivers='logits' and a metric read from the logits"
        )
    if final_ln == "frozen" and (hasattr(model, "mlm_head") or not hasattr(model, "ln_final")):
        raise PatchingError(
            f"final_ln='frozen': a frozen final norm needs a model whose logits follow its final "
            f"norm; {architecture_name(model)}'s head (a masked-LM transform) has none to freeze"
        )


def _frozen_heads(
    z_names: Sequence[str],
    base_z: Sequence[Tensor],
    source_z: Sequence[Tensor],
    sender_layer: Tensor,
    head: Tensor,
    prompt: Tensor,
) -> list[tuple[str, Any]]:
    """Hooks on ``z`` from the first sender's layer on: every head of the rows that run a
    layer at its base value, but each row's sender, at the sender's layer, at its source
    value (rows are numbered layer by layer, so the rows running a layer are a prefix)."""
    hooks = []
    for layer in range(int(sender_layer[0]), len(z_names)):
        at = (sender_layer == layer).nonzero()[:, 0]

        def freeze(act: Tensor, hook: Any, layer=layer, r=at, p=prompt, h=head[at]) -> Tensor:
            act[:] = base_z[layer][p[: act.shape[0]]]
            act[r, :, h] = source_z[layer][p[r], :, h]
            return act

        hooks.append((z_names[layer], freeze))
    return hooks


def _to_receivers(
    runs, base, metric, prompt, *, sender_layer, frozen, recv, positions, clean_logits
):
    """Step 3 recording the receivers' inputs, then step 4 patching only them. A receiver
    at or before a row's sender layer keeps its base value: that row does not reach it
    (rows join at their sender's layer) or reaches it unchanged."""
    names = sorted({hook_name(w, layer) for layer, _, w in recv})
    captured = {name: runs.cache(name, base)[prompt].clone() for name in names}
    reached = [name for name in names if metric_hook_layer(name) > int(sender_layer[0])]
    if reached:

        def keeper(name: str):
            def keep(act: Tensor, hook: Any) -> None:
                captured[name][: act.shape[0]] = act.detach()

            return keep

        stop = max(metric_hook_layer(name) for name in reached) + 1
        hooks = frozen + [(name, keeper(name)) for name in reached]
        runs.runner.run(prompt + runs.offset(base), sender_layer, hooks, stop_layer=stop)
    by_name: dict[str, list[int]] = {}
    for layer, head, w in recv:
        by_name.setdefault(hook_name(w, layer), []).append(head)
    patches = []
    for name, heads in by_name.items():

        def patch(act: Tensor, hook: Any, heads: list[int] = heads, name: str = name) -> Tensor:
            act[:, :, heads] = captured[name][:, :, heads]
            return act

        patches.append((name, patch))
    start = min(layer for layer, _, _ in recv)
    return run_with_metric(
        runs,
        base,
        metric,
        prompt,
        row_start=start,
        hooks=patches,
        positions=positions,
        clean_logits=clean_logits,
    )
