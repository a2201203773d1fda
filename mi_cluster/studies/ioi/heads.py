"""Attention-head analyses for IOI-style prompts: where heads attend, what they write to
the logits, and what happens when they are ablated or patched.

Prompts are given as :class:`IOIPrompt` (text, indirect object, subject); positions of IO,
S1, S2 and END are found with :func:`mi_cluster.core.prompts.word_positions`, so any tokenizer
works as long as both names are single tokens (a clear error names the one that is not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mi_cluster.collection.activations import pad_tokens
from mi_cluster.core.hooks import FINAL_SCALE, hook_name
from mi_cluster.core.ioi_prompts import (
    IOIPositions,
    IOIPrompt,
    ioi_positions,
    locate,
    replace_subject,
)
from mi_cluster.core.model_info import model_device, require_meaningful_logits
from mi_cluster.core.norms import frozen_norm
from mi_cluster.core.prompts import single_token_id, tokenize_prompt
from mi_cluster.core.protocols import HookedModel
from mi_cluster.core.readout import residual_logits
from mi_cluster.core.weights import head_input_weights, head_output_weights
from mi_cluster.core.writes import HeadWriter, mlp_write, post_attention_norm, require_additive

__all__ = [
    "IOIPositions",
    "IOIPrompt",
    "PaddedBatch",
    "PreparedPrompts",
    "attention_between",
    "copy_hits",
    "copy_scores",
    "head_direct_logit_attribution",
    "head_mean_ablation",
    "ioi_positions",
    "logit_difference",
    "patch_head_attention_effect",
    "prepare_prompts",
    "prepared_logit_difference",
    "read_each_layer",
    "replace_subject",
    "run_hooked",
    "token_mean",
]


@dataclass(frozen=True)
class PaddedBatch:
    """Prompts tokenized once and padded: ``tokens`` and ``mask``, ``[prompt, pos]``."""

    tokens: Tensor
    mask: Tensor


@dataclass(frozen=True)
class PreparedPrompts(PaddedBatch):
    """IOI prompts as a padded batch, with their IOI positions ``pos``."""

    pos: IOIPositions


def prepare_prompts(
    model: HookedModel, prompts: Sequence[IOIPrompt], repeated: bool = True
) -> PreparedPrompts:
    """Locate the prompts' IOI positions (``repeated``: S must appear twice) and pad them
    into one batch."""
    pos, tokenized = locate(model, prompts, repeated)
    toks, mask, _ = pad_tokens(model, tokenized, "right")
    return PreparedPrompts(toks, mask, pos)


def read_each_layer(
    site: str, layers: Iterable[int], store: Callable[[int, Tensor], None]
) -> list[tuple[str, Callable]]:
    """One read-only hook per layer at ``site``, handing ``(layer, activation)`` to
    ``store``."""

    def make(layer: int) -> Callable:
        def hook(act: Tensor, hook: Any) -> None:
            store(layer, act)

        return hook

    return [(hook_name(site, layer), make(layer)) for layer in layers]


def run_hooked(model: HookedModel, tokens: Tensor, mask: Tensor, hooks: list) -> Tensor:
    """The model's logits on a padded batch under ``hooks``, without gradients."""
    dev = model_device(model)
    with torch.no_grad():
        return model.run_with_hooks(tokens.to(dev), fwd_hooks=hooks, attention_mask=mask.to(dev))


def prepared_logit_difference(model: HookedModel, prep: PreparedPrompts, hooks: list) -> Tensor:
    """logit(IO) - logit(S) at END of each prepared prompt under ``hooks``."""
    pos = prep.pos
    logits = run_hooked(model, prep.tokens, prep.mask, hooks).float().cpu()
    end = logits[torch.arange(len(pos.end)), pos.end]
    return end.gather(1, pos.io_id[:, None])[:, 0] - end.gather(1, pos.s_id[:, None])[:, 0]


def logit_difference(
    model: HookedModel, prompts: Sequence[IOIPrompt], hooks: list | None = None
) -> Float[Tensor, " prompt"]:
    """logit(IO) - logit(S) at END for each prompt (optionally under ``hooks``). Here S may
    be mentioned only once (e.g. prompts whose first S is replaced by another name, to see
    how much the answer depends on S being repeated)."""
    require_meaningful_logits(model, "logit difference")
    return prepared_logit_difference(
        model, prepare_prompts(model, prompts, repeated=False), hooks or []
    )


