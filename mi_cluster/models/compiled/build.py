"""Construction of the compiled IOI model: GPT-2-format weights set analytically.

Residual stream. Every feature is a unit direction ``(e_{2f} - e_{2f+1}) / sqrt(2)`` in a
pair of its own dimensions, so every residual vector has mean exactly zero (LayerNorm's
centring is a no-op). Token embeddings all have norm sqrt(2) (a constant feature plus one
unit of token identity), positional embeddings norm 1 (one position code each).

Attention is saturated: in every head the attended key scores 40 or more above every other
key, so the other weights are below exp(-40) ~ 4e-18, beneath float64 rounding. Each head
therefore writes exactly one unit vector at every position (a name-specific one, or its
"null" vector when it attends BOS), and before layer ``l`` every residual vector has squared
norm exactly ``3 + 12 l``. LayerNorm is then multiplication by the known constant
``1 / sqrt((3 + 12 l) / d_model + eps)``, folded into the weights that read it: the
construction is exact, not approximate (measured: the LayerNorm scale varies by less than
1e-12 relative across positions in float64).

Circuit (IO: the name mentioned once; S: the repeated name; END: the last token):

- L0H0 duplicate-token head: attends from a name to an earlier mention of the same name
  (positions codes keep it from attending to itself), writes DUP there: at S2.
- L1H0 S-inhibition head: attends to the DUP-flagged position (S2) from every later position,
  writes S's identity into the INHIBIT subspace.
- L2H0 and L2H1 name movers: when INHIBIT holds a name, attend to the names not in it (IO),
  copy IO to the logits (+2.0 and +1.5).
- L2H2 negative name mover: attends like the movers, writes IO with weight -0.5.
- L3H0 backup name mover: attends to IO like the movers, but its query is pushed away from
  whatever L2H0 and L2H1 already wrote, so it attends to BOS unless they are ablated; then
  it copies IO (+2.0).
- every other head (42 of the 48: L0H1-11, L1H1-11, L2H3-11, L3H1-11): a distractor that
  attends to BOS and writes a constant, read by nothing.

Clean logit difference IO - S = 2.0 + 1.5 - 0.5 = 3.0 on every prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CompiledSpec", "build_weights", "NAMES", "OBJECTS", "PLACES", "TEMPLATES", "WORDS"]

NAMES: tuple[str, ...] = (
    "Mary", "John", "Alice", "David", "Kate", "Paul",
    "Laura", "Mark", "Sarah", "James", "Anna", "Peter",
)  # fmt: skip
PLACES: tuple[str, ...] = ("store", "park", "school", "office")
OBJECTS: tuple[str, ...] = ("book", "cup", "ball", "key")
TEMPLATES: tuple[str, ...] = (
    "When {A} and {B} went to the {P} , {S} gave a {O} to",
    "Then , {A} and {B} had lunch at the {P} . {S} gave a {O} to",
    "After {A} and {B} went to the {P} , {S} gave the {O} to",
)
WORDS: tuple[str, ...] = (
    "When", "and", "went", "to", "the", ",", ".",
    "gave", "a", "Then", "had", "lunch", "at", "After",
)  # fmt: skip

N_LAYERS, N_HEADS, D_MODEL, N_CTX = 4, 12, 480, 24
MARGIN, SCORE = 40.0, 80.0  # attended key >= MARGIN above the rest; name-match score
LOGIT = {"L2H0": 2.0, "L2H1": 1.5, "L2H2": -0.5, "L3H0": 2.0}  # each mover's weight on the logits
EPS = 1e-5  # GPT-2's LayerNorm epsilon


@dataclass(frozen=True)
class CompiledSpec:
    """The vocabulary and sizes the weights are built for.

    Fields:
        vocab: tokens in id order (``<|endoftext|>`` first).
        names: the name tokens.
        d_model, n_layers, n_heads, n_ctx: sizes.
    """

    vocab: tuple[str, ...]
    names: tuple[str, ...]
    d_model: int = D_MODEL
    n_layers: int = N_LAYERS
    n_heads: int = N_HEADS
    n_ctx: int = N_CTX

    @property
    def d_head(self) -> int:
        """Width of each head."""
        return self.d_model // self.n_heads


class _Features:
    """Named unit directions, each on a pair of dimensions (zero mean)."""

    def __init__(self, d: int) -> None:
        self.d, self.index = d, {}

    def vec(self, name: str) -> np.ndarray:
        if name not in self.index:
            self.index[name] = len(self.index)
            if 2 * len(self.index) > self.d:
                raise ValueError("the compiled model needs a wider residual stream")
        f = self.index[name]
        v = np.zeros(self.d)
        v[2 * f], v[2 * f + 1] = 2**-0.5, -(2**-0.5)
        return v


def _scale(layer_heads_before: int, d: int) -> float:
    """LayerNorm's divisor for residual vectors of squared norm ``3 + heads_before``."""
    return float(np.sqrt((3.0 + layer_heads_before) / d + EPS))


