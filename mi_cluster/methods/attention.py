"""Attention: patterns per layer and head, head summaries for classifying heads, and the
quantities of bertviz's neuron view.

Patterns are read from each block's ``hook_pattern`` (the softmax output the model uses),
so they are the model's own, for a prompt or a sentence pair (BERT segments A/B through
``token_type_ids``; a causal model reads the pair as one text). Token labels are unique
(``"the 1"``, ``"the 2"``) so figures never merge two positions. Figures are in
:mod:`mi_cluster.plotting.attention`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mi_cluster.collection.activations import pad_tokens
from mi_cluster.core.hooks import hook_name
from mi_cluster.core.model_info import architecture_name, model_device, model_info
from mi_cluster.core.prompts import get_tokenizer, tokenize_prompt, unique_token_labels
from mi_cluster.core.protocols import HookedModel
from mi_cluster.methods.stats.resampling import make_generator

__all__ = [
    "AttentionPatterns",
    "HeadSummary",
    "NeuronView",
    "attention_patterns",
    "head_summary",
    "induction_scores",
    "neuron_view",
    "repeated_tokens",
    "summarise_patterns",
]

SUMMARY_STATS = ("previous", "special", "self", "duplicate")


@dataclass(frozen=True)
class _Encoded:
    ids: Int[Tensor, "1 pos"]
    tokens: tuple[str, ...]
    special: tuple[bool, ...]
    segment: tuple[int, ...]
    kwargs: dict


def _encode(model: HookedModel, text: str, text_b: str | None) -> _Encoded:
    """One prompt or a sentence pair as the model reads it."""
    if text_b is None or not hasattr(model, "token_type_embed"):
        joined = text if text_b is None else f"{text} {text_b}"
        tp = tokenize_prompt(model, joined)
        cut = len(text) + 1
        segment = tuple(int(text_b is not None and s >= cut) for s, _ in tp.offsets)
        ids = torch.tensor([tp.ids])
        return _Encoded(ids, tp.str_tokens, tp.special, segment, {})
    tokenizer = get_tokenizer(model)
    enc = tokenizer(text, text_b, return_special_tokens_mask=True, return_tensors="pt")
    ids = enc["input_ids"]
    tokens = tuple(tokenizer.convert_ids_to_tokens(ids[0].tolist()))
    special = tuple(bool(s) for s in enc["special_tokens_mask"][0].tolist())
    segment = tuple(int(s) for s in enc["token_type_ids"][0].tolist())
    return _Encoded(ids, tokens, special, segment, {"token_type_ids": enc["token_type_ids"]})


def _run_reading(model: HookedModel, enc: _Encoded, names: Sequence[str]) -> dict[str, Tensor]:
    """Run one encoded prompt and keep the named hooks' activations (batch dim removed)."""
    dev = model_device(model)
    kept: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: Any) -> None:
        kept[hook.name] = act[0].detach()

    kwargs = {k: v.to(dev) for k, v in enc.kwargs.items()}
    with torch.no_grad():
        model.run_with_hooks(enc.ids.to(dev), fwd_hooks=[(n, keep) for n in names], **kwargs)
    return kept


