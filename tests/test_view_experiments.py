"""The logit-lens, attention-view and activation-factor experiments end to end (offline,
HTML only), and the numbers they report."""

from __future__ import annotations

import json

from experiment_scripts import experiment


def test_logit_lens_experiment(tmp_path):
    exp = experiment("logit_lens")
    record = exp.run("toy-ioi", tmp_path, 60, png=False, progress=False)
    on_disk = json.loads((tmp_path / "logit_lens_toy-ioi.json").read_text())
    assert on_disk["answer"] == record["answer"]
    logit, tuned = record["lenses"]["logit"], record["lenses"]["tuned"]
    # the last layer is the model itself, whichever lens: IO wins on almost every prompt
    assert logit["logit_difference"]["mean"][-1] == tuned["logit_difference"]["mean"][-1] > 3
    assert (
        logit["io_top1"][-1] > 0.9 and logit["first_layer_logit_difference_ci_above_zero"] == "L2"
    )
    kl = record["kl_to_final"]
    assert all(
        a > b for a, b in zip(kl["logit"]["mean"][:-1], kl["tuned"]["mean"][:-1], strict=True)
    )
    assert all(p < 0.05 for p in kl["logit_minus_tuned"]["p_holm"])
    kinds = {p.name for p in tmp_path.glob("*.html")}
    assert (
        "logit_lens_toy-ioi_kl.html" in kinds
        and "logit_lens_toy-ioi_predictions_tuned.html" in kinds
    )


def test_attention_views_experiment(tmp_path):
    exp = experiment("attention_views")
    name, text, text_b, hv_layer, *nv = exp.CASES[0]
    record = exp.run(name, text, text_b, hv_layer, tuple(nv), tmp_path, png=False)
    assert record["segments"] == [0] * 8 + [1] * 7
    assert record["strongest_head"]["previous"]["value"] > 0.9  # MiniLM has a previous-token head
    assert len(record["head_summary"]["heads"]) == 6 * 12
    for kind in ("model_view", "head_view", "neuron_view", "pattern"):
        assert (tmp_path / f"attention_views_minilm_{kind}.html").is_file()


def test_activation_factors_experiment(tmp_path):
    exp = experiment("activation_factors")
    record = exp.run(tmp_path, 8, png=False)
    assert record["n_components"] == 8 and record["n_neurons"] == 6 * 1536
    assert record["relative_error"] <= 1.01 * record["scikit_learn_relative_error"]
    assert all(abs(sum(c["share_of_loading_by_layer"]) - 1) < 1e-3 for c in record["components"])
    assert (tmp_path / "activation_factors_minilm_text.html").is_file()