def build_weights(spec: CompiledSpec) -> dict[str, np.ndarray]:
    """Hugging Face GPT-2 state-dict arrays (float64) for ``spec``."""
    v = _Vectors.of(spec)
    heads, written = _circuit_heads(spec, v)  # (feature directions are allotted in order)
    w = {"transformer.wte.weight": v.embedding(spec), "transformer.wpe.weight": np.stack(v.pos)}
    for layer in range(spec.n_layers):
        w.update(_layer_weights(spec, heads, layer))
    w["transformer.ln_f.weight"], w["transformer.ln_f.bias"] = (
        np.ones(spec.d_model),
        np.zeros(spec.d_model),
    )
    final = _scale(spec.n_heads * spec.n_layers, spec.d_model)
    lm_head = np.zeros((len(spec.vocab), spec.d_model))
    for t, tok in enumerate(spec.vocab):
        if tok in v.name:
            lm_head[t] = final * sum(LOGIT[h] * written[h][tok] for h in LOGIT)
    w["lm_head.weight"] = lm_head
    return w


A = B = 2**-0.5  # a name's embedding: A ISNAME + B NAME:n (a unit identity part)

# A head: (q columns, k columns, v columns, o rows) as lists of d-vectors; its score is
# sum_c (x_q . q_c)(x_k . k_c), its output sum_c (x_k . v_c) o_c, before LayerNorm scaling.
Head = tuple[list, list, list, list]


@dataclass(frozen=True)
class _Vectors:
    """The embedding's feature directions: constant, BOS, is-a-name, other token, each
    name's identity, each position."""

    features: _Features
    const: np.ndarray
    bos: np.ndarray
    isname: np.ndarray
    other: np.ndarray
    name: dict[str, np.ndarray]
    pos: list[np.ndarray]

    @staticmethod
    def of(spec: CompiledSpec) -> _Vectors:
        F = _Features(spec.d_model)
        const, bos, isname, other = F.vec("CONST"), F.vec("BOS"), F.vec("ISNAME"), F.vec("OTHER")
        name = {n: F.vec(f"NAME:{n}") for n in spec.names}
        return _Vectors(
            F, const, bos, isname, other, name, [F.vec(f"POS:{p}") for p in range(spec.n_ctx)]
        )

    def block(self, prefix: str) -> dict[str, np.ndarray]:
        """A direction per name, under ``prefix`` (what a head writes about each name)."""
        return {n: self.features.vec(f"{prefix}:{n}") for n in self.name}

    def embedding(self, spec: CompiledSpec) -> np.ndarray:
        wte = np.zeros((len(spec.vocab), spec.d_model))
        for t, tok in enumerate(spec.vocab):
            if tok == "<|endoftext|>":
                wte[t] = self.const + self.bos
            elif tok in self.name:
                wte[t] = self.const + A * self.isname + B * self.name[tok]
            else:
                wte[t] = self.const + self.other
        return wte