@dataclass(frozen=True)
class AttentionPatterns:
    """Attention of one prompt (or sentence pair) at every requested layer.

    Fields:
        pattern: ``[layer, head, query, key]``; rows sum to 1 over the model's keys.
        layers: which model layer each entry of the first axis is.
        tokens: the token strings; labels: unique labels for axes (``"the 2"``).
        special: whether each token is special (BOS/CLS/SEP); segment: 0 for sentence A,
            1 for sentence B.
        positions: each kept token's position in the model's input (after
            :meth:`select`, the positions that remain).
        text, text_b: the input; model_name: the model's name.
    """

    pattern: Float[Tensor, "layer head query key"]
    layers: tuple[int, ...]
    tokens: tuple[str, ...]
    labels: tuple[str, ...]
    special: tuple[bool, ...]
    segment: tuple[int, ...]
    positions: tuple[int, ...]
    text: str
    text_b: str | None
    model_name: str

    def layer_index(self, layer: int) -> int:
        """The index in ``patterns`` of model layer ``layer`` (an error if it was not kept)."""
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not kept; kept layers: {list(self.layers)}")
        return self.layers.index(layer)

    def select(
        self, show_special: bool = True, window: tuple[int, int] | None = None
    ) -> AttentionPatterns:
        """Keep the tokens in ``window`` (``(start, stop)`` positions of the input) and,
        unless ``show_special``, drop special tokens. Rows are not renormalised: what a
        query gives to dropped tokens is simply not shown."""
        keep = [
            i
            for i, p in enumerate(self.positions)
            if (show_special or not self.special[i])
            and (window is None or window[0] <= p < window[1])
        ]
        if not keep:
            raise ValueError(
                f"no token left after selecting window={window}, show_special={show_special}"
            )
        idx = torch.tensor(keep)
        pick = lambda seq: tuple(seq[i] for i in keep)  # noqa: E731
        return replace(
            self,
            pattern=self.pattern[:, :, idx][:, :, :, idx],
            tokens=pick(self.tokens),
            labels=pick(self.labels),
            special=pick(self.special),
            segment=pick(self.segment),
            positions=pick(self.positions),
        )


def attention_patterns(
    model: HookedModel,
    text: str,
    text_b: str | None = None,
    *,
    layers: Sequence[int] | None = None,
    show_special: bool = True,
    window: tuple[int, int] | None = None,
) -> AttentionPatterns:
    """Attention patterns of ``text`` (or the pair ``text``, ``text_b``) at ``layers``
    (default all), optionally without special tokens or restricted to a window."""
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad or not layers:
        raise ValueError(f"layers must be in 0..{n_layers - 1}, got {layers}")
    enc = _encode(model, text, text_b)
    kept = _run_reading(model, enc, [hook_name("pattern", x) for x in layers])
    pattern = torch.stack([kept[hook_name("pattern", x)] for x in layers])
    out = AttentionPatterns(
        pattern=pattern,
        layers=tuple(layers),
        tokens=enc.tokens,
        labels=tuple(unique_token_labels(enc.tokens)),
        special=enc.special,
        segment=enc.segment,
        positions=tuple(range(len(enc.tokens))),
        text=text,
        text_b=text_b,
        model_name=model_info(model).name,
    )
    return out if show_special and window is None else out.select(show_special, window)


# -- head summaries -----------------------------------------------------------------------
@dataclass(frozen=True)
class HeadSummary:
    """Per head, the mean attention from each real (non-special, non-padding) query token.

    Fields:
        previous: to the token just before it.
        special: to special tokens (BOS, CLS, SEP) together.
        self: to itself.
        duplicate: to earlier occurrences of the same token (over queries that have one;
            NaN where no prompt has a repeated token).
        induction: the induction score, attention from a token in the second copy of a
            repeated random sequence to the token after its first occurrence (None if not
            measured).
        n_prompts: prompts averaged over; n_queries: query tokens per statistic.
        model_name: the model's name.
    """

    previous: Float[Tensor, "layer head"]
    special: Float[Tensor, "layer head"]
    self: Float[Tensor, "layer head"]
    duplicate: Float[Tensor, "layer head"]
    induction: Float[Tensor, "layer head"] | None
    n_prompts: int
    n_queries: dict
    model_name: str

    def table(self) -> list[dict]:
        """One row per head: layer, head and each statistic (for a DataFrame or JSON)."""
        stats = [*SUMMARY_STATS, "induction"] if self.induction is not None else list(SUMMARY_STATS)
        n_layers, n_heads = self.previous.shape
        return [
            {"layer": a, "head": b, **{s: float(getattr(self, s)[a, b]) for s in stats}}
            for a in range(n_layers)
            for b in range(n_heads)
        ]


