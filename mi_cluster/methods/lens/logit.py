"""The logit lens and the tuned lens: what the model would predict if it stopped at a layer.

The residual stream after each layer (``resid_post``, starting with the embedding) goes
through the model's own output head: the final LayerNorm, computed on that residual as the
model computes it on its last one (centred, divided by its own per-position scale, then
weighted), and the unembedding (for BERT's masked-LM models, the MLM transform first). At
the last layer this *is* the model's output, so the lens there equals the model's
log-probabilities exactly.

The tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with
the Tuned Lens") first applies a learned affine translator per layer, ``h + h A + b``
(identity at initialisation), trained to minimise KL(final || lens) on a corpus; see
:mod:`mi_cluster.methods.lens.tuned`. Every function here takes either lens.

Memory is bounded: residuals are kept only at the requested positions (through
:func:`~mi_cluster.collection.activations.collect`), the vocabulary-sized distributions
are computed a chunk of rows at a time and reduced to top-k tokens, watched ranks, KL and logit
differences; the full ``[layer, row, d_vocab]`` log-probabilities are kept only when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_cluster.collection.activations import Positions, collect
from mi_cluster.core.display import Summary, short_list, summary_html, summary_repr
from mi_cluster.core.model_info import model_device, model_info, require_meaningful_logits
from mi_cluster.core.prompts import get_tokenizer, one_token_id
from mi_cluster.core.protocols import HookedModel, Tokenizer
from mi_cluster.core.readout import check_readout, residual_logits
from mi_cluster.methods.similarity.distances import kl_from_log_probs

if TYPE_CHECKING:
    from mi_cluster.methods.lens.tuned import TunedLens

__all__ = ["LensResult", "layer_logits", "logit_lens", "residual_logits", "token_id"]

CHUNK_ELEMENTS = 2**23
"""Vocabulary-sized floats computed at once (32 MiB in float32): rows per chunk are
``CHUNK_ELEMENTS // d_vocab``, for every reading of logits over many rows."""


def layer_logits(
    model: HookedModel,
    resid: Float[Tensor, "row d_model"],
    layer: int,
    lens: TunedLens | None = None,
) -> Float[Tensor, "row d_vocab"]:
    """The lens's logits (float32) for residuals of residual layer ``layer`` (0: the
    embedding): the tuned lens's translator first where ``lens`` is given and the layer has
    one (the last layer needs none), then the model's head."""
    if lens is not None and layer < lens.n_translators:
        resid = lens.translate(layer, resid)
    return residual_logits(model, resid).float()


def token_id(model_or_tokenizer: HookedModel | Tokenizer, token: int | str) -> int:
    """A token id from an id or from a string that the tokenizer encodes as one token
    (e.g. ``" Paris"`` with GPT-2's leading space)."""
    tokenizer = get_tokenizer(model_or_tokenizer)
    if isinstance(token, bool) or not isinstance(token, int | str):
        raise TypeError(f"a token is an id (int) or a string, got {token!r}")
    if isinstance(token, int):
        if not 0 <= token < len(tokenizer):
            raise ValueError(f"token id {token} is outside the vocabulary (size {len(tokenizer)})")
        return token
    return one_token_id(tokenizer, token)


