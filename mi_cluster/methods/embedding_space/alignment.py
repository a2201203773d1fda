"""Aligning the layers of two models in vocabulary space (Dar et al. 2023, Section 5):
project each layer's parameters into the shared vocabulary, correlate every pair of layers,
and match layers one to one.

A layer's parameters of one kind, read in vocabulary space, are a ``[d_vocab, m]`` matrix
``X = B W`` (``B``: the readout, ``[d_vocab, d_model]``; ``W``: ``[d_model, m]``):

======== =============================== =================
kind     W (one column per vector)       readout B
======== =============================== =================
keys     ``W_in`` (each neuron's key)    the embedding
values   ``W_out^T`` (each value)        the unembedding
ov       every head's ``W_O`` rows       the unembedding
qk       every head's ``W_Q`` columns    the embedding
======== =============================== =================

Two independently trained models need not order their neurons or heads alike, so a layer
is compared through what does not depend on that order: its token-by-token similarity
``G = X X^T`` (``[d_vocab, d_vocab]``, two tokens alike when the layer's parameters score
them alike). The similarity of layer ``i`` of model A and layer ``j`` of model B is the
Pearson correlation of ``G_A`` and ``G_B`` over every pair of tokens. It is computed
exactly in the models' width, never in the vocabulary's: with ``M = W W^T`` and
``C = B_A^T B_B``, ``sum(G_A * G_B) = tr(M_A C M_B C^T)``; the other sums need only
``B^T 1`` and ``B^T B``.

The layers are matched one to one by the assignment that maximises the summed similarity
(``scipy.optimize.linear_sum_assignment``). Its mean matched similarity is tested against
a permutation null: model B's vocabulary rows shuffled (the same shuffle for every layer),
which breaks the tokens' correspondence and nothing else; under "the two models share
nothing", it is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_cluster.core.model_info import model_info
from mi_cluster.core.prompts import get_tokenizer
from mi_cluster.core.protocols import HookedModel
from mi_cluster.core.weights import head_input_weights, head_output_weights, mlp_weights
from mi_cluster.methods.embedding_space.readings import Readout, vocab_basis
from mi_cluster.methods.stats.resampling import Seed, make_generator

__all__ = [
    "KINDS",
    "LayerAlignment",
    "VocabLayers",
    "shared_vocabulary",
    "vocab_alignment",
    "vocab_layers",
    "vocab_layer_similarity",
]

Kind = Literal["keys", "values", "ov", "qk"]
KINDS: tuple[str, ...] = ("keys", "values", "ov", "qk")
_READOUT: dict[str, Readout] = {
    "keys": "embedding",
    "values": "unembedding",
    "ov": "unembedding",
    "qk": "embedding",
}


@dataclass(frozen=True)
class VocabLayers:
    """Every layer's parameters of one kind, in the form the alignment needs (float64).

    Fields:
        kind: ``"keys"``, ``"values"``, ``"ov"`` or ``"qk"``.
        readout: the vocabulary matrix the parameters are read through.
        basis: ``[d_vocab, d_model]``, that matrix's rows (one per token).
        moments: per layer, ``M = W W^T`` (``[d_model, d_model]``).
        model_name: the model.
    """

    kind: str
    readout: str
    basis: Float[Tensor, "d_vocab d_model"]
    moments: tuple[Tensor, ...]
    model_name: str

    def __repr__(self) -> str:
        v, d = self.basis.shape
        return f"VocabLayers({self.model_name}: {self.kind}, {len(self.moments)} layers, {v} x {d})"


def _layer_weights(model: HookedModel, kind: str, layer: int) -> Tensor:
    """``W`` of one layer, ``[d_model, m]``: one column per parameter vector."""
    if kind == "keys":
        return mlp_weights(model, layer)[0]
    if kind == "values":
        return mlp_weights(model, layer)[1].T
    if kind == "ov":
        return head_output_weights(model, layer).flatten(0, 1).T
    return head_input_weights(model, layer, "Q").transpose(0, 1).flatten(1)


def vocab_layers(
    model: HookedModel, kind: Kind = "values", readout: Readout | None = None
) -> VocabLayers:
    """Every layer's ``kind`` parameters of ``model`` for the alignment, read through
    ``readout`` (default: the embedding for what a layer reads, keys and queries; the
    unembedding for what it writes, values and OV outputs; give ``"embedding"`` for a
    tied model whose head is not meaningful, such as MiniLM)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    basis = vocab_basis(model, readout or _READOUT[kind]).double()
    moments = []
    for layer in range(model.cfg.n_layers):
        w = _layer_weights(model, kind, layer).double().to(basis.device)
        moments.append(w @ w.T)
    return VocabLayers(
        kind, readout or _READOUT[kind], basis, tuple(moments), model_info(model).name
    )