def _sums(
    pattern: Float[Tensor, "batch head query key"],
    ids: Int[Tensor, "batch pos"],
    real: Bool[Tensor, "batch pos"],
    special: Bool[Tensor, "batch pos"],
) -> tuple[Float[Tensor, "stat head"], Float[Tensor, " stat"]]:
    """Sums over query tokens of each summary statistic, and how many queries count."""
    p = pattern.float()
    n = p.shape[-1]
    query = (real & ~special).float()  # [batch, pos]
    ar = torch.arange(n, device=p.device)
    diag = p.diagonal(dim1=-2, dim2=-1)  # [batch, head, pos]
    prev = torch.zeros_like(diag)
    prev[..., 1:] = p[..., ar[1:], ar[:-1]]
    has_prev = torch.zeros_like(query)
    has_prev[:, 1:] = query[:, 1:] * real[:, :-1].float()
    to_special = (p * (special & real).float()[:, None, None, :]).sum(-1)
    earlier = torch.tril(torch.ones(n, n, dtype=torch.bool, device=p.device), -1)
    dup = (ids[:, :, None] == ids[:, None, :]) & earlier & (real & ~special)[:, None, :]
    to_dup = (p * dup[:, None].float()).sum(-1)
    has_dup = query * dup.any(-1).float()
    weights = [has_prev, query, query, has_dup]
    values = [prev, to_special, diag, to_dup]
    sums = torch.stack([(v * w[:, None]).sum((0, 2)) for v, w in zip(values, weights, strict=True)])
    counts = torch.stack([w.sum() for w in weights])
    return sums, counts


def summarise_patterns(
    patterns: Float[Tensor, "batch layer head query key"],
    ids: Int[Tensor, "batch pos"],
    real: Bool[Tensor, "batch pos"] | None = None,
    special: Bool[Tensor, "batch pos"] | None = None,
) -> dict[str, Float[Tensor, "layer head"]]:
    """The :class:`HeadSummary` statistics (without induction) of given patterns:
    ``real`` marks tokens that are not padding, ``special`` BOS/CLS/SEP tokens."""
    if patterns.ndim != 5 or patterns.shape[-1] != patterns.shape[-2] != ids.shape[-1]:
        raise ValueError(
            f"patterns must be [batch, layer, head, pos, pos] matching ids [batch, pos]; got "
            f"{tuple(patterns.shape)} and {tuple(ids.shape)}"
        )
    real = torch.ones_like(ids, dtype=torch.bool) if real is None else real.bool()
    special = torch.zeros_like(ids, dtype=torch.bool) if special is None else special.bool()
    per_layer = [_sums(patterns[:, x], ids, real, special) for x in range(patterns.shape[1])]
    sums = torch.stack([s for s, _ in per_layer], 1)  # [stat, layer, head]
    counts = per_layer[0][1]
    means = sums / counts[:, None, None]
    return dict(zip(SUMMARY_STATS, means, strict=True))


def repeated_tokens(
    model: HookedModel,
    seq_len: int = 20,
    n_prompts: int = 20,
    seed: int = 0,
    vocabulary: Sequence[int] | None = None,
) -> tuple[Int[Tensor, "batch pos"], int]:
    """Prompts made of a random token sequence repeated twice, wrapped in the special
    tokens the model's own tokenization adds (BOS, or BERT's CLS ... SEP), and the position
    where the first copy starts. Tokens are drawn uniformly from ``vocabulary`` (default:
    every non-special token) by a generator seeded with ``seed``."""
    tokenizer = get_tokenizer(model)
    if seq_len < 2 or n_prompts < 1:
        raise ValueError("seq_len must be >= 2 and n_prompts >= 1")
    pool = range(len(tokenizer)) if vocabulary is None else vocabulary
    ordinary = torch.tensor(sorted(set(pool) - set(tokenizer.all_special_ids)))
    if len(ordinary) < 2:
        raise ValueError("repeated sequences need at least two ordinary tokens to draw from")
    gen = make_generator(seed)
    rand = ordinary[torch.randint(len(ordinary), (n_prompts, seq_len), generator=gen)]
    # The special tokens around a text, read off a one-token text.
    wrapped = tokenize_prompt(model, "a")
    inner = tokenizer("a", add_special_tokens=False)["input_ids"]
    start = next(i for i in range(len(wrapped)) if list(wrapped.ids[i : i + len(inner)]) == inner)
    before = torch.tensor(wrapped.ids[:start], dtype=torch.long).expand(n_prompts, -1)
    after = torch.tensor(wrapped.ids[start + len(inner) :], dtype=torch.long).expand(n_prompts, -1)
    return torch.cat([before, rand, rand, after], 1), start


