"""The compiled IOI model: a 4-layer, 12-head attention-only GPT-2-format model whose weights are
set analytically, so its circuit is known by construction (``load_model("ioi-compiled")``;
its card, ``MODEL_CARD.md``, lists every head and edge). Built in milliseconds, offline and
deterministically, at load time."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from mi_cluster.core.protocols import HookedModel
from mi_cluster.models.compiled.build import (
    NAMES,
    OBJECTS,
    PLACES,
    TEMPLATES,
    WORDS,
    CompiledSpec,
    build_weights,
)

__all__ = [
    "CARD",
    "NAMES",
    "OBJECTS",
    "PLACES",
    "TEMPLATES",
    "compiled_prompts",
    "load_compiled_ioi",
    "register",
    "save_compiled_ioi",
]

CARD = Path(__file__).parent / "MODEL_CARD.md"


def compiled_prompts(model: HookedModel, n: int, seed: int = 0) -> list:
    """``n`` IOI prompts of the compiled model's distribution (its templates and words, both
    orders alternating): :func:`mi_cluster.core.ioi_prompts.ioi_prompts` with its word lists."""
    from mi_cluster.core.ioi_prompts import ioi_prompts

    kw = {"templates": TEMPLATES, "names": NAMES, "places": PLACES, "objects": OBJECTS}
    return ioi_prompts(model, n, seed=seed, **kw)


def save_compiled_ioi(directory: str | Path) -> Path:
    """Write the compiled model and its word-level tokenizer as a ``save_pretrained``
    directory."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from mi_cluster.models.tiny import build_word_tokenizer, save_hf_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_word_tokenizer(directory, list(NAMES + PLACES + OBJECTS + WORDS))
    vocab = tuple(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    spec = CompiledSpec(vocab=vocab, names=NAMES)
    cfg = GPT2Config(
        vocab_size=len(vocab),
        n_positions=spec.n_ctx,
        n_embd=spec.d_model,
        n_layer=spec.n_layers,
        n_head=spec.n_heads,
        n_inner=4,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(cfg)
    model = model.double()  # float64 weights: loading in float32 rounds them once
    state = {k: torch.tensor(v, dtype=torch.float64) for k, v in build_weights(spec).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("attn.bias") and "masked_bias" not in k for k in missing):
        raise RuntimeError(f"compiled weights do not fit GPT-2: {missing=} {unexpected=}")
    save_hf_model(model.eval(), directory)
    return directory


def load_compiled_ioi(
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
    compatibility_mode: bool | str = True,
) -> HookedModel:
    """The compiled IOI model as a TransformerLens bridge."""
    from mi_cluster.core.model_info import ModelInfo
    from mi_cluster.models.loading import load_directory

    with tempfile.TemporaryDirectory(prefix="mi_cluster_compiled_") as tmp:
        save_compiled_ioi(tmp)
        info = ModelInfo(
            name="ioi-compiled",
            source="mi_cluster.models.compiled (built at load)",
            attention_only=True,
        )
        return load_directory(tmp, info, device, dtype, compatibility_mode)


def register() -> None:
    """The ``mi_cluster.models`` entry point: make ``load_model("ioi-compiled")`` work."""
    from mi_cluster.models.registry import register_model

    register_model(
        "ioi-compiled",
        lambda device, dtype, compat: load_compiled_ioi(device, dtype, compat),
        "a 4-layer IOI model with analytically set weights (circuit known by construction)",
    )
