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
(times every prompt), starting at that layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mi_cluster.activations import hook_name
from mi_cluster.patching.activation import (
    PatchResult,
    _logits_at,
    _run_with_metric,
    metric_on_run,
    runners,
)
from mi_cluster.patching.inputs import prepare_pair, resolve_positions
from mi_cluster.patching.metrics import Metric, validate
from mi_cluster.patching.runner import PatchingError

__all__ = ["path_patching"]

Receiver = tuple[int, int, str]  # (layer, head, "q" | "k" | "v")


def _check_receivers(model: Any, receivers: str | Sequence[Receiver]) -> list[Receiver]:
    if receivers == "logits":
        return []
    if isinstance(receivers, str) or not receivers:
        raise PatchingError("receivers must be 'logits' or a list of (layer, head, 'q'|'k'|'v')")
    out = []
    for r in receivers:
        if len(r) != 3 or r[2] not in ("q", "k", "v"):
            raise PatchingError(f"receiver {r!r} must be (layer, head, 'q' | 'k' | 'v')")
        layer, head, which = int(r[0]), int(r[1]), r[2]
        if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
            raise PatchingError(f"receiver head L{layer}H{head} does not exist")
        out.append((layer, head, which))
    return out


def path_patching(
    model: Any,
    clean: Sequence[str] | Tensor,
    corrupted: Sequence[str] | Tensor,
    metric: Metric,
    receivers: str | Sequence[Receiver] = "logits",
    *,
    direction: Literal["denoise", "noise"] = "noise",
    max_batch_size: int = 512,
    progress: bool = True,
) -> PatchResult:
    """Path-patch every head as a sender to ``receivers``; the metric per sender and prompt.

    Args:
        model, clean, corrupted, metric: as for
            :func:`~mi_cluster.patching.activation.activation_patching`.
        receivers: ``"logits"``, or ``[(layer, head, "q" | "k" | "v"), ...]``: heads whose
            query, key or value input receives the path.
        direction: ``"noise"`` (source: corrupted, into the clean run; the IOI paper's) or
            ``"denoise"``.
        max_batch_size: rows (sender x prompt copies) per forward pass.
        progress: a progress bar over forward passes.

    Returns: a :class:`PatchResult` with axes ``("layer", "head")`` over senders.
    """
    if direction not in ("denoise", "noise"):
        raise PatchingError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    recv = _check_receivers(model, receivers)
    pair = prepare_pair(model, clean, corrupted)
    validate(metric, pair.batch, pair.n_pos, model.cfg.d_vocab, model.cfg.dtype)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    z_names = [hook_name("z", layer) for layer in range(n_layers)]
    recv_names = sorted({hook_name(w, layer) for layer, _, w in recv})
    clean_run, corrupted_run = runners(model, pair, z_names + recv_names + list(metric.reads))
    positions = resolve_positions(metric.positions, pair)
    clean_logits = _logits_at(clean_run, positions)
    clean_value = metric_on_run(clean_run, metric, positions, clean_logits)
    corrupted_value = metric_on_run(corrupted_run, metric, positions, clean_logits)
    base, source = (
        (corrupted_run, clean_run) if direction == "denoise" else (clean_run, corrupted_run)
    )

    values = torch.empty(
        (n_layers, n_heads, pair.batch), dtype=clean_value.dtype, device=clean_value.device
    )
    heads_per_pass = max(1, max_batch_size // pair.batch)
    passes = [(layer, h) for layer in range(n_layers) for h in range(0, n_heads, heads_per_pass)]
    for sender_layer, first in tqdm(
        passes, desc="path patching", unit="pass", disable=not progress
    ):
        heads = torch.arange(first, min(n_heads, first + heads_per_pass))
        prompt = torch.arange(pair.batch).repeat(len(heads))
        head = heads.repeat_interleave(pair.batch)
        rows = torch.arange(len(prompt))
        frozen = []
        for layer in range(sender_layer, n_layers):

            def freeze(
                act: Tensor, hook: Any, layer=layer, s=sender_layer, p=prompt, r=rows, h=head
            ) -> Tensor:
                act[:] = base.cache[z_names[layer]][p]  # every head: its base value
                if layer == s:  # ... but the sender: its source value
                    act[r, :, h] = source.cache[z_names[layer]][p, :, h]
                return act

            frozen.append((z_names[layer], freeze))
        if not recv:
            out = _run_with_metric(
                base, metric, prompt, sender_layer, frozen, positions, clean_logits
            )
        else:
            out = _to_receivers(
                base, metric, prompt, sender_layer, frozen, recv, positions, clean_logits
            )
        values[sender_layer, heads] = out.view(len(heads), pair.batch)
    return PatchResult(
        values=values,
        site="path to "
        + ("logits" if not recv else ", ".join(f"L{a}H{b}.{w}" for a, b, w in recv)),
        axes=("layer", "head"),
        labels={
            "layer": [f"L{i}" for i in range(n_layers)],
            "head": [f"H{h}" for h in range(n_heads)],
        },
        direction=direction,
        metric=metric.name,
        clean=clean_value,
        corrupted=corrupted_value,
    )


def _to_receivers(
    base, metric, prompt, sender_layer, frozen, recv, positions, clean_logits
) -> Tensor:
    """Step 3 recording the receivers' inputs, then step 4 patching only them."""
    captured = {}  # hook name -> [row, pos, head, d]: base values, replaced where reached
    for name in {hook_name(w, layer) for layer, _, w in recv}:
        captured[name] = base.cache[name][prompt].clone()
    reached = [
        (n, layer) for layer, _, w in recv if layer > sender_layer for n in [hook_name(w, layer)]
    ]
    if reached:

        def keeper(name: str):
            def keep(act: Tensor, hook: Any) -> None:
                captured[name] = act.detach().clone()

            return keep

        hooks = frozen + [(name, keeper(name)) for name in sorted({n for n, _ in reached})]
        stop = max(layer for _, layer in reached) + 1
        base.run(prompt, sender_layer, hooks=hooks, stop_layer=stop)
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
    return _run_with_metric(base, metric, prompt, start, patches, positions, clean_logits)
