"""What one head writes at a word: the residual stream just before and just after it.

The research notes ask what a representation looks like "from initial embedding to after
the name mover head". For a chosen head ``LxHy`` and a set of prompts, each read at one
position (a word), this keeps the residual stream entering block ``x`` (``before``) and
that plus the head's own output at the same position (``after = before + z_h W_O^h``, the
head's term of the attention output, without the shared bias), and projects both on one
fixed plane, so an arrow from before to after is the head's write:

- the head's top OV singular direction on the write side (what it writes most), and
- a second direction: by default the subject/object axis at that layer (the name-minus-
  object centroid direction of the rows given as ``is_name``), orthogonalised against the
  first; or the head's second OV write direction.

Coordinates are centred on the mean of the ``before`` rows, the same origin for both.
``shift_along_axis`` is each row's movement along the unit subject/object axis (how far
the head moves the word toward the names), which the figure and experiments summarise per
group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.collection.activations import Positions, collect_many
from mi_cluster.core.model_info import model_info
from mi_cluster.core.protocols import HookedModel
from mi_cluster.methods.projections import head_circuit_directions
from mi_cluster.methods.stats import fit_subjecthood_axis

__all__ = ["HeadWrite", "head_write_view"]


@dataclass(frozen=True)
class HeadWrite:
    """The residual stream before and after one head writes, on a fixed plane.

    Fields:
        model_name: the model; layer, head: the head; head_label: ``"L2H0"``.
        before: ``Float[Tensor, "prompt d_model"]``, the residual entering block ``layer``
            at each prompt's read position.
        after: ``before`` plus the head's output there.
        basis: ``Float[Tensor, "2 d_model"]``, orthonormal: the head's top OV write
            direction, then the second direction (see the module docstring).
        basis_labels: a label per basis vector.
        coords_before, coords_after: ``Float[Tensor, "prompt 2"]``, the rows on ``basis``
            around the mean of ``before``.
        shift_along_axis: ``Float[Tensor, "prompt"]``, the head's write projected on the
            unit subject/object axis (None when no axis was used).
        axis_cosine: cosine between the subject/object axis and the head's top OV write
            direction (None without an axis).
        singular_values: the head's top two OV singular values.
        groups, labels: per prompt, its group and a hover label.
    """

    model_name: str
    layer: int
    head: int
    head_label: str
    before: Float[Tensor, "prompt d_model"]
    after: Float[Tensor, "prompt d_model"]
    basis: Float[Tensor, "2 d_model"]
    basis_labels: tuple[str, str]
    coords_before: Float[Tensor, "prompt 2"]
    coords_after: Float[Tensor, "prompt 2"]
    shift_along_axis: Float[Tensor, " prompt"] | None
    axis_cosine: float | None
    singular_values: Float[Tensor, " 2"]
    groups: tuple[str, ...]
    labels: tuple[str, ...]

    def group_shift(self) -> dict[str, float]:
        """The mean movement along the subject/object axis per group."""
        if self.shift_along_axis is None:
            raise ValueError("this view has no subject/object axis")
        out = {}
        for g in dict.fromkeys(self.groups):
            keep = torch.tensor([x == g for x in self.groups])
            out[g] = float(self.shift_along_axis[keep].mean())
        return out


def head_write_view(
    model: HookedModel,
    prompts: Sequence[str],
    positions: Positions | str,
    layer: int,
    head: int,
    *,
    is_name: Sequence[bool] | Tensor | None = None,
    groups: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> HeadWrite:
    """The residual before and after head ``layer``.``head`` writes, for every prompt read
    at ``positions`` (one row per prompt: a word, ``"last"``, ...).

    Args:
        model: a TransformerLens model.
        prompts: the prompts; each must give exactly one row.
        positions: which token of each prompt is read.
        layer: the head's layer.
        head: the head's index in its layer.
        is_name: per prompt, True for name rows and False for object rows; the second basis
            direction is then the name-minus-object centroid axis of the ``before`` rows.
            Without it, the head's second OV write direction.
        groups: per prompt, a group (a colour in the figure).
        labels: per prompt, a hover label.
        batch_size: prompts per forward pass.
        progress: a progress bar over batches.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise ValueError(f"no head L{layer}H{head}: the model has {n_layers} x {n_heads} heads")
    n = len(prompts)
    for what, seq in (("is_name", is_name), ("groups", groups), ("labels", labels)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{len(seq)} {what} for {n} prompts")
    acts = collect_many(
        model, list(prompts), ("resid_post", "result"), positions, batch_size=batch_size,
        progress=progress,
    )  # fmt: skip
    if acts["resid_post"].prompt_index != tuple(range(n)):
        raise ValueError("positions must give one row per prompt (a word, 'last', 'mean')")
    before = acts["resid_post"].tensor[layer].double()  # entry `layer`: input to block `layer`
    write = acts["result"].tensor[layer, :, head].double()
    after = before + write
    ov = head_circuit_directions(model, layer, head, "OV", "output", k=2)
    first = ov.directions[0].to(before)
    first = first / first.norm()  # unit in the working precision (SVD ran in the model's)
    axis = None
    if is_name is not None:
        name = torch.as_tensor(is_name, dtype=torch.bool)
        if bool(name.all()) or not bool(name.any()):
            raise ValueError("is_name needs both name rows and object rows")
        direction = fit_subjecthood_axis(before[None], name).direction[0]  # centroid axis
        axis = direction / direction.norm()
        second = axis - (axis @ first) * first
        second_label = f"subject/object axis at {_entry_label(layer)} (orthogonal to OV 1)"
    else:
        second = ov.directions[1].to(before)
        second = second - (second @ first) * first
        second_label = f"L{layer}H{head} OV write 2"
    norm = second.norm()
    if float(norm) < 1e-9:
        raise ValueError("the second direction lies along the head's top OV write direction")
    basis = torch.stack([first, second / norm])
    centre = before.mean(0)
    return HeadWrite(
        model_name=model_info(model).name,
        layer=layer,
        head=head,
        head_label=f"L{layer}H{head}",
        before=before,
        after=after,
        basis=basis,
        basis_labels=(f"L{layer}H{head} OV write 1", second_label),
        coords_before=(before - centre) @ basis.T,
        coords_after=(after - centre) @ basis.T,
        shift_along_axis=None if axis is None else write @ axis,
        axis_cosine=None if axis is None else float(axis @ first),
        singular_values=ov.singular_values,
        groups=tuple(groups) if groups is not None else ("prompts",) * n,
        labels=tuple(labels) if labels is not None else tuple(prompts),
    )


def _entry_label(layer: int) -> str:
    return "the embedding" if layer == 0 else f"L{layer - 1}'s output"