def shared_vocabulary(
    model_a: HookedModel, model_b: HookedModel
) -> tuple[Int[Tensor, " token"], Int[Tensor, " token"]]:
    """``(ids in A, ids in B)`` of the tokens both vocabularies hold, matched by their
    string; every id when the two vocabularies are the same."""
    va = get_tokenizer(model_a).get_vocab()
    vb = get_tokenizer(model_b).get_vocab()
    if va == vb:
        ids = torch.tensor(sorted(va.values()))
        return ids, ids
    common = sorted(set(va) & set(vb))
    return torch.tensor([va[t] for t in common]), torch.tensor([vb[t] for t in common])


@dataclass(frozen=True)
class _Side:
    """One model's terms of the Gram correlation, over the tokens compared."""

    basis: Tensor  # [token, d]
    moments: Tensor  # [layer, d, d]
    sums: Tensor  # [layer]: sum of G's entries
    squares: Tensor  # [layer]: sum of G's squared entries

    @staticmethod
    def of(layers: VocabLayers, ids: Tensor) -> _Side:
        basis = layers.basis[ids.to(layers.basis.device)]
        moments = torch.stack(layers.moments)
        ones = basis.sum(0)  # B^T 1
        km = (basis.T @ basis) @ moments  # B^T B M, per layer
        sums = torch.einsum("i,lij,j->l", ones, moments, ones)
        squares = (km * km.transpose(1, 2)).sum((1, 2))  # tr((B^T B M)^2)
        return _Side(basis, moments, sums, squares)


def _similarity(a: _Side, b: _Side, cross_basis: Tensor) -> Tensor:
    """``[layer_a, layer_b]`` Pearson correlations of the Gram matrices, given
    ``C = B_A^T B_B`` over the tokens compared: ``sum(G_A * G_B) = tr(M_A C M_B C^T)``."""
    n = float(a.basis.shape[0]) ** 2
    left = a.moments @ cross_basis  # [layer_a, d_a, d_b]
    right = cross_basis @ b.moments  # [layer_b, d_a, d_b]
    cross = torch.einsum("aij,bij->ab", left, right)
    cov = cross / n - (a.sums[:, None] / n) * (b.sums[None, :] / n)
    var_a = a.squares / n - (a.sums / n) ** 2
    var_b = b.squares / n - (b.sums / n) ** 2
    return cov / (var_a[:, None] * var_b[None, :]).clamp_min(1e-300).sqrt()


def vocab_layer_similarity(
    layers_a: VocabLayers,
    layers_b: VocabLayers,
    ids_a: Sequence[int] | Tensor | None = None,
    ids_b: Sequence[int] | Tensor | None = None,
) -> Float[Tensor, "layer_a layer_b"]:
    """The Pearson correlation of every pair of layers' token-by-token similarity, over
    the tokens ``ids_a`` of A matched to ``ids_b`` of B (default: every token, the two
    vocabularies being the same size)."""
    ids_a, ids_b = _check_tokens(layers_a, layers_b, ids_a, ids_b)
    a, b = _Side.of(layers_a, ids_a), _Side.of(layers_b, ids_b)
    return _similarity(a, b, a.basis.T @ b.basis.to(a.basis.device))


def _check_tokens(
    a: VocabLayers,
    b: VocabLayers,
    ids_a: Sequence[int] | Tensor | None,
    ids_b: Sequence[int] | Tensor | None,
) -> tuple[Tensor, Tensor]:
    if a.kind != b.kind:
        raise ValueError(f"the two sides hold different kinds: {a.kind!r} and {b.kind!r}")
    if ids_a is None and ids_b is None:
        if a.basis.shape[0] != b.basis.shape[0]:
            raise ValueError(
                f"the vocabularies differ ({a.basis.shape[0]} and {b.basis.shape[0]} tokens): "
                "give the matched token ids (shared_vocabulary(model_a, model_b))"
            )
        ids = torch.arange(a.basis.shape[0])
        return ids, ids
    if ids_a is None or ids_b is None or len(ids_a) != len(ids_b) or len(ids_a) < 3:
        raise ValueError("give ids_a and ids_b together, one B token per A token, 3 or more")
    return torch.as_tensor(ids_a, dtype=torch.long), torch.as_tensor(ids_b, dtype=torch.long)


