"""Provenance of a result: which weights, which prompts, which code, which command.

Months later a figure must say what produced it. :func:`provenance` records the models (name
and a SHA-256 of their weights), the prompt set (a SHA-256 of the prompts in order), the
seed, the command line, and the versions of mi_cluster, TransformerLens and torch. Nothing
in it depends on the time or the machine, so two runs of the same command on the same code
give the same record.
"""

from __future__ import annotations

import hashlib
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from mi_cluster.core.digests import prompt_set_hash
from mi_cluster.core.model_info import model_info
from mi_cluster.core.protocols import HookedModel

__all__ = ["Provenance", "prompt_set_hash", "provenance", "weights_hash"]

_HASH_ATTR = "mi_cluster_weights_sha256"


def weights_hash(model: HookedModel) -> str:
    """SHA-256 of a model's parameters and buffers (names, shapes, dtypes and bytes, in name
    order), cached on the model. Two loads of the same weights give the same hash."""
    cached = getattr(model, _HASH_ATTR, None)
    if isinstance(cached, str):
        return cached
    h = hashlib.sha256()
    tensors = dict(model.named_parameters())
    tensors.update({k: v for k, v in model.named_buffers() if k not in tensors})
    with torch.no_grad():
        for name in sorted(tensors):
            t = tensors[name].detach().to("cpu").contiguous()
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest = h.hexdigest()
    try:
        setattr(model, _HASH_ATTR, digest)
    except AttributeError:  # a model that refuses new attributes: no caching
        pass
    return digest


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True)
class Provenance:
    """Where a result came from.

    Fields:
        models: per model, ``{"name", "weights_sha256"}`` (the hash names the weights
            wherever they were loaded from).
        prompts_sha256: SHA-256 of the prompt set (None if the result has no prompts);
            n_prompts: its size.
        seed: the random seed (None if nothing is random).
        command: the command line that produced it.
        versions: mi_cluster, transformer-lens and torch versions.
    """

    models: tuple[dict, ...]
    prompts_sha256: str | None
    n_prompts: int | None
    seed: int | None
    command: str
    versions: dict

    def as_dict(self) -> dict:
        """The record as a JSON-ready dict."""
        return asdict(self)


def _command() -> str:
    """This process's command line as one would type it: ``python -m mi_cluster.cli ...``
    for a module of the package, ``python experiments/x.py ...`` for a script (relative to
    the working directory), the bare name for a console script such as ``mi-cluster``."""
    argv = list(sys.argv) or [""]
    first = Path(argv[0])
    package = Path(__file__).resolve().parents[1]  # mi_cluster/
    head: list[str]
    if first.suffix == ".py" and first.resolve().is_relative_to(package):
        module = first.resolve().relative_to(package.parent).with_suffix("")
        head = ["python", "-m", ".".join(module.parts).removesuffix(".__main__")]
    elif first.suffix == ".py":
        try:
            head = ["python", str(first.resolve().relative_to(Path.cwd()))]
        except ValueError:
            head = ["python", first.name]
    else:
        head = [first.name]
    return shlex.join(head) + "".join(" " + shlex.quote(a) for a in argv[1:])


def provenance(
    models: Sequence[Any],
    prompts: Sequence[str] | None = None,
    seed: int | None = None,
    command: str | None = None,
) -> Provenance:
    """The provenance of a result computed with ``models`` on ``prompts`` (see
    :class:`Provenance`); ``command`` defaults to this process's command line."""
    return Provenance(
        models=tuple(
            {"name": model_info(m).name, "weights_sha256": weights_hash(m)} for m in models
        ),
        prompts_sha256=None if prompts is None else prompt_set_hash(prompts),
        n_prompts=None if prompts is None else len(prompts),
        seed=seed,
        command=command if command is not None else _command(),
        versions={
            "mi_cluster": _version("mi-cluster"),
            "transformer_lens": _version("transformer-lens"),
            "torch": _version("torch"),
        },
    )
