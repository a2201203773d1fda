"""The activation store's files and the checks that bind them to each other, without torch.

A store (:mod:`mi_cluster.collection.store`) is a directory of:

- ``spec.json``: the :class:`StoreSpec`; every other record names it by its hash
  (:attr:`StoreSpec.sha256`), so nothing from a store of other inputs is ever taken for
  this one's;
- ``shard-K.safetensors``: shard ``K``'s rows; its header records the shard's number, its
  prompt range and the spec's hash;
- ``shard-K.json``: the sidecar, written after its shard: the same binding plus the
  shard's size, SHA-256 and row count;
- ``index.json``: the spec and every sidecar, once all shards are done; derived from the
  sidecars and checked against them whenever the store is opened;
- ``.lock``: held (an advisory ``flock``, with the holder's pid and host in it) by the one
  process that writes the store.

A shard is *done* when its sidecar parses, is bound to this spec, this shard number and
this prompt range, and the shard file matches it (size, SHA-256, and its own header's
binding and row count). A corrupt or foreign sidecar means "redo this shard"; a corrupt
``spec.json`` or ``index.json`` is a named :class:`StoreError`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from mi_cluster.core.digests import file_sha256, json_sha256, prompt_set_hash
from mi_cluster.core.hooks import SITES
from mi_cluster.core.safetensors_header import HeaderError, read_header

__all__ = [
    "FORMAT",
    "STORAGE_DTYPE_NAMES",
    "StoreError",
    "StoreSpec",
    "check_store_request",
    "done_shard",
    "read_index",
    "read_json",
    "read_spec",
    "shard_binding",
    "shard_name",
    "shard_problem",
    "sidecar_name",
    "store_lock",
    "write_or_check_spec",
]

FORMAT = "mi_cluster.store/2"
STORAGE_DTYPE_NAMES = ("float32", "float16", "bfloat16")
LOCK = ".lock"


class StoreError(ValueError):
    """A store that cannot be used as asked: a mismatch, a missing or corrupted file, a
    store another process is writing."""


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds; a run must match it to add shards.

    Fields:
        model_name, weights_sha256: the model and the hash of its weights.
        site: the site (``"resid_post"``, ...); positions: the position rule, described.
        prompts_sha256, n_prompts: the prompt set's hash and size.
        shard_size: prompts per shard.
        dtype: the storage dtype (``"float32"``, ``"float16"``, ``"bfloat16"``).
    """

    model_name: str
    weights_sha256: str
    site: str
    positions: str
    prompts_sha256: str
    n_prompts: int
    shard_size: int
    dtype: str

    @property
    def n_shards(self) -> int:
        """Shards the prompts fill."""
        return math.ceil(self.n_prompts / self.shard_size)

    @property
    def sha256(self) -> str:
        """The spec's own hash, which binds every shard and sidecar to it."""
        return json_sha256(asdict(self))

    def prompt_range(self, shard: int) -> range:
        """The prompts of shard ``shard``."""
        return range(shard * self.shard_size, min(self.n_prompts, (shard + 1) * self.shard_size))


def shard_name(k: int) -> str:
    """The file name of shard ``k``."""
    return f"shard-{k:05d}.safetensors"


def sidecar_name(k: int) -> str:
    """The file name of shard ``k``'s sidecar (its record)."""
    return f"shard-{k:05d}.json"


def shard_binding(spec: StoreSpec, k: int) -> dict:
    """What shard ``k`` of a store for ``spec`` must say of itself, in its header and its
    sidecar: its number, its file, its prompt range and the spec's hash."""
    span = spec.prompt_range(k)
    return {
        "shard": k,
        "file": shard_name(k),
        "prompts": [span.start, span.stop],
        "spec_sha256": spec.sha256,
    }


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a :class:`StoreError` naming ``what`` is corrupt."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise StoreError(f"{what} {path} cannot be read as JSON ({err})") from None
    if not isinstance(record, dict):
        raise StoreError(f"{what} {path} is not a JSON object")
    return record