@dataclass(frozen=True)
class LensResult:
    """A lens over layers, at the kept positions of each prompt (one row per position).

    Fields:
        lens: ``"logit"`` or ``"tuned"``.
        layer_labels: ``"embed"``, ``"L0"``, ... ``"L{n-1}"``; the last is the model's output.
        top_ids: the ``k`` most likely tokens, ``[layer, row, k]`` (ecco's "predictions").
        top_log_probs: their log-probabilities, ``[layer, row, k]``.
        top_tokens: their strings, ``[layer][row][k]``.
        watch_ids: the watched token ids (ecco's ``rankings_watch``), may be empty;
            watch_tokens: their strings.
        watch_ranks: rank of each watched token, 0 for the most likely, ``[layer, row, watch]``.
        watch_log_probs: their log-probabilities, ``[layer, row, watch]``.
        kl_to_final: KL(final || layer) in nats, ``[layer, row]``; 0 at the last layer.
        answer_ids: per row ``(correct, incorrect)`` token ids, or None.
        logit_diff: per layer and row, logit(correct) - logit(incorrect), or None.
        answer_ranks: per layer and row, the ranks of the correct and the incorrect answer
            ``[layer, row, 2]``, or None.
        log_probs: the full ``[layer, row, d_vocab]`` log-probabilities if asked, else None.
        prompts: the prompts; ``prompt_index``/``positions``/``tokens``: per row, its
            prompt, its token position in the unpadded prompt and that token's string.
        model_name: the model's name.
    """

    lens: str
    layer_labels: tuple[str, ...]
    top_ids: Int[Tensor, "layer row k"]
    top_log_probs: Float[Tensor, "layer row k"]
    top_tokens: tuple[tuple[tuple[str, ...], ...], ...]
    watch_ids: tuple[int, ...]
    watch_tokens: tuple[str, ...]
    watch_ranks: Int[Tensor, "layer row watch"]
    watch_log_probs: Float[Tensor, "layer row watch"]
    kl_to_final: Float[Tensor, "layer row"]
    answer_ids: Int[Tensor, "row 2"] | None
    logit_diff: Float[Tensor, "layer row"] | None
    answer_ranks: Int[Tensor, "layer row 2"] | None
    log_probs: Float[Tensor, "layer row d_vocab"] | None
    prompts: tuple[str, ...]
    prompt_index: tuple[int, ...]
    positions: tuple[int, ...]
    tokens: tuple[str, ...]
    model_name: str

    def summary(self) -> Summary:
        """What the result shows first: the lens, model, layers, rows, watched tokens and
        the last row's top prediction at the first and the last layer."""
        items = [
            ("lens", self.lens),
            ("model", self.model_name),
            ("layers", short_list(self.layer_labels)),
            ("rows", f"{len(self.tokens)} positions of {len(self.prompts)} prompts"),
        ]
        if self.watch_tokens:
            items.append(("watching", short_list(self.watch_tokens)))
        if self.tokens:
            first, last = self.top_tokens[0][-1][0], self.top_tokens[-1][-1][0]
            items.append(
                (
                    "last row's top-1",
                    f"{first!r} at {self.layer_labels[0]} -> {last!r} at {self.layer_labels[-1]}",
                )
            )
        return Summary("LensResult", tuple(items))

    def __repr__(self) -> str:
        return summary_repr(self.summary())

    def _repr_html_(self) -> str:
        return summary_html(self.summary())

    @property
    def n_layers(self) -> int:
        """Layers read (rows of every per-layer result)."""
        return len(self.layer_labels)

    def rows_of(self, prompt: int) -> list[int]:
        """The rows that belong to prompt number ``prompt``."""
        return [r for r, i in enumerate(self.prompt_index) if i == prompt]


def _decoder(model: HookedModel) -> Any:
    """Token id -> its string as it reads in text (``" Paris"``), cached per id."""
    tokenizer = get_tokenizer(model)
    cache: dict[int, str] = {}

    def decode(i: int) -> str:
        if i not in cache:
            cache[i] = tokenizer.decode([i], clean_up_tokenization_spaces=False)
        return cache[i]

    return decode


def _answers(
    model: HookedModel,
    answers: Any,
    prompt_index: Sequence[int],
    n_prompts: int,
) -> Tensor:
    """``[row, 2]`` answer ids from one ``(correct, incorrect)`` pair or one per prompt."""
    if (
        isinstance(answers, tuple | list)
        and len(answers) == 2
        and all(isinstance(a, int | str) for a in answers)
    ):
        pairs = [answers] * n_prompts
    else:
        pairs = list(answers)
        if len(pairs) != n_prompts:
            raise ValueError(
                f"answers: give one (correct, incorrect) pair, or one per prompt "
                f"({n_prompts}), got {len(pairs)}"
            )
    ids = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"answers: each entry is a (correct, incorrect) pair, got {pair!r}")
        ids.append([token_id(model, pair[0]), token_id(model, pair[1])])
    per_prompt = torch.tensor(ids, dtype=torch.long)
    return per_prompt[torch.tensor(prompt_index, dtype=torch.long)]


