"""Patching metrics: any function of a patched run, one value (or one fixed-shape tensor)
per prompt.

A :class:`Metric` says what it reads, so a patched run computes only that: logits at a few
positions per prompt (``positions="last"``: each prompt's last real token; ``"all"``; or
explicit per-prompt positions), and/or activations at named hooks (a run stops after the
last layer a metric reads when it needs no logits). Its function receives a
:class:`MetricInput` for many rows at once (each a patched copy of some prompt) and returns
one value per row. Built in: :func:`logit_difference`, :func:`answer_probability`,
:func:`kl_to_clean`, and :func:`activation_metric` for representational scores (a
subjecthood projection, a probe logit, a cosine to a reference); the normalised metric
``(patched - corrupted) / (clean - corrupted)`` is :meth:`PatchResult.normalised`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_cluster.core.model_info import require_meaningful_logits
from mi_cluster.core.prompts import single_token_id
from mi_cluster.core.protocols import HookedModel
from mi_cluster.methods.patching.runner import PatchingError

__all__ = [
    "Metric",
    "MetricInput",
    "activation_metric",
    "answer_ids",
    "check_metric_output",
    "answer_probability",
    "kl_to_clean",
    "logit_difference",
    "n_metric_positions",
]


@dataclass(frozen=True)
class MetricInput:
    """What a metric sees of one batch of patched runs.

    Fields:
        prompt: ``Int[Tensor, "row"]``, the prompt each row is a copy of.
        logits: ``Float[Tensor, "row k d_vocab"]`` at the metric's positions, or None.
        activations: hook name -> ``[row, ...]`` activation, for the hooks it reads.
        clean_logits: the clean run's logits at the same positions, ``[prompt, k, vocab]``
            (index with ``prompt``), or None when no logits are read.
    """

    prompt: Int[Tensor, " row"]
    logits: Float[Tensor, "row k d_vocab"] | None
    activations: dict[str, Tensor]
    clean_logits: Float[Tensor, "prompt k d_vocab"] | None

    @property
    def logits_read(self) -> Float[Tensor, "row k d_vocab"]:
        """``logits``, for a metric that reads them (it declared positions)."""
        if self.logits is None:
            raise PatchingError("this metric reads logits, but it declared no positions")
        return self.logits

    @property
    def clean_logits_read(self) -> Float[Tensor, "prompt k d_vocab"]:
        """``clean_logits``, for a metric that reads them (it declared positions)."""
        if self.clean_logits is None:
            raise PatchingError("this metric reads the clean logits, but it declared no positions")
        return self.clean_logits


@dataclass(frozen=True)
class Metric:
    """A function of a patched run giving one value per prompt.

    Fields:
        name: shown in results and figures.
        fn: ``MetricInput -> Float[Tensor, "row *shape"]``.
        positions: ``"last"``, ``"all"``, or an ``Int[Tensor, "prompt k"]`` of positions
            per prompt, whose logits ``fn`` reads; ``None`` when it reads no logits.
        reads: hook names whose activations ``fn`` reads.
        shape: the shape of each prompt's value: ``()`` for one number, ``(k,)`` for ``k``
            numbers at once (a residual's projections on ``k`` directions, so that one
            sweep serves every direction); results then end in these axes.
        n_prompts: how many prompts the metric holds data for (one answer pair each),
            checked against the prompts patched; None when it holds none.
    """

    name: str
    fn: Callable[[MetricInput], Tensor]
    positions: str | Tensor | None = "last"
    reads: tuple[str, ...] = field(default_factory=tuple)
    shape: tuple[int, ...] = ()
    n_prompts: int | None = None

    def __post_init__(self) -> None:
        if not all(isinstance(n, int) and n >= 1 for n in self.shape):
            raise PatchingError(
                f"metric {self.name!r}: shape must be positive ints, got {self.shape!r}"
            )
        if self.positions is None and not self.reads:
            raise PatchingError(f"metric {self.name!r} reads neither logits nor activations")
        if isinstance(self.positions, str) and self.positions not in ("last", "all"):
            raise PatchingError(
                f"metric {self.name!r}: positions must be 'last', 'all', a tensor or None, "
                f"got {self.positions!r}"
            )


def answer_ids(
    model: HookedModel, answers: Sequence[Sequence[str | int]] | Tensor
) -> Int[Tensor, "prompt n"]:
    """Answer token ids per prompt: words (each must be one token, as the model would
    predict it mid-sentence, and not the tokenizer's unknown token) or ids in the
    vocabulary; an error names any that is not."""
    if isinstance(answers, Tensor):
        if answers.ndim != 2 or answers.is_floating_point() or answers.is_complex():
            raise PatchingError(
                f"answers must be an integer tensor [prompt, n], got {answers.dtype} of shape "
                f"{tuple(answers.shape)}"
            )
        return _in_vocabulary(model, answers.long())
    if isinstance(answers, str) or not len(answers):
        raise PatchingError("answers must be a non-empty list, one (correct, wrong) per prompt")
    rows = []
    for k, row in enumerate(answers):
        if isinstance(row, str):
            raise PatchingError(f"answers[{k}] is one string; give (correct, wrong) per prompt")
        try:
            rows.append([_answer_id(model, a) for a in row])
        except ValueError as err:
            raise PatchingError(f"answers[{k}]: {err}") from None
    if len({len(r) for r in rows}) > 1:
        raise PatchingError("every prompt needs the same number of answers")
    return _in_vocabulary(model, torch.tensor(rows))


def _answer_id(model: HookedModel, answer: str | int) -> int:
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise PatchingError(f"an answer must be a word or a token id, got {answer!r}")
    if isinstance(answer, int):
        return answer
    return single_token_id(model, answer)


def _in_vocabulary(model: HookedModel, ids: Tensor) -> Tensor:
    d_vocab = model.cfg.d_vocab
    bad = ((ids < 0) | (ids >= d_vocab)).nonzero().tolist()
    if bad:
        (k, j), value = bad[0], int(ids[bad[0][0], bad[0][1]])
        raise PatchingError(
            f"answer id {value} (answers[{k}][{j}]) is outside the vocabulary [0, {d_vocab})"
        )
    return ids


def _at(logits: Tensor, prompt: Tensor, ids: Tensor, column: int) -> Tensor:
    return logits[:, 0].gather(1, ids[prompt.cpu(), column].to(logits.device)[:, None])[:, 0]


def logit_difference(model: HookedModel, answers: Sequence[Sequence[str | int]] | Tensor) -> Metric:
    """Logit of the first answer minus the second, at each prompt's last token (each
    prompt with its own answers, e.g. ``[("Mary", "John"), ...]``)."""
    require_meaningful_logits(model, "logit difference")
    ids = answer_ids(model, answers)

    def fn(inp: MetricInput) -> Tensor:
        logits = inp.logits_read
        return _at(logits, inp.prompt, ids, 0) - _at(logits, inp.prompt, ids, 1)

    return Metric("logit difference", fn, "last", n_prompts=len(ids))


def answer_probability(
    model: HookedModel, answers: Sequence[Sequence[str | int]] | Tensor
) -> Metric:
    """Probability of the first answer at each prompt's last token."""
    require_meaningful_logits(model, "answer probability")
    ids = answer_ids(model, answers)

    def fn(inp: MetricInput) -> Tensor:
        logits = inp.logits_read
        probs = logits[:, 0].float().softmax(-1).to(logits.dtype)
        return probs.gather(1, ids[inp.prompt.cpu(), 0].to(probs.device)[:, None])[:, 0]

    return Metric("answer probability", fn, "last", n_prompts=len(ids))