def _spec_from(record: dict, path: Path) -> StoreSpec:
    fields = StoreSpec.__dataclass_fields__
    missing = [k for k in fields if k not in record]
    if missing or record.get("format") != FORMAT:
        why = f"lacks {missing}" if missing else f"is not in format {FORMAT}"
        raise StoreError(f"{path} {why}: not a store this version of mi_cluster wrote")
    try:
        return StoreSpec(**{k: record[k] for k in fields})
    except TypeError as err:  # pragma: no cover - fields checked above
        raise StoreError(f"{path} is not a store spec ({err})") from None


def read_spec(directory: Path) -> StoreSpec | None:
    """The spec of the store at ``directory``; None where there is none and nothing else
    of a store either; a :class:`StoreError` where shards exist without their spec."""
    path = directory / "spec.json"
    if path.exists():
        return _spec_from(read_json(path, "the store's spec"), path)
    leftovers = sorted(p.name for p in directory.glob("shard-*")) if directory.is_dir() else []
    if leftovers or (directory / "index.json").exists():
        raise StoreError(
            f"{directory} has shards ({', '.join(leftovers[:3])}, ...) but no spec.json, so "
            "nothing can tell what they hold: use a new directory (or delete this one)"
        )
    return None


def write_or_check_spec(directory: Path, spec: StoreSpec) -> None:
    """Write ``spec.json`` if absent; else refuse a spec that differs, naming the fields."""
    from mi_cluster.core.atomic import atomic_write_text

    have = read_spec(directory)
    if have is None:
        record = {"format": FORMAT, **asdict(spec), "spec_sha256": spec.sha256}
        atomic_write_text(directory / "spec.json", json.dumps(record, indent=1) + "\n")
        return
    _refuse_differences(directory, have, asdict(spec))


def _refuse_differences(directory: Path, have: StoreSpec, ask: dict) -> None:
    """Refuse a run that asks for other spec fields than the store has, naming each."""
    diff = [
        f"{k}: the store has {getattr(have, k)!r}, this run {v!r}"
        for k, v in ask.items()
        if getattr(have, k) != v
    ]
    if diff:
        raise StoreError(
            f"{directory} holds another collection, so it cannot be appended to ("
            + "; ".join(diff)
            + "): use a new directory"
        )


def shard_problem(
    directory: Path, spec: StoreSpec, side: dict, checksum: bool = True
) -> str | None:
    """What is wrong with a shard against its sidecar or index entry ``side`` (None:
    nothing): a record bound to another shard, range or spec; a missing, resized or
    (with ``checksum``) altered file; a header bound elsewhere or with other row counts."""
    k = side.get("shard")
    if not isinstance(k, int) or not 0 <= k < spec.n_shards:
        return f"a shard record in {directory} names shard {k!r}, not one of this store's"
    want = shard_binding(spec, k)
    wrong = [f for f, v in want.items() if side.get(f) != v]
    if wrong:
        return f"the record of shard {k} in {directory} belongs elsewhere (its {wrong} differ)"
    path = directory / want["file"]
    if not path.exists():
        return f"shard {path} is missing"
    size, recorded = path.stat().st_size, side.get("bytes")
    if size != recorded:
        return f"shard {path} is truncated or extended: {size} bytes, the record says {recorded}"
    if checksum and file_sha256(path) != side.get("sha256"):
        return f"shard {path} is corrupted: its SHA-256 does not match"
    return _header_problem(path, want, side.get("rows"))


def _header_problem(path: Path, want: dict, rows: object) -> str | None:
    try:
        header = read_header(path)
        own = json.loads(header.metadata["mi_cluster"])
    except (HeaderError, KeyError, ValueError) as err:
        return f"shard {path} cannot be read ({err})"
    wrong = [f for f in ("shard", "prompts", "spec_sha256") if own.get(f) != want[f]]
    if wrong:
        return f"shard {path} holds another shard's rows (its header's {wrong} differ)"
    acts, index = header.shapes.get("activations"), header.shapes.get("prompt_index")
    if acts is None or index is None or len(acts) < 2 or acts[1] != rows or index != (rows,):
        return (
            f"shard {path} holds {None if acts is None else acts[1:2]} rows, the record says {rows}"
        )
    return None


