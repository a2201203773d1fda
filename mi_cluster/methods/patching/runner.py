"""Running a model from any layer, on many patched copies of a batch at once.

Exact patching must recompute every layer after the patched one, but not the layers before
it (they are identical to the unpatched run), nor the unembedding of positions no metric
reads. TransformerLens's bridge offers ``start_at_layer``, but it still executes the blocks
before the start and discards their output; :class:`LayerRunner` instead calls the
bridge's own blocks from the start layer on, with the arguments the Hugging Face model
passed them (recorded once from a real forward pass: attention mask, position ids, ...),
so TransformerLens hooks inside the blocks fire as usual, and applies the output head only
at the positions asked for. On construction it checks itself against the model's own
logits, so an architecture it cannot run layer by layer is refused, never answered
wrongly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_cluster.core.hooks import hook_name
from mi_cluster.core.model_info import architecture_name, module_device
from mi_cluster.core.protocols import HookedModel
from mi_cluster.core.readout import residual_logits

__all__ = ["Hook", "LayerRunner", "PatchingError", "plan_passes", "rows_per_pass"]

Hook = tuple[str, Callable[[Tensor, Any], Tensor | None]]


class PatchingError(ValueError):
    """Patching inputs that cannot be used (lengths, answers, sites, metrics, models)."""


CPU_ROWS = 64  # measured: larger CPU batches slow down (activations leave the caches)


def rows_per_pass(
    model: HookedModel, n_pos: int, n_logit_positions: int, max_batch_size: int | None
) -> int:
    """Rows (patched prompt copies) per forward pass: ``max_batch_size`` if given; on the
    CPU 64 (a GPT-2-small head sweep ran 1.2x faster with 64-row than with 240-row
    passes); on a GPU as many as fit in a quarter of its free memory, estimating a row's
    largest intermediates (residual copies, MLP hidden, attention scores, logits)."""
    if max_batch_size is not None:
        if max_batch_size < 1:
            raise PatchingError(f"max_batch_size must be positive, got {max_batch_size}")
        return max_batch_size
    device = torch.device(getattr(model.cfg, "device", "cpu") or "cpu")
    if device.type != "cuda":
        return CPU_ROWS
    cfg = model.cfg
    item = torch.finfo(cfg.dtype).bits // 8
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    per_row = item * (
        n_pos * (8 * cfg.d_model + 2 * d_mlp + 3 * cfg.n_heads * n_pos)
        + 2 * n_logit_positions * cfg.d_vocab
    )
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(CPU_ROWS, min(16_384, free // 4 // per_row)))


def plan_passes(total: int, per_pass: int) -> list[tuple[int, int]]:
    """Forward passes over ``total`` sites numbered layer by layer: ``(first, stop)``
    ranges of at most ``per_pass`` sites. A pass may span layers at no extra cost, since
    each row starts at its own site's layer (:meth:`LayerRunner.run`)."""
    return [(s, min(total, s + per_pass)) for s in range(0, total, per_pass)]


def _is_cache(value: Any) -> bool:
    return type(value).__name__.endswith("Cache")  # Hugging Face KV caches: never reused


