"""Reusing the unpatched prefix of a causal model's run.

A patch at position ``p`` leaves every position before ``p`` as it was in the unpatched
run, at every layer: a causal model's position ``i`` reads only positions ``<= i``. A
patched run therefore needs only positions ``p..end``, from the patched layer on, if its
attention reads the earlier positions' keys and values from the unpatched run. That is
what a Hugging Face KV cache does during generation, and what this module provides:

- :class:`PrefixKeys` stands where the model's own KV cache stood in a block's arguments
  (its ``update(key, value, layer)`` is all that attention calls): recording, it keeps
  each layer's keys and values (after rotary embeddings, as attention uses them); reusing,
  it puts the recorded prefix of each row's prompt in front of the new positions' keys
  and values.
- :func:`suffix_argument` cuts a recorded block argument to the new positions, by name:
  the attention mask's query rows (sliding windows and padding as the model built them),
  position ids, cache positions and rotary tables (so rotary embeddings get the true
  positions).

:class:`~mi_cluster.methods.patching.runner.LayerRunner` checks the whole mechanism
against the model's own run before using it, and recomputes every position where it
cannot (bidirectional models such as BERT, an argument it does not know how to cut).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CACHE_ARGUMENTS",
    "PrefixKeys",
    "UnknownArgument",
    "argument_names",
    "attention_injector",
    "prefix_bytes",
    "suffix_argument",
]

CACHE_ARGUMENTS = ("past_key_values", "layer_past", "past_key_value", "cache")
"""The names attention modules read a KV cache under (Hugging Face and TransformerLens's
bridge, across versions)."""

_BY_QUERY = ("position_ids", "cache_position")  # one entry per query position, last axis
_KEPT = ("encoder_hidden_states", "encoder_attention_mask", "output_attentions", "use_cache")


class UnknownArgument(ValueError):
    """A block argument that carries positions but that no rule says how to cut."""


class PrefixKeys:
    """A stand-in for a Hugging Face KV cache: records or supplies each layer's keys and
    values ``[row, kv_head, pos, d_head]``.

    Args:
        rows: the rows of the batch whose keys and values are kept (the prompts whose
            patched copies may start at a position); a recording run runs these rows.
        recorded: per layer, those rows' keys and values at every position; None to
            record them (then :meth:`update` returns its inputs).
    """

    def __init__(
        self, rows: Tensor, recorded: dict[int, tuple[Tensor, Tensor]] | None = None
    ) -> None:
        self.rows = rows
        self.recording = recorded is None
        self.recorded: dict[int, tuple[Tensor, Tensor]] = {} if recorded is None else recorded
        self.calls: dict[int, int] = {}
        self.prompt: Tensor | None = None  # the prompt (row of the batch) of each row run
        self.start = 0  # the first position the rows run
        self._index = torch.full((int(rows.max()) + 1,), -1, dtype=torch.long)
        self._index[rows] = torch.arange(len(rows))

    def update(
        self, key: Tensor, value: Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """The keys and values attention uses: recording, the ones given (kept);
        reusing, each row's prompt's recorded prefix followed by the ones given."""
        self.calls[layer_idx] = self.calls.get(layer_idx, 0) + 1
        if self.recording:  # a run of the kept rows, in order
            if key.shape[0] != len(self.rows):
                raise ValueError(f"recording {len(self.rows)} rows' keys, got {key.shape[0]}")
            # copies: a view would keep its base alive (GPT-2's fused query-key-value)
            self.recorded[layer_idx] = (key.detach().clone(), value.detach().clone())
            return key, value
        old_key, old_value = self.recorded[layer_idx]
        index = self.kept_index(self.prompt).to(old_key.device)
        prefix = (old_key[index, :, : self.start], old_value[index, :, : self.start])
        return (
            torch.cat([prefix[0].to(key), key], dim=-2),
            torch.cat([prefix[1].to(value), value], dim=-2),
        )

    def kept_index(self, prompt: Tensor | None) -> Tensor:
        """Where each of ``prompt`` (rows of the batch) is among the kept rows."""
        if prompt is None:
            raise RuntimeError("PrefixKeys.update called before the rows were set")
        prompt = prompt.cpu()
        index = self._index[prompt.clamp(0, len(self._index) - 1)]
        if bool(((prompt >= len(self._index)) | (index < 0)).any()):
            raise ValueError("a run from a position copies a prompt whose keys were not kept")
        return index

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions held before the new ones (Hugging Face's cache interface)."""
        return 0 if self.recording else self.start