def induction_scores(
    model: HookedModel,
    seq_len: int = 20,
    n_prompts: int = 20,
    seed: int = 0,
    vocabulary: Sequence[int] | None = None,
) -> Float[Tensor, "layer head"]:
    """Mean attention from each token of the second copy of a repeated random sequence
    (:func:`repeated_tokens`) to the token after its first occurrence (the induction score
    of Olsson et al. 2022)."""
    tokens, start = repeated_tokens(model, seq_len, n_prompts, seed, vocabulary)
    q = torch.arange(start + seq_len, start + 2 * seq_len)
    out = torch.empty(model.cfg.n_layers, model.cfg.n_heads)

    def store(layer: int, act: Tensor, hook: Any) -> None:
        out[layer] = act[:, :, q, q - seq_len + 1].float().mean((0, 2)).cpu()

    hooks = [(hook_name("pattern", x), partial(store, x)) for x in range(model.cfg.n_layers)]
    with torch.no_grad():
        model.run_with_hooks(tokens.to(model_device(model)), fwd_hooks=hooks)
    return out


def _summing_hook(found: dict, layer: int, toks: Tensor, real: Tensor, special: Tensor):
    """A pattern hook that stores the layer's summary sums in ``found`` (pattern dropped)."""

    def hook(act: Tensor, hook: Any) -> None:
        d = act.device
        found[layer] = _sums(act, toks.to(d), real.to(d), special.to(d))

    return hook


def head_summary(
    model: HookedModel,
    prompts: Sequence[str],
    *,
    batch_size: int = 32,
    induction: bool = True,
    seq_len: int = 20,
    seed: int = 0,
) -> HeadSummary:
    """Per-head attention statistics over ``prompts`` (see :class:`HeadSummary`), with
    patterns reduced inside the hooks, batch by batch (no pattern is kept)."""
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    tokenized = [tokenize_prompt(model, p) for p in prompts]
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    sums = torch.zeros(len(SUMMARY_STATS), n_layers, n_heads)
    counts = torch.zeros(len(SUMMARY_STATS))
    dev = model_device(model)
    for s in range(0, len(tokenized), batch_size):
        chunk = tokenized[s : s + batch_size]
        toks, mask, _ = pad_tokens(model, chunk)
        special = torch.zeros_like(mask, dtype=torch.bool)
        for b, tp in enumerate(chunk):
            special[b, : len(tp)] = torch.tensor(tp.special)
        found: dict[int, tuple[Tensor, Tensor]] = {}
        hooks = [
            (hook_name("pattern", x), _summing_hook(found, x, toks, mask.bool(), special))
            for x in range(n_layers)
        ]
        with torch.no_grad():
            model.run_with_hooks(toks.to(dev), fwd_hooks=hooks, attention_mask=mask.to(dev))
        for layer, (layer_sums, _) in found.items():
            sums[:, layer] += layer_sums.cpu()
        counts += found[0][1].cpu()
    means = sums / counts[:, None, None]
    return HeadSummary(
        **dict(zip(SUMMARY_STATS, means, strict=True)),
        induction=induction_scores(model, seq_len, seed=seed) if induction else None,
        n_prompts=len(prompts),
        n_queries={k: int(c) for k, c in zip(SUMMARY_STATS, counts.tolist(), strict=True)},
        model_name=model_info(model).name,
    )