_POSITION_NAMES = ("io", "s1", "s1_next", "s2", "end")


def _check_positions(*names: str) -> None:
    for name in names:
        if name not in _POSITION_NAMES:
            raise ValueError(f"unknown position {name!r}; expected one of {_POSITION_NAMES}")


def _position(pos: IOIPositions, name: str) -> Tensor:
    return getattr(pos, name)  # "s1_next": the token after S1, where induction heads look


def attention_between(
    model: HookedModel, prompts: Sequence[IOIPrompt], query: str, key: str
) -> Float[Tensor, "layer head prompt"]:
    """Attention probability from the ``query`` position to the ``key`` position, for every
    head; positions are ``"io"``, ``"s1"``, ``"s1_next"`` (the token after S1), ``"s2"``,
    ``"end"``: e.g. ``"end"``, ``"io"`` for name movers; ``"s2"``, ``"s1"`` for
    duplicate-token heads; ``"s2"``, ``"s1_next"`` for induction heads."""
    _check_positions(query, key)
    prep = prepare_prompts(model, prompts)
    q, k = _position(prep.pos, query), _position(prep.pos, key)
    n_layers = model.cfg.n_layers
    out = torch.empty(n_layers, model.cfg.n_heads, len(prompts))
    rows = torch.arange(len(prompts))

    def store(layer: int, pattern: Tensor) -> None:  # [batch, head, query, key]
        out[layer] = pattern[rows, :, q, k].T.float().cpu()

    run_hooked(model, prep.tokens, prep.mask, read_each_layer("pattern", range(n_layers), store))
    return out


def head_direct_logit_attribution(
    model: HookedModel, prompts: Sequence[IOIPrompt], hooks: list | None = None
) -> Float[Tensor, "layer head prompt"]:
    """Each head's direct contribution to logit(IO) - logit(S) at END: its write there
    (:class:`~mi_cluster.core.writes.HeadWriter`: ``z_h W_O^h``, through the post-attention norm
    at the attention output's scale where the block has one), through the final norm
    frozen at the run's scale, projected on ``W_U[:, IO] - W_U[:, S]``; optionally under
    ``hooks`` (e.g. other heads ablated, to find the ones that take over).

    The heads' terms are exact shares of the logit difference before any final soft-cap
    (Gemma 2 caps logits after the unembedding; the cap is not linear, so shares are of the
    logits it caps). Refused for models whose blocks do not add their outputs to the
    residual stream (post-LayerNorm BERT)."""
    require_meaningful_logits(model, "direct logit attribution")
    require_additive(model, "direct logit attribution")
    prep = prepare_prompts(model, prompts)
    pos = prep.pos
    n_layers, rows = model.cfg.n_layers, torch.arange(len(prompts))
    writer = HeadWriter(model)
    read: dict[str, Tensor] = {}

    def at_end(key: str) -> Callable:
        def hook(act: Tensor, hook: Any) -> None:
            read[key] = act[rows, pos.end.to(act.device)].detach()

        return hook

    reads = [(hook_name("z", layer), at_end(f"z{layer}")) for layer in range(n_layers)]
    reads += [
        (name, at_end(f"s{layer}"))
        for layer in range(n_layers)
        if (name := writer.scale_hook(layer)) is not None
    ]
    reads.append((FINAL_SCALE, at_end("final")))
    run_hooked(model, prep.tokens, prep.mask, list(hooks or []) + reads)
    w_u = model.W_U.detach()
    writes = torch.stack(
        [
            writer.write(layer, read[f"z{layer}"], read.get(f"s{layer}")).to(w_u.device)
            for layer in range(n_layers)
        ]
    ).transpose(1, 2)  # [layer, head, prompt, d_model], where the unembedding is
    normed = frozen_norm(model.ln_final, writes, read["final"].to(w_u.device), share=True)
    io, s = pos.io_id.to(w_u.device), pos.s_id.to(w_u.device)
    direction = (w_u[:, io] - w_u[:, s]).T  # [prompt, d]
    return (normed.to(direction) * direction).sum(-1).float().cpu()


def copy_scores(
    model: HookedModel,
    names: Sequence[str],
    k: int = 5,
    negative: bool = False,
    variant: str = "embedding",
    prompts: Sequence[IOIPrompt] | None = None,
) -> Float[Tensor, "layer head"]:
    """Copy score of every head: the share of names that :func:`copy_hits` finds copied."""
    return copy_hits(model, names, k, negative, variant, prompts).float().mean(-1)


