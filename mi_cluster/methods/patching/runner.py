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

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_cluster.core.hooks import hook_name
from mi_cluster.core.model_info import architecture_name, module_device
from mi_cluster.core.protocols import HookedModel
from mi_cluster.core.readout import residual_logits
from mi_cluster.methods.patching.prefix import (
    PrefixKeys,
    UnknownArgument,
    argument_names,
    attention_injector,
    suffix_argument,
)

__all__ = ["Hook", "LayerRunner", "PatchingError", "plan_passes", "row_bytes", "rows_per_pass"]

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
    free, _ = torch.cuda.mem_get_info(device)
    per_row = row_bytes(model, n_pos, n_logit_positions)
    return int(max(CPU_ROWS, min(16_384, free // 4 // per_row)))


def row_bytes(model: HookedModel, n_pos: int, n_logit_positions: int) -> int:
    """An estimate of one patched row's largest intermediates in a pass: residual
    copies, MLP hidden states, attention scores, logits."""
    cfg = model.cfg
    item = torch.finfo(cfg.dtype).bits // 8
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    return item * (
        n_pos * (8 * cfg.d_model + 2 * d_mlp + 3 * cfg.n_heads * n_pos)
        + 2 * n_logit_positions * cfg.d_vocab
    )


def plan_passes(total: int, per_pass: int) -> list[tuple[int, int]]:
    """Forward passes over ``total`` sites (in the order a sweep takes them): ``(first,
    stop)`` ranges of at most ``per_pass`` sites. A pass may span layers at no extra cost,
    since each row starts at its own site's layer (:meth:`LayerRunner.run`)."""
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
        reuse_prefix: rows of ``tokens`` whose copies :meth:`run` may start at a position
            (``from_pos``) as well as a layer, reading earlier positions' keys and values
            from the base run (kept for these rows only); done only for a causal model
            where a run from the middle of the prompts reproduces the model's own
            (``prefix_refusal`` says why not otherwise).

    Attributes:
        prefix: the kept keys and values (a ``PrefixKeys``) where runs may start at a
            position, else None.
        prefix_refusal: why they may not (``"not asked for"`` without ``reuse_prefix``),
            or None where they may.
    """

    def __init__(
        self,
        model: HookedModel,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Tensor | None = None,
        cache_sites: Sequence[str] = (),
        *,
        reuse_prefix: Sequence[int] | Tensor | None = None,
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
        # Gemma 3 its own rotary embedding), with Hugging Face's KV caches dropped (where
        # one stood is kept: prefix reuse puts its own there).
        self._cache_slots = [_cache_slot(*recorded[layer]) for layer in range(self.n_layers)]
        self._args = [_without_caches(recorded[layer][0]) for layer in range(self.n_layers)]
        self._kwargs = [_without_caches(recorded[layer][1]) for layer in range(self.n_layers)]
        for kwargs in self._kwargs:
            kwargs.pop("use_cache", None)
        self._arg_names = [
            argument_names(block, len(self._args[layer]))
            for layer, block in enumerate(model.blocks)
        ]
        self.prefix: PrefixKeys | None = None
        self.prefix_refusal: str | None = "not asked for"
        self._inject = False  # whether attention modules need the keys handed to them
        self._recorder: PrefixKeys | None = None  # set while recording keys and values
        self._check()
        if reuse_prefix is not None:
            rows = torch.as_tensor(reuse_prefix, dtype=torch.long).cpu()
            if len(rows) == 0 or not bool(((rows >= 0) & (rows < self.batch)).all()):
                raise PatchingError(f"reuse_prefix must name rows of the {self.batch} prompts")
            self.prefix_refusal = self._enable_prefix(rows)

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
        why = self._mismatch(0)
        if why is not None:
            self._refuse(why)

    def _mismatch(
        self, from_pos: int, every_position: bool = True, prompts: Tensor | None = None
    ) -> str | None:
        """How a run of the prompts (default all) from the embedding (from position
        ``from_pos``) differs from the model's own run, or None where it does not: each
        block's output at every position it computes, and the logits at every position
        (or, to hold one position's logits at a time, the last)."""
        n_pos = self.tokens.shape[1]
        at = torch.arange(n_pos) if every_position else torch.tensor([n_pos - 1])
        seen: dict[int, Tensor] = {}

        def keep(layer: int):
            def hook(act: Tensor, hook: Any) -> None:
                seen[layer] = act.detach().clone()  # the runner overwrites it in place

            return hook

        reads = [(hook_name("resid_pre", layer), keep(layer)) for layer in range(self.n_layers)]
        rows = torch.arange(self.batch) if prompts is None else prompts
        with torch.no_grad():
            got = self.run(rows, 0, reads, at.expand(len(rows), -1), from_pos=from_pos)
        for layer in range(1, self.n_layers):
            cached = self.cache[hook_name("resid_pre", layer)]
            want = cached[rows.to(cached.device), from_pos:]
            if not _close(seen[layer], want):
                return f"block {layer - 1}'s output differs from the model's own"
        want = self.logits[rows.to(self.logits.device)][:, at.to(self.logits.device)]
        if got is None or not _close(got, want):
            return "the output head does not reproduce the model's logits"
        return None

    def _enable_prefix(self, prompts: Tensor) -> str | None:
        """Record every layer's keys and values of ``prompts`` and check a run of them
        from the middle against the model's own; why prefix reuse is off, or None if on."""
        n_pos = self.tokens.shape[1]
        if getattr(self.model.cfg, "attention_dir", "causal") != "causal":
            return "the model's attention is bidirectional: every position reads every other"
        if n_pos < 2 or any(slot is None for slot in self._cache_slots):
            return "its blocks take no KV cache" if n_pos > 1 else "the prompts are one token"
        for inject in (False, True):  # the block hands attention the keys, or we do
            self._inject, self._recorder = inject, PrefixKeys(prompts)
            try:
                why = self._mismatch(0, every_position=False, prompts=prompts)
            finally:
                keys, self._recorder = self._recorder, None
            if why is None and all(keys.calls.get(i) == 1 for i in range(self.n_layers)):
                break
        else:
            self._inject = False
            return "its attention does not read the keys and values handed to it"
        self.prefix = PrefixKeys(prompts, keys.recorded)
        try:
            why = self._mismatch(n_pos // 2, every_position=False, prompts=prompts)
        except UnknownArgument as error:
            why = str(error)
        if why is not None:
            self.prefix = None
            return f"a run from position {n_pos // 2} differs from the model's own: {why}"
        return None

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
        *,
        from_pos: int = 0,
    ) -> Float[Tensor, "row k d_vocab"] | None:
        """Run copies of the prompts from their start layers to the end (or ``stop_layer``).

        Each row starts at its own layer, entering it with the base run's residual, so one
        pass can hold sites of several layers without recomputing any row's earlier
        layers: rows must be ordered by start layer, and block ``l`` runs only on the rows
        that have started, a prefix of the batch. Hooks therefore see ``[n_started, ...]``
        activations; a row index below ``n_started`` means the same row as in ``prompt``.
        With ``from_pos``, they see positions ``from_pos..`` only (index ``i`` is position
        ``from_pos + i``).

        Args:
            prompt: which prompt each row is a copy of.
            start: the first block of every row (an int), or of each row (non-decreasing).
            hooks: TransformerLens forward hooks, active during the run.
            positions: per row, the positions to return logits at; None: no logits.
            stop_layer: stop before this block (no logits then); default run to the end.
            final_scale: per row and position, the final LayerNorm's scale to use instead
                of the residual's own (see :meth:`head`).
            from_pos: compute positions ``from_pos..`` only, the earlier ones being the
                base run's (exact where nothing the hooks change lies before it); needs
                a runner built with ``reuse_prefix`` that could enable it, and rows
                copying prompts it names.
        """
        rows = prompt.shape[0]
        row_start = torch.full((rows,), start) if isinstance(start, int) else start.cpu()
        if bool((row_start[1:] < row_start[:-1]).any()):
            raise PatchingError("rows must be ordered by start layer")
        keys = self._keys(from_pos)
        expanded: dict[int, Any] = {}  # argument tensors shared by blocks are expanded once
        first, end = int(row_start[0]), self.n_layers if stop_layer is None else stop_layer
        resid = self._cached_rows(first, prompt).clone()
        # No gradients: exact patching needs none, and with autograd on, the bridge's BERT
        # blocks keep each run's graph alive (MiniLM grew ~2.6 MB per patched row and run).
        hooks = list(hooks)
        with (
            torch.no_grad(),
            self.model.hooks(fwd_hooks=hooks),
            self._injected(keys),
            self._per_head_results(hooks),
        ):
            for layer in range(first, end):
                n = int(torch.searchsorted(row_start, layer, right=True))
                joined = int(torch.searchsorted(row_start, layer, right=False))
                # a model split across devices: the residual and the block's arguments go
                # to where this block's weights are (a no-op on one device)
                dev = module_device(self.model.blocks[layer], resid.device)
                resid = resid.to(dev)
                if layer > first and n > joined:  # rows starting here enter from the cache
                    resid[joined:n] = self._cached_rows(layer, prompt[joined:n]).to(dev)
                a, kw = self._block_args(
                    layer, prompt, n, dev, expanded, from_pos=from_pos, keys=keys
                )
                if keys is not None:
                    keys.prompt = prompt[:n]
                out = self.model.blocks[layer](resid[:n, from_pos:].contiguous(), *a, **kw)
                resid[:n, from_pos:] = out[0] if isinstance(out, tuple) else out
        if positions is None or stop_layer is not None:
            return None
        return self._logits(resid, prompt, positions, final_scale, from_pos)

    def _logits(
        self,
        resid: Tensor,
        prompt: Tensor,
        positions: Tensor,
        final_scale: Tensor | None,
        from_pos: int,
    ) -> Tensor:
        """The rows' logits at ``positions``: from their final residuals, and from the base
        run's logits at positions before ``from_pos`` (which the run left as they were)."""
        pos = positions.to(resid.device)
        index = pos.clamp_min(from_pos)[..., None].expand(-1, -1, resid.shape[-1])
        logits = self.head(resid.gather(1, index), final_scale)
        row, k = (pos < from_pos).nonzero(as_tuple=True)
        if len(row):
            at = self.logits.device
            base = self.logits[prompt.to(at)[row.to(at)], pos[row, k].to(at)]
            logits[row, k] = base.to(logits)
        return logits

    def _keys(self, from_pos: int) -> PrefixKeys | None:
        """The keys and values a run hands attention: the recorder while recording, the
        base run's prefix when starting at ``from_pos``, else none."""
        if from_pos == 0:
            return self._recorder
        if not 0 < from_pos < self.tokens.shape[1]:
            raise PatchingError(f"from_pos must be a position of the prompts, got {from_pos}")
        if self.prefix is None:
            raise PatchingError(f"cannot start a run at a position: {self.prefix_refusal}")
        self.prefix.start = from_pos
        return self.prefix

    @contextmanager
    def _per_head_results(self, hooks: Sequence[Hook]) -> Iterator[None]:
        """Per-head attention results (``hook_result``, which the loader turns on) only
        when a hook reads them: without, attention applies its output projection once
        instead of once per head (GPT-2-small sweeps ran 2-3% faster), to the same sum."""
        on = bool(getattr(self.model.cfg, "use_attn_result", False))
        setter = getattr(self.model, "set_use_attn_result", None)
        needed = any(not isinstance(name, str) or "hook_result" in name for name, _ in hooks)
        if not on or setter is None or needed:
            yield
            return
        setter(False)
        try:
            yield
        finally:
            setter(True)

    @contextmanager
    def _injected(self, keys: PrefixKeys | None) -> Iterator[None]:
        """Hands ``keys`` to every attention module directly where its block does not."""
        handles = []
        if keys is not None and self._inject:
            handles = [
                block.attn.register_forward_pre_hook(attention_injector(keys), with_kwargs=True)
                for block in self.model.blocks
            ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _block_args(
        self,
        layer: int,
        prompt: Tensor,
        n: int,
        dev: torch.device,
        done: dict[int, Tensor],
        *,
        from_pos: int = 0,
        keys: PrefixKeys | None = None,
    ) -> tuple[tuple, dict]:
        """Block ``layer``'s recorded arguments for the first ``n`` of the rows ``prompt``
        (the rows that have started), on ``dev``, at positions ``from_pos..``, with
        ``keys`` where the model's KV cache stood."""
        n_pos = self.tokens.shape[1]

        def fit(x: Tensor) -> Tensor:
            return _rows(self._expand(x, prompt, done), n, len(prompt)).to(dev)

        names = self._arg_names[layer]
        if from_pos and names is None:
            raise UnknownArgument("the block's positional arguments have no names")
        args = [
            suffix_argument(names[i] if names else "", _map(v, fit), from_pos, n_pos)
            for i, v in enumerate(self._args[layer])
        ]
        kwargs = {
            k: suffix_argument(k, _map(v, fit), from_pos, n_pos)
            for k, v in self._kwargs[layer].items()
        }
        slot = self._cache_slots[layer]
        if keys is not None and slot is not None:
            if isinstance(slot, int):
                args[slot] = keys
            else:
                kwargs[slot] = keys
        return tuple(args), kwargs

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


def _cache_slot(args: tuple, kwargs: dict) -> int | str | None:
    """Where a block's recorded arguments held the model's KV cache: the index of a
    positional argument after the hidden states, a keyword, or None."""
    for i, value in enumerate(args):
        if _is_cache(value):
            return i
    return next((k for k, v in kwargs.items() if _is_cache(v)), None)


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
    """Equal to a float32 forward pass's rounding (compared one prompt at a time, so that
    the comparison of every position's logits holds no more than one prompt's copies)."""
    scale = max([1.0] + [float(w.abs().max()) for w in want])
    return all(
        torch.allclose(g.to(w), w, atol=1e-4 * scale, rtol=1e-4)
        for g, w in zip(got, want, strict=True)
    )


def _rows(value: Tensor, n: int, rows: int) -> Tensor:
    """The first ``n`` rows of an expanded block argument (broadcast ones as they are)."""
    if value.ndim and value.shape[0] == rows and n < rows:
        return value[:n]
    return value