def kl_to_clean(model: HookedModel, positions: str | Tensor = "last") -> Metric:
    """KL(clean || patched) of the next-token distributions, summed over the positions
    read (0 when the patched run predicts as the clean run)."""
    require_meaningful_logits(model, "KL divergence to the clean run")

    def fn(inp: MetricInput) -> Tensor:
        clean = inp.clean_logits_read
        p = clean[inp.prompt.to(clean.device)].log_softmax(-1)
        q = inp.logits_read.log_softmax(-1)
        return (p.exp() * (p - q)).sum(-1).sum(-1)

    return Metric("KL(clean || patched)", fn, positions)


def activation_metric(
    name: str,
    hook: str,
    score: Callable[[Tensor, Tensor], Tensor],
    shape: tuple[int, ...] = (),
) -> Metric:
    """A metric of one activation, e.g. the subjecthood of a word's residual at a layer:
    ``score(activation [row, ...], prompt [row]) -> [row, *shape]``. Runs stop after that
    layer."""
    return Metric(name, lambda inp: score(inp.activations[hook], inp.prompt), None, (hook,), shape)


def validate(metric: Metric, batch: int, n_pos: int, d_vocab: int, dtype: torch.dtype) -> None:
    """Call the metric on zeros shaped like a real batch before any forward pass, so a
    metric that does not return one value per prompt, or holds answers for another number
    of prompts, fails at once, by name."""
    if metric.n_prompts is not None and metric.n_prompts != batch:
        raise PatchingError(
            f"metric {metric.name!r} holds answers for {metric.n_prompts} prompts, but "
            f"{batch} are patched: give one answer pair per prompt"
        )
    k = n_metric_positions(metric.positions, n_pos)
    prompt = torch.arange(batch)
    logits = None if metric.positions is None else torch.zeros(batch, k, d_vocab, dtype=dtype)
    try:
        out = metric.fn(MetricInput(prompt, logits, _FakeActivations(batch), logits))
    except _NeedsRealActivations:
        return  # activation metrics are checked on the first real batch
    except Exception as err:
        raise PatchingError(
            f"metric {metric.name!r} fails on a batch shaped like the real one "
            f"({type(err).__name__}: {err})"
        ) from err
    check_metric_output(metric, out, batch, finite=False)


def n_metric_positions(positions: str | Tensor | None, n_pos: int) -> int:
    """How many positions per prompt a metric reads logits at, for prompts of ``n_pos``."""
    if positions is None:
        return 0
    if isinstance(positions, str):
        return 1 if positions == "last" else n_pos
    return positions.shape[1]


def check_metric_output(metric: Metric, out: Any, rows: int, finite: bool = True) -> None:
    """Refuse a metric's output that is not one value per row (``[rows, *shape]``) or,
    with ``finite``, holds NaN or infinity (a result built on it would be silently
    wrong)."""
    want = (rows, *metric.shape)
    if not isinstance(out, Tensor) or tuple(out.shape) != want:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise PatchingError(
            f"metric {metric.name!r} must return one value per prompt (a tensor of shape "
            f"[{', '.join(map(str, want))}]), got {shape}"
        )
    if finite and not bool(torch.isfinite(out).all()):
        rows_bad = (~torch.isfinite(out)).reshape(rows, -1).any(1).nonzero().flatten()
        raise PatchingError(
            f"metric {metric.name!r} returned NaN or infinity for {len(rows_bad)} of {rows} "
            f"rows (the first: row {int(rows_bad[0])}); check the metric and its inputs"
        )


class _NeedsRealActivations(Exception):
    pass


class _FakeActivations(dict):
    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch

    def __getitem__(self, key: str) -> Float[Tensor, "..."]:
        raise _NeedsRealActivations
