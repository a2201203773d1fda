"""Activations on disk: a directory of safetensors shards with an index, written shard by
shard, resumable after a crash, checked by checksums, read lazily.

A store holds one site at every layer for a prompt set, reduced to positions, as
:func:`~mi_cluster.collection.activations.collect` does in memory. Its directory holds:

- ``spec.json``: what the store is for (model and weights hash, site, positions, prompt-set
  hash, prompts per shard, storage dtype), written first, after every argument and every
  prompt has been checked; a later run that asks for anything else is refused, naming the
  difference, instead of appending to it;
- ``shard-00000.safetensors`` ...: shard ``k`` holds prompts ``[k * shard_size, (k + 1) *
  shard_size)``: the activations ``[layer, row, ...]`` in the storage dtype, each row's
  prompt index, and in its header the rows' positions and tokens and the shard's binding
  (its number, prompt range and the spec's hash);
- ``shard-00000.json`` ...: written after its shard, with the same binding, the shard's
  SHA-256, size, row count and the storage dtype's rounding error. A shard counts as done
  only when its sidecar is bound to this store and matches it; so a run that dies at any
  point is resumed by redoing exactly the shards without a valid sidecar (no row lost,
  none written twice), and a shard or sidecar from another store is never taken for one
  of this store's;
- ``index.json``: written once every shard is done: the spec, layer labels and hook
  names, every shard's sidecar, and the total rounding error; checked against the spec
  and the sidecars each time the store is opened.

The rules binding these files are in :mod:`mi_cluster.collection.store_files`. One process writes a
store at a time (it holds the store's lock). Every file is written atomically
(:mod:`mi_cluster.core.atomic`). Under ``torch.distributed``
(``torchrun``, ``srun``) each rank takes the shards ``k`` with ``k % world_size == rank``,
writes them, and rank 0 writes the index after a barrier; see :func:`collect_to_store`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.collection.activations import (
    Activations,
    Positions,
    as_positions,
    collect,
    plan_collection,
)
from mi_cluster.collection.distributed import barrier, distributed_rank, my_share
from mi_cluster.collection.store_files import (
    FORMAT,
    STORAGE_DTYPE_NAMES,
    StoreError,
    StoreSpec,
    done_shard,
    read_index,
    shard_binding,
    shard_problem,
    sidecar_name,
    store_lock,
    write_or_check_spec,
)
from mi_cluster.core.atomic import atomic_path, atomic_write_text
from mi_cluster.core.digests import file_sha256
from mi_cluster.core.model_info import model_info
from mi_cluster.core.progress import progress_bar
from mi_cluster.core.protocols import HookedModel
from mi_cluster.core.provenance import prompt_set_hash, weights_hash

__all__ = [
    "ActivationStore",
    "StoreError",
    "StoreSpec",
    "collect_to_store",
]

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
assert tuple(STORAGE_DTYPES) == STORAGE_DTYPE_NAMES


def _write_shard(directory: Path, spec: StoreSpec, k: int, acts: Activations, rank: int) -> dict:
    """Shard ``k`` and then its sidecar, each atomically, both bound to ``spec``."""
    from safetensors.torch import save_file

    binding = shard_binding(spec, k)
    offset, dtype = binding["prompts"][0], STORAGE_DTYPES[spec.dtype]
    x = acts.tensor
    stored = x.to(dtype).contiguous()
    err = (stored.double() - x.double()).abs()
    scale = x.double().norm()
    # one metadata key: safetensors orders several at random, and the same shard must
    # give the same bytes (and checksum) whichever process wrote it
    meta = {
        "mi_cluster": json.dumps(
            {
                **binding,
                "positions": acts.positions,
                "tokens": acts.tokens,
                "layer_labels": acts.layer_labels,
                "hook_names": acts.hook_names,
            },
            ensure_ascii=False,
        )
    }
    tensors = {
        "activations": stored,
        "prompt_index": torch.tensor(acts.prompt_index, dtype=torch.int64) + offset,
    }
    target = directory / binding["file"]
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    side = {
        **binding,
        "rows": int(x.shape[1]),
        "bytes": target.stat().st_size,
        "sha256": file_sha256(target),
        "rank": rank,
        "cast_max_abs_error": float(err.max()) if err.numel() else 0.0,
        "cast_squared_error": float(err.pow(2).sum()),
        "squared_norm": float(scale**2),
    }
    atomic_write_text(directory / sidecar_name(k), json.dumps(side, indent=1) + "\n")
    return side


def _write_index(directory: Path, spec: StoreSpec) -> None:
    """The index, from every shard's sidecar (all must be done)."""
    shards = []
    for k in range(spec.n_shards):
        meta = done_shard(directory, spec, k)
        if meta is None:
            raise StoreError(f"shard {k} in {directory} is missing or corrupted")
        shards.append(meta)
    from safetensors import safe_open

    with safe_open(str(directory / shards[0]["file"]), framework="pt") as f:
        layers = json.loads(f.metadata()["mi_cluster"])
    index = {
        "format": FORMAT,
        **asdict(spec),
        "layer_labels": layers["layer_labels"],
        "hook_names": layers["hook_names"],
        "n_rows": sum(s["rows"] for s in shards),
        "cast_max_abs_error": max(s["cast_max_abs_error"] for s in shards),
        "cast_relative_error": _relative(shards),
        "shards": shards,
    }
    atomic_write_text(directory / "index.json", json.dumps(index, indent=1) + "\n")