@dataclass
class _Readings:
    """What the lens keeps of every layer and row, filled a chunk of rows at a time (on
    the CPU, in the residuals' dtype; ranks as longs)."""

    top_ids: Tensor
    top_lp: Tensor
    watch: Tensor  # the watched token ids
    w_ranks: Tensor
    w_lp: Tensor
    kl: Tensor
    answer_ids: Tensor | None
    diff: Tensor | None
    a_ranks: Tensor | None
    full: Tensor | None

    @staticmethod
    def empty(
        resid: Tensor,
        k: int,
        watch_ids: Sequence[int],
        answer_ids: Tensor | None,
        d_vocab: int | None,
    ) -> _Readings:
        """Buffers for ``resid [layer, row, d_model]``; ``d_vocab``: keep log-probabilities."""
        n_layers, n_rows, dt = resid.shape[0], resid.shape[1], resid.dtype
        answered = answer_ids is not None
        return _Readings(
            top_ids=torch.empty((n_layers, n_rows, k), dtype=torch.long),
            top_lp=torch.empty((n_layers, n_rows, k), dtype=dt),
            watch=torch.tensor(list(watch_ids), dtype=torch.long),
            w_ranks=torch.empty((n_layers, n_rows, len(watch_ids)), dtype=torch.long),
            w_lp=torch.empty((n_layers, n_rows, len(watch_ids)), dtype=dt),
            kl=torch.empty((n_layers, n_rows), dtype=dt),
            answer_ids=answer_ids,
            diff=torch.empty((n_layers, n_rows), dtype=dt) if answered else None,
            a_ranks=torch.empty((n_layers, n_rows, 2), dtype=torch.long) if answered else None,
            full=None if d_vocab is None else torch.empty((n_layers, n_rows, d_vocab), dtype=dt),
        )

    def record(
        self, layer: int, rows: slice, logits: Tensor, lp: Tensor | None, final: Tensor
    ) -> None:
        """Keep layer ``layer``'s readings of ``rows`` from its ``logits`` (``lp``: their
        log-probabilities when already computed; ``final``: the last layer's). Ranks and
        logit differences are read off the logits, not the log-probabilities: the same
        order, without log_softmax's rounding; the logits are where the head is (on a device
        map, the last device)."""
        lp = torch.log_softmax(logits, -1) if lp is None else lp
        dt = self.top_lp.dtype
        values, ids = lp.topk(self.top_ids.shape[-1], dim=-1)
        self.top_ids[layer, rows], self.top_lp[layer, rows] = ids.cpu(), values.to(dt).cpu()
        if len(self.watch):
            watch = self.watch.to(logits.device)
            self.w_lp[layer, rows] = lp[:, watch].to(dt).cpu()
            watched = logits[:, watch]
            self.w_ranks[layer, rows] = (logits[:, None, :] > watched[:, :, None]).sum(-1).cpu()
        self.kl[layer, rows] = kl_from_log_probs(final, lp).to(dt).cpu()
        if self.answer_ids is not None and self.diff is not None and self.a_ranks is not None:
            answer = logits.gather(1, self.answer_ids[rows].to(logits.device))  # [row, 2]
            self.diff[layer, rows] = (answer[:, 0] - answer[:, 1]).to(dt).cpu()
            self.a_ranks[layer, rows] = (logits[:, None, :] > answer[:, :, None]).sum(-1).cpu()
        if self.full is not None:
            self.full[layer, rows] = lp.to(dt).cpu()


