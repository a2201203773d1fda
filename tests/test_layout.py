"""The package's layout: the top-level names resolve to the modules that define them, and
the light layers stay light (statistics and similarity without TransformerLens; the
command line's argument checks without torch)."""

from __future__ import annotations

import subprocess
import sys

import mi_cluster


def test_every_top_level_name_resolves():
    for name in mi_cluster.__all__:
        obj = getattr(mi_cluster, name)
        assert obj.__name__ == name and obj.__module__.startswith("mi_cluster."), name
    assert sorted(mi_cluster.__all__) == sorted(
        n for n in dir(mi_cluster) if n in mi_cluster.__all__
    )


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_statistics_and_similarity_do_not_load_transformer_lens():
    loaded = _modules_after("import mi_cluster.methods.stats, mi_cluster.methods.similarity")
    assert "torch" in loaded and "transformer_lens" not in loaded and "transformers" not in loaded


def test_the_command_line_and_model_sources_do_not_load_torch():
    loaded = _modules_after("import mi_cluster.cli, mi_cluster.models.sources")
    assert "torch" not in loaded


def test_no_module_imports_another_modules_private_names():
    """Ruff's SLF001 catches ``module._name``; this catches ``from module import _name``
    inside the package (ruff's PLC2701 lets first-party imports through)."""
    import ast
    from pathlib import Path

    package = Path(mi_cluster.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mi_cluster"):
                found += [
                    f"{path.relative_to(package)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not found, "private names imported across modules:\n" + "\n".join(found)
