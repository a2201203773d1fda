"""Which components carry the role shift: the crossed ratio interval against a plain loop
and its calibration (coverage, false positives, power), the subjecthood metric against the
clustering study's cross-fitted scores, and every component's fraction against patches
made by hand with TransformerLens hooks, one prompt pair at a time."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from mi_cluster.core.hooks import hook_name
from mi_cluster.core.prompts import tokenize_prompt
from mi_cluster.methods.stats import SCOPES, StatsInputError, crossed_ratio_interval
from mi_cluster.methods.stats.resampling import crossed_counts
from mi_cluster.studies.subject_object.design import FAMILIES, TemplateFamily, role_design
from mi_cluster.studies.subject_object.role_shift import attribute_role_shift, role_pairs

OBJECTS = ("lamp", "table", "house", "pen", "ball", "window")
NAMES = ("Mary", "John", "Adam", "Emily", "Chris", "Diana")


def _design(model, families=FAMILIES, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return role_design(model, NAMES, OBJECTS, families, **kw)


@pytest.fixture(scope="module")
def toy_shift(toy):
    design = _design(toy, capitalize=False)
    return attribute_role_shift(toy, design, n_receivers=2, progress=False)


# -- the crossed ratio interval ------------------------------------------------------


@pytest.mark.parametrize("resample", ["crossed", "rows"])
def test_crossed_ratio_interval_equals_a_plain_loop(resample):
    g = torch.Generator().manual_seed(3)
    num = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    den = 1 + torch.rand(7, 4, generator=g, dtype=torch.float64)
    r = crossed_ratio_interval(num, den, resample=resample, n_resamples=500, seed=11)
    np.testing.assert_allclose(r.estimate, num.sum((1, 2)) / den.sum(), rtol=1e-12)
    rows, cols = crossed_counts(7, 4, 500, 11, resample == "crossed")
    if resample == "rows":
        assert bool((cols == 1).all())
    boot = np.empty((3, 500))
    for b in range(500):
        w = np.outer(rows[b].numpy(), cols[b].numpy())  # cell (word, family) weight
        boot[:, b] = (num.numpy() * w).sum((1, 2)) / (den.numpy() * w).sum()
    np.testing.assert_allclose(r.low, np.percentile(boot, 2.5, axis=1), rtol=1e-10)
    np.testing.assert_allclose(r.high, np.percentile(boot, 97.5, axis=1), rtol=1e-10)


@pytest.mark.unchecked
def test_crossed_ratio_interval_refuses_bad_input():
    with pytest.raises(StatsInputError, match="sums to zero"):
        crossed_ratio_interval(torch.ones(1, 2, 2), torch.zeros(2, 2))
    with pytest.raises(StatsInputError, match=r"\[k, row, col\]"):
        crossed_ratio_interval(torch.ones(2, 2), torch.ones(2, 2))
    with pytest.raises(StatsInputError, match="resample"):
        crossed_ratio_interval(torch.ones(1, 2, 2), torch.ones(2, 2), resample="cols")


def _crossed_table(g, rho, family_sd=0.3, fixed=None):
    """20 words x 5 families: shift = 1 + word + family + noise; a component's effect =
    rho * shift + its own word, family and cell noise (population ratio rho). ``fixed``:
    the family effects (held fixed across datasets), else drawn anew."""
    n_w, n_f = 20, 5

    def draw(*shape, sd=0.3):
        return sd * torch.randn(*shape, generator=g, dtype=torch.float64)

    if fixed is None:
        fixed = (draw(1, n_f, sd=family_sd), draw(1, n_f, sd=family_sd))
    fam_shift, fam_effect = fixed
    shift = 1 + draw(n_w, 1) + fam_shift + draw(n_w, n_f)
    effect = rho * shift + draw(n_w, 1) + fam_effect + draw(n_w, n_f)
    return effect[None], shift


def test_crossed_interval_covers_the_population_ratio():
    """Words and families both random, 5 families as in the design: the crossed 95%
    interval covers rho in 0.88-0.99 of 300 datasets (measured 0.91; 0.94 with another
    generator: few families make it somewhat liberal); resampling words alone ignores the
    families' spread and covers far less (measured 0.66)."""
    g, cover = torch.Generator().manual_seed(1), {"crossed": 0, "rows": 0}
    for i in range(300):
        num, den = _crossed_table(g, 0.4)
        for mode in cover:
            r = crossed_ratio_interval(num, den, resample=mode, n_resamples=999, seed=i)
            cover[mode] += bool(r.low[0] <= 0.4 <= r.high[0])
    assert 0.88 <= cover["crossed"] / 300 <= 0.99
    assert cover["rows"] / 300 < 0.8