def done_shard(directory: Path, spec: StoreSpec, k: int, checksum: bool = True) -> dict | None:
    """Shard ``k``'s sidecar if the shard is done (see the module's doc), else None: a
    missing, unreadable or foreign sidecar, or a shard that does not match it."""
    path = directory / sidecar_name(k)
    if not path.exists():
        return None
    try:
        side = read_json(path, "sidecar")
    except StoreError:
        return None
    if side.get("shard") != k or shard_problem(directory, spec, side, checksum):
        return None
    return side


def read_index(directory: Path) -> tuple[StoreSpec, dict]:
    """The spec and index of a complete store, each checked against the other and the
    index against every sidecar (without reading the shards: :meth:`verify` does)."""
    index_path = directory / "index.json"
    if not index_path.exists():
        raise StoreError(
            f"{directory} has no index.json: the collection is incomplete (run it again to "
            "complete the missing shards) or this is not a store"
        )
    spec = read_spec(directory)
    if spec is None:
        raise StoreError(f"{directory} has an index.json but no spec.json")
    index = read_json(index_path, "the store's index")
    if _spec_from(index, index_path) != spec:
        raise StoreError(f"{index_path} describes another collection than {directory}/spec.json")
    shards = index.get("shards")
    if not isinstance(shards, list) or len(shards) != spec.n_shards:
        raise StoreError(
            f"{index_path} lists {len(shards or [])} shards; the spec needs {spec.n_shards}"
        )
    for k, entry in enumerate(shards):
        side_path = directory / sidecar_name(k)
        side = read_json(side_path, "sidecar") if side_path.exists() else None
        if side != entry:
            raise StoreError(f"{index_path}'s entry for shard {k} differs from {side_path}")
        problem = shard_problem(directory, spec, entry, checksum=False)
        if problem:
            raise StoreError(problem)
    if index.get("n_rows") != sum(s["rows"] for s in shards):
        raise StoreError(f"{index_path}'s n_rows is not the sum of its shards' rows")
    return spec, index


def _holder(path: Path) -> str:
    try:
        who = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {who['pid']} on host {who['host']} (since {who['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def store_lock(directory: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the store's write lock (an advisory ``flock`` on ``.lock``, released when the
    process ends however it ends), waiting up to ``wait`` seconds for another holder; then
    a :class:`StoreError` naming the holder. Without ``fcntl`` (Windows) there is no
    lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = directory / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"{directory} is being written by {_holder(path)}: wait for it to "
                        "finish (or stop it), then run again"
                    ) from None
                time.sleep(0.2)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        who = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
        os.ftruncate(fd, 0)
        os.pwrite(fd, who.encode() + b"\n", 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def check_store_request(
    out: str | os.PathLike,
    prompts: Sequence[str],
    site: str,
    shard_size: int,
    dtype: str,
    wait: float = 0.0,
) -> None:
    """What can be checked of a collection into ``out`` before any model is loaded: the
    site, the storage dtype, the shard size, and an existing store's spec (its prompt set,
    site, shard size and dtype) and lock. The model and positions are checked by
    :func:`~mi_cluster.collection.store.collect_to_store` itself."""
    if site not in SITES:
        raise StoreError(f"unknown site {site!r}; expected one of {SITES}")
    if dtype not in STORAGE_DTYPE_NAMES:
        raise StoreError(f"dtype must be one of {STORAGE_DTYPE_NAMES}, got {dtype!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise StoreError(f"shard_size must be a positive integer, got {shard_size!r}")
    directory = Path(out)
    have = read_spec(directory)
    if have is None:
        return
    ask = {
        "site": site,
        "prompts_sha256": prompt_set_hash(prompts),
        "n_prompts": len(prompts),
        "shard_size": shard_size,
        "dtype": dtype,
    }
    _refuse_differences(directory, have, ask)
    with store_lock(directory, wait):
        pass
