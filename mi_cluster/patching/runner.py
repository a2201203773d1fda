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

from mi_cluster.activations import hook_name

__all__ = ["Hook", "LayerRunner", "PatchingError"]

Hook = tuple[str, Callable[[Tensor, Any], Tensor | None]]


class PatchingError(ValueError):
    """Patching inputs that cannot be used (lengths, answers, sites, metrics, models)."""


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
        model: Any,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Tensor | None = None,
        cache_sites: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.tokens = tokens
        self.n_layers = model.cfg.n_layers
        self.batch = tokens.shape[0]
        recorded: dict[str, Any] = {}

        def record(module: Any, args: tuple, kwargs: dict) -> None:
            recorded.setdefault("args", args[1:])
            recorded.setdefault("kwargs", kwargs)

        names = {hook_name("resid_pre", layer) for layer in range(self.n_layers)} | set(cache_sites)
        handle = model.blocks[0].register_forward_pre_hook(record, with_kwargs=True)
        try:
            with torch.no_grad():
                kw = {} if attention_mask is None else {"attention_mask": attention_mask}
                self.logits, cache = model.run_with_cache(
                    tokens, names_filter=lambda n: n in names, **kw
                )
        finally:
            handle.remove()
        self.cache = {n: cache[n] for n in names}
        self._args = tuple(None if _is_cache(a) else a for a in recorded["args"])
        self._kwargs = {k: (None if _is_cache(v) else v) for k, v in recorded["kwargs"].items()}
        self._kwargs.pop("use_cache", None)
        self._check()

    # -- the output head ------------------------------------------------------------
    def head(self, resid: Float[Tensor, "row k d_model"]) -> Float[Tensor, "row k d_vocab"]:
        """Logits from final residuals (LayerNorm and unembedding; BERT's MLM transform)."""
        m = self.model
        if hasattr(m, "mlm_head"):  # BERT: dense -> activation -> LayerNorm -> decoder
            from transformers.activations import ACT2FN

            return m.unembed(m.ln_final(ACT2FN[m.cfg.act_fn](m.mlm_head(resid))))
        return m.unembed(m.ln_final(resid)) if hasattr(m, "ln_final") else m.unembed(resid)

    def _check(self) -> None:
        """The last block and the head, run by this class, must give the model's logits."""
        last = self.n_layers - 1
        every = torch.arange(self.tokens.shape[1]).expand(self.batch, -1)
        with torch.no_grad():
            got = self.run(torch.arange(self.batch), last, positions=every)
        scale = self.logits.abs().max().clamp_min(1.0)
        if got is None or not torch.allclose(got, self.logits, atol=1e-4 * float(scale), rtol=1e-4):
            raise PatchingError(
                f"mi_cluster cannot run {type(self.model).__name__} "
                f"({getattr(self.model.cfg, 'architecture', '?')}) layer by layer: its blocks "
                "re-run from the cache do not reproduce the model's logits"
            )

    # -- running ----------------------------------------------------------------------
    def _expand(self, value: Any, prompt: Tensor) -> Any:
        """A recorded block argument for the rows of an expanded batch: tensors with one
        entry per prompt are indexed by each row's prompt; broadcastable ones are kept."""
        if (
            isinstance(value, Tensor)
            and value.ndim
            and value.shape[0] == self.batch
            and self.batch > 1
        ):
            return value[prompt.to(value.device)]
        return value

    def run(
        self,
        prompt: Int[Tensor, " row"],
        start_layer: int,
        resid: Float[Tensor, "row pos d_model"] | None = None,
        hooks: Sequence[Hook] = (),
        positions: Int[Tensor, "row k"] | None = None,
        stop_layer: int | None = None,
    ) -> Float[Tensor, "row k d_vocab"] | None:
        """Run blocks ``start_layer .. stop_layer - 1`` on ``rows`` copies of the prompts.

        Args:
            prompt: which prompt each row is a copy of.
            start_layer: the first block to run.
            resid: the residual entering it; default the base run's, per row.
            hooks: TransformerLens forward hooks, active during the run.
            positions: per row, the positions to return logits at; None: no logits.
            stop_layer: stop before this block (no logits then); default run to the end.
        """
        if resid is None:
            resid = self.cache[hook_name("resid_pre", start_layer)][prompt.to(self.tokens.device)]
        args = tuple(self._expand(a, prompt) for a in self._args)
        kwargs = {k: self._expand(v, prompt) for k, v in self._kwargs.items()}
        end = self.n_layers if stop_layer is None else stop_layer
        with self.model.hooks(fwd_hooks=list(hooks)):
            for block in self.model.blocks[start_layer:end]:
                out = block(resid, *args, **kwargs)
                resid = out[0] if isinstance(out, tuple) else out
        if positions is None or stop_layer is not None:
            return None
        picked = resid.gather(
            1, positions.to(resid.device)[..., None].expand(-1, -1, resid.shape[-1])
        )
        return self.head(picked)
