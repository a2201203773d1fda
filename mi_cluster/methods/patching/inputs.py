"""Clean and corrupted prompts for patching, checked before any forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from mi_cluster.collection.activations import pad_tokens
from mi_cluster.core.prompts import tokenize_prompt, unique_token_labels
from mi_cluster.core.protocols import HookedModel
from mi_cluster.methods.patching.runner import PatchingError

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
        corrupted_mask, corrupted_last: the corrupted prompts' own mask and last token
            when they differ from the clean ones (``lengths="pad"``), else None.
    """

    clean: Int[Tensor, "prompt pos"]
    corrupted: Int[Tensor, "prompt pos"]
    mask: Int[Tensor, "prompt pos"] | None
    last: Int[Tensor, " prompt"]
    position_labels: list[str]
    corrupted_mask: Int[Tensor, "prompt pos"] | None = None
    corrupted_last: Int[Tensor, " prompt"] | None = None

    @property
    def batch(self) -> int:
        """Prompts in the pair (rows of each side)."""
        return self.clean.shape[0]

    @property
    def n_pos(self) -> int:
        """Token positions (the padded length)."""
        return self.clean.shape[1]

    def attention_mask(self, which: str) -> Int[Tensor, "prompt pos"] | None:
        """The mask of the ``"clean"`` or ``"corrupted"`` prompts (None: no padding)."""
        if which == "corrupted" and self.corrupted_mask is not None:
            return self.corrupted_mask
        return self.mask


def prepare_pair(
    model: HookedModel,
    clean: Sequence[str] | Tensor,
    corrupted: Sequence[str] | Tensor,
    lengths: Literal["equal", "pad"] = "equal",
) -> PromptPair:
    """Tokenize (or check) the two prompt sets: same number of prompts, and each clean
    prompt as many tokens as its corrupted partner (a patch moves an activation at a
    position to the same position).

    With ``lengths="pad"`` a pair may differ in length: both are right-padded (and masked)
    to the longest prompt, and positions are still compared by index, so the tokens a
    patch or a metric cares about must sit at the same index in both (e.g. a word with
    as many tokens before it in both prompts; a causal model's activations there do not
    depend on what follows). A metric then names its positions: ``"last"`` would mean a
    different token in the two prompts."""
    if lengths not in ("equal", "pad"):
        raise PatchingError(f"lengths must be 'equal' or 'pad', got {lengths!r}")
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
        if len(a) != len(b) and lengths == "equal":
            raise PatchingError(
                f"prompt pair {k} has {len(a)} clean and {len(b)} corrupted tokens; patching "
                f"needs equal lengths (or lengths='pad' with the patched and read tokens at "
                f"the same index): {list(a.str_tokens)} vs {list(b.str_tokens)}"
            )
    tokens, masks, _ = pad_tokens(model, tc + tx, "right")
    n = len(tc)
    clean_tokens, corrupted_tokens = tokens[:n], tokens[n:]
    mask, corrupted_mask = masks[:n], masks[n:]
    padded = bool((masks == 0).any())
    unequal = not torch.equal(mask, corrupted_mask)
    labels = unique_token_labels(list(tc[0].str_tokens)) + ["<pad>"] * (
        clean_tokens.shape[1] - len(tc[0])
    )
    return PromptPair(
        clean_tokens.to(device),
        corrupted_tokens.to(device),
        mask.to(device) if padded else None,
        mask.sum(1) - 1,
        labels,
        corrupted_mask.to(device) if unequal else None,
        corrupted_mask.sum(1) - 1 if unequal else None,
    )


def resolve_positions(
    positions: str | Tensor | None, pair: PromptPair
) -> Int[Tensor, "prompt k"] | None:
    """A metric's positions as ``[prompt, k]`` indices."""
    if positions is None:
        return None
    if isinstance(positions, str):
        if positions == "last":
            if pair.corrupted_last is not None and not torch.equal(pair.last, pair.corrupted_last):
                raise PatchingError(
                    "clean and corrupted prompts end at different positions (lengths='pad'): "
                    "give the metric explicit positions instead of 'last'"
                )
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