def _circuit_heads(
    spec: CompiledSpec, v: _Vectors
) -> tuple[dict[tuple[int, int], Head], dict[str, dict[str, np.ndarray]]]:
    """Every head's directions, and what each name mover writes per name."""
    F, names = v.features, spec.names
    heads: dict[tuple[int, int], Head] = {}
    s, m = np.sqrt(SCORE), np.sqrt(MARGIN)
    # L0H0: duplicate token. score = SCORE [same name] - SCORE [same position] + MARGIN [BOS]
    dup, dup_null = F.vec("DUP"), F.vec("L0H0:null")
    q = [s * v.name[n] / B for n in names] + [-s * p for p in v.pos] + [m * v.const]
    k = [s * v.name[n] / B for n in names] + [s * p for p in v.pos] + [m * v.bos]
    heads[(0, 0)] = (q, k, [v.isname / A, v.bos], [dup, dup_null])
    # L1H0: S-inhibition. score = SCORE [key has DUP] + MARGIN [BOS]; copies the name to INHIBIT
    inhibit, si_null = v.block("INHIBIT"), F.vec("L1H0:null")
    heads[(1, 0)] = (
        [s * v.const, m * v.const],
        [s * dup, m * v.bos],
        [v.name[n] / B for n in names] + [v.bos],
        [inhibit[n] for n in names] + [si_null],
    )
    written = {h: v.block(f"WRITTEN:{h}") for h in LOGIT}
    for label, suppress in (("L2H0", ()), ("L2H1", ()), ("L2H2", ()), ("L3H0", ("L2H0", "L2H1"))):
        layer, h = int(label[1]), int(label[3])
        blocks = [written[x] for x in suppress]
        heads[(layer, h)] = _mover(v, inhibit, written[label], F.vec(f"{label}:null"), blocks)
    for layer in range(spec.n_layers):  # distractors: attend BOS, write a constant
        for h in range(spec.n_heads):
            if (layer, h) not in heads:
                const = F.vec(f"L{layer}H{h}:const")
                heads[(layer, h)] = ([m * v.const], [m * v.bos], [v.bos], [const])
    return heads, written


def _mover(
    v: _Vectors,
    inhibit: dict[str, np.ndarray],
    out: dict[str, np.ndarray],
    null: np.ndarray,
    suppress: Sequence[dict[str, np.ndarray]],
) -> Head:
    """A name mover: score = SCORE [key is a name, INHIBIT present] - SCORE [key is the
    inhibited name] - MARGIN [key is a name already written by ``suppress``] + MARGIN [BOS];
    it copies the attended name into ``out``."""
    s, m, names = np.sqrt(SCORE), np.sqrt(MARGIN), list(v.name)
    q = [s * sum(inhibit.values())] + [-s * inhibit[n] for n in names]
    k = [s * v.isname / A] + [s * v.name[n] / B for n in names]
    for block in suppress:
        q += [-m * block[n] for n in names]
        k += [m * v.name[n] / B for n in names]
    q, k = q + [m * v.const], k + [m * v.bos]
    return (q, k, [v.name[n] / B for n in names] + [v.bos], [out[n] for n in names] + [null])


def _layer_weights(
    spec: CompiledSpec, heads: dict[tuple[int, int], Head], layer: int
) -> dict[str, np.ndarray]:
    """Block ``layer``'s weights: its heads' directions scaled back from LayerNorm, zero
    MLP (attention only), identity norms."""
    d, dh, nh = spec.d_model, spec.d_head, spec.n_heads
    scale = _scale(nh * layer, d)  # LayerNorm divides by this; the weights multiply it back
    c_attn, c_proj = np.zeros((d, 3 * d)), np.zeros((d, d))
    for h in range(nh):
        q, k, v, o = heads[(layer, h)]
        if max(len(q), len(v)) > dh:
            raise ValueError(f"head L{layer}H{h} needs more than d_head={dh} dimensions")
        base = h * dh
        for c, (qc, kc) in enumerate(zip(q, k, strict=True)):
            c_attn[:, base + c] = qc * scale * np.sqrt(dh)  # GPT-2 divides scores by sqrt(d_head)
            c_attn[:, d + base + c] = kc * scale
        for c, (vc, oc) in enumerate(zip(v, o, strict=True)):
            c_attn[:, 2 * d + base + c] = vc * scale
            c_proj[base + c] = oc
    prefix = f"transformer.h.{layer}."
    w = {
        prefix + "attn.c_attn.weight": c_attn,
        prefix + "attn.c_attn.bias": np.zeros(3 * d),
        prefix + "attn.c_proj.weight": c_proj,
        prefix + "attn.c_proj.bias": np.zeros(d),
        prefix + "mlp.c_fc.weight": np.zeros((d, 4)),
        prefix + "mlp.c_fc.bias": np.zeros(4),
        prefix + "mlp.c_proj.weight": np.zeros((4, d)),
        prefix + "mlp.c_proj.bias": np.zeros(d),
    }
    for ln in ("ln_1", "ln_2"):
        w[prefix + f"{ln}.weight"], w[prefix + f"{ln}.bias"] = np.ones(d), np.zeros(d)
    return w