def test_words_only_interval_covers_the_ratio_of_fixed_templates():
    """Families held fixed across datasets: the words-only interval covers the ratio over
    these families, E[sum effect] / E[sum shift], in 0.90-0.99 of 300 datasets."""
    g = torch.Generator().manual_seed(2)
    fam_shift, fam_effect = 0.3 * torch.randn(2, 1, 5, generator=g, dtype=torch.float64)
    target = float((0.4 * (5 + fam_shift.sum()) + fam_effect.sum()) / (5 + fam_shift.sum()))
    hits = 0
    for i in range(300):
        num, den = _crossed_table(g, 0.4, fixed=(fam_shift, fam_effect))
        r = crossed_ratio_interval(num, den, resample="rows", n_resamples=999, seed=i)
        hits += bool(r.low[0] <= target <= r.high[0])
    assert 0.90 <= hits / 300 <= 0.99


def test_crossed_interval_false_positives_and_power():
    """As a test of "this component carries a share": with rho = 0 the interval excludes 0
    in at most 10% of 300 datasets (measured 8%); with rho = 0.4 in at least 65%
    (measured 74%). The answer's "reliable" also needs the Holm-corrected sign-flip test,
    whose false-positive rate is calibrated in test_stats_calibration.py."""
    g = torch.Generator().manual_seed(4)
    excl = {0.0: 0, 0.4: 0}
    for i in range(300):
        for rho in excl:
            num, den = _crossed_table(g, rho)
            r = crossed_ratio_interval(num, den, n_resamples=999, seed=i)
            excl[rho] += bool(r.low[0] > 0 or r.high[0] < 0)
    assert excl[0.0] / 300 <= 0.10
    assert excl[0.4] / 300 >= 0.65


# -- pairs and metric ------------------------------------------------------------------


def test_role_pairs_read_the_word_at_one_index(toy, minilm):
    for model, cap in ((toy, False), (minilm, True)):
        design = _design(model, capitalize=cap)
        pairs = role_pairs(model, design)
        assert len(pairs.subject) == len(OBJECTS) * len(FAMILIES)
        rows = zip(pairs.subject, pairs.object, pairs.word, pairs.read_position, strict=True)
        for s, o, w, p in rows:
            for text in (s, o):
                tokens = tokenize_prompt(model, text).str_tokens
                assert tokens[int(p)].strip().lower() == w  # the word itself, in both
        names = role_pairs(model, design, "name")
        assert set(names.word) == set(design.names)
    bad = TemplateFamily("shifted", "{W} went to the store.", "so they saw {W} .", True, False)
    with pytest.raises(ValueError, match="token 1 of the subject form but token 4"):
        role_pairs(toy, _design(toy, families=(bad,), capitalize=False))
    with pytest.raises(ValueError, match="word_type"):
        role_pairs(toy, _design(toy, capitalize=False), "verb")


def _word_means(model, design, layer):
    """Each word's residual after block ``layer`` at its last sub-token, averaged over
    its in-context prompts (families and roles), one prompt at a time with hooks."""
    from mi_cluster.core.prompts import word_positions

    name, sums = hook_name("resid_post", layer), {}
    for it in design.items:
        if it.role == "alone":
            continue
        pos = word_positions(tokenize_prompt(model, it.text), it.word)[-1]
        _, cache = model.run_with_cache(_ids(model, it.text), names_filter=[name])
        sums.setdefault(it.lemma, []).append(cache[name][0, pos].double())
    means = torch.stack([torch.stack(sums[w]).mean(0) for w in design.words])
    return means, torch.arange(len(design.words)) < len(design.names)