def copy_hits(
    model: HookedModel,
    names: Sequence[str],
    k: int = 5,
    negative: bool = False,
    variant: str = "embedding",
    prompts: Sequence[IOIPrompt] | None = None,
) -> Bool[Tensor, "layer head name"]:
    """Whether each head's OV circuit copies each name: whether the name comes out among
    the top ``k`` logits when a representation of it goes through the head's OV circuit,
    the final LayerNorm and the unembedding (``negative=True``: the OV output negated, for
    heads that write "not this name"). The mean over names is the head's copy score
    (:func:`copy_scores`).

    Definitions in use differ in what stands for the name:

    - ``variant="embedding"`` (default): the name's token embedding, what a layer-0 head
      reads of the name alone;
    - ``variant="arena"`` (ARENA's IOI exercises): the token embedding, as if alone, through
      the first MLP (``x + MLP0(LN(x))``; for attention-only models the embedding);
    - ``variant="paper"`` (Wang et al. 2022, Appendix): the residual stream after the first
      MLP layer (``resid_post`` of layer 0) at the name's positions in real IOI ``prompts``
      (IO and S1), so layer 0's attention output and the position embedding are included;
      the names are those of the prompts, IO's then S's (``2 * len(prompts)`` of them).

    Each name's vector goes through the block's own pre-attention norm (LayerNorm or
    RMSNorm, as the model computes it), the head's OV circuit (without biases), the
    block's post-attention norm where there is one, and the model's output head
    (:func:`~mi_cluster.core.readout.residual_logits`). Refused for post-LayerNorm models,
    whose heads do not write into the residual stream alone."""
    require_meaningful_logits(model, "copy scores")
    require_additive(model, "a copy score (a head's write read alone)")
    if variant not in ("embedding", "arena", "paper"):
        raise ValueError(f"variant must be 'embedding', 'arena' or 'paper', got {variant!r}")
    with torch.no_grad():
        if variant != "paper":
            if not names:
                raise ValueError("copy_scores needs at least one name")
            ids = torch.tensor([single_token_id(model, n) for n in names])
            x = model.embed(ids[None].to(model_device(model)))[0]  # as the model scales it
            if variant == "arena":
                x = x + mlp_write(model, 0, x)
        else:
            if not prompts:
                raise ValueError("the paper's copy score needs IOI prompts (names read in context)")
            prep = prepare_prompts(model, prompts)
            rows = torch.arange(len(prompts))
            kept: dict[str, Tensor] = {}

            def keep(act: Tensor, hook: Any) -> None:
                kept["x"] = torch.cat([act[rows, prep.pos.io], act[rows, prep.pos.s1]])

            run_hooked(model, prep.tokens, prep.mask, [(hook_name("resid_post", 0), keep)])
            x = kept["x"]
            ids = torch.cat([prep.pos.io_id, prep.pos.s_id])
        hits = [_copies(model, layer, x, ids, k, negative) for layer in range(model.cfg.n_layers)]
    return torch.stack(hits).cpu()


def _copies(
    model: HookedModel, layer: int, x: Tensor, ids: Tensor, k: int, negative: bool
) -> Bool[Tensor, "head name"]:
    """Whether each head of ``layer`` copies each name: ``x`` (one residual vector per
    name) through the block's pre-attention norm, the head's OV circuit (grouped key/value
    heads expanded to the heads that share them; biases left out, as OV circuits are),
    the block's post-attention norm where it has one, and the model's output head."""
    block = model.blocks[layer]
    norm = getattr(block, "ln1", None)  # OLMo 2 has none before attention
    normed = x if norm is None else norm(x[None])[0]
    w_v = head_input_weights(model, layer, "V")  # [head, d, d_head], kv heads expanded
    w_o = head_output_weights(model, layer)  # [head, d_head, d]
    v = torch.einsum("nm,hmd->hnd", normed.to(w_v), w_v)
    out = torch.einsum("hnd,hdm->hnm", v, w_o)
    out = -out if negative else out
    post = post_attention_norm(model, layer)
    if post is not None:
        out = post(out)  # each head's output normalised alone, as if it were all attention
    logits = residual_logits(model, out)
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices  # [head, name, k]
    return (top == ids.to(top.device)[None, :, None]).any(-1)


