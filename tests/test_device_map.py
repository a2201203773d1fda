"""A model split across two GPUs by a device map gives what the same model gives on one
GPU: collection, the logit lens (watched ranks, answers), activation, path and attribution
patching. The toy model's blocks 0 and 1 go to different GPUs and its final LayerNorm to
the second, while the tied unembedding stays with the embedding on the first, so the
residual crosses devices inside the blocks and again inside the output head.

Needs two CUDA devices: skipped on the CPU machines CI runs on (and on a one-GPU
machine). On one device the same code paths are tested everywhere else in the suite."""

from __future__ import annotations

import pytest
import torch

from mi_cluster.collection.activations import collect
from mi_cluster.methods.lens.logit import logit_lens
from mi_cluster.methods.patching import (
    activation_patching,
    attribution_patching,
    logit_difference,
    path_patching,
)
from mi_cluster.models.loading import load_model
from mi_cluster.models.toy import TOY_IOI_DIR

pytestmark = pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs two CUDA devices (a real device-map split)"
)

SPLIT = {
    "transformer.wte": 0, "transformer.wpe": 0, "transformer.drop": 0,
    "transformer.h.0": 0, "transformer.h.1": 1, "transformer.h.2": 1,
    "transformer.ln_f": 1, "lm_head": 0,
}  # fmt: skip
CLEAN = [
    "When Mary and John went to the store , John gave a book to",
    "When Anna and Tom went to the park , Tom gave a cup to",
]
CORRUPT = [
    "When Mary and John went to the store , Kate gave a book to",
    "When Anna and Tom went to the park , Lucy gave a cup to",
]


@pytest.fixture(scope="module")
def models():
    one = load_model(str(TOY_IOI_DIR), device="cuda:0")
    split = load_model(str(TOY_IOI_DIR), device_map=SPLIT)
    devices = {p.device for p in split.parameters()}
    assert devices == {torch.device("cuda:0"), torch.device("cuda:1")}, devices
    return one, split


ANSWERS = [("Mary", "John"), ("Anna", "Tom")]


def _close(a, b):
    torch.testing.assert_close(a.cpu(), b.cpu(), atol=1e-4, rtol=1e-4)


def _patched_alike(models, patch, *args, pick=None, **kwargs):
    """``patch`` (a patching sweep) on the split and the one-GPU model, each with its own
    logit-difference metric: their values must agree (``pick``: the site of a result
    given per site, as attribution patching's)."""
    one, split = models
    got, want = (
        patch(m, CLEAN, CORRUPT, logit_difference(m, ANSWERS), *args, **kwargs)
        for m in (split, one)
    )
    if pick is not None:
        got, want = got[pick], want[pick]
    _close(got.values, want.values)


def test_collection_and_the_lens_equal_one_gpu(models):
    one, split = models
    for site in ("resid_post", "z"):
        _close(
            collect(split, CLEAN, site, "all", progress=False).tensor,
            collect(one, CLEAN, site, "all", progress=False).tensor,
        )
    kw = dict(watch=["Mary", "Anna"], answers=ANSWERS)
    a = logit_lens(split, CLEAN, progress=False, **kw)
    b = logit_lens(one, CLEAN, progress=False, **kw)
    assert torch.equal(a.watch_ranks, b.watch_ranks) and torch.equal(a.top_ids, b.top_ids)
    for field in ("logit_diff", "kl_to_final", "watch_log_probs"):
        _close(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("site", ["head_out", "resid_pre"])
def test_activation_and_attribution_patching_equal_one_gpu(models, site):
    _patched_alike(models, activation_patching, site, progress=False)
    _patched_alike(models, attribution_patching, (site,), pick=site)


@pytest.mark.parametrize("final_ln", ["recompute", "frozen"])
def test_path_patching_equals_one_gpu(models, final_ln):
    _patched_alike(models, path_patching, final_ln=final_ln, progress=False)
    _patched_alike(models, path_patching, [(2, 0, "q"), (2, 1, "v")], progress=False)