def _calibrated(ref, x, word):
    """``x`` on ``word``'s centroid axis, fitted without the word (a plain loop over the
    other words' means ``ref``), calibrated so that held-out names average 1, objects 0."""
    means, is_name = ref

    def raw(v, k):
        others = torch.arange(len(means)) != k
        c_name, c_obj = means[others & is_name].mean(0), means[others & ~is_name].mean(0)
        return float((v.double() - c_obj) @ (c_name - c_obj))

    held = torch.tensor([raw(means[k], k) for k in range(len(means))])
    zero, one = float(held[~is_name].mean()), float(held[is_name].mean())
    return (raw(x, word) - zero) / (one - zero)


def _score(model, a, ref, i, tokens, hooks=()):
    """Pair ``i``'s read word scored on its calibrated axis after a run of ``tokens`` with
    ``hooks`` (plain TransformerLens hooks, one prompt)."""
    name, kept = hook_name("resid_post", a.layer), {}

    def keep(x, hook):
        kept["x"] = x[0, int(a.pairs.read_position[i])].detach()

    model.run_with_hooks(tokens, fwd_hooks=[*hooks, (name, keep)])
    return _calibrated(ref, kept["x"], int(a.pairs.unit[i]))


def _ids(model, text):
    return torch.tensor([tokenize_prompt(model, text).ids])


@pytest.fixture(scope="module")
def toy_ref(toy, toy_shift):
    return _word_means(toy, _design(toy, capitalize=False), toy_shift.layer)


def test_unpatched_metric_equals_the_calibrated_scores(toy, toy_shift, toy_ref):
    """The clean and corrupted runs score each word as the clustering study does: its
    residual at the read layer on the axis fitted without it, calibrated."""
    a = toy_shift
    shift = [
        _score(toy, a, toy_ref, i, _ids(toy, s)) - _score(toy, a, toy_ref, i, _ids(toy, o))
        for i, (s, o) in enumerate(zip(a.pairs.subject, a.pairs.object, strict=True))
    ]
    torch.testing.assert_close(
        a.shift_per_pair, torch.tensor(shift, dtype=torch.float64), atol=1e-5, rtol=1e-5
    )


def _hand_fraction(model, a, ref, act, layer, head=None, offsets=None):
    """Patch ``act`` (``"z"``: head ``head``; ``"mlp_out"``) at ``layer`` from the subject
    form into the object form, at ``offsets`` from the read word or (None) at every
    position of the object form, one pair at a time with TransformerLens hooks;
    sum(effect) / sum(shift)."""
    name, effects = hook_name(act, layer), []
    for i, (subj, obj) in enumerate(zip(a.pairs.subject, a.pairs.object, strict=True)):
        p, obj_ids = int(a.pairs.read_position[i]), _ids(model, obj)
        _, src = model.run_with_cache(_ids(model, subj), names_filter=[name])
        where = range(obj_ids.shape[1]) if offsets is None else [p + o for o in offsets]
        where = torch.tensor(list(where))

        def patch(x, hook, src=src[name], where=where):
            if head is None:
                x[:, where] = src[:, where]
            else:
                x[:, where, head] = src[:, where, head]
            return x

        patched = _score(model, a, ref, i, obj_ids, [(name, patch)])
        effects.append(patched - _score(model, a, ref, i, obj_ids))
    return sum(effects) / float(a.shift_per_pair.sum())


