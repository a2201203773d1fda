"""Where commands write models and lenses: never over anything they did not create.

A command that writes a directory (``mi-cluster train-toy``) or a file (``train-lens``)
checks its target before any work starts (:func:`check_output_dir`,
:func:`check_output_file`):

- anything inside the installed ``mi_cluster`` package (the shipped toy model, its tuned
  lens, the compiled model) is read-only to every command;
- a directory is written only if it does not exist, is empty, or holds a previous output of
  the same command (its marker file, :data:`MARKER`, names the command and the files it
  wrote); a file only if it does not exist or is a previous output of the same kind;
- ``force=True`` (the commands' ``--force``) allows any other target, but even then only
  the files the command writes are replaced: nothing else in a directory is deleted.

:func:`install_dir` moves a finished output (built in a temporary directory beside the
target) into place under those rules.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from mi_cluster.core.atomic import atomic_write_text

__all__ = [
    "MARKER",
    "OutputError",
    "check_output_dir",
    "check_output_file",
    "fresh_path",
    "install_dir",
]

MARKER = ".mi_cluster-output.json"
"""The file that marks a directory as a command's output and lists the files it wrote."""
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # mi_cluster/, this file being core/outputs.py


class OutputError(ValueError):
    """A target a command may not write: shipped with the package, or someone else's."""


def _refuse_shipped(path: Path) -> None:
    resolved = path.resolve()
    if resolved == PACKAGE_DIR or PACKAGE_DIR in resolved.parents:
        raise OutputError(
            f"{path} is inside the installed mi_cluster package ({PACKAGE_DIR}); what ships "
            "there is read-only to every command: give --out a path of your own"
        )


def _marker(directory: Path) -> dict | None:
    try:
        record = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _writable_parent(path: Path) -> None:
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: {parent} is not a writable directory")


def check_output_dir(path: str | os.PathLike, command: str, force: bool = False) -> Path:
    """Raise :class:`OutputError` unless ``command`` may write the directory ``path``."""
    target = Path(path)
    _refuse_shipped(target)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        record = _marker(target)
        if record is None or record.get("command") != command:
            raise OutputError(
                f"{target} is not empty and is not an earlier output of `{command}`; nothing "
                "in it will be touched: choose a new --out (or pass --force to write this "
                "command's files into it, replacing only those)"
            )
    _writable_parent(target)
    return target


def check_output_file(
    path: str | os.PathLike,
    command: str,
    is_previous_output: Callable[[Path], bool],
    force: bool = False,
) -> Path:
    """Raise :class:`OutputError` unless ``command`` may write the file ``path``:
    absent, or ``is_previous_output(path)`` (e.g. it reads as a tuned lens), or ``force``."""
    target = Path(path)
    _refuse_shipped(target)
    if target.is_dir():
        raise OutputError(f"{target} is a directory; give a file path")
    if target.exists() and not force and not is_previous_output(target):
        raise OutputError(
            f"{target} exists and is not an earlier output of `{command}`; it is left as "
            "it is: choose another path (or pass --force to replace it)"
        )
    _writable_parent(target)
    return target


def fresh_path(base: str | os.PathLike) -> Path:
    """``base``, or ``base-2``, ``base-3`` ... (before the suffix): the first that does
    not exist."""
    base = Path(base)
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.stem}-{n}{base.suffix}")
    return candidate


def install_dir(built: Path, target: Path, command: str) -> None:
    """Move the files of ``built`` (a finished output) into ``target`` and remove
    ``built``. A new target is a rename; in an existing one only the files of this output
    and those a previous output of ``command`` listed are replaced or removed."""
    files = sorted(p.name for p in built.iterdir() if p.name != MARKER)
    record = {"command": command, "files": files}
    atomic_write_text(built / MARKER, json.dumps(record, indent=1) + "\n")
    if not target.exists():
        built.rename(target)
        return
    previous = _marker(target) or {}
    for name in files:
        os.replace(built / name, target / name)
    for name in previous.get("files", []) if previous.get("command") == command else []:
        stale = target / Path(name).name
        if name not in files and stale.is_file():
            stale.unlink()
    os.replace(built / MARKER, target / MARKER)
    shutil.rmtree(built, ignore_errors=True)