@dataclass(frozen=True)
class LayerAlignment:
    """Two models' layers aligned in vocabulary space.

    Fields:
        kind: the parameters compared.
        model_a: the first model's name.
        model_b: the second model's name.
        similarity: ``[layer_a, layer_b]`` Pearson correlations of the layers'
            token-by-token similarity in vocabulary space.
        matching: ``(layer of A, layer of B)`` pairs of the one-to-one matching that
            maximises the summed similarity.
        score: the mean similarity of the matched pairs.
        p_value: the share of vocabulary shuffles of B (and the data) whose matching
            scores at least ``score``.
        null_scores: the matched scores under the shuffles.
        n_tokens: the tokens compared.
    """

    kind: str
    model_a: str
    model_b: str
    similarity: Tensor
    matching: tuple[tuple[int, int], ...]
    score: float
    p_value: float
    null_scores: Tensor
    n_tokens: int

    def __repr__(self) -> str:
        pairs = ", ".join(f"{i}-{j}" for i, j in self.matching)
        return (
            f"LayerAlignment({self.kind}: {self.model_a} ~ {self.model_b}, matched {pairs}, "
            f"mean r = {self.score:.3f}, p = {self.p_value:.3g})"
        )


def _matched(similarity: Tensor) -> tuple[tuple[tuple[int, int], ...], float]:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(similarity.cpu().numpy(), maximize=True)
    pairs = tuple((int(i), int(j)) for i, j in zip(rows, cols, strict=True))
    return pairs, float(similarity[rows, cols].mean())


def vocab_alignment(
    model_a: HookedModel | VocabLayers,
    model_b: HookedModel | VocabLayers,
    kind: Kind = "values",
    *,
    readout: Readout | None = None,
    token_ids: tuple[Sequence[int] | Tensor, Sequence[int] | Tensor] | None = None,
    n_permutations: int = 200,
    seed: Seed = 0,
) -> LayerAlignment:
    """Align the layers of two models (or checkpoints, or runs) sharing a vocabulary.

    Args:
        model_a: a model, or its :func:`vocab_layers`.
        model_b: the other.
        kind: which parameters: ``"keys"``, ``"values"``, ``"ov"`` or ``"qk"``.
        readout: the vocabulary matrix to read them through (see :func:`vocab_layers`).
        token_ids: ``(ids in A, ids in B)`` of matched tokens, for models whose
            vocabularies differ (:func:`shared_vocabulary` matches them by string);
            default every token, refused where the vocabularies differ.
        n_permutations: vocabulary shuffles of B for the p-value.
        seed: an int or a CPU ``torch.Generator``.
    """
    la = model_a if isinstance(model_a, VocabLayers) else vocab_layers(model_a, kind, readout)
    lb = model_b if isinstance(model_b, VocabLayers) else vocab_layers(model_b, kind, readout)
    if token_ids is None and not isinstance(model_a, VocabLayers):
        if not isinstance(model_b, VocabLayers) and _vocab(model_a) != _vocab(model_b):
            raise ValueError(
                f"{la.model_name} and {lb.model_name} have different vocabularies: give "
                "token_ids=shared_vocabulary(model_a, model_b) to compare their shared tokens"
            )
    ids_a, ids_b = _check_tokens(la, lb, *(token_ids or (None, None)))
    a, b = _Side.of(la, ids_a), _Side.of(lb, ids_b)
    similarity = _similarity(a, b, a.basis.T @ b.basis.to(a.basis.device))
    matching, score = _matched(similarity)
    gen = make_generator(seed)
    null = []
    for _ in range(n_permutations):
        shuffled = b.basis[torch.randperm(len(ids_b), generator=gen).to(b.basis.device)]
        null.append(_matched(_similarity(a, b, a.basis.T @ shuffled.to(a.basis.device)))[1])
    null_t = torch.tensor(null, dtype=torch.float64)
    p = (1 + int((null_t >= score).sum())) / (1 + n_permutations)
    return LayerAlignment(
        la.kind, la.model_name, lb.model_name, similarity, matching, score, p, null_t, len(ids_a)
    )


def _vocab(model: HookedModel) -> dict[str, int]:
    return get_tokenizer(model).get_vocab()