def test_fractions_equal_hand_patches_on_the_toy_model(toy, toy_shift, toy_ref):
    heads = toy_shift.components["head_out"]
    by_pos = toy_shift.components["head_out_by_pos"]
    w = by_pos.labels["offset"].index("W")
    for layer, head in ((0, 1), (2, 0), (1, 3)):
        want = _hand_fraction(toy, toy_shift, toy_ref, "z", layer, head)
        assert float(heads.fraction[layer, head]) == pytest.approx(want, abs=1e-4)
        want = _hand_fraction(toy, toy_shift, toy_ref, "z", layer, head, [0])
        assert float(by_pos.fraction[layer, w, head]) == pytest.approx(want, abs=1e-4)
    # a causal model's read word cannot see later positions: their patches move nothing
    after = [k for k, o in enumerate(by_pos.labels["offset"]) if o.startswith("W+")]
    assert after and float(by_pos.fraction[:, after].abs().max()) < 1e-6
    assert "mlp_out" not in toy_shift.components  # attention-only: no MLP sites


def test_result_reports_intervals_tests_paths_and_attribution(toy_shift):
    a = toy_shift
    heads = a.components["head_out"]
    assert heads.fraction.shape == heads.low.shape == heads.p_holm.shape == (3, 4)
    assert bool((heads.low <= heads.fraction).all() and (heads.fraction <= heads.high).all())
    # these templates hold the families fixed: never wider on average than in general
    crossed = (heads.high - heads.low).mean()
    assert float((heads.high_words - heads.low_words).mean()) <= float(crossed)
    assert bool((heads.p_holm >= heads.p_value).all())
    assert bool((heads.p_holm_general >= heads.p_value_general).all())
    # the intervals come from the effects projected on the word means (every refitted
    # axis); their centre is the same share as the fraction from the subjecthood itself
    for share in (*a.components.values(), *a.paths.values()):
        for low, high in ((share.low, share.high), (share.low_words, share.high_words)):
            torch.testing.assert_close(
                (low + high).double() / 2, share.fraction.double(), atol=1e-4, rtol=1e-4
            )
    assert -1 <= heads.attribution_r <= 1 and heads.attribution_r > 0.5
    assert a.paths, "path patching into the top carrying heads"
    for receiver, share in a.paths.items():
        assert share.fraction.shape[0] == int(receiver[1])  # senders: the layers before it
    s = a.summary()
    assert s["shift"][SCOPES[0]]["p"] < 0.05 and s["n_pairs"] == len(OBJECTS) * len(FAMILIES)
    assert set(s["shift"]) == set(SCOPES)
    these, general = (s["shift"][scope] for scope in SCOPES)
    assert these["estimate"] == general["estimate"]
    assert general["high"] - general["low"] >= these["high"] - these["low"]
    head_json = s["components"]["head_out"]
    assert set(head_json["these_templates"]) == set(head_json["templates_in_general"])
    assert s["answer"].startswith("Model toy-ioi, read layer L2")


def test_a_null_shift_is_reported_as_such(toy_shift):
    sh = toy_shift.shifts
    null = {
        k: dataclasses.replace(t, p_value=torch.full_like(t.p_value, 0.4))
        for k, t in sh.objects.items()
    }
    text = dataclasses.replace(toy_shift, shifts=dataclasses.replace(sh, objects=null)).answer()
    assert "no reliable shift at this layer" in text


def test_minilm_fractions_equal_hand_patches(minilm):
    """Bidirectional, with MLPs, and every subject form a token longer than its object
    form (right-padded in the batch): heads and MLPs equal patches made by hand."""
    design = _design(minilm)
    a = attribute_role_shift(
        minilm,
        design,
        layer=2,
        sites=("head_out", "mlp_out_all", "mlp_out"),
        n_receivers=1,
        progress=False,
    )
    assert set(a.components) == {"head_out", "mlp_out_all", "mlp_out"}
    ref = _word_means(minilm, design, a.layer)
    heads, mlps = a.components["head_out"], a.components["mlp_out_all"]
    assert heads.fraction.shape == (3, 12) and mlps.fraction.shape == (3,)
    for layer in (0, 2):
        want = _hand_fraction(minilm, a, ref, "mlp_out", layer)
        assert float(mlps.fraction[layer]) == pytest.approx(want, abs=1e-4)
    want = _hand_fraction(minilm, a, ref, "z", 1, 5)
    assert float(heads.fraction[1, 5]) == pytest.approx(want, abs=1e-4)
    by_pos = a.components["mlp_out"]
    k = by_pos.labels["offset"].index("W+1")  # bidirectional: later positions matter too
    want = _hand_fraction(minilm, a, ref, "mlp_out", 1, offsets=[1])
    assert float(by_pos.fraction[1, k]) == pytest.approx(want, abs=1e-4)
    assert all(np.isfinite(sh.attribution_r) for sh in a.components.values())


