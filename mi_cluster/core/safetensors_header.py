"""A safetensors file's header read without torch: its tensors' dtypes and shapes, its
metadata, and whether the file is long enough to hold them.

A safetensors file is an 8-byte little-endian header length, a JSON header (each
tensor's dtype, shape and byte range; an optional ``__metadata__`` of strings) and the
tensors' bytes. Reading the header costs a few bytes, so loaders and the activation store
check a file's framing before handing it to a library that would fail from inside.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HeaderError", "SafetensorsHeader", "read_header"]


class HeaderError(ValueError):
    """Not a safetensors file, or one cut short."""


@dataclass(frozen=True)
class SafetensorsHeader:
    """Fields:
    shapes: each tensor's shape, by name.
    dtypes: each tensor's dtype name (``"F32"``, ``"I64"``, ...), by name.
    metadata: the ``__metadata__`` strings (empty if none).
    """

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    metadata: dict[str, str]


def read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """The header of the safetensors file ``path``; :class:`HeaderError` naming the file
    if it is not one or is shorter than its tensors need."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise HeaderError(
                    f"{path} is truncated or not a safetensors file (its header claims {n} "
                    f"bytes; the file has {size})"
                )
            header = json.loads(f.read(n))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        need = 8 + n + max((v["data_offsets"][1] for v in tensors.values()), default=0)
        shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in tensors.items()}
        dtypes = {k: str(v["dtype"]) for k, v in tensors.items()}
        metadata = dict(header.get("__metadata__") or {})
    except (struct.error, ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError) as err:
        if isinstance(err, HeaderError):
            raise
        raise HeaderError(f"{path} is not a safetensors file (damaged header)") from None
    if size < need:
        raise HeaderError(f"{path} is truncated: {size} bytes, its tensors need {need}")
    return SafetensorsHeader(shapes, dtypes, metadata)
