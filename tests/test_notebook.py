"""The library in a notebook and at the prompt: figures render offline, progress bars
draw without warnings and can be turned off at once, results print short, the first
import stays light, and the package and command line show only what they mean to."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import nbformat
import pytest
import torch
from nbclient import NotebookClient

import mi_cluster
from mi_cluster import collect
from mi_cluster.core.progress import progress_bar, progress_enabled, set_progress
from mi_cluster.methods.lens.logit import logit_lens
from mi_cluster.methods.patching import activation_patching, logit_difference

KERNEL_CELLS = [
    "import plotly.graph_objects as go\nimport mi_cluster.plotting\n"
    "fig = go.Figure(go.Heatmap(z=[[0.0, 1.0], [1.0, 0.0]]))",
    "fig",
    "html = fig._repr_html_()\nprint('src=\"https://cdn' in html, 'Plotly.newPlot' in html)",
    "from mi_cluster import collect, load_model\n"
    "model = load_model('toy-ioi', device='cpu')\n"
    "acts = collect(model, ['When Mary and John went to the store , John gave a book to'])\n"
    "print(type(acts).__name__)",
]


def _outputs_text(cell) -> str:
    parts = []
    for out in cell.outputs:
        parts.append(out.get("text", ""))
        for value in out.get("data", {}).values():
            parts.append(value if isinstance(value, str) else str(value))
    return "".join(parts)


def test_figures_and_progress_in_a_kernel_need_no_network_and_warn_nothing(tmp_path):
    """A fresh kernel: the figure's HTML and its displayed form name no CDN (plotly.js
    comes from the installed package), and a collection's progress bar draws without
    "IProgress not found" (with or without ipywidgets installed)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in KERNEL_CELLS])
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env={**os.environ, "HF_HUB_OFFLINE": "1"})
    everything = "".join(_outputs_text(c) for c in nb.cells)
    assert 'src="https://cdn' not in everything  # no script loaded from a CDN
    assert "Plotly.newPlot" in _outputs_text(nb.cells[1])
    # plotly.js itself, inlined once from the installed package (about 4.6 MB)
    assert len(_outputs_text(nb.cells[1])) > 1_000_000
    assert _outputs_text(nb.cells[2]).split()[-2:] == ["False", "True"]
    assert "IProgress" not in everything
    assert "Activations" in _outputs_text(nb.cells[3])


def test_progress_can_be_turned_off_everywhere(tiny, capsys, monkeypatch):
    prompts = ["Adam went to the store.", "Lamp went to the park."]
    monkeypatch.delenv("MI_CLUSTER_PROGRESS", raising=False)
    try:
        collect(tiny, prompts)
        assert "collect" in capsys.readouterr().err  # on by default
        set_progress(False)
        assert not progress_enabled()
        collect(tiny, prompts)
        assert capsys.readouterr().err == ""
        set_progress(None)
        monkeypatch.setenv("MI_CLUSTER_PROGRESS", "0")
        collect(tiny, prompts)
        assert capsys.readouterr().err == ""
    finally:
        set_progress(None)


@pytest.mark.unchecked
def test_the_progress_switch_takes_only_true_false_or_none():
    with pytest.raises(TypeError, match="True, False or None"):
        set_progress("no")  # type: ignore[arg-type]
    assert progress_enabled() in (True, False)


def test_a_kernel_without_widgets_gets_a_text_bar(monkeypatch):
    """tqdm's auto mode would pick the widget bar in any kernel; without ipywidgets that
    bar fails ("IProgress not found"), so the text bar is used instead."""
    from tqdm.std import tqdm as text_bar

    class Shell:
        config = {"IPKernelApp": {}}

    monkeypatch.setattr("IPython.get_ipython", lambda: Shell())
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    assert type(progress_bar([1], desc="x", unit="it", enabled=False)) is text_bar


def test_results_print_in_one_short_line_and_as_a_table(tiny):
    clean = ["When Mary and John went to the store, John gave a book to"]
    corrupt = ["When Mary and John went to the store, Adam gave a book to"]
    patched = activation_patching(
        tiny, clean, corrupt, logit_difference(tiny, [("Mary", "John")]), "head_out",
        progress=False,
    )  # fmt: skip
    acts = collect(tiny, clean, progress=False)
    lens = logit_lens(tiny, clean)
    for result, facts in (
        (patched, ["site=head_out", "[layer 2, head 4, prompt 1]", "largest="]),
        (acts, ["site=resid_post", "[layer 3, row 1, 64]", "prompts=1"]),
        (lens, ["lens=logit", "positions of 1 prompts", "top-1"]),
    ):
        text = repr(result)
        assert "\n" not in text and len(text) < 400, text
        assert "tensor(" not in text
        for fact in facts:
            assert fact in text, (fact, text)
        html = result._repr_html_()
        assert html.startswith("<div>") and "<table>" in html and "tensor(" not in html


def test_the_package_shows_only_its_names():
    names = dir(mi_cluster)
    assert "Any" not in names and "import_module" not in names
    assert {"load_model", "collect", "set_progress", "__version__"} <= set(names)
    assert mi_cluster.set_progress is set_progress


def test_the_first_import_leaves_transformer_lens_for_later():
    """``from mi_cluster import load_model, collect`` imports neither TransformerLens nor
    plotly (TransformerLens took 19 s of a 26 s first import in a notebook); loading a
    model does. Budget: 15 s of wall time on a 2-core machine, most of it torch."""
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from mi_cluster import load_model, collect\n"
        "print(time.perf_counter() - t, 'transformer_lens' in sys.modules, "
        "'plotly' in sys.modules)"
    )
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1:] == ["False", "False"], out
    assert float(out[0]) < 15, f"first import took {float(out[0]):.1f} s"
    assert time.perf_counter() - start < 30


def test_the_command_line_shows_its_version_defaults_and_choices():
    def run(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "mi_cluster.cli", *args],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    assert run("--version").strip() == f"mi-cluster {mi_cluster.__version__}"
    collect_help = " ".join(run("collect", "--help").split())
    assert "(default: resid_post)" in collect_help and "resid_pre" in collect_help
    assert "(default: 32)" in collect_help and "(default: float32)" in collect_help
    assert "(default: 400)" in " ".join(run("train-lens", "--help").split())
    assert "(default: " in run("train-toy", "--help")


def test_tensors_stay_out_of_reprs_of_big_results(tiny):
    """A lens over many positions still prints one line."""
    text = " ".join(["word"] * 15)
    lens = logit_lens(tiny, [text], positions="all")
    assert len(repr(lens)) < 400 and torch.is_tensor(lens.top_ids)