def test_bad_layer_and_sites_are_refused(toy):
    design = _design(toy, capitalize=False)
    with pytest.raises(ValueError, match="layer 3 does not exist"):
        attribute_role_shift(toy, design, layer=3, progress=False)
    with pytest.raises(ValueError, match="no site to patch"):
        attribute_role_shift(toy, design, sites=("mlp_out",), progress=False)


def test_role_shift_figures_plot_the_fractions(toy_shift):
    from mi_cluster.plotting.role_shift import (
        role_shift_forest,
        role_shift_heads,
        role_shift_positions,
    )

    a = toy_shift
    heads = role_shift_heads(a)
    np.testing.assert_allclose(heads.data[0].z, a.components["head_out"].fraction.numpy())
    receiver, share = next(iter(a.paths.items()))
    path_z = np.array(heads.data[1].z, dtype=float)
    rows = share.fraction.shape[0]
    np.testing.assert_allclose(path_z[:rows], share.fraction.numpy())
    assert np.isnan(path_z[rows:]).all()  # no path from a receiver's own layer or later
    pos = role_shift_positions(a)
    resid = a.components["resid_pre"]
    np.testing.assert_allclose(pos.data[0].z, resid.fraction.numpy())
    assert list(pos.data[0].x) == resid.labels["offset"]
    forest = role_shift_forest(a, top=6)
    shown = [t for t in forest.data if t.hoverinfo == "text"]
    fractions = [x for t in shown for x in t.x]
    assert len(fractions) == 6
    every = torch.cat([s.fraction.flatten() for s in [*a.components.values(), *a.paths.values()]])
    top = every.abs().sort(descending=True).values[:6]
    np.testing.assert_allclose(sorted(np.abs(fractions)), sorted(top.numpy()))


def test_object_to_subject_experiment_runs_offline(tmp_path, capsys):
    import json

    from experiment_scripts import experiment

    exp = experiment("object_to_subject_circuit")
    args = ["--models", "toy-ioi", "--words", "6"]
    assert exp.main(args + ["--out", str(tmp_path), "--no-png", "--quiet"]) == 0
    record = json.loads((tmp_path / "object_to_subject_circuit_toy-ioi.json").read_text())
    assert record["answer"].startswith("Model toy-ioi, read layer L2 (the last block)")
    assert record["role_shift"]["n_pairs"] == 6 * len(FAMILIES)
    assert set(record["role_shift"]["components"]) == {"head_out", "head_out_by_pos", "resid_pre"}
    assert record["paired"]["lens"] == "logit" and len(record["paired"]["js"]["mean"]) == 4
    assert record["head_write"]["head"].startswith("L")
    assert record["provenance"]["seed"] == 0 and record["headline"].startswith(
        "toy-ioi: object subjecthood shift"
    )
    for kind in ("heads", "positions", "forest", "paired", "paired_positions", "head_write"):
        assert (tmp_path / f"object_to_subject_circuit_toy-ioi_{kind}.html").exists()
    assert "== toy-ioi ==" in capsys.readouterr().out
    # MiniLM: bidirectional, MLPs, no real logits (cosine and CKA only)
    rec = exp.run(
        "minilm", tmp_path, png=False, words=4,
        sites=("head_out", "mlp_out_all"), n_receivers=1, progress=False,
    )  # fmt: skip
    assert set(rec["role_shift"]["components"]) == {"head_out", "mlp_out_all"}
    assert rec["paired"]["lens"] is None and "js" not in rec["paired"]
    assert "cosine at the read word" in rec["answer"]
