"""What the library asks of the things it is given: a model, a tokenizer, a source of rows.

Every function that runs a model takes a :class:`HookedModel`: a TransformerLens
``TransformerBridge`` (what :func:`~mi_cluster.models.loading.load_model` returns), a
user's own bridge, or a TransformerLens 3.x ``HookedTransformer``. Functions that read
activations take a :data:`RowSource`: a ``[layer, row, d_model]`` tensor, or a
:class:`RowStore` read in batches (an :class:`~mi_cluster.collection.store.ActivationStore`).

The protocols name the members the library calls, and are checked at run time (the
tests run every annotated function under beartype). A model's components (``blocks``,
``embed``, ``unembed``, ``ln_final``, weight views such as ``W_U``) differ by architecture
and are reached through ``__getattr__``, as the bridge itself reaches them; that part is
declared for the type checker only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

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


@runtime_checkable
class ModelConfig(Protocol):
    """A model's configuration: TransformerLens's ``cfg``. The library reads these sizes;
    architecture switches (``n_key_value_heads``, ``attn_only``, ``architecture``,
    ``default_prepend_bos``, ...) are read with defaults, as not every config has them."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int

    if TYPE_CHECKING:  # the other settings, read with defaults (not checked at run time)

        def __getattr__(self, name: str) -> Any: ...


@runtime_checkable
class Tokenizer(Protocol):
    """A Hugging Face tokenizer (``PreTrainedTokenizerBase``): called on text, it gives
    ``input_ids``; it converts ids to tokens and back."""

    def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any:
        """Tokenize ``text``: a mapping with ``input_ids``."""
        ...

    def convert_ids_to_tokens(self, ids: Any, *args: Any, **kwargs: Any) -> Any:
        """The token strings of ``ids``."""
        ...

    def __len__(self) -> int: ...

    if TYPE_CHECKING:  # special tokens, encode/decode, ... (not checked at run time)

        def __getattr__(self, name: str) -> Any: ...


@runtime_checkable
class HookedModel(Protocol):
    """A TransformerLens model with hook points (``TransformerBridge`` in compatibility
    mode, or ``HookedTransformer``): the hook API, the tokenizer, the config."""

    @property
    def cfg(self) -> ModelConfig:
        """The model's configuration."""
        ...

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer."""
        ...

    @property
    def hook_dict(self) -> Mapping[str, Any]:
        """Hook name -> hook point."""
        ...

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model with ``fwd_hooks``; the logits."""
        ...

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model keeping activations; ``(logits, cache)``."""
        ...

    def to_tokens(self, *args: Any, **kwargs: Any) -> Tensor:
        """Text as a ``[batch, pos]`` tensor of token ids."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        """The model's parameters."""
        ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model on tokens or text; the logits."""
        ...

    if TYPE_CHECKING:  # components by architecture (not checked at run time)

        def __getattr__(self, name: str) -> Any: ...


@runtime_checkable
class RowStore(Protocol):
    """Rows on disk, read a batch at a time: ``n_rows`` rows of ``row_shape`` at each of
    the layers ``layer_labels`` names."""

    n_rows: int
    layer_labels: tuple[str, ...]

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one stored row at one layer."""
        ...

    def batches(
        self,
        rows: int = 4096,
        layers: Sequence[int] | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> Iterator[Tensor]:
        """The rows in order, ``rows`` at a time, as ``[layer, row, ...]`` tensors."""
        ...


RowSource: TypeAlias = Float[Tensor, "layer row d_model"] | RowStore
"""What a streaming method reads: the rows in memory, or a store read in batches."""


def is_store(source: object) -> TypeIs[RowStore]:
    """Whether ``source`` is a :class:`RowStore` (read in batches) rather than a tensor."""
    ...
    return not isinstance(source, Tensor) and isinstance(source, RowStore)
