"""Where a model comes from, checked before anything heavy is imported or loaded.

:func:`check_model_source` tells a registered name, a local ``save_pretrained`` directory
and a hub name apart, and for a directory checks what loading needs (a readable
``config.json``, a complete weights file, a tokenizer) by reading a few bytes: so a
missing path, a truncated weights file or an uncached hub name offline is reported, by
name, in milliseconds, not after seconds of imports or from inside transformers. Nothing
here imports torch.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

from mi_cluster.core.safetensors_header import HeaderError, read_header

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelUnavailableError",
    "cached_snapshot",
    "check_directory",
    "check_model_source",
    "hub_offline",
    "hub_reachable",
    "hub_unavailable",
    "registered_names",
]

ENTRY_POINT_GROUP = "mi_cluster.models"
HUB_PROBE_TIMEOUT_S = 2.0
# Any one of these is a tokenizer transformers can load from a directory.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spm.model")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class ModelUnavailableError(RuntimeError):
    """The model could not be loaded: a path that does not exist or is incomplete, a hub
    name not cached and the hub unreachable, damaged weights."""


def registered_names() -> list[str]:
    """The names of the models packages register (their entry points), read without
    importing them."""
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (to 1, true, yes or on)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face endpoint resolves and accepts a connection within
    ``timeout`` seconds (run in a thread: DNS lookups ignore socket timeouts)."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    result: dict[str, bool] = {}

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result["ok"] = True
        except OSError:
            result["ok"] = False

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return result.get("ok", False)


def cached_snapshot(name: str) -> Path | None:
    """The local Hugging Face cache's snapshot of hub model ``name``, if any."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(name, "config.json")
    except Exception:  # an invalid repo id, an unreadable cache: not cached
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def hub_unavailable(
    name: str, why: str, offline_models: Iterable[str] = ()
) -> ModelUnavailableError:
    """The error for a hub model that cannot be had, ``why``, with the ways to run
    offline (the registered models, with ``offline_models`` registered at run time)."""
    return ModelUnavailableError(
        f"could not fetch model {name!r} from the Hugging Face hub: {why}. To run offline, "
        f"save it where you have network (`AutoModelForCausalLM.from_pretrained({name!r})"
        ".save_pretrained(DIR)` and the same for its tokenizer) and call "
        "load_model('DIR'); or use an offline model: "
        + ", ".join(repr(m) for m in sorted({*registered_names(), *offline_models}))
        + ", or TinyConfig(...)"
    )


def _looks_like_path(source: str) -> bool:
    """A path, not a hub id: absolute, relative with ``.``/``~``, or more than one
    ``/`` (hub ids are ``name`` or ``owner/name``)."""
    return (
        source.startswith(("/", ".", "~"))
        or source.endswith(("/", os.sep))
        or source.count("/") > 1
        or (os.sep != "/" and os.sep in source)
    )


def check_directory(path: str | os.PathLike) -> Path:
    """Raise :class:`ModelUnavailableError` unless ``path`` is a ``save_pretrained``
    directory that can load: a JSON ``config.json`` with a ``model_type``, a weights file
    whose safetensors framing is complete, and a tokenizer."""
    directory = Path(path).expanduser()
    if not directory.exists():
        raise ModelUnavailableError(f"the path {str(path)!r} does not exist")
    if not directory.is_dir():
        raise ModelUnavailableError(f"{directory} is a file; expected a save_pretrained directory")
    config = directory / "config.json"
    if not config.is_file():
        raise ModelUnavailableError(
            f"{directory} has no config.json: expected a save_pretrained directory holding "
            "the model and its tokenizer"
        )
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError, UnicodeDecodeError) as err:
        raise ModelUnavailableError(f"{config} is not a JSON object ({err})") from None
    if not model_type:
        raise ModelUnavailableError(f"{config} has no model_type: not a transformers config")
    weights = [directory / w for w in WEIGHT_FILES if (directory / w).is_file()]
    weights += sorted(directory.glob("model-*.safetensors"))
    if not weights:
        raise ModelUnavailableError(
            f"{directory} has no weights ({', '.join(WEIGHT_FILES[::2])}): was save_pretrained "
            "interrupted?"
        )
    for w in (w for w in weights if w.suffix == ".safetensors"):
        try:
            read_header(w)
        except HeaderError as err:
            raise ModelUnavailableError(f"{err}: save the model again") from None
    if not any((directory / t).is_file() for t in TOKENIZER_FILES):
        raise ModelUnavailableError(
            f"{directory} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save it "
            "beside the model with tokenizer.save_pretrained(DIR)"
        )
    return directory


def check_model_source(source: str | os.PathLike, registered: Iterable[str] = ()) -> str:
    """What ``source`` is, ``"registered"``, ``"directory"`` or ``"hub"``, checked as far
    as can be without loading: a directory by :func:`check_directory`; a hub name, when
    ``HF_HUB_OFFLINE`` is set, against the local cache. ``registered``: names registered
    at run time, beside the entry points. Raise :class:`ModelUnavailableError` naming the
    problem otherwise."""
    key = os.fspath(source)
    if not key.strip():
        raise ModelUnavailableError("the model name is empty")
    registered = {*registered_names(), *registered}
    if key in registered:
        return "registered"
    if Path(key).expanduser().exists() or _looks_like_path(key):
        check_directory(key)
        return "directory"
    if hub_offline() and cached_snapshot(key) is None:
        why = "HF_HUB_OFFLINE is set, it is not in the local cache, and no such directory exists"
        raise hub_unavailable(key, why, registered)
    return "hub"