class LayerRunner:
    """One batch of prompts, run once with its activations cached, then re-run from any
    layer on expanded batches (patched copies of its prompts).

    Args:
        model: a TransformerLens bridge (or HookedTransformer-like model with ``blocks``).
        tokens: ``[batch, pos]`` token ids.
        attention_mask: ``[batch, pos]``, 1 for real tokens (for padded batches).
        cache_sites: extra hook names to keep from the base run (``resid_pre`` of every
            layer is always kept).
    """

    def __init__(
        self,
        model: HookedModel,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Tensor | None = None,
        cache_sites: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.tokens = tokens
        self.n_layers = model.cfg.n_layers
        self.batch = tokens.shape[0]
        recorded: dict[int, tuple[tuple, dict]] = {}

        def recorder(layer: int):
            def record(module: Any, args: tuple, kwargs: dict) -> None:
                recorded.setdefault(layer, (args[1:], kwargs))

            return record

        names = {hook_name("resid_pre", layer) for layer in range(self.n_layers)} | set(cache_sites)
        handles = [
            block.register_forward_pre_hook(recorder(layer), with_kwargs=True)
            for layer, block in enumerate(model.blocks)
        ]
        try:
            with torch.no_grad():
                kw = {} if attention_mask is None else {"attention_mask": attention_mask}
                self.logits, cache = model.run_with_cache(
                    tokens, names_filter=lambda n: n in names, **kw
                )
        finally:
            for handle in handles:
                handle.remove()
        self.cache = {n: cache[n] for n in names}
        # Each block's own arguments (Gemma 2/3 give each layer type its own attention mask,
        # Gemma 3 its own rotary embedding), with Hugging Face's KV caches dropped.
        self._args = [_without_caches(recorded[layer][0]) for layer in range(self.n_layers)]
        self._kwargs = [_without_caches(recorded[layer][1]) for layer in range(self.n_layers)]
        for kwargs in self._kwargs:
            kwargs.pop("use_cache", None)
        self._check()

    # -- the output head ------------------------------------------------------------
    def head(
        self, resid: Float[Tensor, "row k d_model"], scale: Float[Tensor, "row k 1"] | None = None
    ) -> Float[Tensor, "row k d_vocab"]:
        """Logits from final residuals (LayerNorm and unembedding; BERT's MLM transform).
        With ``scale``, the final LayerNorm divides by it instead of the residuals' own
        scale (frozen at another run's value, so that only what the residual says changes,
        not how much LayerNorm shrinks everything else)."""
        return residual_logits(self.model, resid, scale)

    def _check(self) -> None:
        """Every block and the head, run by this class from the embedding, must give the
        model's own residual stream entering each block and its logits."""
        every = torch.arange(self.tokens.shape[1]).expand(self.batch, -1)
        seen: dict[int, Tensor] = {}

        def keep(layer: int):
            def hook(act: Tensor, hook: Any) -> None:
                seen[layer] = act.detach().clone()  # the runner overwrites it in place

            return hook

        reads = [(hook_name("resid_pre", layer), keep(layer)) for layer in range(self.n_layers)]
        with torch.no_grad():
            got = self.run(torch.arange(self.batch), 0, reads, positions=every)
        for layer in range(1, self.n_layers):
            want = self.cache[hook_name("resid_pre", layer)]
            if not _close(seen[layer], want):
                self._refuse(f"block {layer - 1}'s output differs from the model's own")
        if got is None or not _close(got, self.logits):
            self._refuse("the output head does not reproduce the model's logits")

    def _refuse(self, why: str) -> None:
        raise PatchingError(
            f"mi_cluster cannot run {architecture_name(self.model)} layer by layer: re-run from "
            f"the cache, {why}"
        )

    # -- running ----------------------------------------------------------------------
    def _expand(self, value: Tensor, prompt: Tensor, done: dict[int, Tensor]) -> Tensor:
        """A recorded block argument for the rows of an expanded batch: tensors with one
        entry per prompt are indexed by each row's prompt (once per tensor, for every
        block that shares it); broadcastable ones are kept."""
        if not (value.ndim and value.shape[0] == self.batch and self.batch > 1):
            return value
        if id(value) not in done:
            done[id(value)] = value[prompt.to(value.device)]
        return done[id(value)]

    def run(
        self,
        prompt: Int[Tensor, " row"],
        start: int | Int[Tensor, " row"],
        hooks: Sequence[Hook] = (),
        positions: Int[Tensor, "row k"] | None = None,
        stop_layer: int | None = None,
        final_scale: Float[Tensor, "row k 1"] | None = None,
    ) -> Float[Tensor, "row k d_vocab"] | None:
        """Run copies of the prompts from their start layers to the end (or ``stop_layer``).

        Each row starts at its own layer, entering it with the base run's residual, so one
        pass can hold sites of several layers without recomputing any row's earlier
        layers: rows must be ordered by start layer, and block ``l`` runs only on the rows
        that have started, a prefix of the batch. Hooks therefore see ``[n_started, ...]``
        activations; a row index below ``n_started`` means the same row as in ``prompt``.

        Args:
            prompt: which prompt each row is a copy of.
            start: the first block of every row (an int), or of each row (non-decreasing).
            hooks: TransformerLens forward hooks, active during the run.
            positions: per row, the positions to return logits at; None: no logits.
            stop_layer: stop before this block (no logits then); default run to the end.
            final_scale: per row and position, the final LayerNorm's scale to use instead
                of the residual's own (see :meth:`head`).
        """
        rows = prompt.shape[0]
        row_start = torch.full((rows,), start) if isinstance(start, int) else start.cpu()
        if bool((row_start[1:] < row_start[:-1]).any()):
            raise PatchingError("rows must be ordered by start layer")
        expanded: dict[int, Any] = {}  # argument tensors shared by blocks are expanded once
        first, end = int(row_start[0]), self.n_layers if stop_layer is None else stop_layer
        resid = self._cached_rows(first, prompt).clone()
        # No gradients: exact patching needs none, and with autograd on, the bridge's BERT
        # blocks keep each run's graph alive (MiniLM grew ~2.6 MB per patched row and run).
        with torch.no_grad(), self.model.hooks(fwd_hooks=list(hooks)):
            for layer in range(first, end):
                n = int(torch.searchsorted(row_start, layer, right=True))
                joined = int(torch.searchsorted(row_start, layer, right=False))
                # a model split across devices: the residual and the block's arguments go
                # to where this block's weights are (a no-op on one device)
                dev = module_device(self.model.blocks[layer], resid.device)
                resid = resid.to(dev)
                if layer > first and n > joined:  # rows starting here enter from the cache
                    resid[joined:n] = self._cached_rows(layer, prompt[joined:n]).to(dev)
                a, kw = self._block_args(layer, prompt, n, dev, expanded)
                out = self.model.blocks[layer](resid[:n], *a, **kw)
                resid[:n] = out[0] if isinstance(out, tuple) else out
        if positions is None or stop_layer is not None:
            return None
        index = positions.to(resid.device)[..., None].expand(-1, -1, resid.shape[-1])
        return self.head(resid.gather(1, index), final_scale)

    def _block_args(
        self, layer: int, prompt: Tensor, n: int, dev: torch.device, done: dict[int, Tensor]
    ) -> tuple[tuple, dict]:
        """Block ``layer``'s recorded arguments for the first ``n`` of the rows ``prompt``
        (the rows that have started), on ``dev``."""

        def fit(x: Tensor) -> Tensor:
            return _rows(self._expand(x, prompt, done), n, len(prompt)).to(dev)

        return _map(self._args[layer], fit), _map(self._kwargs[layer], fit)

    def _cached_rows(self, layer: int, prompt: Tensor) -> Tensor:
        """The base run's residual entering block ``layer``, for the rows' prompts (on the
        device the cache keeps it, that block's under a device map)."""
        cached = self.cache[hook_name("resid_pre", layer)]
        return cached[prompt.to(cached.device)]


def _map(value: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``fn`` applied to every tensor in a block argument, through tuples, lists and dicts
    (rotary embeddings come as a ``(cos, sin)`` tuple)."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, tuple | list):
        return type(value)(_map(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return value


def _without_caches(value: Any) -> Any:
    """A recorded argument with Hugging Face's KV caches replaced by None (never reused)."""
    if _is_cache(value):
        return None
    if isinstance(value, tuple | list):
        return type(value)(_without_caches(v) for v in value)
    if isinstance(value, dict):
        return {k: _without_caches(v) for k, v in value.items()}
    return value


def _close(got: Tensor, want: Tensor) -> bool:
    scale = want.abs().max().clamp_min(1.0)
    return bool(torch.allclose(got.to(want), want, atol=1e-4 * float(scale), rtol=1e-4))


def _rows(value: Tensor, n: int, rows: int) -> Tensor:
    """The first ``n`` rows of an expanded block argument (broadcast ones as they are)."""
    if value.ndim and value.shape[0] == rows and n < rows:
        return value[:n]
    return value
