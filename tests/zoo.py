"""The architectures of the conformance suite: one tiny random model of each (2-3 layers,
d_model 64, 4 heads, 2 key/value heads where the architecture has grouped-query
attention), every norm weight and bias perturbed and weights large enough (std 0.15) that
attention is far from uniform, built once per test session."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mi_cluster.models.tiny import ARCHITECTURES, TinyConfig, save_tiny_pretrained

S, F = "sliding_attention", "full_attention"
_GQA = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "olmo2"}


def _tiny(architecture: str, **kw) -> TinyConfig:
    kv = 2 if architecture in _GQA else (1 if architecture == "gemma" else None)
    d_head = 16 if architecture.startswith("gemma") or architecture == "qwen3" else None
    base = TinyConfig(
        architecture=architecture, n_layers=2, d_model=64, n_heads=4, d_mlp=128, n_ctx=64,
        n_key_value_heads=kv, d_head=d_head, norm_noise=0.1, init_std=0.15, seed=1,
    )  # fmt: skip
    return dataclasses.replace(base, **kw)


# model id -> its config; ids name the variant where an architecture has several
ZOO: dict[str, TinyConfig] = {
    "gpt2": _tiny("gpt2"),
    "gptj": _tiny("gptj"),
    "opt": _tiny("opt"),
    "gpt_neox": _tiny("gpt_neox"),
    "llama": _tiny("llama"),
    "mistral": _tiny("mistral"),
    "qwen2": _tiny("qwen2"),
    "qwen3": _tiny("qwen3"),
    "gemma": _tiny("gemma"),
    "gemma2": _tiny("gemma2", n_layers=3, layer_types=(S, F, S)),
    "gemma3": _tiny("gemma3", n_layers=3, layer_types=(S, S, F)),
    "gemma3_sfs": _tiny("gemma3", n_layers=3, layer_types=(S, F, S)),  # last = first type
    "phi3": _tiny("phi3"),
    "olmo": _tiny("olmo"),
    "olmo2": _tiny("olmo2"),
    "bert": _tiny("bert"),
}
CAUSAL = [m for m in ZOO if m != "bert"]


class Zoo:
    """Builds each model's directory once, and loads each form of it once."""

    def __init__(self, root: Path):
        self.root = root
        self._built: dict[tuple, object] = {}

    def _once(self, key: tuple, build):
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def directory(self, model: str) -> str:
        return self._once(
            ("dir", model), lambda: str(save_tiny_pretrained(ZOO[model], self.root / model))
        )

    def architecture(self, model: str) -> str:
        return ZOO[model].architecture

    def bridge(self, model: str, processing: str = "transformer_lens"):
        from mi_cluster.models.loading import load_model

        return self._once(
            ("bridge", model, processing),
            lambda: load_model(self.directory(model), device="cpu", processing=processing),
        )

    def reference(self, model: str):
        from hf_reference import HFReference, load_hf

        def build():
            arch = self.architecture(model)
            return HFReference(
                load_hf(ARCHITECTURES[arch].model_class, self.directory(model)), arch
            )

        return self._once(("reference", model), build)
