"""The subject/object study end to end on the toy model: its readings against a plain
torch forward hook, its scores and shifts against direct recomputation, and its figures."""

import json
import warnings

import pytest
import torch

import mi_cluster.methods.stats as S
from mi_cluster.plotting.subject_object import study_scatter, study_separation, study_shift
from mi_cluster.studies.subject_object.design import NAMES, OBJECTS, role_design
from mi_cluster.studies.subject_object.study import run_subject_object_study


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
    from mi_cluster.core.prompts import tokenize_prompt, word_positions

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


def _leave_one_word_out_scores(x, design):
    """Each reading scored on the centroid axis of the other words (their in-context
    readings averaged over families and roles), then calibrated so that held-out names
    average 1 and held-out objects 0: a plain loop, the study's definition."""
    in_context = ~design.mask("alone")
    words = design.words
    word_of = torch.tensor([words.index(it.lemma) for it in design.items])
    means = torch.stack([x[:, in_context & (word_of == k)].mean(1) for k in range(len(words))], 1)
    is_name = torch.arange(len(words)) < len(design.names)
    raw = torch.empty(x.shape[:2])
    held = torch.empty(x.shape[0], len(words))
    for k in range(len(words)):
        others = torch.arange(len(words)) != k
        c_name = means[:, others & is_name].mean(1)
        c_obj = means[:, others & ~is_name].mean(1)
        axis = c_name - c_obj
        mine = word_of == k
        raw[:, mine] = ((x[:, mine] - c_obj[:, None]) * axis[:, None]).sum(-1)
        held[:, k] = ((means[:, k] - c_obj) * axis).sum(-1)
    zero, one = held[:, ~is_name].mean(1), held[:, is_name].mean(1)
    return (raw - zero[:, None]) / (one - zero)[:, None]


def test_scores_and_shifts_equal_a_direct_recomputation(toy, study):
    d = study.design
    x = _plain_hook_readings(toy, d)
    scores = _leave_one_word_out_scores(x, d)
    torch.testing.assert_close(study.scores, scores, atol=1e-4, rtol=1e-4)
    in_context = ~d.mask("alone")
    for group, mask in (("name", d.is_name), ("object", ~d.is_name)):  # held-out means: 1, 0
        expected = torch.full((x.shape[0],), 1.0 if group == "name" else 0.0)
        torch.testing.assert_close(scores[:, mask & in_context].mean(1), expected)
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
    sh = study.shifts
    for scope in S.SCOPES:  # one estimate, two scopes of inference
        objects, names, inter = sh.objects[scope], sh.names[scope], sh.interaction[scope]
        torch.testing.assert_close(
            objects.estimate, shift[:, n_names:].mean(1), atol=1e-4, rtol=1e-4
        )
        torch.testing.assert_close(names.estimate, shift[:, :n_names].mean(1), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(inter.estimate, objects.estimate - names.estimate)
        assert torch.all(inter.low <= inter.estimate + 1e-6)
        assert torch.all(inter.estimate <= inter.high + 1e-6)
    # templates in general: wider than these templates wherever role has an effect
    wide, narrow = sh.interaction[S.SCOPES[1]], sh.interaction[S.SCOPES[0]]
    assert torch.all(wide.se[1:] >= narrow.se[1:] * 0.999)


def test_toy_answer_and_numbers(study):
    inter = study.shifts.interaction[S.SCOPES[0]]
    # the embedding layer cannot see role (same token, same position): no effect there
    assert inter.estimate[0].abs().item() < 1e-6 and inter.p_value[0].item() > 0.5
    # the toy model moves objects in subject position toward the names (see the README)
    assert inter.estimate[-1].item() > 0.15
    assert "L2" in study.significant_layers(inter)
    answer = study.answer()
    assert answer.startswith("Model toy-ioi: 12 names and 12 objects")
    assert "For these templates: yes at" in answer and "For templates in general" in answer
    record = json.loads(json.dumps(study.summary()))
    assert record["design"]["dropped"] == []
    for key in ("objects", "names", "interaction"):
        for scope in S.SCOPES:
            assert len(record["shifts"][key][scope]["p_holm"]) == 4
            assert record["shifts"][key][scope]["scope"] == scope
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
    titles = [a.text for a in shift.layout.annotations]
    assert any("these templates" in t for t in titles), titles
    assert any("templates in general" in t for t in titles), titles
    sep = study_separation(study)
    assert len(sep.layout.annotations) == len(S.STATISTICS)  # one panel per statistic


def test_incomplete_design_is_refused(toy, study):
    import dataclasses

    bad = dataclasses.replace(study.design, items=study.design.items[:-1])
    with pytest.raises(ValueError, match="no 'object' reading of"):
        run_subject_object_study(toy, bad, n_permutations=10, n_bootstrap=10, progress=False)