def _relative(shards: Sequence[dict]) -> float:
    """||stored - collected|| / ||collected|| over the whole store (Frobenius)."""
    norm = sum(s["squared_norm"] for s in shards)
    return math.sqrt(sum(s["cast_squared_error"] for s in shards) / norm) if norm else 0.0


@dataclass(frozen=True)
class StoreRun:
    """What one run of :func:`collect_to_store` did on this rank.

    Fields:
        path: the store's directory.
        rank, world_size: this process and how many took part.
        written: shards this rank wrote; skipped: its shards already done (a resume).
        complete: whether the index is written (every shard done).
    """

    path: Path
    rank: int
    world_size: int
    written: tuple[int, ...]
    skipped: tuple[int, ...]
    complete: bool


def collect_to_store(
    model: HookedModel,
    prompts: Sequence[str],
    out: str | os.PathLike,
    site: str = "resid_post",
    positions: Positions | str = "last",
    *,
    shard_size: int = 256,
    dtype: str = "float32",
    batch_size: int = 32,
    max_shards: int | None = None,
    progress: bool = True,
    wait: float = 0.0,
) -> StoreRun:
    """Collect ``site`` for ``prompts`` into a store at ``out``, shard by shard.

    Single process by default. Under ``torch.distributed`` (initialised by the caller, e.g.
    the ``mi-cluster collect`` command under ``torchrun``) each rank writes the shards
    ``k`` with ``k % world_size == rank`` and rank 0 writes the index after a barrier.
    Shards already done are skipped, so calling it again after a crash completes only the
    missing ones; a store made for another model, site, position rule, prompt set, shard
    size or dtype is refused.

    Args:
        model: the model, as for :func:`~mi_cluster.collection.activations.collect`.
        prompts: the prompts, as for ``collect``.
        site: the site, as for ``collect``.
        positions: the position rule, as for ``collect``.
        batch_size: prompts per forward pass, as for ``collect``.
        out: the store's directory (created if needed).
        shard_size: prompts per shard.
        dtype: storage dtype, ``"float32"``, ``"float16"`` or ``"bfloat16"``; the rounding
            error it costs is measured per shard and kept in the index.
        max_shards: write at most this many shards in this run (a time budget, e.g. a
            job's wall-clock limit); the store completes on a later run.
        progress: a progress bar over this rank's shards.
        wait: seconds to wait for another process writing the same store to finish (then
            a :class:`StoreError` names it).
    """
    spec = _checked_spec(
        model,
        prompts,
        site,
        positions=positions,
        shard_size=shard_size,
        dtype=dtype,
        batch_size=batch_size,
    )
    directory = Path(out)
    rank, world = distributed_rank()
    # rank 0 holds the lock for the whole job; the others write only their own shards
    held = store_lock(_made(directory), wait) if rank == 0 else contextlib.nullcontext()
    with held:
        if rank == 0:
            write_or_check_spec(directory, spec)
        barrier()
        if rank != 0:
            write_or_check_spec(directory, spec)
        mine = list(my_share(range(spec.n_shards)))
        pending = [k for k in mine if done_shard(directory, spec, k) is None]
        skipped = tuple(k for k in mine if k not in pending)
        todo = pending if max_shards is None else pending[:max_shards]
        if todo:  # the index no longer describes the shards
            (directory / "index.json").unlink(missing_ok=True)
        bar = progress_bar(todo, desc=f"rank {rank} shards", unit="shard", enabled=progress)
        for k in bar:
            span = spec.prompt_range(k)
            words = _positions_slice(positions, span)
            acts = collect(model, [prompts[i] for i in span], site, words,
                           batch_size=batch_size, progress=False)  # fmt: skip
            _write_shard(directory, spec, k, acts, rank)
        barrier()
        # every rank checked its own shards' checksums above; rank 0 checks all of them
        # again as it writes the index, so here sizes and bindings suffice
        shards = range(spec.n_shards)
        complete = all(done_shard(directory, spec, k, checksum=False) for k in shards)
        if rank == 0 and complete:
            _write_index(directory, spec)
        barrier()
    return StoreRun(directory, rank, world, tuple(todo), skipped, complete)


