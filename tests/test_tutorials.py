"""The tutorial notebooks (docs/tutorials) run from top to bottom in a fresh kernel, and
every cell that printed something when the notebook was saved prints it again."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "docs" / "tutorials").glob("*.ipynb"))


def _printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


def test_there_are_tutorials():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "patching-ioi", "clustering-minilm"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs_and_prints_what_it_shows(path, tmp_path):
    saved = nbformat.read(path, as_version=4)
    fresh = nbformat.read(path, as_version=4)
    NotebookClient(fresh, timeout=600, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}
    }).execute()  # fmt: skip
    code = [(a, b) for a, b in zip(saved.cells, fresh.cells, strict=True) if a.cell_type == "code"]
    for k, (before, after) in enumerate(code):
        assert _printed(after) == _printed(before), f"{path.name}, code cell {k}"