def prefix_bytes(cfg: Any, n_prompts: int, n_pos: int) -> int:
    """The memory :class:`PrefixKeys` keeps for ``n_prompts`` prompts of ``n_pos``
    positions: keys and values of every layer (grouped heads as the model has them)."""
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    item = torch.finfo(cfg.dtype).bits // 8
    return 2 * cfg.n_layers * n_prompts * n_pos * n_kv * cfg.d_head * item


def argument_names(block: Any, n_positional: int) -> list[str] | None:
    """The names of a Hugging Face block's positional arguments after the hidden states
    (from its ``forward``'s signature), or None where they cannot be read."""
    hf_block = getattr(block, "original_component", None) or block
    try:
        params = list(inspect.signature(hf_block.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < n_positional + 1:
        return None
    return positional[1 : n_positional + 1]


def suffix_argument(name: str, value: Any, start: int, n_pos: int) -> Any:
    """Block argument ``name`` for the query positions ``start..n_pos-1`` only.

    Raises:
        UnknownArgument: ``value`` holds a tensor with a positions axis and ``name`` has
            no rule (a silent guess could attend to the wrong positions).
    """
    if start == 0 or value is None or isinstance(value, bool | int | float | str):
        return value
    if name == "attention_mask" and isinstance(value, Tensor):
        if value.ndim == 4:  # [batch, 1, query, key]: the new queries' rows, every key
            return value[..., start:, :] if value.shape[-2] == n_pos else _unknown(name, value)
        if value.ndim == 2:  # [batch, key]: padding over keys, kept whole
            return value
        return _unknown(name, value)
    if name in _BY_QUERY and isinstance(value, Tensor):
        return value[..., start:] if value.shape[-1] == n_pos else _unknown(name, value)
    if name == "position_embeddings" and isinstance(value, tuple | list):
        return type(value)(_rotary_rows(name, v, start, n_pos) for v in value)
    if name in _KEPT or name in CACHE_ARGUMENTS:
        return value
    if _carries_positions(value, n_pos):
        return _unknown(name, value)
    return value


def _rotary_rows(name: str, table: Tensor, start: int, n_pos: int) -> Tensor:
    """A rotary ``cos`` or ``sin`` table ``[batch, pos, d]`` at the new positions."""
    if table.ndim != 3 or table.shape[-2] != n_pos:
        return _unknown(name, table)
    return table[:, start:]


def _carries_positions(value: Any, n_pos: int) -> bool:
    if isinstance(value, Tensor):
        return n_pos in value.shape[1:]
    if isinstance(value, tuple | list):
        return any(_carries_positions(v, n_pos) for v in value)
    if isinstance(value, dict):
        return any(_carries_positions(v, n_pos) for v in value.values())
    return False


def _unknown(name: str, value: Any) -> Any:
    shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
    raise UnknownArgument(f"block argument {name!r} ({shape}): no rule to cut it to new positions")


def attention_injector(keys: PrefixKeys) -> Callable[[Any, tuple, dict], tuple[tuple, dict]]:
    """A forward pre-hook for an attention module that reads its cache as
    ``past_key_values`` while its block passes it on under another name (TransformerLens's
    bridge reimplements attention for many architectures and reads only that name)."""

    def inject(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "past_key_values": keys}

    return inject
