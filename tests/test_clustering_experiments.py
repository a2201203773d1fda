"""The clustering experiments run end to end offline on small settings and write what
their docstrings promise (JSON with the answer in words, HTML, and PNG where a Chromium
exists)."""

from __future__ import annotations

import json
import shutil

import pytest
from experiment_scripts import experiment

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="PNG export needs a Chromium: apt-get install chromium"
)


def test_subject_object_clustering_on_the_toy_model(tmp_path, capsys):
    exp = experiment("subject_object_clustering")
    args = ["--models", "toy-ioi", "--words", "10", "--n-permutations", "200"]
    assert (
        exp.main(args + ["--n-bootstrap", "200", "--out", str(tmp_path), "--no-png", "--quiet"])
        == 0
    )
    record = json.loads((tmp_path / "subject_object_toy-ioi.json").read_text())
    assert record["answer"].startswith("Model toy-ioi: 10 names and 10 objects")
    assert record["robustness_probe_axis"]["answer"].startswith("Model toy-ioi")
    assert record["settings"]["n_permutations"] == 200
    for scope in ("these templates", "templates in general"):
        assert len(record["shifts"]["interaction"][scope]["estimate"]) == 4
    assert set(record["robustness_probe_axis"]["shifts"]["objects"]) == set(
        record["shifts"]["objects"]
    )
    for kind in ("scatter", "shift", "separation"):
        html = (tmp_path / f"subject_object_toy-ioi_{kind}.html").read_text()
        assert 'src="plotly.min.js"' in html and "cdn.plot" not in html
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    assert "addFrames" in (tmp_path / "subject_object_toy-ioi_scatter.html").read_text()
    assert "robustness (probe axis)" in capsys.readouterr().out


@needs_chromium
def test_subject_object_clustering_writes_pngs(tmp_path):
    exp = experiment("subject_object_clustering")
    exp.run("toy-ioi", tmp_path, n_permutations=100, n_bootstrap=100, words=6, progress=False)
    for kind in ("shift", "separation"):
        png = tmp_path / f"subject_object_toy-ioi_{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_numbers_vs_words_on_minilm(tmp_path):
    exp = experiment("numbers_vs_words")
    assert exp.main(["--out", str(tmp_path), "--n-permutations", "500", "--no-png"]) == 0
    record = json.loads((tmp_path / "numbers_vs_words.json").read_text())
    assert set(record["cosine_1234"]) == {"1 vs one", "2 vs two", "3 vs three", "4 vs four"}
    for kind in ("digits", "words"):
        length = record["length"][kind]
        assert length["exact"] and length["n_permutations"] == 40_320
        assert len(length["sequences"]) == 8 and length["sequences"][-1].count(" ") == 9
    assert record["answer"].startswith("Model minilm.")
    assert (tmp_path / "numbers_vs_words_sequences.html").exists()


def test_rsa_embeddings_offline(tmp_path):
    exp = experiment("rsa_embeddings")
    assert exp.main(["--out", str(tmp_path), "--n-permutations", "500", "--no-png"]) == 0
    record = json.loads((tmp_path / "rsa_embeddings.json").read_text())
    table = {row["word"]: row for row in record["tokenization"]}
    # the notebook's table, exact for both real tokenizers
    assert table["spaceship"]["gpt2 (tokenizer only) no space"] == 3
    assert table["spaceship"]["gpt2 (tokenizer only) with space"] == 1
    assert table["galaxy"]["minilm no space"] == 1
    assert record["null"]["rsa_pearson_r"] < 0.3 < record["comparison"]["rsa_pearson_r"]
    assert len(record["by_layer"]["rsa_pearson_r"]) == 7
    assert len(record["cosine_a"]) == 18


def test_save_figure_writes_one_local_plotly_copy_or_embeds_it(tmp_path):
    import plotly.graph_objects as go

    from mi_cluster.plotting import save_figure

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    save_figure(fig, tmp_path / "a.html")
    js = tmp_path / "plotly.min.js"
    first = js.stat().st_mtime_ns
    save_figure(fig, tmp_path / "b.html")
    assert js.stat().st_mtime_ns == first  # written once, shared by every figure
    assert 'src="plotly.min.js"' in (tmp_path / "b.html").read_text()
    assert (tmp_path / "b.html").stat().st_size < 100_000
    save_figure(fig, tmp_path / "alone" / "c.html", embed_plotlyjs=True)
    assert (tmp_path / "alone" / "c.html").stat().st_size > 1_000_000
    assert not (tmp_path / "alone" / "plotly.min.js").exists()
    assert "data:font/ttf;base64," in (tmp_path / "alone" / "c.html").read_text()
    names = sorted(p.name for p in tmp_path.iterdir())
    fonts = ["SourceSansPro-Bold.ttf", "SourceSansPro-LICENSE.txt", "SourceSansPro-Regular.ttf"]
    assert names == [*fonts, "a.html", "alone", "b.html", "plotly.min.js"]


def test_save_formats_reports_a_static_export_failure_and_keeps_the_rest(tmp_path, monkeypatch):
    import plotly.graph_objects as go

    from mi_cluster.plotting import save_formats

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))

    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-browser"))
    written, failed = save_formats(fig, tmp_path / "fig", ("html", "png"))
    assert [p.name for p in written] == ["fig.html"]
    assert (
        len(failed) == 1
        and "fig.png not written" in failed[0]
        and "apt-get install chromium" in failed[0]
    )
    assert not (tmp_path / "fig.png").exists()  # no partial file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "SourceSansPro-Bold.ttf", "SourceSansPro-LICENSE.txt", "SourceSansPro-Regular.ttf",
        "fig.html", "plotly.min.js",
    ]  # fmt: skip


def test_rsa_embeddings_compares_two_models_of_different_widths(tmp_path):
    from mi_cluster.models.tiny import TinyConfig, save_tiny_pretrained

    tiny_dir = save_tiny_pretrained(TinyConfig(d_model=64), tmp_path / "tiny")
    exp = experiment("rsa_embeddings")
    record = exp.run(["minilm", str(tiny_dir)], tmp_path / "out", n_permutations=200, png=False)
    assert record["comparison"]["b"] == f"{tiny_dir} input embeddings"
    assert -1 <= record["comparison"]["rsa_pearson_r"] <= 1
    assert [k for k in record["tokenization"][0] if k.endswith("no space")] == [
        "minilm no space",
        f"{tiny_dir} no space",
    ]


def test_rsa_embeddings_refuses_words_the_vocabulary_lacks(tmp_path):
    exp = experiment("rsa_embeddings")
    with pytest.raises(SystemExit, match=r"does not know \['space', 'spaceship'"):
        exp.run(["toy-ioi"], tmp_path, n_permutations=100, png=False)
