"""Random-weight models of every architecture mi_cluster is checked on, built offline.

A :class:`TinyConfig` names an architecture (``"gpt2"``, ``"llama"``, ``"gemma2"``, ...:
:data:`ARCHITECTURES`) and a shape; :func:`save_tiny_pretrained` builds the Hugging Face
model from its transformers config class with random weights, trains a small byte-level
BPE tokenizer on a built-in corpus with the special tokens the architecture's real
tokenizer has (a BOS where the real one defines one, prepended by the tokenizer where the
real one prepends it; BERT gets a WordPiece with ``[CLS] ... [SEP]``), and writes both as a
``save_pretrained`` directory. ``load_model(TinyConfig(...))`` boots it as a bridge.

``norm_noise`` perturbs every normalisation weight and every bias, which a freshly
initialised model has at exactly 1 and 0: then a mistake in folding norms or in handling
biases changes the numbers instead of hiding behind an identity. Nothing here needs the
network; shapes may be as large as a real model's (the benchmarks build a Pythia-160M- and
a Qwen2.5-0.5B-shaped model this way).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "TinyConfig",
    "build_word_tokenizer",
    "save_hf_model",
    "save_tiny_pretrained",
]


@dataclass(frozen=True)
class TinyConfig:
    """A randomly initialised model of one architecture, built offline (tests, benchmarks,
    demos).

    Fields:
        n_layers, d_model, n_heads, d_mlp, n_ctx: the shape.
        vocab_size: size of the BPE tokenizer trained on a built-in corpus (at least 257).
        seed: initialisation seed (the global RNG is left untouched).
        name: the model's name in results and figures.
        architecture: a key of :data:`ARCHITECTURES` (``"gpt2"`` by default).
        n_key_value_heads: key/value heads for grouped-query attention (None: the
            architecture's own default, which is ``n_heads`` except where it has none).
        d_head: per-head width where the architecture sets it apart from
            ``d_model / n_heads`` (Gemma, Qwen 3); None: ``d_model // n_heads``.
        layer_types: per layer ``"sliding_attention"`` or ``"full_attention"`` (Gemma 2/3,
            Mistral's window everywhere); None: the architecture's default pattern.
        sliding_window: the sliding window in tokens, where layers have one.
        d_vocab: the model's vocabulary size when it should exceed the tokenizer's (a
            real model's unembedding cost); None: the tokenizer's size.
        norm_noise: standard deviation of the noise added to every norm weight and every
            bias (0: Hugging Face's initialisation, norms 1 and biases 0).
        init_std: the standard deviation of the random weights (None: the architecture's
            default, about 0.02, which leaves a tiny model's attention nearly uniform).
    """

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 256
    n_ctx: int = 64
    vocab_size: int = 400
    seed: int = 0
    name: str = field(default="")
    architecture: str = "gpt2"
    n_key_value_heads: int | None = None
    d_head: int | None = None
    layer_types: tuple[str, ...] | None = None
    sliding_window: int | None = None
    d_vocab: int | None = None
    norm_noise: float = 0.0
    init_std: float | None = None

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; expected one of "
                f"{sorted(ARCHITECTURES)}"
            )
        if self.d_head is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        kv = self.n_key_value_heads
        if kv is not None and (kv < 1 or self.n_heads % kv):
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_key_value_heads={kv}")
        if self.vocab_size < 257:
            raise ValueError("vocab_size must be at least 257 (256 bytes + special tokens)")
        if self.layer_types is not None and len(self.layer_types) != self.n_layers:
            raise ValueError(f"{len(self.layer_types)} layer_types for {self.n_layers} layers")

    @property
    def head_dim(self) -> int:
        """Width of each head."""
        return self.d_head or self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads (fewer than the query heads under grouped-query attention)."""
        return self.n_key_value_heads or self.n_heads

    @property
    def default_name(self) -> str:
        """A short name: architecture, layers and width."""
        return self.name or f"tiny-{self.architecture}-{self.n_layers}L-{self.d_model}d"


@dataclass(frozen=True)
class Architecture:
    """How to build one architecture from a :class:`TinyConfig`.

    Fields:
        config_class, model_class: the transformers classes (by name).
        kwargs: ``(cfg, vocab) -> config keyword arguments``.
        bos, eos: the real tokenizer's BOS and EOS token strings (``bos`` None where the
            real tokenizer defines none).
        prepends_bos: whether the real tokenizer itself prepends its BOS.
        appends_eos: whether the real tokenizer itself appends its EOS (OLMo).
        note: what the tiny model exercises, in words.
    """

    config_class: str
    model_class: str
    kwargs: Callable[[TinyConfig, int], dict[str, Any]]
    bos: str | None
    eos: str
    prepends_bos: bool
    appends_eos: bool = False
    note: str = ""


def _common(cfg: TinyConfig, vocab: int) -> dict[str, Any]:
    """The shape under the names most transformers configs use."""
    return {
        "vocab_size": vocab,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_mlp,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "max_position_embeddings": cfg.n_ctx,
    }


def _llama_like(cfg: TinyConfig, vocab: int) -> dict[str, Any]:
    return {**_common(cfg, vocab), "num_key_value_heads": cfg.kv_heads}


def _with(extra: Callable[[TinyConfig], dict[str, Any]]) -> Callable[[TinyConfig, int], dict]:
    return lambda cfg, vocab: {**_llama_like(cfg, vocab), **extra(cfg)}


def _gpt2(cfg: TinyConfig, vocab: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab,
        "n_positions": cfg.n_ctx,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_mlp,
    }


def _gptj(cfg: TinyConfig, vocab: int) -> dict[str, Any]:
    return {**_gpt2(cfg, vocab), "rotary_dim": max(2, cfg.head_dim // 2)}  # partial rotary


def _opt(cfg: TinyConfig, vocab: int) -> dict[str, Any]:
    common = _common(cfg, vocab)
    return {
        **common,
        "ffn_dim": common.pop("intermediate_size"),
        "word_embed_proj_dim": cfg.d_model,
    }


def _neox(cfg: TinyConfig, vocab: int) -> dict[str, Any]:
    # Pythia's partial rotary and parallel attention and MLP
    return {**_common(cfg, vocab), "rotary_pct": 0.25, "use_parallel_residual": True}


def _windowed(cfg: TinyConfig, default: str) -> dict[str, Any]:
    types = cfg.layer_types
    if types is None:
        types = tuple(default if i % 2 == 0 else "full_attention" for i in range(cfg.n_layers))
    return {"layer_types": list(types), "sliding_window": cfg.sliding_window or 4}


def _gemma(cfg: TinyConfig) -> dict[str, Any]:
    return {"head_dim": cfg.head_dim}


def _gemma2(cfg: TinyConfig) -> dict[str, Any]:
    return {
        "head_dim": cfg.head_dim,
        "query_pre_attn_scalar": cfg.head_dim,
        **_windowed(cfg, "sliding_attention"),
    }  # soft-capping of attention scores (50) and final logits (30): the defaults


def _gemma3(cfg: TinyConfig) -> dict[str, Any]:
    return {"head_dim": cfg.head_dim, "query_pre_attn_scalar": cfg.head_dim, **_windowed(
        cfg, "sliding_attention"
    )}  # fmt: skip


def _mistral(cfg: TinyConfig) -> dict[str, Any]:
    return {"sliding_window": cfg.sliding_window or 6}


def _qwen3(cfg: TinyConfig) -> dict[str, Any]:
    return {"head_dim": cfg.head_dim}


def _pad0(cfg: TinyConfig) -> dict[str, Any]:
    return {"pad_token_id": 0}


def _olmo(cfg: TinyConfig) -> dict[str, Any]:
    return {"pad_token_id": 0, "clip_qkv": 2.0}


ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(
        "GPT2Config", "GPT2LMHeadModel", _gpt2, "<|endoftext|>", "<|endoftext|>", False,
        note="learned positions, LayerNorm, fused QKV (Conv1D)",
    ),
    "gptj": Architecture(
        "GPTJConfig", "GPTJForCausalLM", _gptj, "<|endoftext|>", "<|endoftext|>", False,
        note="parallel attention and MLP, partial rotary (interleaved), untied unembedding "
        "with a bias",
    ),
    "opt": Architecture(
        "OPTConfig", "OPTForCausalLM", _opt, "</s>", "</s>", True,
        note="learned positions offset by 2, LayerNorm, ReLU MLP",
    ),
    "gpt_neox": Architecture(
        "GPTNeoXConfig", "GPTNeoXForCausalLM", _neox, "<|endoftext|>", "<|endoftext|>",
        False, note="Pythia: parallel attention, partial rotary (25%), fused QKV by head",
    ),
    "llama": Architecture(
        "LlamaConfig", "LlamaForCausalLM", _with(lambda c: {}), "<s>", "</s>", True,
        note="RMSNorm, rotary, grouped-query attention, gated MLP",
    ),
    "mistral": Architecture(
        "MistralConfig", "MistralForCausalLM", _with(_mistral), "<s>", "</s>", True,
        note="Llama with a sliding window on every layer",
    ),
    "qwen2": Architecture(
        "Qwen2Config", "Qwen2ForCausalLM", _with(lambda c: {}), None, "<|endoftext|>",
        False, note="Llama with QKV biases; its tokenizer defines no BOS",
    ),
    "qwen3": Architecture(
        "Qwen3Config", "Qwen3ForCausalLM", _with(_qwen3), None, "<|endoftext|>", False,
        note="per-head RMSNorm of queries and keys, head_dim apart from d_model / n_heads",
    ),
    "gemma": Architecture(
        "GemmaConfig", "GemmaForCausalLM", _with(_gemma), "<bos>", "<eos>", True,
        note="RMSNorm with (1 + w), embeddings scaled by sqrt(d_model), GeGLU",
    ),
    "gemma2": Architecture(
        "Gemma2Config", "Gemma2ForCausalLM", _with(_gemma2), "<bos>", "<eos>", True,
        note="norms before and after attention and MLP, soft-capped attention and logits, "
        "sliding and full layers",
    ),
    "gemma3": Architecture(
        "Gemma3TextConfig", "Gemma3ForCausalLM", _with(_gemma3), "<bos>", "<eos>", True,
        note="Gemma 2's norms plus query/key norms, a rotary base per layer type",
    ),
    "phi3": Architecture(
        "Phi3Config", "Phi3ForCausalLM", _with(_pad0), "<s>", "</s>", True,
        note="fused QKV and gate/up projections",
    ),
    "olmo": Architecture(
        "OlmoConfig", "OlmoForCausalLM", _with(_olmo), None, "<|endoftext|>", False, True,
        note="LayerNorm without weights, clipped QKV; its tokenizer appends EOS",
    ),
    "olmo2": Architecture(
        "Olmo2Config", "Olmo2ForCausalLM", _with(_pad0), "<|endoftext|>", "<|endoftext|>",
        False, note="norms after attention and MLP only, RMSNorm of all queries and keys",
    ),
    "bert": Architecture(
        "BertConfig", "BertForMaskedLM", _common, None, "[SEP]", True,
        note="bidirectional, post-LayerNorm, masked-LM head (WordPiece tokenizer)",
    ),
}  # fmt: skip
"""Every architecture a :class:`TinyConfig` builds, by name, with what it exercises."""


# ---------------------------------------------------------------------------------------
# Tokenizers.


def build_word_tokenizer(directory: str | os.PathLike, words: list[str]) -> Any:
    """A word-level tokenizer over ``words`` plus ``<|endoftext|>`` (BOS/EOS/PAD) and
    ``<unk>``, saved to ``directory`` and returned loaded from there.

    Words are split on whitespace and punctuation; there is no leading-space distinction,
    so ``" Mary"`` and ``"Mary"`` are the same token. (Saved to a directory because
    TransformerLens needs a tokenizer with a ``name_or_path``.)
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )
    fast.save_pretrained(str(directory))
    return PreTrainedTokenizerFast.from_pretrained(str(directory))


# The tiny tokenizer's training corpus: a few names and nouns alone, in a two-sentence
# story and in an IOI sentence, so they are single tokens (other words split into pieces).
_TINY_NAMES = ("Adam", "Mary", "John", "Eve", "Mark", "Emily", "Chris", "Diana", "Paul", "Sarah")
_TINY_NOUNS = ("lamp", "table", "house", "pen", "ball", "window", "chair", "book", "cup", "door")


def _tiny_corpus() -> list[str]:
    names, nouns, n = _TINY_NAMES, _TINY_NOUNS, len(_TINY_NAMES)
    story = "{} went to the store. {} went to the"
    corpus = list(names) + list(nouns)
    corpus += [story.format(names[(i + 1) % n], w) for i, w in enumerate(names)]
    corpus += [story.format(names[i % n], w.capitalize()) for i, w in enumerate(nouns)]
    corpus += [
        f"When {a} and {b} went to the store, {b} gave a {o} to {a}"
        for a, b, o in zip(names, names[1:] + names[:1], nouns, strict=True)
    ]
    return corpus


def _bpe_tokenizer(directory: Path, vocab_size: int, arch: Architecture) -> Any:
    """A byte-level BPE (GPT-2 style, leading spaces matter) trained on the built-in
    corpus, so common words are one token and rare ones split into several, with the
    architecture's special tokens and BOS/EOS convention."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    pad = (
        "<|endoftext|>" if arch.eos == "<|endoftext|>" and arch.bos in (None, arch.eos) else "<pad>"
    )
    specials = list(dict.fromkeys(s for s in (arch.bos, arch.eos, pad) if s))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_corpus() * 4, trainer)
    single = "$A"
    if arch.prepends_bos and arch.bos:
        single = f"{arch.bos} {single}"
    if arch.appends_eos:
        single = f"{single} {arch.eos}"
    if single != "$A":
        ids = [(s, tok.token_to_id(s)) for s in dict.fromkeys((arch.bos, arch.eos)) if s]
        tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=ids)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=arch.bos,
        eos_token=arch.eos,
        pad_token=pad,
        unk_token=arch.eos,
        add_bos_token=arch.prepends_bos and arch.bos is not None,
        add_eos_token=arch.appends_eos,
    )
    fast.save_pretrained(str(directory))
    return fast


def _wordpiece_tokenizer(directory: Path, vocab_size: int) -> Any:
    """A BERT WordPiece (lower-cased, ``[CLS] ... [SEP]``) trained on the built-in corpus."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer  # tokenizers-backed: its normaliser, [CLS]/[SEP]

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False
    )
    tok.train_from_iterator(_tiny_corpus() * 4, trainer)
    fast = BertTokenizer(vocab=tok.get_vocab(), do_lower_case=True)
    fast.save_pretrained(str(directory))
    return fast


# ---------------------------------------------------------------------------------------
# Models.


def save_hf_model(model: Any, directory: str | os.PathLike) -> None:
    """``model.save_pretrained(directory)`` (config and safetensors weights) on every
    process: under ``torch.distributed`` Hugging Face writes only on rank 0, while the
    models built at load time (tiny, compiled) are built by each rank in its own folder."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]  # how the bridge picks its adapter
    model.config.to_json_file(str(directory / "config.json"))
    save_model(model, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _perturb(model: Any, noise: float) -> None:
    """Add noise to every norm weight and every bias (random init leaves them 1 and 0)."""
    norms = tuple(
        m for m in model.modules() if "norm" in type(m).__name__.lower()
    )  # LayerNorm, RMSNorm, GemmaRMSNorm, ...
    norm_params = {id(p) for m in norms for p in m.parameters(recurse=False)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if id(p) in norm_params or name.endswith("bias"):
                p.add_(noise * torch.randn_like(p))


def save_tiny_pretrained(
    cfg: TinyConfig, directory: str | os.PathLike, tokenizer: Any = None
) -> Path:
    """Write a random model of ``cfg.architecture`` and its tokenizer as a
    ``save_pretrained`` directory. ``tokenizer``: a Hugging Face tokenizer to ship
    instead of the one trained on the built-in corpus (e.g. GPT-2's real one, for
    prompts in real words); the model's vocabulary is at least its size."""
    import transformers

    arch = ARCHITECTURES[cfg.architecture]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    elif cfg.architecture == "bert":
        tokenizer = _wordpiece_tokenizer(directory, cfg.vocab_size)
    else:
        tokenizer = _bpe_tokenizer(directory, cfg.vocab_size, arch)
    vocab = max(len(tokenizer), cfg.d_vocab or 0)
    kwargs = arch.kwargs(cfg, vocab)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        kwargs.setdefault(attr, getattr(tokenizer, attr))
    if cfg.init_std is not None:
        kwargs["init_std" if cfg.architecture == "opt" else "initializer_range"] = cfg.init_std
    hf_cfg = getattr(transformers, arch.config_class)(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        hf = getattr(transformers, arch.model_class)(hf_cfg).eval()
        if cfg.norm_noise:
            _perturb(hf, cfg.norm_noise)
    save_hf_model(hf, directory)
    return directory
