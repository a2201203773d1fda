"""Non-negative matrix factorisation of activations: which groups of neurons fire together
over the tokens of a passage (ecco's ``run_nmf``).

The matrix is ``[token, neuron]``: the MLP neuron activations (``mlp.hook_post``) of the
chosen layers side by side, as ecco builds it. GELU lets activations go slightly negative;
NMF needs non-negative data, so by default negatives are set to 0 (ecco's choice, losing
little since GELU's minimum is -0.17), or the whole matrix is shifted by its minimum
(``negative="shift"``, the choice for the residual stream, whose values are signed).

The factorisation ``X ~ W H`` (``W [token, component]`` is each component's activation per
token, ``H [component, neuron]`` its neurons) minimises the Frobenius error by Lee and
Seung's multiplicative updates in torch (GPU-ready), started from NNDSVDa, the start
scikit-learn uses by default; tests hold its objective within 1% of scikit-learn's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.collection.activations import Positions, collect
from mi_cluster.core.model_info import model_device, model_info
from mi_cluster.core.prompts import unique_token_labels
from mi_cluster.core.protocols import HookedModel

__all__ = ["ActivationFactors", "NMFResult", "activation_factors", "nmf"]


@dataclass(frozen=True)
class NMFResult:
    """``X ~ W H`` with non-negative factors.

    Fields:
        W: ``[row, component]``; H: ``[component, column]``.
        error: the Frobenius norm ``||X - W H||`` (scikit-learn's ``reconstruction_err_``).
        relative_error: ``error / ||X||``.
        n_iter: updates run; converged: whether the relative change of the error fell
            below ``tol`` before ``max_iter``.
    """

    W: Float[Tensor, "row component"]
    H: Float[Tensor, "component column"]
    error: float
    relative_error: float
    n_iter: int
    converged: bool


def _nndsvda(X: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """NNDSVD (Boutsidis & Gallopoulos 2008) with zeros filled by the mean of X ("a")."""
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    W = torch.zeros(X.shape[0], k, dtype=X.dtype, device=X.device)
    H = torch.zeros(k, X.shape[1], dtype=X.dtype, device=X.device)
    W[:, 0] = S[0].sqrt() * U[:, 0].abs()
    H[0] = S[0].sqrt() * Vh[0].abs()
    for j in range(1, k):
        x, y = U[:, j], Vh[j]
        xp, xn, yp, yn = x.clamp_min(0), (-x).clamp_min(0), y.clamp_min(0), (-y).clamp_min(0)
        pos = xp.norm() * yp.norm()
        neg = xn.norm() * yn.norm()
        if pos >= neg:
            u, v, sigma = xp / xp.norm(), yp / yp.norm(), pos
        else:
            u, v, sigma = xn / xn.norm(), yn / yn.norm(), neg
        lam = (S[j] * sigma).sqrt()
        W[:, j], H[j] = lam * u, lam * v
    W = torch.nan_to_num(W)
    H = torch.nan_to_num(H)
    mean = X.mean()
    W[W == 0] = mean
    H[H == 0] = mean
    return W, H


def nmf(
    X: Float[Tensor, "row column"],
    n_components: int,
    *,
    max_iter: int = 2000,
    tol: float = 1e-6,
    eps: float = 1e-10,
) -> NMFResult:
    """Factorise a non-negative matrix by multiplicative updates from NNDSVDa (deterministic;
    runs on X's device and dtype)."""
    if X.ndim != 2:
        raise ValueError(f"NMF needs a matrix, got shape {tuple(X.shape)}")
    if X.is_complex() or not X.is_floating_point():
        raise ValueError(f"NMF needs a real floating matrix, got {X.dtype}")
    if not torch.isfinite(X).all():
        raise ValueError("NMF input has NaN or infinite values")
    if (X < 0).any():
        raise ValueError(f"NMF input must be non-negative; its minimum is {float(X.min()):.4g}")
    if not 1 <= n_components <= min(X.shape):
        raise ValueError(
            f"n_components must be between 1 and min{tuple(X.shape)} = {min(X.shape)}, "
            f"got {n_components}"
        )
    W, H = _nndsvda(X, n_components)
    norm_x = X.norm()
    previous = float("inf")
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        H = H * (W.T @ X) / ((W.T @ W) @ H).clamp_min(eps)
        W = W * (X @ H.T) / (W @ (H @ H.T)).clamp_min(eps)
        if n_iter % 10 == 0 or n_iter == max_iter:
            err = float((X - W @ H).norm())
            if (previous - err) / max(previous, 1e-30) < tol:
                converged = True
                break
            previous = err
    err = float((X - W @ H).norm())
    return NMFResult(W, H, err, err / max(float(norm_x), 1e-30), n_iter, converged)


@dataclass(frozen=True)
class ActivationFactors:
    """NMF components of a passage's activations.

    Fields:
        activations: ``[component, token]``, each component's activation at each token
            (``W`` transposed, as ecco's ``components``).
        loadings: ``[component, neuron]``, each component's neurons (``H``); neurons are
            numbered layer by layer (``neuron_layer`` says which layer each is from).
        neuron_layer: the layer of each column of ``loadings``.
        tokens, labels: the passage's tokens and unique labels; positions: their positions.
        site: what was factorised; layers: which layers; negative: how negatives were made
            non-negative (``"clip"`` or ``"shift"``).
        relative_error: ``||X - W H|| / ||X||``; n_iter: updates run.
        text: the passage; model_name: the model's name.
    """

    activations: Float[Tensor, "component token"]
    loadings: Float[Tensor, "component neuron"]
    neuron_layer: tuple[int, ...]
    tokens: tuple[str, ...]
    labels: tuple[str, ...]
    positions: tuple[int, ...]
    site: str
    layers: tuple[int, ...]
    negative: str
    relative_error: float
    n_iter: int
    text: str
    model_name: str

    @property
    def n_components(self) -> int:
        """Factors (the first axis of ``activations``)."""
        return self.activations.shape[0]

    def top_tokens(self, n: int = 10) -> list[list[tuple[str, float]]]:
        """Per component, the ``n`` tokens (unique labels) where it is most active."""
        k = min(n, self.activations.shape[1])
        values, idx = self.activations.topk(k, dim=1)
        return [
            [(self.labels[i], float(v)) for v, i in zip(vals.tolist(), ids.tolist(), strict=True)]
            for vals, ids in zip(values, idx, strict=True)
        ]


def activation_factors(
    model: HookedModel,
    text: str,
    n_components: int = 8,
    *,
    site: Literal["mlp_post", "resid_post"] = "mlp_post",
    layers: Sequence[int] | None = None,
    negative: Literal["clip", "shift"] | None = None,
    exclude_special: bool = True,
    max_iter: int = 2000,
) -> ActivationFactors:
    """NMF of ``model``'s activations over the tokens of ``text``.

    Args:
        model: a TransformerLens model.
        text: the passage whose tokens are the rows.
        n_components: factors to fit.
        site: ``"mlp_post"`` (MLP neurons after the non-linearity) or ``"resid_post"``.
        layers: which layers (default all), their neurons side by side.
        negative: ``"clip"`` (default for MLP neurons) or ``"shift"`` (default for the
            residual stream).
        exclude_special: leave out BOS/CLS/SEP tokens (their activations are atypical).
        max_iter: NMF iterations at most.
    """
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if not layers or any(not 0 <= x < n_layers for x in layers):
        raise ValueError(f"layers must be in 0..{n_layers - 1}, got {layers}")
    if site not in ("mlp_post", "resid_post"):
        raise ValueError(f"site must be 'mlp_post' or 'resid_post', got {site!r}")
    negative = negative or ("clip" if site == "mlp_post" else "shift")
    if negative not in ("clip", "shift"):
        raise ValueError(f"negative must be 'clip' or 'shift', got {negative!r}")
    acts = collect(
        model,
        [text],
        site,
        Positions.all(exclude_special=exclude_special),
        storage_device=model_device(model),
        progress=False,
    )
    # resid_post's first entry is the embedding; entry l + 1 is block l's output.
    offset = 1 if site == "resid_post" else 0
    per_layer = acts.tensor[[x + offset for x in layers]]  # [layer, token, neuron]
    if per_layer.shape[-1] == 0 or float(per_layer.abs().max()) == 0.0:
        raise ValueError(f"the {site} activations of {model_info(model).name} are all zero")
    X = per_layer.permute(1, 0, 2).reshape(per_layer.shape[1], -1)
    X = X.clamp_min(0) if negative == "clip" else X - X.min()
    result = nmf(X, n_components, max_iter=max_iter)
    tokens = tuple(t[0] for t in acts.tokens)
    return ActivationFactors(
        activations=result.W.T.cpu(),
        loadings=result.H.cpu(),
        neuron_layer=tuple(x for x in layers for _ in range(per_layer.shape[-1])),
        tokens=tokens,
        labels=tuple(unique_token_labels(tokens)),
        positions=tuple(p[0] for p in acts.positions),
        site=site,
        layers=tuple(layers),
        negative=negative,
        relative_error=result.relative_error,
        n_iter=result.n_iter,
        text=text,
        model_name=model_info(model).name,
    )
