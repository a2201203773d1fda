"""The tuned lens (Belrose et al. 2023): one learned affine translator per layer.

The logit lens reads an intermediate residual with the model's final head, as if the
layers after it did nothing; early residuals live in a different basis, so their logit-lens
predictions are poor and biased. A translator ``h -> h + h A_l + b_l`` (the identity at
initialisation, as in the paper) is trained per layer to minimise KL(final || lens), the
divergence from the model's own output distribution, over the tokens of a corpus. The last
layer needs none: its lens is the model's output.

Training here: all translators at once (their losses are independent and summed), Adam
with a linearly decaying learning rate, minibatches of token positions drawn by a seeded
generator, so a run is deterministic for a fixed seed and thread count. A lens is saved as
one small safetensors file with its model's name and shape, and refuses another model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.collection.activations import Positions, collect
from mi_cluster.core.atomic import atomic_path
from mi_cluster.core.model_info import model_device, model_info, require_meaningful_logits
from mi_cluster.core.progress import progress_bar
from mi_cluster.core.protocols import HookedModel
from mi_cluster.core.readout import check_readout, residual_logits
from mi_cluster.methods.similarity.distances import kl_from_log_probs
from mi_cluster.methods.stats.resampling import make_generator

__all__ = ["TunedLens", "train_tuned_lens"]

_FORMAT = "mi_cluster.tuned_lens/1"


@dataclass(frozen=True)
class TunedLens:
    """Affine translators for the residual stream after each layer but the last.

    Fields:
        model_name: the model it was trained for.
        weight: ``A_l`` per translated layer, ``[layer, d_model, d_model]``; entry 0 is the
            embedding, entry ``l + 1`` block ``l``'s output.
        bias: ``b_l``, ``[layer, d_model]``.
        info: how it was trained (corpus size, steps, learning rate, seed, final loss).
    """

    model_name: str
    weight: Float[Tensor, "layer d_model d_model"]
    bias: Float[Tensor, "layer d_model"]
    info: dict = field(default_factory=dict)

    @property
    def n_translators(self) -> int:
        """Translators: one per layer the lens reads."""
        return self.weight.shape[0]

    def translate(
        self, layer: int, resid: Float[Tensor, "... d_model"]
    ) -> Float[Tensor, "... d_model"]:
        """``resid + resid @ A + b`` for residual layer ``layer`` (0: the embedding)."""
        if not 0 <= layer < self.n_translators:
            raise ValueError(
                f"the tuned lens has translators for residual layers 0..{self.n_translators - 1}, "
                f"not {layer}"
            )
        w = self.weight[layer].to(resid.device, resid.dtype)
        return resid + resid @ w + self.bias[layer].to(resid.device, resid.dtype)

    def check_model(self, model: HookedModel) -> None:
        """Raise ValueError unless ``model`` is the model this lens was trained for."""
        name, n, d = model_info(model).name, model.cfg.n_layers, model.cfg.d_model
        if name != self.model_name or n != self.n_translators or d != self.weight.shape[-1]:
            raise ValueError(
                f"this tuned lens was trained for {self.model_name!r} ({self.n_translators} "
                f"layers, d_model {self.weight.shape[-1]}), not {name!r} ({n} layers, "
                f"d_model {d})"
            )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the lens as one safetensors file (atomically)."""
        from safetensors.torch import save_file

        # One metadata key, as Activations.save: safetensors orders several keys at random,
        # so the same lens would not always give the same bytes.
        meta = {
            "mi_cluster": json.dumps(
                {"format": _FORMAT, "model_name": self.model_name, "info": self.info},
                sort_keys=True,
            )
        }
        tensors = {"weight": self.weight.contiguous().cpu(), "bias": self.bias.contiguous().cpu()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TunedLens:
        """Read a lens written by :meth:`save`."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tuned lens at {path}")
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            meta = json.loads(header.get("mi_cluster", "{}"))
            if meta.get("format") != _FORMAT or set(f.keys()) != {"weight", "bias"}:
                raise ValueError(f"{path} is not a tuned lens written by TunedLens.save")
            weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
        return cls(meta["model_name"], weight, bias, meta["info"])


@contextmanager
def _frozen(model: HookedModel) -> Iterator[None]:
    """The model's parameters without gradients for the duration (only the lens trains)."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def _kl(final: Tensor, logits: Tensor) -> Tensor:
    """Mean KL(final || softmax(logits)) over rows, ``final`` being log-probabilities."""
    return kl_from_log_probs(final, torch.log_softmax(logits, -1)).mean()


def train_tuned_lens(
    model: HookedModel,
    texts: Sequence[str],
    *,
    steps: int = 400,
    lr: float = 2e-3,
    tokens_per_step: int = 1024,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TunedLens:
    """Train a tuned lens for ``model`` on the tokens of ``texts`` (special tokens excluded).

    Args:
        model: a model with real logits.
        texts: the corpus (its distribution is the one the lens is good for).
        steps: optimiser steps.
        tokens_per_step: positions per step, drawn with replacement.
        batch_size: texts per forward pass when collecting the residuals.
        seed: seeds the draws of positions.
        lr: Adam's initial learning rate, decayed linearly to zero.
        log: called with a progress line every 50 steps (the library never prints).
        progress: a progress bar while collecting the residuals.
    """
    require_meaningful_logits(model, "a tuned lens")
    check_readout(model)
    if steps < 1 or tokens_per_step < 1:
        raise ValueError("steps and tokens_per_step must be positive")
    dev = model_device(model)
    acts = collect(
        model,
        list(texts),
        "resid_post",
        Positions.all(exclude_special=True),
        batch_size=batch_size,
        storage_device=dev,
        progress=progress,
    )
    resid = acts.tensor  # [layer, token, d_model]
    n_layers, n_tokens, d_model = resid.shape
    n_tr = n_layers - 1
    dtype = resid.dtype
    weight = torch.zeros((n_tr, d_model, d_model), dtype=dtype, device=dev, requires_grad=True)
    bias = torch.zeros((n_tr, d_model), dtype=dtype, device=dev, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    gen = make_generator(seed)
    losses = torch.zeros(n_tr)
    with _frozen(model):
        for step in progress_bar(range(steps), desc="tuned lens", unit="step", enabled=progress):
            idx = torch.randint(n_tokens, (tokens_per_step,), generator=gen).to(dev)
            with torch.no_grad():
                final = torch.log_softmax(residual_logits(model, resid[-1, idx]).float(), -1)
            h = resid[:-1, idx]  # [layer, row, d_model]
            translated = h + torch.einsum("lrd,lde->lre", h, weight) + bias[:, None]
            per_layer = torch.stack(
                [_kl(final, residual_logits(model, translated[i]).float()) for i in range(n_tr)]
            )
            opt.zero_grad()
            per_layer.sum().backward()
            opt.step()
            sched.step()
            losses = per_layer.detach().cpu()
            if log is not None and (step % 50 == 0 or step == steps - 1):
                log(f"step {step}: KL per layer " + " ".join(f"{v:.3f}" for v in losses.tolist()))
    info = {
        "n_texts": len(texts),
        "n_tokens": n_tokens,
        "steps": steps,
        "lr": lr,
        "tokens_per_step": tokens_per_step,
        "seed": seed,
        "final_train_kl": [round(v, 5) for v in losses.tolist()],
    }
    return TunedLens(model_info(model).name, weight.detach().cpu(), bias.detach().cpu(), info)
