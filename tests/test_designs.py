"""The subject/object design: word checks against real tokenizers, position matching,
and every way a word can be dropped, reduced or refused (never silently)."""

import warnings

import pytest

from mi_cluster.collection.activations import collect
from mi_cluster.core.prompts import NotSingleTokenError, tokenize_prompt, word_positions
from mi_cluster.models.gpt2 import gpt2_tokenizer
from mi_cluster.studies.subject_object.design import (
    FAMILIES,
    NAMES,
    OBJECTS,
    TemplateFamily,
    UnknownWordWarning,
    name_swap_pairs,
    role_design,
)


def test_families_cover_initial_mid_and_preceding_name():
    assert len(FAMILIES) >= 4
    kinds = {(f.initial, f.preceding_name) for f in FAMILIES}
    assert kinds == {(True, True), (True, False), (False, True), (False, False)}


def test_minilm_design_is_complete_single_token_and_position_matched(minilm):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be dropped for MiniLM
        design = role_design(minilm)
    assert len(design.names) >= 30 and len(design.objects) >= 30
    assert design.dropped == () and design.reduced == ()
    assert len(design.items) == len(design.words) * (1 + 2 * len(FAMILIES))
    assert dict(design.position_gaps) == {f.name: 0 for f in FAMILIES}
    # check the gap independently: the word's token position in both forms of a family
    for fam in FAMILIES:
        pos = {}
        for it in design.items:
            if it.family == fam.name and it.lemma == "lamp":
                tp = tokenize_prompt(minilm, it.text)
                pos[it.role] = word_positions(tp, it.word, case_sensitive=False)
        assert pos["subject"] == pos["object"] and len(pos["subject"]) == 1
    lamp = [it for it in design.items if it.lemma == "lamp"]
    assert {it.role for it in lamp} == {"alone", "subject", "object"}
    assert "Lamp went to the store." in [it.text for it in lamp if it.family == "new sentence"][0]
    assert design.units.max().item() == len(design.words) - 1
    assert int(design.is_name.sum()) == len(design.names) * (1 + 2 * len(FAMILIES))


def test_toy_design_drops_unknown_words_with_a_warning_naming_them(tiny):
    from mi_cluster.models.toy import load_toy_ioi

    toy = load_toy_ioi()
    with pytest.warns(UnknownWordWarning, match=r"dropped 16 word\(s\).*bottle: unknown"):
        design = role_design(toy, capitalize=False)
    assert (len(design.names), len(design.objects)) == (31, 19)
    assert dict(design.dropped)["bottle"] == "unknown to the tokenizer as 'bottle'"
    assert dict(design.position_gaps) == {f.name: 0 for f in FAMILIES}
    with pytest.raises(ValueError, match="try capitalize=False"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        role_design(toy, capitalize=True)  # "Lamp" is not in the toy vocabulary
    with warnings.catch_warnings():  # "auto" sees that and keeps sentence starts lowercase
        warnings.simplefilter("ignore")
        auto = role_design(toy)
    assert not auto.capitalize and auto.items == design.items


def test_gpt2_tokenizer_multi_token_words_drop_reduce_or_error():
    tok = gpt2_tokenizer()
    with pytest.warns(UnknownWordWarning, match=r"shoe: split into 2 tokens \[' Sh', 'oe'\]"):
        dropped = role_design(tok)
    assert len(dropped.names) == 31 and len(dropped.objects) == 31
    assert {w for w, _ in dropped.dropped} == {"shoe", "basket", "blanket", "pillow"}
    with pytest.warns(UnknownWordWarning, match="read as the mean of their sub-tokens: shoe"):
        reduced = role_design(tok, multi_token="reduce")
    assert set(reduced.reduced) == {"shoe", "basket", "blanket", "pillow"}
    assert len(reduced.objects) == len(OBJECTS)
    with pytest.raises(NotSingleTokenError, match="'shoe' is not one token"):
        role_design(tok, multi_token="error")


def test_reduced_words_are_read_by_the_subtoken_rule(tiny):
    """The tiny model's BPE splits most words: "reduce" keeps them and reads the mean of
    their sub-tokens, each row averaging all of its word's positions."""
    with pytest.warns(UnknownWordWarning):
        design = role_design(tiny, NAMES[10:14], OBJECTS[10:14], multi_token="reduce")
    assert design.reduced
    acts = collect(tiny, design.texts, "resid_post", design.positions(), progress=False)
    multi = [i for i, it in enumerate(design.items) if it.lemma in design.reduced]
    assert any(len(acts.positions[i]) > 1 for i in multi)


def test_bad_designs_are_refused(minilm):
    with pytest.raises(ValueError, match="needs one"):
        role_design(minilm, families=[TemplateFamily("x", "no slot", "{W}", True, False)])
    with pytest.raises(ValueError, match="duplicates"):
        role_design(minilm, ["Mary", "Mary", "John"], OBJECTS)
    with pytest.raises(ValueError, match="both as names and objects"):
        role_design(minilm, ["Mary", "John"], ["Mary", "lamp"])
    from mi_cluster.models.toy import load_toy_ioi

    odd = TemplateFamily("odd", "{W} went to the spaceship.", "They saw {W}.", True, False)
    with pytest.raises(ValueError, match=r"does not know \['spaceship'\]"):
        role_design(load_toy_ioi(), NAMES[:3], OBJECTS[:3], [odd], capitalize=False)


def test_name_swap_pairs_put_a_name_in_the_objects_slot(minilm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        design = role_design(minilm, NAMES[:6], OBJECTS[:4])
    swaps = name_swap_pairs(design)
    assert len(swaps.objects) == 4 * len(FAMILIES)
    fams = {f.name: f for f in FAMILIES}
    subject = {(it.word, it.family): it for it in design.items if it.role == "subject"}
    for obj, name, w, n, fam in zip(
        swaps.objects, swaps.names, swaps.object_words, swaps.name_words, swaps.family,
        strict=True,
    ):  # fmt: skip
        item = subject[(w, fam)]
        assert obj == item.text and n in design.names and n != item.context_name
        assert name == fams[fam].subject.format(W=n, X=item.context_name)
        a, b = tokenize_prompt(minilm, obj), tokenize_prompt(minilm, name)
        assert len(a.ids) == len(b.ids)  # aligned token by token
        assert [x != y for x, y in zip(a.ids, b.ids, strict=True)].count(True) == 1
    one = swaps.of_family(FAMILIES[2].name)
    assert set(one.family) == {FAMILIES[2].name} and len(one.objects) == 4
    with pytest.raises(ValueError, match="no pairs in family"):
        swaps.of_family("nope")