def _made(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _checked_spec(
    model: HookedModel,
    prompts: Sequence[str],
    site: str,
    *,
    positions: Positions | str,
    shard_size: int,
    dtype: str,
    batch_size: int,
) -> StoreSpec:
    """The spec of this collection, once every argument and every prompt is checked:
    nothing is written for a collection that would fail on its 1,000th prompt."""
    if isinstance(prompts, str) or not prompts:
        raise StoreError("prompts must be a non-empty list of strings")
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise StoreError(f"shard_size must be a positive integer, got {shard_size!r}")
    if dtype not in STORAGE_DTYPES:
        raise StoreError(f"dtype must be one of {STORAGE_DTYPE_NAMES}, got {dtype!r}")
    plan_collection(model, prompts, (site,), positions, batch_size)
    return StoreSpec(
        model_name=model_info(model).name,
        weights_sha256=weights_hash(model),
        site=site,
        positions=_describe(positions),
        prompts_sha256=prompt_set_hash(prompts),
        n_prompts=len(prompts),
        shard_size=shard_size,
        dtype=dtype,
    )


def _describe(positions: Positions | str) -> str:
    """The position rule in words; per-prompt words are named by their hash, so a store
    of other words is told apart."""
    spec = as_positions(positions)
    text = spec.describe()
    if spec.kind == "word" and isinstance(spec.words, tuple):
        text += f" sha256 {prompt_set_hash(spec.words)}"
    return text


def _positions_slice(positions: Positions | str, span: range) -> Positions | str:
    """The position rule for the prompts of one shard (per-prompt words are sliced)."""
    spec = as_positions(positions)
    if spec.kind == "word" and isinstance(spec.words, tuple):
        return dataclasses.replace(spec, words=tuple(spec.words[i] for i in span))
    return spec


class ActivationStore:
    """A complete store, read lazily (each shard memory-mapped when read).

    Attributes:
        path: the directory; spec: its :class:`StoreSpec`.
        layer_labels, hook_names: per layer.
        n_rows: rows in all; shards: each shard's sidecar, in order.
        cast_max_abs_error, cast_relative_error: what the storage dtype cost, the largest
            absolute error and ``||stored - collected|| / ||collected||`` over the store (0
            for float32).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.spec, index = read_index(self.path)
        self.layer_labels = tuple(index["layer_labels"])
        self.hook_names = tuple(index["hook_names"])
        self._layers = tuple(range(len(self.layer_labels)))  # stored layer of each layer
        self.n_rows = int(index["n_rows"])
        self.shards = tuple(index["shards"])
        self.cast_max_abs_error = float(index["cast_max_abs_error"])
        self.cast_relative_error = float(index["cast_relative_error"])

    def verify(self) -> None:
        """Check every shard against the index: its size, SHA-256, and its header's binding
        to this store, its place and its row count; a shard that fails is named."""
        for meta in self.shards:
            problem = shard_problem(self.path, self.spec, meta)
            if problem:
                raise StoreError(problem)

    def select_layers(self, layers: Sequence[int]) -> ActivationStore:
        """The same store seen at ``layers`` only (indices into ``layer_labels``), for any
        function that reads a store: e.g. a statistic whose per-layer memory allows a few
        layers of a wide model, not all of them."""
        bad = [i for i in layers if not 0 <= i < len(self.layer_labels)]
        if bad or not layers:
            raise StoreError(
                f"layers {list(layers)} do not select from the {len(self.layer_labels)} "
                "layers of this store"
            )
        view = object.__new__(ActivationStore)
        view.__dict__.update(self.__dict__)
        view.layer_labels = tuple(self.layer_labels[i] for i in layers)
        view.hook_names = tuple(self.hook_names[i] for i in layers)
        view._layers = tuple(self._layers[i] for i in layers)
        return view

    @property
    def n_bytes(self) -> int:
        """The shards' size on disk."""
        return sum(meta["bytes"] for meta in self.shards)

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one stored row at one layer (``(d_model,)`` for the residual)."""
        if not self.shards:
            raise StoreError(f"{self.path} holds no rows")
        with self._open(self.shards[0]) as f:
            return tuple(f.get_slice("activations").get_shape()[2:])

    def prompt_index(self) -> Tensor:
        """The prompt of every row, in store order (``Int[Tensor, "row"]``), read without
        the activations: per-prompt labels become per-row labels as ``labels[index]``."""
        parts = []
        for meta in self.shards:
            with self._open(meta) as f:
                parts.append(f.get_tensor("prompt_index"))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)

    def _open(self, meta: dict):
        from safetensors import safe_open

        shard = self.path / meta["file"]
        problem = shard_problem(self.path, self.spec, meta, checksum=False)
        if problem:  # a shard replaced since the store was opened
            raise StoreError(problem)
        try:
            return safe_open(str(shard), framework="pt")
        except Exception as err:  # a damaged header
            raise StoreError(f"shard {shard} cannot be read ({err}); run verify()") from None

    def batches(
        self,
        rows: int = 4096,
        layers: Sequence[int] | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> Iterator[Float[Tensor, "layer row ..."]]:
        """The store's rows in order, ``rows`` at a time (the last batch may be smaller),
        at ``layers`` (default all), as ``dtype`` (default the storage dtype) on
        ``device``. Only one shard is mapped and one batch held at a time."""
        chosen = list(range(len(self.layer_labels))) if layers is None else list(layers)
        if rows < 1:
            raise StoreError(f"rows must be positive, got {rows}")
        bad = [i for i in chosen if not 0 <= i < len(self.layer_labels)]
        if bad:
            raise StoreError(f"layers {bad} do not exist: the store has {len(self.layer_labels)}")
        pending: list[Tensor] = []
        held = 0
        for meta in self.shards:
            with self._open(meta) as f:
                sl = f.get_slice("activations")
                for block in _row_blocks(meta["rows"], rows):
                    part = torch.stack([sl[self._layers[i], block] for i in chosen])
                    pending.append(part)
                    held += part.shape[1]
                    while held >= rows:
                        batch = torch.cat(pending, dim=1)
                        yield batch[:, :rows].to(device=device, dtype=dtype or batch.dtype)
                        rest = batch[:, rows:]
                        pending, held = ([rest] if rest.shape[1] else []), rest.shape[1]
        if held:
            batch = torch.cat(pending, dim=1)
            yield batch.to(device=device, dtype=dtype or batch.dtype)

    def to_activations(
        self, prompts: Sequence[str] | None = None, dtype: torch.dtype | None = None
    ) -> Activations:
        """The whole store in memory as :class:`~mi_cluster.collection.activations.Activations`
        (when it fits), with every row's prompt index, positions and tokens. The store
        keeps only the prompt set's hash: pass ``prompts`` (checked against it) to have
        them in the result, else they are empty strings."""
        if prompts is not None and prompt_set_hash(prompts) != self.spec.prompts_sha256:
            raise StoreError("these prompts are not the ones the store was collected from")
        tensors, index, positions, tokens = [], [], [], []
        for meta in self.shards:
            with self._open(meta) as f:
                sl = f.get_slice("activations")
                tensors.append(torch.stack([sl[i] for i in self._layers]))
                index += f.get_tensor("prompt_index").tolist()
                rows = json.loads(f.metadata()["mi_cluster"])
            positions += [tuple(p) for p in rows["positions"]]
            tokens += [tuple(t) for t in rows["tokens"]]
        x = torch.cat(tensors, dim=1)
        return Activations(
            site=self.spec.site,
            tensor=x if dtype is None else x.to(dtype),
            layer_labels=self.layer_labels,
            hook_names=self.hook_names,
            prompts=tuple(prompts) if prompts is not None else ("",) * self.spec.n_prompts,
            prompt_index=tuple(index),
            positions=tuple(positions),
            tokens=tuple(tokens),
            position_spec=self.spec.positions,
            model_name=self.spec.model_name,
        )


def _row_blocks(n: int, rows: int) -> Iterator[slice]:
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))
