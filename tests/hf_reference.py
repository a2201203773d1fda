"""An independent reference for the architecture conformance suite: plain PyTorch forward
hooks on the Hugging Face model, never TransformerLens.

Each architecture's block is described by a :class:`Layout` (which module's output is
what attention adds to the residual stream, which module's input is the heads' ``z``,
...). :class:`HFReference` runs the Hugging Face model with hooks that read any site of
any layer and write patches into rows of an expanded batch, so activation patching, path
patching, attribution patching (by autograd), direct logit attribution and copy scores
are computed here from the model's own modules. Attention patterns are read and patched
through an attention function registered with transformers that wraps each model's own
eager attention.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Patch = Callable[[Tensor], Tensor]  # the site's activation in its natural view -> new value


@dataclass(frozen=True)
class Layout:
    """Where each site lives in one block of a Hugging Face model.

    Fields:
        layers: path from the model to its list of blocks.
        attn_write: in a block, the module whose output attention adds to the residual
            stream (the post-attention norm where there is one; BERT: the attention
            sub-block, whose output is the residual after its LayerNorm).
        mlp_write: the same for the MLP (BERT: its dense output before the LayerNorm, as
            TransformerLens hooks it).
        o_proj: the module whose input is every head's ``z``, concatenated.
        qkv: the q, k, v projections (three paths), or one fused projection's path.
        fused: how a fused projection lays out q, k, v: ``"gpt2"`` ([q | k | v]),
            ``"phi3"`` ([q | k | v] with fewer key/value heads) or ``"neox"`` (per head
            [q k v]); None for separate projections.
        down: the module whose input is the MLP's neurons after the non-linearity.
        final_norm: path from the model to the final norm (None: none).
        post_attn_norm: in a block, the norm applied to attention's output before it is
            added (Gemma 2/3, OLMo 2), else None.
        parallel: attention and MLP read the same residual (GPT-J, GPT-NeoX).
        post_ln: a post-LayerNorm encoder (BERT).
        mlp_norm: the norm the MLP reads the residual through (None: OLMo 2, none).
        mlp: the modules that make the MLP, applied in turn.
        post_mlp_norm: the norm applied to the MLP's output before it is added.
    """

    layers: str
    attn_write: str
    mlp_write: str
    o_proj: str
    qkv: tuple[str, ...]
    down: str
    final_norm: str | None
    fused: str | None = None
    post_attn_norm: str | None = None
    parallel: bool = False
    post_ln: bool = False
    mlp_norm: str | None = "post_attention_layernorm"
    mlp: tuple[str, ...] = ("mlp",)
    post_mlp_norm: str | None = None


_LLAMA = Layout(
    "model.layers", "self_attn", "mlp", "self_attn.o_proj",
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "mlp.down_proj", "model.norm",
)  # fmt: skip
_GEMMA2 = Layout(
    "model.layers", "post_attention_layernorm", "post_feedforward_layernorm",
    "self_attn.o_proj", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.down_proj", "model.norm", post_attn_norm="post_attention_layernorm",
    mlp_norm="pre_feedforward_layernorm", post_mlp_norm="post_feedforward_layernorm",
)  # fmt: skip

LAYOUTS: dict[str, Layout] = {
    "gpt2": Layout(
        "transformer.h", "attn", "mlp", "attn.c_proj", ("attn.c_attn",), "mlp.c_proj",
        "transformer.ln_f", fused="gpt2", mlp_norm="ln_2",
    ),
    "gptj": Layout(
        "transformer.h", "attn", "mlp", "attn.out_proj",
        ("attn.q_proj", "attn.k_proj", "attn.v_proj"), "mlp.fc_out", "transformer.ln_f",
        parallel=True, mlp_norm="ln_1",
    ),
    "opt": Layout(
        "model.decoder.layers", "self_attn", "fc2", "self_attn.out_proj",
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "fc2",
        "model.decoder.final_layer_norm", mlp_norm="final_layer_norm",
        mlp=("fc1", "activation_fn", "fc2"),
    ),
    "gpt_neox": Layout(
        "gpt_neox.layers", "attention", "mlp", "attention.dense",
        ("attention.query_key_value",), "mlp.dense_4h_to_h", "gpt_neox.final_layer_norm",
        fused="neox", parallel=True,
    ),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _GEMMA2,
    "gemma3": _GEMMA2,
    "phi3": Layout(
        "model.layers", "self_attn", "mlp", "self_attn.o_proj", ("self_attn.qkv_proj",),
        "mlp.down_proj", "model.norm", fused="phi3",
    ),
    "olmo": _LLAMA,
    "olmo2": Layout(
        "model.layers", "post_attention_layernorm", "post_feedforward_layernorm",
        "self_attn.o_proj", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        "mlp.down_proj", "model.norm", post_attn_norm="post_attention_layernorm",
        mlp_norm=None, post_mlp_norm="post_feedforward_layernorm",
    ),
    "bert": Layout(
        "bert.encoder.layer", "attention", "output.dense", "attention.output.dense",
        ("attention.self.query", "attention.self.key", "attention.self.value"),
        "output.dense", None, post_ln=True,
    ),
}  # fmt: skip


def _get(root: torch.nn.Module, path: str) -> torch.nn.Module:
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


# ---------------------------------------------------------------------------------------
# Attention patterns: an attention function wrapping each model's own eager attention.

_PATTERN_HOOKS: dict[int, Patch] = {}  # id(attention module) -> hook on its pattern
_SCORE_READS: dict[int, Callable[[Tensor, Tensor, float], None]] = {}  # -> query, key, scale


def _reference_attention(module, query, key, value, attention_mask, **kwargs):
    eager = sys.modules[type(module).__module__].eager_attention_forward
    read = _SCORE_READS.get(id(module))
    if read is not None:  # as the scores read them: rotated, normed, [batch, head, pos, d]
        scaling = kwargs.get("scaling")
        read(query.detach(), key.detach(), query.shape[-1] ** -0.5 if scaling is None else scaling)
    out, weights = eager(module, query, key, value, attention_mask, **kwargs)
    hook = _PATTERN_HOOKS.get(id(module))
    if hook is not None:
        new = hook(weights)
        if new is not weights:
            rep = query.shape[1] // value.shape[1]
            out = (new.to(value.dtype) @ value.repeat_interleave(rep, dim=1)).transpose(1, 2)
            out = out.contiguous()
            weights = new
    return out, weights


def _register_attention() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register("mi_reference", _reference_attention)
    AttentionMaskInterface.register("mi_reference", eager_mask)  # masks as for eager
    return "mi_reference"


def load_hf(model_class: str, directory: str) -> torch.nn.Module:
    """The Hugging Face model of a saved directory, in eval mode, with the reference
    attention (each model's eager attention, patterns hookable)."""
    import transformers

    name = _register_attention()
    model = getattr(transformers, model_class).from_pretrained(
        directory, attn_implementation="eager"
    )
    model.set_attn_implementation(name)  # every sub-model too
    return model.eval()


# ---------------------------------------------------------------------------------------
# Norms with a frozen scale.


def norm_eps(module: torch.nn.Module) -> float:
    for attr in ("eps", "variance_epsilon"):
        value = getattr(module, attr, None)
        if isinstance(value, float):
            return value
    return 1e-5  # OLMo's weightless LayerNorm


def centres(module: torch.nn.Module) -> bool:
    return "rms" not in type(module).__name__.lower()


def norm_scale(module: torch.nn.Module, x: Tensor) -> Tensor:
    """The norm's divisor for ``x``: sqrt(mean((x - centre)^2) + eps), ``[..., 1]``."""
    x = x.double()
    if centres(module):
        x = x - x.mean(-1, keepdim=True)
    return (x.pow(2).mean(-1, keepdim=True) + norm_eps(module)).sqrt()


def frozen_norm(module: torch.nn.Module, x: Tensor, scale: Tensor, bias: bool = True) -> Tensor:
    """``module(x)`` as if divided by ``scale`` instead of ``x``'s own scale: the norm's
    output minus its bias, rescaled, plus the bias (``bias=False``: without it, for a
    share of a sum)."""
    b = getattr(module, "bias", None)
    b = 0.0 if b is None else b.double()
    run_in = torch.float32 if x.dtype == torch.float64 else x.dtype  # the module's own
    out = module.forward(x.to(run_in)).double() - b
    out = out * norm_scale(module, x) / scale.double()
    return out + b if bias else out


# ---------------------------------------------------------------------------------------
# Hooked runs.


@dataclass
class Run:
    """One hooked forward pass: the logits and every captured site, ``[layer, ...]``."""

    logits: Tensor
    sites: dict[str, list[Tensor]]


class HFReference:
    """Reads and patches sites of a Hugging Face model with plain hooks.

    Sites, each in its natural view: ``resid_pre``, ``resid_mid``, ``resid_post``,
    ``attn_out``, ``mlp_out`` ``[batch, pos, d_model]``; ``mlp_post`` ``[batch, pos,
    d_mlp]``; ``z``, ``q`` ``[batch, pos, head, d_head]``; ``k``, ``v`` ``[batch, pos,
    kv_head, d_head]``; ``pattern`` ``[batch, head, query, key]``; ``rot_q``, ``rot_k``:
    queries (times the attention's scaling) and keys as the scores read them (rotated,
    normed; read only).
    """

    def __init__(self, model: torch.nn.Module, architecture: str):
        self.model = model
        self.layout = LAYOUTS[architecture]
        self.layers = list(_get(model, self.layout.layers))
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads

    # -- module access -----------------------------------------------------------------
    def block(self, layer: int, path: str) -> torch.nn.Module:
        return _get(self.layers[layer], path)

    def final_norm(self) -> torch.nn.Module | None:
        path = self.layout.final_norm
        return None if path is None else _get(self.model, path)

    def mlp_write(self, layer: int, x: Tensor) -> Tensor:
        """What block ``layer``'s MLP adds to residual vectors ``x``."""
        lay = self.layout
        h = x if lay.mlp_norm is None else self.block(layer, lay.mlp_norm)(x)
        for path in lay.mlp:
            h = self.block(layer, path)(h)
        return h if lay.post_mlp_norm is None else self.block(layer, lay.post_mlp_norm)(h)

    def readout(self, hidden: Tensor) -> Tensor:
        """The model's output head on residual vectors: final norm, unembedding and the
        final soft-cap (causal LMs); BERT's MLM head."""
        if self.layout.post_ln:
            return self.model.cls(hidden)
        logits = self.model.get_output_embeddings()(self.final_norm()(hidden))
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return logits if not cap else cap * torch.tanh(logits / cap)

    def o_weight(self, layer: int) -> Tensor:
        """``[head, d_head, d_model]``: each head's slice of the output projection."""
        o = self.block(layer, self.layout.o_proj)
        w = o.weight if type(o).__name__ != "Conv1D" else o.weight.T  # Linear: [out, in]
        return w.T.reshape(self.n_heads, self.d_head, -1)

    def v_weight(self, layer: int) -> Tensor:
        """``[kv_head, d_model, d_head]``: the value projection's weight per key/value head."""
        lay, d, kv = self.layout, self.d_head, self.n_kv
        if lay.fused is None:
            w = self.block(layer, lay.qkv[2]).weight.T  # [d_model, kv * d]
            return w.reshape(-1, kv, d).transpose(0, 1)
        fused = self.block(layer, lay.qkv[0])
        w = fused.weight if lay.fused == "gpt2" else fused.weight.T  # [d_model, out]
        if lay.fused == "neox":
            return w.reshape(w.shape[0], self.n_heads, 3, d)[:, :, 2].transpose(0, 1)
        start = self.n_heads * d + (kv * d if lay.fused == "phi3" else self.n_heads * d)
        return w[:, start : start + kv * d].reshape(-1, kv, d).transpose(0, 1)

    # -- hooked forward ----------------------------------------------------------------
    def run(
        self,
        tokens: Tensor,
        mask: Tensor | None = None,
        capture: tuple[str, ...] = (),
        patches: dict[tuple[str, int], Patch] | None = None,
        final: Callable[[Tensor, Tensor], Tensor] | None = None,
        leaves: dict[tuple[str, int], Tensor] | None = None,
    ) -> Run:
        """Run with ``patches[(site, layer)]`` applied and ``capture`` read (after any
        patch at that site). ``final(norm_input, norm_output)`` replaces the final norm's
        output. ``leaves`` receives each patched site's value as a tensor of the autograd
        graph (the first made a leaf), for gradients; give ``patches`` that return their
        input."""
        patches = dict(patches or {})
        got: dict[str, list[Tensor | None]] = {s: [None] * len(self.layers) for s in capture}
        handles = []

        def site_fn(site: str, layer: int) -> Callable[[Tensor], Tensor]:
            patch = patches.get((site, layer))

            def apply(x: Tensor) -> Tensor:
                if patch is not None:
                    x = patch(x)
                    if leaves is not None:
                        if not x.requires_grad:
                            x = x.detach().requires_grad_(True)
                        leaves[(site, layer)] = x
                if site in got:
                    got[site][layer] = x if leaves is not None else x.detach().clone()
                return x

            return apply

        try:
            for layer in range(len(self.layers)):
                handles += self._hooks(layer, site_fn)
            if final is not None:
                handles.append(
                    self.final_norm().register_forward_hook(lambda m, a, out: final(a[0], out))
                )
            kw = {} if mask is None else {"attention_mask": mask}
            logits = self.model(input_ids=tokens, **kw).logits
        finally:
            for h in handles:
                h.remove()
            _PATTERN_HOOKS.clear()
            _SCORE_READS.clear()
        return Run(logits, {s: v for s, v in got.items()})  # type: ignore[misc]

    def _hooks(self, layer: int, site_fn) -> list:
        lay, block = self.layout, self.layers[layer]
        state: dict[str, Tensor] = {}
        handles = []
        pre, post, mid = site_fn("resid_pre", layer), site_fn("resid_post", layer), None
        if not lay.parallel:
            mid = site_fn("resid_mid", layer)

        def on_block_in(module, args, kwargs):
            if args:
                x = pre(args[0])
                state["pre"] = x
                return (x, *args[1:]), kwargs
            x = pre(kwargs["hidden_states"])
            state["pre"] = x
            return args, {**kwargs, "hidden_states": x}

        def on_block_out(module, args, kwargs, out):
            if isinstance(out, tuple):
                return (post(out[0]), *out[1:])
            return post(out)

        handles.append(block.register_forward_pre_hook(on_block_in, with_kwargs=True))
        handles.append(block.register_forward_hook(on_block_out, with_kwargs=True))
        attn_out = site_fn("attn_out", layer)

        def on_attn_write(module, args, out):
            first = out[0] if isinstance(out, tuple) else out
            first = attn_out(first)
            if mid is not None:  # the residual after attention, patched through what it adds
                base = torch.zeros_like(first) if lay.post_ln else state["pre"]
                first = mid(base + first) - base
            return (first, *out[1:]) if isinstance(out, tuple) else first

        handles.append(self.block(layer, lay.attn_write).register_forward_hook(on_attn_write))
        mlp_out, neurons = site_fn("mlp_out", layer), site_fn("mlp_post", layer)

        def natural(fn, x: Tensor) -> Tensor:  # OPT flattens [batch, pos] inside its MLP
            lead = state["pre"].shape[:-1]
            return fn(x.reshape(*lead, x.shape[-1])).reshape(x.shape)

        handles.append(
            self.block(layer, lay.mlp_write).register_forward_hook(
                lambda m, a, out: natural(mlp_out, out[0] if isinstance(out, tuple) else out)
            )
        )
        handles.append(
            self.block(layer, lay.down).register_forward_pre_hook(
                lambda m, a: (natural(neurons, a[0]),)
            )
        )
        handles += self._head_hooks(layer, site_fn)
        return handles

    def _head_hooks(self, layer: int, site_fn) -> list:
        lay, d, h, kv = self.layout, self.d_head, self.n_heads, self.n_kv
        z = site_fn("z", layer)

        def on_o_in(module, args):
            x = args[0]
            return (z(x.reshape(*x.shape[:-1], h, d)).reshape(x.shape),)

        handles = [self.block(layer, lay.o_proj).register_forward_pre_hook(on_o_in)]
        q, k, v = (site_fn(s, layer) for s in ("q", "k", "v"))
        if lay.fused is None:
            for path, fn, n in zip(lay.qkv, (q, k, v), (h, kv, kv), strict=True):

                def on_proj(module, args, out, fn=fn, n=n):
                    return fn(out.reshape(*out.shape[:-1], n, d)).reshape(out.shape)

                handles.append(self.block(layer, path).register_forward_hook(on_proj))
        else:
            handles.append(
                self.block(layer, lay.qkv[0]).register_forward_hook(
                    lambda m, a, out: self._fused(out, q, k, v)
                )
            )
        attention = self.block(layer, lay.qkv[0].rsplit(".", 1)[0])  # what the attention
        _PATTERN_HOOKS[id(attention)] = site_fn("pattern", layer)  # function receives
        rot_q, rot_k = site_fn("rot_q", layer), site_fn("rot_k", layer)

        def read(query: Tensor, key: Tensor, scaling: float) -> None:  # scores: q . k * s
            rot_q(query.transpose(1, 2) * scaling)
            rot_k(key.transpose(1, 2))

        _SCORE_READS[id(attention)] = read
        return handles

    def _fused(self, out: Tensor, q, k, v) -> Tensor:
        lay, d, h, kv = self.layout, self.d_head, self.n_heads, self.n_kv
        lead = out.shape[:-1]
        if lay.fused == "neox":
            per_head = out.reshape(*lead, h, 3, d)
            parts = [fn(per_head[..., i, :]) for i, fn in enumerate((q, k, v))]
            return torch.stack(parts, -2).reshape(out.shape)
        n_kv = kv if lay.fused == "phi3" else h
        sizes = [h * d, n_kv * d, n_kv * d]
        chunks = out.split(sizes, dim=-1)
        parts = [
            fn(c.reshape(*lead, n, d)).reshape(*lead, n * d)
            for c, fn, n in zip(chunks, (q, k, v), (h, n_kv, n_kv), strict=True)
        ]
        return torch.cat(parts, -1)

    # -- derived sites -------------------------------------------------------------------
    def value_bias(self, layer: int) -> Tensor:
        """``[head, d_head]``: what TransformerLens folds out of each head's ``z``: the
        value of a residual the pre-attention norm maps to its bias (the value bias plus
        the norm's bias through the value projection), per key/value head, expanded."""
        lay, d = self.layout, self.d_head
        norm_path = _pre_attention_norm(self.layers[layer])
        zero = torch.zeros(1, self.model.config.hidden_size)
        x = zero if norm_path is None or lay.post_ln else self.block(layer, norm_path)(zero)
        v = torch.einsum("nm,kmd->knd", x, self.v_weight(layer))[:, 0]  # [kv, d_head]
        proj = self.block(layer, lay.qkv[2] if lay.fused is None else lay.qkv[0])
        if getattr(proj, "bias", None) is not None:
            b = proj.bias.detach()
            if lay.fused is None:
                v = v + b.reshape(-1, d)
            elif lay.fused == "neox":
                v = v + b.reshape(self.n_heads, 3, d)[:, 2]
            else:
                start = self.n_heads * d + (
                    self.n_kv * d if lay.fused == "phi3" else self.n_heads * d
                )
                v = v + b[start:].reshape(-1, d)
        return v.repeat_interleave(self.n_heads // v.shape[0], dim=0)

    def head_results(self, run_z: Tensor, layer: int) -> Tensor:
        """Each head's write ``[batch, pos, head, d_model]``: ``z_h`` through its slice of
        the output projection and, where attention has a post-norm, that norm linearised
        at the scale of the whole attention output (so the heads sum to it)."""
        w = self.o_weight(layer).double()
        share = torch.einsum("bphd,hdm->bphm", run_z.double(), w)
        norm_path = self.layout.post_attn_norm
        if norm_path is None:
            return share
        norm = self.block(layer, norm_path)  # (no output-projection bias in these models)
        scale = norm_scale(norm, share.sum(-2))[..., None, :]  # [batch, pos, 1, 1]
        return frozen_norm(norm, share, scale, bias=False)


# ---------------------------------------------------------------------------------------
# Reference analyses.

AXES = {  # mi_cluster's site kinds: (site, axes indexing a patch)
    "resid_pre": ("resid_pre", ("pos",)),
    "resid_mid": ("resid_mid", ("pos",)),
    "resid_post": ("resid_post", ("pos",)),
    "attn_out": ("attn_out", ("pos",)),
    "mlp_out": ("mlp_out", ("pos",)),
    "attn_out_all": ("attn_out", ()),
    "mlp_out_all": ("mlp_out", ()),
    "head_out": ("z", ("head",)),
    "head_out_by_pos": ("z", ("pos", "head")),
    "q": ("q", ("head",)),
    "k": ("k", ("head",)),
    "v": ("v", ("head",)),
    "q_by_pos": ("q", ("pos", "head")),
    "k_by_pos": ("k", ("pos", "head")),
    "v_by_pos": ("v", ("pos", "head")),
    "pattern": ("pattern", ("head",)),
}

Metric = Callable[[Tensor], Tensor]  # logits [row, pos, vocab] -> [row]


def _write(x: Tensor, rows: slice, site: str, axes: tuple[str, ...], idx: tuple, src: Tensor):
    """Write ``src``'s values at one site index into ``x``'s ``rows``."""
    if not axes:
        x[rows] = src
    elif site == "pattern":
        x[rows, idx[0]] = src[:, idx[0]]
    elif axes == ("pos",):
        x[rows, idx[0]] = src[:, idx[0]]
    elif axes == ("head",):
        x[rows, :, idx[0]] = src[:, :, idx[0]]
    else:
        x[rows, idx[0], idx[1]] = src[:, idx[0], idx[1]]


class Analyses:
    """Patching, attribution and attributions computed on the Hugging Face model alone."""

    def __init__(self, ref: HFReference):
        self.ref = ref

    def _sizes(self, site: str, axes: tuple[str, ...], n_pos: int) -> list[int]:
        heads = self.ref.n_kv if site in ("k", "v") else self.ref.n_heads
        return [n_pos if a == "pos" else heads for a in axes]

    def sweep(self, clean: Tensor, corrupted: Tensor, kind: str, direction: str, metric: Metric):
        """Activation patching of every site of ``kind``: ``[layer, *axes, prompt]``."""
        import itertools

        site, axes = AXES[kind]
        base, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
        with torch.no_grad():
            src = self.ref.run(source, capture=(site,)).sites[site]
        n, sizes = base.shape[0], self._sizes(site, axes, base.shape[1])
        out = []
        for layer in range(len(self.ref.layers)):
            grid = list(itertools.product(*[range(k) for k in sizes]))

            def patch(x: Tensor, grid=grid, layer=layer) -> Tensor:
                x = x.clone()
                for g, idx in enumerate(grid):
                    _write(x, slice(g * n, (g + 1) * n), site, axes, idx, src[layer])
                return x

            with torch.no_grad():
                run = self.ref.run(base.repeat(len(grid), 1), patches={(site, layer): patch})
            out.append(metric(run.logits).view(*sizes, n) if sizes else metric(run.logits))
        return torch.stack(out)

    def path_to(
        self, clean: Tensor, corrupted: Tensor, metric: Metric, receivers=None, frozen=False
    ) -> Tensor:
        """Path patching (noising: source corrupted, base clean) of every sender head to the
        logits, or to ``receivers`` ``[(layer, head, "q" | "k" | "v")]``: ``[layer, head,
        prompt]``."""
        ref, n = self.ref, clean.shape[0]
        n_layers, h = len(ref.layers), ref.n_heads
        with torch.no_grad():
            base = ref.run(clean, capture=("z", "q", "k", "v", "resid_post"))
            source = ref.run(corrupted, capture=("z",))
        final_scale = None
        if frozen:
            final_scale = norm_scale(ref.final_norm(), base.sites["resid_post"][-1])
        out = torch.empty(n_layers, h, n)
        for sender in range(n_layers):
            patches = {}
            for layer in range(sender, n_layers):

                def freeze(z: Tensor, layer=layer, sender=sender) -> Tensor:
                    new = base.sites["z"][layer].repeat(h, 1, 1, 1)
                    if layer == sender:
                        for head in range(h):
                            rows = slice(head * n, (head + 1) * n)
                            new[rows, :, head] = source.sites["z"][layer][:, :, head]
                    return new

                patches[("z", layer)] = freeze
            rows = clean.repeat(h, 1)
            final = None
            if final_scale is not None:
                scale = final_scale.repeat(h, 1, 1)

                def final(x: Tensor, out: Tensor, scale=scale) -> Tensor:
                    return frozen_norm(ref.final_norm(), x, scale).to(out)

            with torch.no_grad():
                if receivers is None:
                    logits = ref.run(rows, patches=patches, final=final).logits
                else:
                    logits = self._into_receivers(rows, patches, receivers, base, h)
            out[sender] = metric(logits).view(h, n)
        return out

    def _into_receivers(self, rows, patches, receivers, base, h) -> Tensor:
        sites = tuple(sorted({w for _, _, w in receivers}))
        step3 = self.ref.run(rows, capture=sites, patches=patches)
        heads: dict[tuple[str, int], list[int]] = {}
        for layer, head, which in receivers:
            heads.setdefault((which, layer), []).append(head)
        step4 = {}
        for (which, layer), chosen in heads.items():
            got = step3.sites[which][layer]

            def put(x: Tensor, got=got, chosen=chosen) -> Tensor:
                x = x.clone()
                x[:, :, chosen] = got[:, :, chosen]
                return x

            step4[(which, layer)] = put
        return self.ref.run(rows, patches=step4).logits

    def attribution(self, clean: Tensor, corrupted: Tensor, kind: str, metric: Metric) -> Tensor:
        """Attribution patching (denoising) by autograd on the Hugging Face model:
        ``m(corrupted) + (a_clean - a_corrupted) . dm/da``, ``[layer, *axes, prompt]``."""
        site, axes = AXES[kind]
        n_layers = len(self.ref.layers)
        with torch.no_grad():
            src = self.ref.run(clean, capture=(site,)).sites[site]
        leaves: dict = {}
        keep = {(site, layer): (lambda x: x) for layer in range(n_layers)}
        with torch.enable_grad():
            run = self.ref.run(corrupted, patches=keep, leaves=leaves)
            value = metric(run.logits)
            tensors = [leaves[(site, layer)] for layer in range(n_layers)]
            grads = torch.autograd.grad(value.sum(), tensors, allow_unused=True)
        out = []
        for layer, (t, g) in enumerate(zip(tensors, grads, strict=True)):
            g = torch.zeros_like(t) if g is None else g
            prod = ((src[layer] - t.detach()) * g).double()
            if not axes:
                red = prod.flatten(1).sum(1)
            elif axes == ("pos",):
                red = prod.sum(-1)
            elif axes == ("head",):
                red = prod.sum((1, 3))
            else:
                red = prod.sum(-1)  # [prompt, pos, head]
            out.append(value.detach().double().reshape(-1, *[1] * (red.ndim - 1)) + red)
        return torch.stack(out).movedim(1, -1)

    def dla(
        self, tokens: Tensor, end: Tensor, io: Tensor, s: Tensor, value_bias: bool = True
    ) -> Tensor:
        """Each head's direct logit attribution at ``end``: ``[layer, head, prompt]``.
        ``value_bias=False``: the heads' value biases left out of their writes (as
        TransformerLens folds them into the attention output's bias)."""
        ref = self.ref
        rows = torch.arange(tokens.shape[0])
        with torch.no_grad():
            run = ref.run(tokens, capture=("z", "resid_post"))
            final = ref.final_norm()
            scale = norm_scale(final, run.sites["resid_post"][-1][rows, end])[:, None]
            w = ref.model.get_output_embeddings().weight.double()  # [vocab, d]
            direction = w[io] - w[s]  # [prompt, d]
            out = []
            for layer in range(len(ref.layers)):
                z = run.sites["z"][layer][rows, end][:, None]
                if not value_bias:
                    z = z - ref.value_bias(layer).to(z)
                heads = ref.head_results(z, layer)[:, 0]
                normed = frozen_norm(final, heads, scale, bias=False)  # [prompt, head, d]
                out.append((normed * direction[:, None]).sum(-1).T)
        return torch.stack(out)

    def copy_hits(self, x: Tensor, ids: Tensor, k: int, negative: bool) -> Tensor:
        """Whether each head copies each name, ``x``: its residual vector ``[name, d]``."""
        ref, lay = self.ref, self.ref.layout
        out = []
        with torch.no_grad():
            for layer in range(len(ref.layers)):
                norm_path = _pre_attention_norm(ref.layers[layer])
                normed = x  # the norm's scale and weight, not its bias (a value bias once folded)
                if norm_path is not None:
                    norm = ref.block(layer, norm_path)
                    normed = norm(x) - norm(torch.zeros_like(x))
                w_v = ref.v_weight(layer).double()  # [kv, d, dh]
                v = torch.einsum("nm,kmd->knd", normed.double(), w_v)
                v = v.repeat_interleave(ref.n_heads // ref.n_kv, dim=0)
                head_out = torch.einsum("hnd,hdm->hnm", v, ref.o_weight(layer).double())
                head_out = (-head_out if negative else head_out).to(x.dtype)
                if lay.post_attn_norm is not None:
                    head_out = ref.block(layer, lay.post_attn_norm)(head_out)
                logits = ref.model.get_output_embeddings()(ref.final_norm()(head_out))
                top = logits.topk(k, dim=-1).indices
                out.append((top == ids[None, :, None]).any(-1))
        return torch.stack(out)


def _pre_attention_norm(block: torch.nn.Module) -> str | None:
    for name in ("input_layernorm", "ln_1", "self_attn_layer_norm"):
        if hasattr(block, name):
            return name
    return None  # OLMo 2: no norm before attention
