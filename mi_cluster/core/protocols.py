"""What the library asks of the things it is given: a model, a tokenizer, a source of rows.

Every function that runs a model takes a :class:`HookedModel`: a TransformerLens
``TransformerBridge`` (what :func:`~mi_cluster.models.loading.load_model` returns), a
user's own bridge, or a TransformerLens 3.x ``HookedTransformer``. Functions that read
activations take a :data:`RowSource`: a ``[layer, row, d_model]`` tensor, or a
:class:`RowStore` read in batches (an :class:`~mi_cluster.collection.store.ActivationStore`).

The protocols name the members the library calls. A model's components (``blocks``,
``embed``, ``unembed``, ``ln_final``, weight views such as ``W_U``) differ by architecture
and are reached through ``__getattr__``, as the bridge itself reaches them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor
from typing_extensions import TypeIs

__all__ = [
    "HookedModel",
    "ModelConfig",
    "RowSource",
    "RowStore",
    "Tokenizer",
    "is_store",
]


class ModelConfig(Protocol):
    """A model's configuration: TransformerLens's ``cfg``. The library reads these sizes;
    architecture switches (``n_key_value_heads``, ``attn_only``, ``architecture``,
    ``default_prepend_bos``, ...) are read with defaults, as not every config has them."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int

    def __getattr__(self, name: str) -> Any: ...


class Tokenizer(Protocol):
    """A Hugging Face tokenizer (``PreTrainedTokenizerBase``): called on text, it gives
    ``input_ids``; it converts ids to tokens and back."""

    def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any: ...

    def convert_ids_to_tokens(self, ids: Any, *args: Any, **kwargs: Any) -> Any: ...

    def __len__(self) -> int: ...

    def __getattr__(self, name: str) -> Any: ...


class HookedModel(Protocol):
    """A TransformerLens model with hook points (``TransformerBridge`` in compatibility
    mode, or ``HookedTransformer``): the hook API, the tokenizer, the config."""

    @property
    def cfg(self) -> ModelConfig: ...

    @property
    def tokenizer(self) -> Any: ...

    @property
    def hook_dict(self) -> Mapping[str, Any]: ...

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any: ...

    def to_tokens(self, *args: Any, **kwargs: Any) -> Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def __getattr__(self, name: str) -> Any: ...


@runtime_checkable
class RowStore(Protocol):
    """Rows on disk, read a batch at a time: ``n_rows`` rows of ``row_shape`` at each of
    the layers ``layer_labels`` names."""

    n_rows: int
    layer_labels: tuple[str, ...]

    @property
    def row_shape(self) -> tuple[int, ...]: ...

    def batches(
        self,
        rows: int = 4096,
        layers: Sequence[int] | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> Iterator[Tensor]: ...


RowSource: TypeAlias = Float[Tensor, "layer row d_model"] | RowStore
"""What a streaming method reads: the rows in memory, or a store read in batches."""


def is_store(source: object) -> TypeIs[RowStore]:
    """Whether ``source`` is a :class:`RowStore` (read in batches) rather than a tensor."""
    return not isinstance(source, Tensor) and isinstance(source, RowStore)
