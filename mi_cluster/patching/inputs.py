"""Clean and corrupted prompts for patching, checked before any forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from mi_cluster.activations import pad_tokens
from mi_cluster.patching.runner import PatchingError
from mi_cluster.prompts import tokenize_prompt, unique_token_labels

__all__ = ["PromptPair", "prepare_pair", "resolve_positions"]


@dataclass(frozen=True)
class PromptPair:
    """Clean and corrupted prompts as token tensors of one shape.

    Fields:
        clean, corrupted: ``Int[Tensor, "prompt pos"]``.
        mask: ``[prompt, pos]`` attention mask when prompts were padded (right), else None.
        last: ``Int[Tensor, "prompt"]``, each prompt's last real token.
        position_labels: a unique label per position, from the first clean prompt
            (``"John 1"``, ``"John 2"`` when a token repeats).
    """

    clean: Int[Tensor, "prompt pos"]
    corrupted: Int[Tensor, "prompt pos"]
    mask: Int[Tensor, "prompt pos"] | None
    last: Int[Tensor, " prompt"]
    position_labels: list[str]

    @property
    def batch(self) -> int:
        return self.clean.shape[0]

    @property
    def n_pos(self) -> int:
        return self.clean.shape[1]


def prepare_pair(
    model: Any, clean: Sequence[str] | Tensor, corrupted: Sequence[str] | Tensor
) -> PromptPair:
    """Tokenize (or check) the two prompt sets: same number of prompts, and each clean
    prompt as many tokens as its corrupted partner (a patch moves an activation at a
    position to the same position)."""
    device = model.cfg.device
    if isinstance(clean, Tensor) or isinstance(corrupted, Tensor):
        if not (isinstance(clean, Tensor) and isinstance(corrupted, Tensor)):
            raise PatchingError("give clean and corrupted both as strings or both as token tensors")
        if clean.ndim != 2 or clean.shape != corrupted.shape:
            raise PatchingError(
                f"clean and corrupted tokens must be [prompt, pos] of one shape, got "
                f"{tuple(clean.shape)} and {tuple(corrupted.shape)}"
            )
        labels = unique_token_labels(model.to_str_tokens(clean[0]))
        last = torch.full((clean.shape[0],), clean.shape[1] - 1)
        return PromptPair(clean.to(device), corrupted.to(device), None, last, labels)
    if isinstance(clean, str) or isinstance(corrupted, str):
        raise PatchingError("clean and corrupted must be lists of prompts, not one string")
    if len(clean) != len(corrupted) or not clean:
        raise PatchingError(
            f"{len(clean)} clean and {len(corrupted)} corrupted prompts: need equal, "
            "non-zero counts"
        )
    tc = [tokenize_prompt(model, t) for t in clean]
    tx = [tokenize_prompt(model, t) for t in corrupted]
    for k, (a, b) in enumerate(zip(tc, tx, strict=True)):
        if len(a) != len(b):
            raise PatchingError(
                f"prompt pair {k} has {len(a)} clean and {len(b)} corrupted tokens; patching "
                f"needs equal lengths: {list(a.str_tokens)} vs {list(b.str_tokens)}"
            )
    clean_tokens, mask, _ = pad_tokens(model, tc, "right")
    corrupted_tokens, _, _ = pad_tokens(model, tx, "right")
    padded = bool((mask == 0).any())
    last = mask.sum(1) - 1
    labels = unique_token_labels(list(tc[0].str_tokens)) + ["<pad>"] * (
        clean_tokens.shape[1] - len(tc[0])
    )
    return PromptPair(
        clean_tokens.to(device),
        corrupted_tokens.to(device),
        mask.to(device) if padded else None,
        last,
        labels,
    )


def resolve_positions(
    positions: str | Tensor | None, pair: PromptPair
) -> Int[Tensor, "prompt k"] | None:
    """A metric's positions as ``[prompt, k]`` indices."""
    if positions is None:
        return None
    if isinstance(positions, str):
        if positions == "last":
            return pair.last[:, None]
        return torch.arange(pair.n_pos).expand(pair.batch, -1)
    pos = torch.as_tensor(positions).long()
    if pos.ndim != 2 or pos.shape[0] != pair.batch:
        raise PatchingError(
            f"metric positions must be [prompt, k] for {pair.batch} prompts, got {tuple(pos.shape)}"
        )
    if bool((pos < 0).any() or (pos >= pair.n_pos).any()):
        raise PatchingError(f"metric positions must lie in [0, {pair.n_pos})")
    return pos