def token_mean(act: Float[Tensor, "batch pos ..."], mask: Tensor) -> Float[Tensor, "..."]:
    """Mean of ``act`` over the real (unpadded) tokens of a batch: the reference value of
    mean ablation."""
    w = mask.to(device=act.device, dtype=act.dtype)
    w = w.reshape(*w.shape, *([1] * (act.ndim - 2)))
    return (act * w).sum((0, 1)) / w.sum()


def head_mean_ablation(
    model: HookedModel, prompts: Sequence[IOIPrompt]
) -> Float[Tensor, "layer head"]:
    """Change in mean logit difference when one head's output (``hook_z``) is replaced by
    its mean over the prompts' tokens at every position (a negative value: the head helps)."""
    require_meaningful_logits(model, "mean ablation of the logit difference")
    prep = prepare_prompts(model, prompts)
    base = prepared_logit_difference(model, prep, []).mean()
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    means: dict[int, Tensor] = {}

    def store(layer: int, z: Tensor) -> None:
        means[layer] = token_mean(z, prep.mask)  # [head, d_head]

    run_hooked(model, prep.tokens, prep.mask, read_each_layer("z", range(n_layers), store))
    out = torch.empty(n_layers, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):

            def ablate(z: Tensor, hook: Any, layer=layer, head=head) -> Tensor:
                z = z.clone()
                z[:, :, head] = means[layer][head]
                return z

            ablated = prepared_logit_difference(model, prep, [(hook_name("z", layer), ablate)])
            out[layer, head] = ablated.mean() - base
    return out


def patch_head_attention_effect(
    model: HookedModel,
    clean: Sequence[IOIPrompt],
    corrupt: Sequence[IOIPrompt],
    sender: tuple[int, int],
    receivers: Sequence[tuple[int, int]],
    *,
    at: str = "end",
    key: str = "s1",
) -> Float[Tensor, " receiver"]:
    """The S-inhibition test: patch head ``sender``'s output at position ``at`` from the
    ``corrupt`` prompts (e.g. S2 replaced by a third name, so "S is duplicated" is false)
    into the clean run, and return the change, per receiver head, of its END attention to
    IO minus its END attention to ``key`` (``"s1"`` or ``"s2"``). With ``at="s2"`` it tests
    duplicate-token heads: does what they write at S2 steer later heads' attention? Clean
    and corrupt prompts must tokenize to the same lengths."""
    _check_positions(at, key)
    s_layer, s_head = sender
    layers = sorted({r for r, _ in receivers})
    if any(r <= s_layer for r in layers):
        raise ValueError("receivers must be in layers after the sender")
    prep = prepare_prompts(model, clean)
    c_pos = prep.pos
    tokenized = [tokenize_prompt(model, p.text) for p in corrupt]  # S is not repeated there
    if [len(t) for t in tokenized] != [int(e) + 1 for e in c_pos.end]:
        raise ValueError("clean and corrupt prompts must have the same token lengths")
    c_toks, c_mask, _ = pad_tokens(model, tokenized, "right")
    rows = torch.arange(len(clean))
    stored: dict[str, Tensor] = {}

    where = _position(c_pos, at)

    def save(z: Tensor, hook: Any) -> None:
        stored["z"] = z[rows, where.to(z.device), s_head].clone()

    run_hooked(model, c_toks, c_mask, [(hook_name("z", s_layer), save)])

    def patch(z: Tensor, hook: Any) -> Tensor:
        z = z.clone()
        z[rows, where.to(z.device), s_head] = stored["z"]
        return z

    def preference(hooks: list) -> Tensor:
        pref: dict[tuple[int, int], Tensor] = {}

        def store(layer: int, pattern: Tensor) -> None:
            for r_layer, r_head in receivers:
                if r_layer == layer:
                    p = pattern[rows, r_head]
                    io = p[rows, c_pos.end, c_pos.io]
                    other = p[rows, c_pos.end, _position(c_pos, key)]
                    pref[(r_layer, r_head)] = (io - other).mean().float().cpu()

        run_hooked(model, prep.tokens, prep.mask, hooks + read_each_layer("pattern", layers, store))
        return torch.stack([pref[r] for r in receivers])

    return preference([(hook_name("z", s_layer), patch)]) - preference([])
