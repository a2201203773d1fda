"""The before/after-a-head view: the write equals the head's own output computed from
TransformerLens's cached z and W_O, coordinates are projections on an orthonormal basis,
and the axis moves match a hand computation."""

import numpy as np
import pytest
import torch

from mi_cluster.collection.activations import Positions
from mi_cluster.core.hooks import hook_name
from mi_cluster.core.prompts import tokenize_prompt
from mi_cluster.studies.subject_object.head_write import head_write_view

PROMPTS = [
    "Mary had fun . lamp went to the store .",
    "John had fun . Adam went to the store .",
    "Mary went and saw lamp at the store .",
    "John went and saw Adam at the store .",
    "Anna had fun . pen went to the store .",
    "Anna went and saw Emily at the store .",
]
WORDS = ["lamp", "Adam", "lamp", "Adam", "pen", "Emily"]
IS_NAME = [False, True, False, True, False, True]


def test_before_and_after_equal_the_cached_residual_and_the_heads_output(toy):
    layer, head = 2, 0
    v = head_write_view(toy, PROMPTS, Positions.word(WORDS), layer, head, is_name=IS_NAME)
    w_o = toy.W_O[layer, head].detach().double()
    for i, (text, word) in enumerate(zip(PROMPTS, WORDS, strict=True)):
        tp = tokenize_prompt(toy, text)
        pos = tp.str_tokens.index(" " + word) if " " + word in tp.str_tokens else None
        pos = pos if pos is not None else [t.strip() for t in tp.str_tokens].index(word)
        _, cache = toy.run_with_cache(torch.tensor([tp.ids]))
        before = cache[hook_name("resid_pre", layer)][0, pos].double()
        write = cache[hook_name("z", layer)][0, pos, head].double() @ w_o
        torch.testing.assert_close(v.before[i], before, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v.after[i] - v.before[i], write, atol=1e-5, rtol=1e-5)
    # an orthonormal basis: the head's top OV write direction first
    torch.testing.assert_close(v.basis @ v.basis.T, torch.eye(2, dtype=v.basis.dtype))
    u, s, vt = np.linalg.svd((toy.W_V[layer, head] @ toy.W_O[layer, head]).detach().numpy())
    assert abs(float(v.basis[0] @ torch.tensor(vt[0], dtype=v.basis.dtype))) == pytest.approx(
        1.0, abs=1e-5
    )
    np.testing.assert_allclose(v.singular_values.numpy(), s[:2], rtol=1e-4)
    centre = v.before.mean(0)
    np.testing.assert_allclose(v.coords_after, (v.after - centre) @ v.basis.T, rtol=1e-10)
    # the subject/object axis: the name-minus-object centroid direction of the before rows
    name = torch.tensor(IS_NAME)
    axis = v.before[name].mean(0) - v.before[~name].mean(0)
    axis = axis / axis.norm()
    np.testing.assert_allclose(v.shift_along_axis, (v.after - v.before) @ axis, atol=1e-10)
    assert v.axis_cosine == pytest.approx(float(axis @ v.basis[0]), abs=1e-10)
    moves = v.group_shift()
    assert set(moves) == {"prompts"} and moves["prompts"] == pytest.approx(
        float(v.shift_along_axis.mean())
    )


def test_without_an_axis_the_plane_is_the_heads_top_two_ov_directions(toy):
    v = head_write_view(toy, PROMPTS, "last", 1, 2)
    assert v.shift_along_axis is None and v.basis_labels[1] == "L1H2 OV write 2"
    with pytest.raises(ValueError, match="no subject/object axis"):
        v.group_shift()


def test_bad_inputs_are_refused(toy):
    with pytest.raises(ValueError, match="no head L3H0"):
        head_write_view(toy, PROMPTS, "last", 3, 0)
    with pytest.raises(ValueError, match="5 is_name for 6 prompts"):
        head_write_view(toy, PROMPTS, "last", 1, 0, is_name=IS_NAME[:5])
    with pytest.raises(ValueError, match="both name rows and object rows"):
        head_write_view(toy, PROMPTS, "last", 1, 0, is_name=[True] * 6)
    with pytest.raises(ValueError, match="one row per prompt"):
        head_write_view(toy, PROMPTS, "all", 1, 0)


def test_head_write_scatter_keeps_arrows_for_every_group(toy):
    from mi_cluster.plotting.head_write import head_write_scatter

    groups = ["object · subject", "name · subject", "object · object", "name · object"] * 3
    v = head_write_view(
        toy, PROMPTS * 2, Positions.word(WORDS * 2), 2, 0, is_name=IS_NAME * 2, groups=groups
    )
    fig = head_write_scatter(v, max_arrows=4)
    assert len(fig.data) == 8  # before and after for each of 4 groups
    colors = {a.arrowcolor for a in fig.layout.annotations}
    assert len(fig.layout.annotations) == 4 and len(colors) == 4  # one arrow per group
    after = [t for t in fig.data if t.name == "name · subject, after L2H0"][0]
    idx = [i for i, g in enumerate(groups) if g == "name · subject"]
    np.testing.assert_allclose(after.x, v.coords_after[idx, 0].numpy())
