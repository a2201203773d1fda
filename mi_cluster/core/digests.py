"""Content digests: what identifies a prompt set or a file, computed without torch.

Every place that names data by its hash (provenance records, the activation store's
spec and shard records) uses these, so the same content always gets the same name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

__all__ = ["file_sha256", "json_sha256", "prompt_set_hash"]


def prompt_set_hash(prompts: Sequence[str]) -> str:
    """SHA-256 of the prompts, in order (JSON-encoded, so no two sets collide by joining)."""
    return hashlib.sha256(json.dumps(list(prompts), ensure_ascii=False).encode()).hexdigest()


def json_sha256(record: object) -> str:
    """SHA-256 of a JSON-able record, keys sorted (the same record, the same hash)."""
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read a mebibyte at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
