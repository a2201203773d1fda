"""Import an experiment script (``experiments/<name>.py``) as a module, for the tests that
run experiments end to end (experiments are scripts, not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def experiment(name: str) -> ModuleType:
    folder = str(ROOT / "experiments")  # as when run as a script: its siblings importable
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