# -- neuron view --------------------------------------------------------------------------
@dataclass(frozen=True)
class NeuronView:
    """How one head's attention from one query token comes about (bertviz's neuron view).

    Fields:
        layer, head, query: the head and the query's position.
        labels: unique token labels of the input.
        q: the query vector ``[d_head]``; k: key vectors ``[key, d_head]``, as the scores
            read them: after rotary embeddings and query/key norms where the model has
            them; under grouped-query attention the keys of the head's key/value head.
        product: their elementwise product ``[key, d_head]`` (its row sums are the scores
            before scaling).
        scores: ``q . k / scale`` per key (soft-capped where the model caps attention
            scores, Gemma 2), ``-inf`` where the model masks the key.
        pattern: the attention weights, ``hook_pattern``; ``softmax(scores)`` equals it
            (checked: a model whose scores this cannot reproduce is refused).
        scale: the divisor of the dot products (``sqrt(d_head)`` for GPT-2 and BERT; the
            model's own where it scales otherwise).
    """

    layer: int
    head: int
    query: int
    labels: tuple[str, ...]
    q: Float[Tensor, " d_head"]
    k: Float[Tensor, "key d_head"]
    product: Float[Tensor, "key d_head"]
    scores: Float[Tensor, " key"]
    pattern: Float[Tensor, " key"]
    scale: float


def neuron_view(
    model: HookedModel,
    text: str,
    layer: int,
    head: int,
    query: int | str,
    text_b: str | None = None,
) -> NeuronView:
    """The neuron view of head ``layer``.``head`` for the token at position ``query`` (or
    with that unique label, e.g. ``"cat 1"``)."""
    cfg = model.cfg
    if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
        raise ValueError(f"no head L{layer}H{head} in a {cfg.n_layers}x{cfg.n_heads} model")
    enc = _encode(model, text, text_b)
    labels = tuple(unique_token_labels(enc.tokens))
    if isinstance(query, str):
        if query not in labels:
            raise ValueError(f"no token labelled {query!r}; labels: {list(labels)}")
        query = labels.index(query)
    if not 0 <= query < len(labels):
        raise ValueError(f"query position {query} is outside the {len(labels)} tokens")
    hooks = getattr(model, "hook_dict", {})
    rotated = hook_name("rot_q", layer) in hooks
    sites = ("rot_q", "rot_k") if rotated else ("q", "k")
    names = [hook_name(s, layer) for s in (*sites, "pattern")]
    kept = _run_reading(model, enc, names)
    missing = [n for n in names if n not in kept]
    if missing:
        raise ValueError(
            f"the neuron view needs {missing[0]}, which TransformerLens's bridge does not "
            f"compute for {architecture_name(model)}: its queries and keys as the scores read "
            "them (after rotary embeddings) are not exposed"
        )
    keys = kept[names[1]]  # [key, kv_head, d_head]
    q = kept[names[0]][query, head].float()
    k = keys[:, head // (cfg.n_heads // keys.shape[1])].float()
    pattern = kept[names[2]][head, query].float()
    scaling = getattr(getattr(model.blocks[layer].attn, "original_component", None), "scaling", 0)
    scale = 1.0 / float(scaling) if scaling else math.sqrt(cfg.d_head)
    product = q[None] * k
    scores = product.sum(-1) / scale
    cap = float(getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0)
    if cap > 0:
        scores = cap * torch.tanh(scores / cap)
    if getattr(cfg, "attention_dir", "causal") == "causal":
        scores[query + 1 :] = float("-inf")
    scores[pattern == 0] = float("-inf")  # masked keys (sliding windows): weight exactly 0
    window = scores.softmax(-1)
    if not torch.allclose(window, pattern, atol=1e-4):  # a sliding window, a mask unknown here
        raise ValueError(
            f"the neuron view cannot reproduce {architecture_name(model)}'s attention at "
            f"L{layer}H{head}: softmax of its query-key scores differs from the model's "
            f"pattern by {float((window - pattern).abs().max()):.2g}"
        )
    return NeuronView(
        layer,
        head,
        query,
        labels,
        q.cpu(),
        k.cpu(),
        product.cpu(),
        scores.cpu(),
        pattern.cpu(),
        scale,
    )
