"""Two prompts (or two aligned prompt sets) compared layer by layer: how far apart are
their next-token distributions through the logit lens, and their residual streams?

The research notes' question "unembed at each layer and measure KL divergence" between,
e.g., "Adam went to the store" and "Lamp went to the store". Rows are aligned pairs of
token positions: token by token (``positions="all"``, prompts of equal token length), the
last tokens, or a named word in each prompt (``Positions.word``), so prompts of different
lengths can be compared at the words that matter. Per layer and pair: KL(a || b), the
Jensen-Shannon divergence (symmetric, at most log 2) of the lens distributions, and the
cosine of the residuals; pooled over pairs, linear CKA of the two sets of residuals, and
bootstrap intervals of the mean over prompt pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.collection.activations import Positions, collect
from mi_cluster.core.model_info import model_device, model_info, require_meaningful_logits
from mi_cluster.core.protocols import HookedModel
from mi_cluster.methods.lens.logit import CHUNK_ELEMENTS, layer_logits
from mi_cluster.methods.similarity.cka import linear_cka
from mi_cluster.methods.similarity.distances import js_from_log_probs, kl_from_log_probs
from mi_cluster.methods.stats import paired_test

if TYPE_CHECKING:
    from mi_cluster.methods.lens.tuned import TunedLens

__all__ = ["PairedComparison", "compare_prompts"]


@dataclass(frozen=True)
class PairedComparison:
    """Layer-by-layer distances between aligned rows of two prompt sets.

    Fields:
        layer_labels: ``"embed"``, ``"L0"``, ...
        kl: KL(a || b) of the lens distributions, nats, ``[layer, row]`` (None without a
            lens: models without real logits).
        js: Jensen-Shannon divergence, nats, ``[layer, row]`` (None likewise).
        cosine: cosine of the two residuals, ``[layer, row]``.
        cka: linear CKA of the two sets of residuals over all rows, ``[layer]`` (NaN with
            fewer than 3 rows).
        pair_index: per row, the prompt pair it belongs to; tokens_a, tokens_b: the tokens.
        per_pair: per measure (``"kl"``, ``"js"``, ``"cosine"``) the mean over each pair's
            rows, ``[layer, pair]``; ci_low, ci_high: bootstrap interval of the mean over
            pairs, per measure ``[layer]`` (None with fewer than 2 pairs).
        lens: ``"logit"``, ``"tuned"`` or None; model_name: the model's name.
    """

    layer_labels: tuple[str, ...]
    kl: Float[Tensor, "layer row"] | None
    js: Float[Tensor, "layer row"] | None
    cosine: Float[Tensor, "layer row"]
    cka: Float[Tensor, " layer"]
    pair_index: tuple[int, ...]
    tokens_a: tuple[str, ...]
    tokens_b: tuple[str, ...]
    per_pair: dict
    ci_low: dict | None
    ci_high: dict | None
    lens: str | None
    model_name: str

    def by_position(self, measure: str = "cosine") -> tuple[Float[Tensor, "layer pos"], list[str]]:
        """The measure at each position of the pairs (a pair's ``k``-th row), averaged over
        the pairs that reach it, and a label per position from the first pair (``"a"``,
        or ``"a / b"`` where the two prompts' tokens differ)."""
        values = {"kl": self.kl, "js": self.js, "cosine": self.cosine}.get(measure)
        if values is None:
            raise ValueError(f"no {measure!r} in this comparison (kl and js need a lens)")
        offset, seen = [], {}
        for i in self.pair_index:
            offset.append(seen.get(i, 0))
            seen[i] = offset[-1] + 1
        offset_t = torch.tensor(offset)
        n_pos = int(offset_t.max()) + 1
        sums = torch.zeros(values.shape[0], n_pos, dtype=torch.float64)
        sums.index_add_(1, offset_t, values.double())
        mean = sums / torch.bincount(offset_t, minlength=n_pos).double()
        first = [k for k, i in enumerate(self.pair_index) if i == self.pair_index[0]]
        labels = [
            self.tokens_a[k] if self.tokens_a[k] == self.tokens_b[k]
            else f"{self.tokens_a[k]} / {self.tokens_b[k]}"
            for k in first
        ]  # fmt: skip
        labels += [f"pos {k}" for k in range(len(labels), n_pos)]
        return mean, labels


def _divergences(model: HookedModel, a: Tensor, b: Tensor, lens: Any) -> tuple[Tensor, Tensor]:
    """KL(a || b) and JS per layer and row, vocabulary-sized tensors a chunk at a time."""
    n_layers, n_rows = a.shape[:2]
    kl = torch.empty(n_layers, n_rows, dtype=torch.float64)
    js = torch.empty(n_layers, n_rows, dtype=torch.float64)
    chunk = max(1, CHUNK_ELEMENTS // model.cfg.d_vocab)
    with torch.no_grad():
        for start in range(0, n_rows, chunk):
            rows = slice(start, min(n_rows, start + chunk))
            for layer in range(n_layers):
                lp_a = torch.log_softmax(layer_logits(model, a[layer, rows], layer, lens), -1)
                lp_b = torch.log_softmax(layer_logits(model, b[layer, rows], layer, lens), -1)
                kl[layer, rows] = kl_from_log_probs(lp_a, lp_b).double().cpu()
                js[layer, rows] = js_from_log_probs(lp_a, lp_b).double().cpu()
    return kl, js


def compare_prompts(
    model: HookedModel,
    prompts_a: Sequence[str],
    prompts_b: Sequence[str],
    positions: Positions | str = "all",
    *,
    positions_b: Positions | str | None = None,
    lens: TunedLens | None = None,
    use_lens: bool = True,
    seed: int = 0,
    batch_size: int = 32,
) -> PairedComparison:
    """Compare ``prompts_a[i]`` with ``prompts_b[i]`` at aligned positions, layer by layer.

    Args:
        model: a TransformerLens model.
        prompts_a: the first prompt of each pair.
        prompts_b: the second prompt of each pair.
        positions: the rows read from the ``a`` prompts (``"all"``: every token, so pairs
            must have equal token lengths; ``"last"``; or ``Positions.word(...)``).
        positions_b: the rows read from the ``b`` prompts (default: ``positions``); each
            pair must give as many rows on both sides.
        lens: a tuned lens (default: the logit lens).
        use_lens: compute KL and JS (needs real logits); False for encoders like MiniLM,
            which then get cosine and CKA only.
        seed: seeds the bootstrap intervals over pairs.
        batch_size: prompts per forward pass.
    """
    if len(prompts_a) != len(prompts_b) or not prompts_a:
        raise ValueError(
            f"give two non-empty prompt lists of the same length, got {len(prompts_a)} and "
            f"{len(prompts_b)}"
        )
    if use_lens:
        require_meaningful_logits(model, "a lens comparison (pass use_lens=False)")
        if lens is not None:
            lens.check_model(model)
    dev = model_device(model)
    kw = {"batch_size": batch_size, "storage_device": dev, "progress": False}
    acts_a = collect(model, list(prompts_a), "resid_post", positions, **kw)
    acts_b = collect(model, list(prompts_b), "resid_post", positions_b or positions, **kw)
    if acts_a.prompt_index != acts_b.prompt_index:
        counts = [
            (i, acts_a.prompt_index.count(i), acts_b.prompt_index.count(i))
            for i in range(len(prompts_a))
            if acts_a.prompt_index.count(i) != acts_b.prompt_index.count(i)
        ]
        i, n_a, n_b = counts[0]
        raise ValueError(
            f"prompt pair {i} is not aligned: {n_a} positions in {prompts_a[i]!r} but {n_b} "
            f"in {prompts_b[i]!r}; compare named words (Positions.word) when lengths differ"
        )
    a, b = acts_a.tensor, acts_b.tensor  # [layer, row, d_model]
    cosine = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).cpu()
    n_rows = a.shape[1]
    cka = torch.tensor(
        [
            float(linear_cka(a[x].double(), b[x].double())) if n_rows >= 3 else math.nan
            for x in range(a.shape[0])
        ]  # fmt: skip
    )
    kl, js = _divergences(model, a, b, lens) if use_lens else (None, None)
    pair = torch.tensor(acts_a.prompt_index)
    n_pairs = len(prompts_a)
    counts = torch.bincount(pair, minlength=n_pairs).double()
    measures = {"cosine": cosine, **({"kl": kl, "js": js} if use_lens else {})}
    per_pair = {}
    for name, values in measures.items():
        sums = torch.zeros(values.shape[0], n_pairs, dtype=torch.float64)
        per_pair[name] = sums.index_add_(1, pair, values.double()) / counts
    ci_low = ci_high = None
    if n_pairs >= 2:
        tests = {k: paired_test(v, n_permutations=1, seed=seed) for k, v in per_pair.items()}
        ci_low = {k: t.interval.low for k, t in tests.items()}
        ci_high = {k: t.interval.high for k, t in tests.items()}
    return PairedComparison(
        layer_labels=acts_a.layer_labels,
        kl=kl,
        js=js,
        cosine=cosine,
        cka=cka,
        pair_index=acts_a.prompt_index,
        tokens_a=tuple(t[0] for t in acts_a.tokens),
        tokens_b=tuple(t[0] for t in acts_b.tokens),
        per_pair=per_pair,
        ci_low=ci_low,
        ci_high=ci_high,
        lens=(None if not use_lens else "logit" if lens is None else "tuned"),
        model_name=model_info(model).name,
    )
