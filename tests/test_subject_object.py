"""The subject/object study end to end on the toy model: its readings against a plain
torch forward hook, its scores and shifts against direct recomputation, and its figures."""

import json
import warnings

import pytest
import torch

import mi_cluster.stats as S
from mi_cluster.designs import NAMES, OBJECTS, role_design
from mi_cluster.plotting.subject_object import study_scatter, study_separation, study_shift
from mi_cluster.subject_object import run_subject_object_study


@pytest.fixture(scope="module")
def study(toy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        design = role_design(toy, NAMES[:12], OBJECTS[:12], capitalize=False)
    return run_subject_object_study(
        toy, design, n_permutations=999, n_bootstrap=999, progress=False
    )


def _plain_hook_readings(model, design):
    """resid_post at each item's word, read with torch forward hooks on the blocks."""
    from mi_cluster.prompts import tokenize_prompt, word_positions

    out = torch.empty(model.cfg.n_layers + 1, len(design.items), model.cfg.d_model)
    for k, it in enumerate(design.items):
        pos = word_positions(tokenize_prompt(model, it.text), it.word)[-1]
        seen: list[torch.Tensor] = []
        emb: list[torch.Tensor] = []

        def keep_output(module, args, output, seen=seen):
            seen.append(output[0] if isinstance(output, tuple) else output)

        def keep_input(module, args, emb=emb):
            emb.append(args[0])

        hooks = [b.register_forward_hook(keep_output) for b in model.blocks]
        hooks.append(model.blocks[0].register_forward_pre_hook(keep_input))
        with torch.no_grad():
            model(model.to_tokens(it.text))
        for h in hooks:
            h.remove()
        out[0, k] = emb[0][0, pos]
        for layer, o in enumerate(seen):
            out[layer + 1, k] = o[0, pos]
    return out


def test_scores_and_shifts_equal_a_direct_recomputation(toy, study):
    d = study.design
    x = _plain_hook_readings(toy, d)
    scores = S.cross_fitted_subjecthood(
        x, d.is_name, d.units, ~d.mask("alone"), n_folds=5, seed=S.make_generator(0)
    ).scores
    torch.testing.assert_close(study.scores, scores, atol=1e-4, rtol=1e-4)
    n_names = len(d.names)
    diffs = {}
    for w_index, word in enumerate(d.words):
        per_family = []
        for fam in d.families:
            k = {
                it.role: i
                for i, it in enumerate(d.items)
                if it.lemma == word and it.family == fam.name
            }
            per_family.append(scores[:, k["subject"]] - scores[:, k["object"]])
        diffs[w_index] = torch.stack(per_family).mean(0)
    shift = torch.stack([diffs[i] for i in range(len(d.words))], dim=1)
    torch.testing.assert_close(
        study.object_shift.estimate, shift[:, n_names:].mean(1), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        study.name_shift.estimate, shift[:, :n_names].mean(1), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        study.interaction.estimate, study.object_shift.estimate - study.name_shift.estimate
    )
    assert torch.all(study.interaction.interval.low <= study.interaction.estimate + 1e-6)


def test_toy_answer_and_numbers(study):
    # the embedding layer cannot see role (same token, same position): no effect there
    assert (
        study.interaction.estimate[0].abs().item() < 1e-6
        and study.interaction.p_value[0].item() == 1.0
    )
    # the toy model moves objects in subject position toward the names (see the README)
    assert study.interaction.estimate[-1].item() > 0.15
    assert "L2" in study.significant_layers(study.interaction)
    answer = study.answer()
    assert answer.startswith("Model toy-ioi: 12 names and 12 objects") and "Yes at" in answer
    record = json.loads(json.dumps(study.summary()))
    assert record["design"]["dropped"] == [] and len(record["interaction"]["p_holm"]) == 4
    assert set(record["separation"]) == {"alone", "subject", "object"}
    assert set(record["separation"]["subject"]) == set(S.STATISTICS)
    assert len(record["per_family"]) == 5


def test_study_figures(study):
    scatter = study_scatter(study)
    assert len(scatter.frames) == 4 and "Procrustes" in scatter.layout.title.text
    groups = {t.name for t in scatter.data}
    assert {"name · subject", "name · object", "object · subject", "object · object"} <= groups
    pair_trace = scatter.frames[2].data[0]
    assert pair_trace.mode == "lines" and len(pair_trace.x) == 3 * len(study.design.words)
    assert scatter.layout.xaxis.range == scatter.layout.yaxis.range  # fixed axes
    shift = study_shift(study)
    names = {t.name for t in shift.data if t.showlegend is not False}
    assert names == {"objects' shift", "names' shift", "interaction (objects − names)"}
    sep = study_separation(study)
    assert len(sep.layout.annotations) == len(S.STATISTICS)  # one panel per statistic


def test_incomplete_design_is_refused(toy, study):
    import dataclasses

    bad = dataclasses.replace(study.design, items=study.design.items[:-1])
    with pytest.raises(ValueError, match="no 'object' reading of"):
        run_subject_object_study(toy, bad, n_permutations=10, n_bootstrap=10, progress=False)