def logit_lens(
    model: HookedModel,
    prompts: Sequence[str],
    positions: Positions | str = "last",
    *,
    lens: TunedLens | None = None,
    k: int = 10,
    watch: Sequence[int | str] = (),
    answers: Any = None,
    keep_log_probs: bool = False,
    batch_size: int = 32,
    padding_side: Literal["right", "left"] = "right",
    progress: bool = True,
) -> LensResult:
    """The logit lens (or, with ``lens=``, the tuned lens) at every layer.

    Args:
        model: a TransformerLens model with real logits (MiniLM has none and is refused).
        prompts: the prompts (lengths may differ; batches are padded on ``padding_side``).
        positions: which tokens to read (:class:`~mi_cluster.collection.activations.Positions`,
            ``"last"`` or ``"all"``).
        lens: a :class:`~mi_cluster.methods.lens.tuned.TunedLens` for this model; None: logit lens.
        k: how many top tokens to keep per layer and row.
        watch: token ids or one-token strings whose rank is tracked at every layer.
        answers: one ``(correct, incorrect)`` pair for all prompts or one per prompt (ids
            or one-token strings); gives the logit difference per layer.
        keep_log_probs: also keep the full ``[layer, row, d_vocab]`` log-probabilities.
        batch_size: prompts per forward pass.
        padding_side: where shorter prompts of a batch are padded.
        progress: a progress bar over batches.
    """
    require_meaningful_logits(model, "the logit lens")
    check_readout(model)
    d_vocab = model.cfg.d_vocab
    if not 1 <= k <= d_vocab:
        raise ValueError(f"k must be between 1 and the vocabulary size {d_vocab}, got {k}")
    watch_ids = [token_id(model, t) for t in watch]
    if lens is not None:
        lens.check_model(model)
    dev = model_device(model)
    acts = collect(
        model,
        prompts,
        "resid_post",
        positions,
        batch_size=batch_size,
        storage_device=dev,
        padding_side=padding_side,
        progress=progress,
    )
    if any(len(p) != 1 for p in acts.positions):
        raise ValueError(
            "the lens reads single token positions; averaged positions (Positions.mean, "
            "a word's mean sub-token) have no next-token prediction"
        )
    resid = acts.tensor  # [layer, row, d_model]
    answer_ids = (
        None if answers is None else _answers(model, answers, acts.prompt_index, len(prompts))
    )
    out = _Readings.empty(resid, k, watch_ids, answer_ids, d_vocab if keep_log_probs else None)
    n_layers, n_rows = resid.shape[0], resid.shape[1]
    chunk = max(1, CHUNK_ELEMENTS // d_vocab)
    with torch.no_grad():
        for start in range(0, n_rows, chunk):
            rows = slice(start, min(n_rows, start + chunk))
            final_logits = residual_logits(model, resid[-1, rows]).float()
            final = torch.log_softmax(final_logits, -1)
            for layer in range(n_layers):
                last = layer == n_layers - 1
                logits = (
                    final_logits if last else layer_logits(model, resid[layer, rows], layer, lens)
                )
                out.record(layer, rows, logits, final if last else None, final)
    decode = _decoder(model)
    top_tokens = tuple(
        tuple(tuple(decode(i) for i in row) for row in layer.tolist()) for layer in out.top_ids
    )
    return LensResult(
        lens="logit" if lens is None else "tuned",
        layer_labels=acts.layer_labels,
        top_ids=out.top_ids,
        top_log_probs=out.top_lp,
        top_tokens=top_tokens,
        watch_ids=tuple(watch_ids),
        watch_tokens=tuple(decode(i) for i in watch_ids),
        watch_ranks=out.w_ranks,
        watch_log_probs=out.w_lp,
        kl_to_final=out.kl,
        answer_ids=answer_ids,
        logit_diff=out.diff,
        answer_ranks=out.a_ranks,
        log_probs=out.full,
        prompts=tuple(prompts),
        prompt_index=acts.prompt_index,
        positions=tuple(p[0] for p in acts.positions),
        tokens=tuple(t[0] for t in acts.tokens),
        model_name=model_info(model).name,
    )
