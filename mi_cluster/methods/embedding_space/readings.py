"""Parameters and activations read in vocabulary space (Dar, Geva, Gupta & Berant 2023,
"Analyzing Transformers in Embedding Space").

A vector of the residual stream's width becomes a score for every token when it is
multiplied by one of the model's two vocabulary matrices, the **readout**:

- ``"embedding"``: the input embedding ``W_E`` (``[d_vocab, d_model]``), for what a
  component *reads* from the residual stream: an MLP neuron's key (a column of ``W_in``), a
  head's query, key or value direction; score ``W_E v``;
- ``"unembedding"``: the unembedding ``W_U`` (``[d_model, d_vocab]``), for what a component
  *writes*: an MLP neuron's value (a row of ``W_out``), a head's output directions, a
  residual vector; score ``v W_U``.

Parameters are read raw, as the paper reads them: no norm divides them (the bridge's
weight processing has folded norm *weights* into the matrices, and on LayerNorm models
centred the unembedding; see :func:`~mi_cluster.models.loading.load_model`). Residual
vectors can instead go through the model's final norm and head
(:func:`~mi_cluster.core.readout.residual_logits`, as the logit lens does). For a model whose
head is not meaningful (MiniLM's random MLM transform), read through the embedding: BERT's
decoder is tied to it.

A head's OV circuit ``W_E W_V W_O W_U`` and QK circuit ``W_E W_Q W_K^T W_E^T`` are
``d_vocab x d_vocab`` matrices of rank ``d_head``: :class:`FactoredCircuit` keeps their two
factors and computes rows, the diagonal and top-k entries a chunk of rows at a time, so no
``d_vocab x d_vocab`` matrix is ever built.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_cluster.core.model_info import require_meaningful_logits
from mi_cluster.core.prompts import get_tokenizer
from mi_cluster.core.protocols import HookedModel
from mi_cluster.core.readout import residual_logits
from mi_cluster.core.weights import head_input_weights, head_output_weights, mlp_weights

__all__ = [
    "READOUTS",
    "FactoredCircuit",
    "TokenReading",
    "circuit_directions",
    "circuit_rows",
    "neuron_readings",
    "ov_circuit",
    "qk_circuit",
    "read_vectors",
    "residual_tokens",
    "vocab_basis",
    "vocab_correlation",
]

Readout = Literal["embedding", "unembedding"]
READOUTS: tuple[str, ...] = ("embedding", "unembedding")
CHUNK_ELEMENTS = 2**24
"""Vocabulary-sized scores computed at once (64 MiB in float32)."""


def vocab_basis(model: HookedModel, readout: Readout) -> Float[Tensor, "d_vocab d_model"]:
    """The vocabulary matrix as ``[d_vocab, d_model]`` rows, one per token: ``W_E`` for
    ``"embedding"``, ``W_U`` transposed for ``"unembedding"`` (refused where the model's
    logits are not meaningful)."""
    if readout == "embedding":
        return model.W_E.detach()
    if readout == "unembedding":
        require_meaningful_logits(model, "reading through the unembedding")
        return model.W_U.detach().T
    raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")


@dataclass(frozen=True)
class TokenReading:
    """Vectors read in vocabulary space: each vector's highest- and lowest-scoring tokens.

    Fields:
        labels: a label per vector (``"L1 N7 key"``, ``"L2H2 OV row 'Mary'"``).
        readout: ``"embedding"``, ``"unembedding"`` or ``"final norm + unembedding"``.
        top_ids: ``[vector, k]`` token ids of the highest scores, best first.
        top_scores: their scores.
        bottom_ids: ``[vector, k]`` token ids of the lowest scores, lowest first.
        bottom_scores: their scores.
        top_tokens: the ``top_ids`` as text.
        bottom_tokens: the ``bottom_ids`` as text.
    """

    labels: tuple[str, ...]
    readout: str
    top_ids: Int[Tensor, "vector k"]
    top_scores: Float[Tensor, "vector k"]
    bottom_ids: Int[Tensor, "vector k"]
    bottom_scores: Float[Tensor, "vector k"]
    top_tokens: tuple[tuple[str, ...], ...]
    bottom_tokens: tuple[tuple[str, ...], ...]

    def __repr__(self) -> str:
        k = self.top_ids.shape[1]
        return f"TokenReading({len(self.labels)} vectors, top/bottom {k}, via {self.readout})"


def _chunks(n_rows: int, row_size: int) -> Iterator[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, row_size))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def _reading(
    model: HookedModel,
    scores_of: Iterator[tuple[slice, Tensor]],
    n: int,
    k: int,
    labels: Sequence[str],
    readout: str,
) -> TokenReading:
    """Top and bottom ``k`` of score rows produced a chunk at a time."""
    top_i = torch.empty((n, k), dtype=torch.long)
    top_s = torch.empty((n, k), dtype=torch.float64)
    bot_i, bot_s = torch.empty_like(top_i), torch.empty_like(top_s)
    for rows, scores in scores_of:
        values, ids = scores.topk(k, dim=-1)
        top_i[rows], top_s[rows] = ids.cpu(), values.double().cpu()
        values, ids = scores.topk(k, dim=-1, largest=False)
        bot_i[rows], bot_s[rows] = ids.cpu(), values.double().cpu()
    tokenizer = get_tokenizer(model)

    def text(ids: Tensor) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(tokenizer.decode([i]) for i in row) for row in ids.tolist())

    return TokenReading(
        tuple(labels), readout, top_i, top_s, bot_i, bot_s, text(top_i), text(bot_i)
    )


def _check_k(k: int, d_vocab: int) -> None:
    if not 1 <= k <= d_vocab:
        raise ValueError(f"k must be between 1 and the vocabulary size {d_vocab}, got {k}")


def read_vectors(
    model: HookedModel,
    vectors: Float[Tensor, "vector d_model"],
    readout: Readout = "unembedding",
    *,
    k: int = 10,
    labels: Sequence[str] | None = None,
) -> TokenReading:
    """The top and bottom ``k`` tokens of each vector read through ``readout`` (raw: no
    norm), computed a chunk of vectors at a time."""
    basis = vocab_basis(model, readout)
    if vectors.ndim != 2 or vectors.shape[1] != basis.shape[1]:
        raise ValueError(
            f"vectors must be [vector, {basis.shape[1]}] (the model's width), "
            f"got {tuple(vectors.shape)}"
        )
    _check_k(k, basis.shape[0])
    names = list(labels) if labels is not None else [f"vector {i}" for i in range(len(vectors))]
    if len(names) != len(vectors):
        raise ValueError(f"{len(names)} labels for {len(vectors)} vectors")
    v = vectors.detach().to(basis)
    scores = ((rows, v[rows] @ basis.T) for rows in _chunks(len(v), basis.shape[0]))
    return _reading(model, scores, len(v), k, names, readout)


def neuron_readings(
    model: HookedModel,
    layer: int,
    neurons: Sequence[int] | None = None,
    *,
    k: int = 10,
) -> tuple[TokenReading, TokenReading]:
    """``(keys, values)`` of MLP neurons of ``layer`` (default all) in vocabulary space:
    each neuron's input key (a column of ``W_in``) read through the embedding, and its
    output value (a row of ``W_out``) through the unembedding."""
    w_in, w_out = mlp_weights(model, layer)
    ids = list(range(w_in.shape[1])) if neurons is None else [int(i) for i in neurons]
    bad = [i for i in ids if not 0 <= i < w_in.shape[1]]
    if bad:
        raise ValueError(f"neurons {bad} do not exist: layer {layer} has {w_in.shape[1]}")
    keys = read_vectors(
        model, w_in[:, ids].T, "embedding", k=k, labels=[f"L{layer} N{i} key" for i in ids]
    )
    values = read_vectors(
        model, w_out[ids], "unembedding", k=k, labels=[f"L{layer} N{i} value" for i in ids]
    )
    return keys, values


def residual_tokens(
    model: HookedModel,
    resid: Float[Tensor, "vector d_model"],
    *,
    k: int = 10,
    final_norm: bool = True,
    readout: Readout = "unembedding",
    labels: Sequence[str] | None = None,
) -> TokenReading:
    """Residual vectors (or differences of two) as token rankings: through the model's
    final norm and head, as the logit lens reads them (``final_norm=True``; a difference
    is normed as a vector of its own), or raw through ``readout``."""
    if not final_norm:
        return read_vectors(model, resid, readout, k=k, labels=labels)
    require_meaningful_logits(model, "reading residuals through the model's head")
    _check_k(k, model.cfg.d_vocab)
    names = list(labels) if labels is not None else [f"vector {i}" for i in range(len(resid))]
    v = resid.detach()
    scores = (
        (rows, residual_logits(model, v[rows]).float())
        for rows in _chunks(len(v), model.cfg.d_vocab)
    )
    return _reading(model, scores, len(v), k, names, "final norm + unembedding")


def vocab_correlation(
    model: HookedModel,
    a: Float[Tensor, "*batch d_model"],
    b: Float[Tensor, "*batch d_model"],
    readout: Readout = "unembedding",
) -> Float[Tensor, "*batch"]:
    """Pearson correlation, over the vocabulary, of ``a``'s and ``b``'s token scores (each
    vector read raw through ``readout``), pair by pair: how alike two activations look in
    embedding space. Exact without the ``d_vocab``-long scores: with ``B`` the basis
    centred over tokens, ``r = a G b / sqrt(a G a . b G b)`` for ``G = B^T B``."""
    basis = vocab_basis(model, readout).double()
    if a.shape != b.shape or a.shape[-1] != basis.shape[1]:
        raise ValueError(
            f"a and b must have one shape ending in the model's width {basis.shape[1]}, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    centred = basis - basis.mean(0)
    gram = centred.T @ centred  # [d_model, d_model]
    x, y = a.detach().double().to(gram.device), b.detach().double().to(gram.device)
    xy = ((x @ gram) * y).sum(-1)
    xx, yy = ((x @ gram) * x).sum(-1), ((y @ gram) * y).sum(-1)
    return (xy / (xx * yy).sqrt().clamp_min(torch.finfo(torch.float64).tiny)).to(a.dtype)


@dataclass(frozen=True)
class FactoredCircuit:
    """A ``d_vocab x d_vocab`` matrix ``left @ right`` of rank ``r``, never built whole:
    row ``i`` is token ``i``'s reading (the source token), column ``j`` the token scored.

    Fields:
        name: what it is (``"L2H2 OV"``).
        left: ``[d_vocab, r]``.
        right: ``[r, d_vocab]``.
    """

    name: str
    left: Float[Tensor, "d_vocab rank"]
    right: Float[Tensor, "rank d_vocab"]

    def __repr__(self) -> str:
        n, r = self.left.shape
        return f"FactoredCircuit({self.name}: {n} x {self.right.shape[1]}, rank {r})"

    def rows(self, ids: Sequence[int] | Tensor) -> Float[Tensor, "row d_vocab"]:
        """Dense rows for the source tokens ``ids``."""
        index = torch.as_tensor(ids, dtype=torch.long, device=self.left.device)
        return self.left[index] @ self.right

    def diagonal(self) -> Float[Tensor, " d_vocab"]:
        """Entry ``(t, t)`` for every token: how much a token promotes itself (a head's
        copying score, for an OV circuit)."""
        return (self.left * self.right.T).sum(-1)

    def top_k_per_row(
        self, k: int, ids: Sequence[int] | Tensor | None = None, *, largest: bool = True
    ) -> tuple[Int[Tensor, "row k"], Float[Tensor, "row k"]]:
        """For each source token in ``ids`` (default all), the ``k`` target tokens with the
        largest (or smallest) entries and those entries, a chunk of rows at a time."""
        n = self.left.shape[0]
        index = torch.arange(n) if ids is None else torch.as_tensor(ids, dtype=torch.long)
        _check_k(k, self.right.shape[1])
        out_i = torch.empty((len(index), k), dtype=torch.long)
        out_v = torch.empty((len(index), k), dtype=self.left.dtype)
        for rows in _chunks(len(index), self.right.shape[1]):
            values, cols = self.rows(index[rows]).topk(k, dim=-1, largest=largest)
            out_i[rows], out_v[rows] = cols.cpu(), values.cpu()
        return out_i, out_v

    def singular(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """The top ``n`` singular triples, from the factors alone: ``(source [n, d_vocab],
        values [n], target [n, d_vocab])`` with the matrix ``sum_i values_i source_i^T
        target_i``; each pair's sign is chosen so that its target's largest entry is
        positive."""
        qa, ra = torch.linalg.qr(self.left)
        qb, rb = torch.linalg.qr(self.right.T)
        u, values, vh = torch.linalg.svd(ra @ rb.T)
        n = min(n, len(values))
        source, target = (qa @ u[:, :n]).T, vh[:n] @ qb.T
        sign = torch.sign(target.gather(1, target.abs().argmax(1, keepdim=True)))
        return source * sign, values[:n], target * sign

    def top_entries(self, k: int, *, largest: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """The ``k`` largest (or smallest) entries of the whole matrix, as ``(source ids,
        target ids, values)``, scanning it a chunk of rows at a time."""
        n, m = self.left.shape[0], self.right.shape[1]
        _check_k(k, n * m)
        best_v = torch.empty(0, dtype=self.left.dtype)
        best_flat = torch.empty(0, dtype=torch.long)
        for rows in _chunks(n, m):
            # each row's best k first (a row-wise top-k is faster than one over the block)
            values, cols = (self.left[rows] @ self.right).topk(min(k, m), dim=-1, largest=largest)
            flat = torch.arange(rows.start, rows.stop)[:, None] * m + cols.cpu()
            best_v = torch.cat([best_v, values.flatten().cpu()])
            best_flat = torch.cat([best_flat, flat.flatten()])
            keep = best_v.topk(min(k, best_v.numel()), largest=largest).indices
            best_v, best_flat = best_v[keep], best_flat[keep]
        return best_flat // m, best_flat % m, best_v


def _check_head(model: HookedModel, layer: int, head: int) -> None:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise ValueError(
            f"head L{layer}H{head} does not exist: the model has {n_layers} layers of "
            f"{n_heads} heads"
        )


def ov_circuit(
    model: HookedModel,
    layer: int,
    head: int,
    *,
    source: Readout = "embedding",
    target: Readout = "unembedding",
) -> FactoredCircuit:
    """Head ``layer``.``head``'s OV circuit in vocabulary space, ``E W_V W_O U``: entry
    ``(i, j)`` is how much attending to token ``i`` writes toward token ``j``. ``source``
    and ``target`` choose the readouts (``target="embedding"`` reads writes through the
    embedding, for a tied model whose head is not meaningful)."""
    _check_head(model, layer, head)
    w_v = head_input_weights(model, layer, "V")[head]  # [d_model, d_head]
    w_o = head_output_weights(model, layer)[head]  # [d_head, d_model]
    left = vocab_basis(model, source) @ w_v.to(model.W_E)
    right = w_o.to(left) @ vocab_basis(model, target).T.to(left)
    return FactoredCircuit(f"L{layer}H{head} OV", left, right)


def qk_circuit(model: HookedModel, layer: int, head: int) -> FactoredCircuit:
    """Head ``layer``.``head``'s QK circuit in vocabulary space, ``E W_Q W_K^T E^T``
    (positions and norms left out): entry ``(i, j)`` is the attention score a query token
    ``i`` gives a key token ``j``, before scaling."""
    _check_head(model, layer, head)
    basis = vocab_basis(model, "embedding")
    w_q = head_input_weights(model, layer, "Q")[head].to(basis)
    w_k = head_input_weights(model, layer, "K")[head].to(basis)
    return FactoredCircuit(f"L{layer}H{head} QK", basis @ w_q, (basis @ w_k).T)


def circuit_rows(
    model: HookedModel, circuit: FactoredCircuit, ids: Sequence[int], *, k: int = 10
) -> TokenReading:
    """Rows ``ids`` of a circuit (what each source token reads or writes through it) as
    top and bottom ``k`` tokens."""
    index = torch.as_tensor(list(ids), dtype=torch.long)
    tokenizer = get_tokenizer(model)
    labels = [f"{circuit.name}: {tokenizer.decode([int(i)]).strip()}" for i in index]
    _check_k(k, circuit.right.shape[1])
    scores = (
        (rows, circuit.rows(index[rows])) for rows in _chunks(len(index), circuit.right.shape[1])
    )
    return _reading(model, scores, len(index), k, labels, "circuit rows")


def circuit_directions(
    model: HookedModel, circuit: FactoredCircuit, n: int = 2, *, k: int = 10
) -> TokenReading:
    """A circuit's top ``n`` singular directions as tokens: for each, what it reads (the
    source side) and what it writes (the target side), with the singular value in the
    label."""
    source, values, target = circuit.singular(n)
    vectors = torch.stack([v for pair in zip(source, target, strict=True) for v in pair])
    labels = [
        f"{circuit.name} {i + 1} ({float(value):.2g}): {side}"
        for i, value in enumerate(values)
        for side in ("reads", "writes")
    ]
    scores = iter([(slice(0, len(vectors)), vectors)])
    return _reading(model, scores, len(vectors), k, labels, "singular directions")
