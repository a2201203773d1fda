"""Collecting activations: the residual stream (and per-head outputs) at every layer, at
the token positions the researcher cares about, over many prompts.

Memory scales with what is kept, not with what the model computes: only the hooks that are
needed are attached, each reduces its activation to the chosen positions inside the hook
and copies that to a preallocated host buffer, so 10,000 prompts through a 12-layer model
keep about ``[layer, prompt, d_model]`` floats.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.core.atomic import atomic_path
from mi_cluster.core.display import Summary, shape_of, short_list, summary_html, summary_repr
from mi_cluster.core.hooks import SITES, hook_name
from mi_cluster.core.model_info import architecture_name, model_device, model_info
from mi_cluster.core.progress import progress_bar
from mi_cluster.core.prompts import TokenizedPrompt, get_tokenizer, tokenize_prompt, word_positions
from mi_cluster.core.protocols import HookedModel
from mi_cluster.core.writes import RESID_MID_REFUSAL, HeadWriter, NotAdditiveError, is_additive

__all__ = [
    "Activations",
    "CollectionPlan",
    "Positions",
    "SITES",
    "as_positions",
    "collect",
    "collect_many",
    "hook_name",
    "pad_tokens",
    "plan_collection",
    "site_hooks",
]

Site = Literal[
    "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post", "result", "z"
]


def site_hooks(site: str, n_layers: int) -> list[tuple[str, str]]:
    """``(hook name, layer label)`` for each layer of ``site``, in order.

    ``resid_post`` starts with the embedding output (``blocks.0.hook_resid_pre``, labelled
    ``"embed"``) followed by each block's output, so it has ``n_layers + 1`` entries and
    entry ``i < n_layers`` is Hugging Face's ``hidden_states[i]`` (its last entry is the
    final norm's output, not the last block's). How exactly depends on the weight
    processing (:func:`~mi_cluster.models.loading.load_model`): with ``processing="hf"`` it is
    equal; with the default TransformerLens processing, LayerNorm models (GPT-2, GPT-J,
    OPT, GPT-NeoX, OLMo) write into the residual stream with centred weights, so entry
    ``i`` equals ``hidden_states[i]`` minus its mean over ``d_model`` (the component every
    LayerNorm removes); RMSNorm models (Llama, Mistral, Qwen, Gemma, Phi-3, OLMo 2) and
    BERT are equal in both.
    """
    if site == "resid_post":
        return [(hook_name("resid_pre", 0), "embed")] + [
            (hook_name("resid_post", layer), f"L{layer}") for layer in range(n_layers)
        ]
    if site == "resid_pre":
        return [(hook_name("resid_pre", 0), "embed")] + [
            (hook_name("resid_pre", layer), f"L{layer} pre") for layer in range(1, n_layers)
        ]
    suffix = {"resid_mid": " mid"}.get(site, "")
    return [(hook_name(site, layer), f"L{layer}{suffix}") for layer in range(n_layers)]


@dataclass(frozen=True)
class Positions:
    """Which token positions to keep from each prompt, and how to reduce them.

    Use the constructors:
        ``Positions.last()``: the last real token (not padding, not a trailing special
            token such as BERT's ``[SEP]``). One row per prompt.
        ``Positions.mean(exclude_special=True)``: the mean over the prompt's tokens,
            never padding, and without BOS/CLS/SEP unless ``exclude_special=False``.
        ``Positions.all(exclude_special=False)``: every token; one row per token.
        ``Positions.word("lamp", subtoken="last", occurrence=0)``: the named word (one
            word for all prompts, or one per prompt); a word split into several tokens is
            reduced to its first, last or mean sub-token.

    Fields:
        kind: ``"last"``, ``"mean"``, ``"all"`` or ``"word"``.
        words: for ``"word"``, one word for every prompt or a tuple with one per prompt.
        subtoken: for ``"word"``, how sub-tokens are reduced.
        occurrence: for ``"word"``, which mention (0 first, -1 last).
        exclude_special: for ``"mean"`` and ``"all"``, drop special tokens.
        case_sensitive: for ``"word"``, match capitalisation exactly.
    """

    kind: Literal["last", "mean", "all", "word"]
    words: str | tuple[str, ...] | None = None
    subtoken: Literal["first", "last", "mean"] = "last"
    occurrence: int = 0
    exclude_special: bool = True
    case_sensitive: bool = True

    @classmethod
    def last(cls) -> Positions:
        """The last token of each prompt."""
        return cls("last")

    @classmethod
    def mean(cls, exclude_special: bool = True) -> Positions:
        """The mean over each prompt's tokens (special tokens left out by default)."""
        return cls("mean", exclude_special=exclude_special)

    @classmethod
    def all(cls, exclude_special: bool = False) -> Positions:
        """Every token of each prompt, one row each."""
        return cls("all", exclude_special=exclude_special)

    @classmethod
    def word(
        cls,
        words: str | Sequence[str],
        subtoken: Literal["first", "last", "mean"] = "last",
        occurrence: int = 0,
        case_sensitive: bool = True,
    ) -> Positions:
        """The tokens of a word in each prompt: one word for all prompts or one per prompt."""
        if subtoken not in ("first", "last", "mean"):
            raise ValueError(f"subtoken must be 'first', 'last' or 'mean', got {subtoken!r}")
        if isinstance(occurrence, bool) or not isinstance(occurrence, int):
            raise ValueError(
                f"occurrence must be an int (0 the first mention, -1 the last), got {occurrence!r}"
            )
        if isinstance(words, str):
            w: str | tuple[str, ...] = words
        elif isinstance(words, Sequence) and words:
            w = tuple(words)
        else:
            raise ValueError(f"Positions.word needs a word or one word per prompt, got {words!r}")
        bad = [
            x for x in ([w] if isinstance(w, str) else w) if not isinstance(x, str) or not x.strip()
        ]
        if bad:
            raise ValueError(
                f"Positions.word: every word must be a non-empty string, got {bad[:3]}"
            )
        return cls("word", w, subtoken, occurrence, case_sensitive=case_sensitive)

    def describe(self) -> str:
        """The position rule in words."""
        if self.kind == "word":
            w = self.words if isinstance(self.words, str) else "per-prompt words"
            return f"word {w!r} ({self.subtoken} sub-token, occurrence {self.occurrence})"
        if self.kind in ("mean", "all"):
            return f"{self.kind} tokens" + (" excluding special" if self.exclude_special else "")
        return "last token"

    def rows(self, prompts: Sequence[TokenizedPrompt]) -> list[tuple[int, tuple[int, ...]]]:
        """``(prompt index, positions averaged into the row)`` for every output row."""
        words: Sequence[str] = ()
        if self.kind == "word":
            if isinstance(self.words, str):
                words = [self.words] * len(prompts)
            elif self.words is not None and len(self.words) == len(prompts):
                words = self.words
            else:
                n = 0 if self.words is None else len(self.words)
                raise ValueError(f"Positions.word got {n} words for {len(prompts)} prompts")
        out: list[tuple[int, tuple[int, ...]]] = []
        for i, tp in enumerate(prompts):
            real = [p for p in range(len(tp)) if not (self.exclude_special and tp.special[p])]
            if self.kind == "last":
                content = [p for p in range(len(tp)) if not tp.special[p]]
                if not content:
                    raise ValueError(f"prompt {tp.text!r} has no non-special token")
                out.append((i, (content[-1],)))
            elif self.kind == "mean":
                if not real:
                    raise ValueError(f"prompt {tp.text!r} has no token to average")
                out.append((i, tuple(real)))
            elif self.kind == "all":
                out.extend((i, (p,)) for p in real)
            elif self.kind == "word":
                pos = word_positions(tp, words[i], self.occurrence, self.case_sensitive)
                pick = {"first": pos[:1], "last": pos[-1:], "mean": pos}[self.subtoken]
                out.append((i, pick))
            else:
                raise ValueError(f"unknown Positions kind {self.kind!r}")
        return out


def as_positions(positions: Positions | str) -> Positions:
    """``positions`` as a :class:`Positions` (``"last"``, ``"mean"``, ``"all"`` named)."""
    if isinstance(positions, Positions):
        return positions
    makers: dict[str, Callable[[], Positions]] = {
        "last": Positions.last,
        "mean": Positions.mean,
        "all": Positions.all,
    }
    if positions not in makers:
        raise ValueError(
            f"positions must be a Positions or one of {sorted(makers)}, got {positions!r}"
        )
    return makers[positions]()


@dataclass(frozen=True)
class Activations:
    """Activations of one site at every layer, one row per kept position.

    Fields:
        site: ``"resid_post"``, ``"resid_pre"``, ``"resid_mid"``, ``"attn_out"``,
            ``"mlp_out"``, ``"result"`` (per head, in d_model) or ``"z"`` (per head, d_head).
        tensor: ``Float[Tensor, "layer prompt d_model"]``, or ``"layer prompt head d"``
            for per-head sites. "prompt" is one row per prompt (``last``, ``mean``,
            ``word``) or one per token (``all``).
        layer_labels: a label per layer (``"embed"``, ``"L0"``, ...).
        hook_names: the TransformerLens hook each layer was read from.
        prompts: the prompts, in the order given.
        prompt_index: for each row, the index of its prompt.
        positions: for each row, the token positions (BOS = 0) reduced into it.
        tokens: for each row, the token string(s) at those positions.
        position_spec: a description of the position selection.
        model_name: the model's name.
    """

    site: str
    tensor: Float[Tensor, "layer prompt ..."]
    layer_labels: tuple[str, ...]
    hook_names: tuple[str, ...]
    prompts: tuple[str, ...]
    prompt_index: tuple[int, ...]
    positions: tuple[tuple[int, ...], ...]
    tokens: tuple[tuple[str, ...], ...]
    position_spec: str
    model_name: str

    def __post_init__(self) -> None:
        n_layers, n_rows = self.tensor.shape[:2]
        lengths = {
            "layer_labels": (len(self.layer_labels), n_layers),
            "hook_names": (len(self.hook_names), n_layers),
            "prompt_index": (len(self.prompt_index), n_rows),
            "positions": (len(self.positions), n_rows),
            "tokens": (len(self.tokens), n_rows),
        }
        for name, (got, want) in lengths.items():
            if got != want:
                raise ValueError(f"Activations.{name} has {got} entries, tensor implies {want}")

    def summary(self) -> Summary:
        """What the result shows first: site, model, shape, layers, prompts, positions."""
        return Summary(
            "Activations",
            (
                ("site", self.site),
                ("model", self.model_name),
                ("tensor", shape_of(self.tensor, ["layer", "row"])),
                ("layers", short_list(self.layer_labels)),
                ("prompts", str(len(self.prompts))),
                ("positions", self.position_spec),
            ),
        )

    def __repr__(self) -> str:
        return summary_repr(self.summary())

    def _repr_html_(self) -> str:
        return summary_html(self.summary())

    @property
    def n_layers(self) -> int:
        """Layers (the first axis of ``tensor``)."""
        return self.tensor.shape[0]

    @property
    def n_rows(self) -> int:
        """Rows (the second axis of ``tensor``)."""
        return self.tensor.shape[1]

    @property
    def row_labels(self) -> list[str]:
        """A short label per row: the token(s) read."""
        return ["".join(t).strip() or repr("".join(t)) for t in self.tokens]

    def layer(self, which: int | str) -> Float[Tensor, "prompt ..."]:
        """One layer's rows, by index or label."""
        if isinstance(which, str):
            if which not in self.layer_labels:
                raise KeyError(f"no layer {which!r}; layers are {self.layer_labels}")
            which = self.layer_labels.index(which)
        return self.tensor[which]

    def _metadata(self) -> dict[str, Any]:
        return {
            "format": "mi_cluster.activations/1",
            "site": self.site,
            "layer_labels": list(self.layer_labels),
            "hook_names": list(self.hook_names),
            "prompts": list(self.prompts),
            "prompt_index": list(self.prompt_index),
            "positions": [list(p) for p in self.positions],
            "tokens": [list(t) for t in self.tokens],
            "position_spec": self.position_spec,
            "model_name": self.model_name,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write to one ``.safetensors`` file (tensor) whose header carries the metadata
        as JSON; the write is atomic."""
        from safetensors.torch import save_file

        target = Path(path)
        meta = {"mi_cluster": json.dumps(self._metadata())}
        with atomic_path(target) as tmp:
            save_file({"tensor": self.tensor.detach().cpu().contiguous()}, str(tmp), metadata=meta)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Activations:
        """Read a file written by :meth:`save`."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            if "mi_cluster" not in header:
                raise ValueError(f"{path} is not an mi_cluster activations file")
            meta = json.loads(header["mi_cluster"])
            tensor = f.get_tensor("tensor")
        if meta.get("format") != "mi_cluster.activations/1":
            raise ValueError(f"{path}: unknown format {meta.get('format')!r}")
        return cls(
            site=meta["site"],
            tensor=tensor,
            layer_labels=tuple(meta["layer_labels"]),
            hook_names=tuple(meta["hook_names"]),
            prompts=tuple(meta["prompts"]),
            prompt_index=tuple(meta["prompt_index"]),
            positions=tuple(tuple(p) for p in meta["positions"]),
            tokens=tuple(tuple(t) for t in meta["tokens"]),
            position_spec=meta["position_spec"],
            model_name=meta["model_name"],
        )


def pad_tokens(
    model: HookedModel, tokenized: Sequence[TokenizedPrompt], padding_side: str = "right"
) -> tuple[Tensor, Tensor, list[int]]:
    """Pad tokenized prompts into ``(tokens [batch, pos], attention_mask, shifts)``, where
    ``shifts[b]`` is how far prompt ``b``'s positions moved (non-zero for left padding)."""
    tokenizer = get_tokenizer(model)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    width = max(len(t) for t in tokenized)
    toks = torch.full((len(tokenized), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(tokenized), width), dtype=torch.long)
    shifts = []
    for b, tp in enumerate(tokenized):
        n = len(tp)
        start = 0 if padding_side == "right" else width - n
        toks[b, start : start + n] = torch.tensor(tp.ids)
        mask[b, start : start + n] = 1
        shifts.append(start)
    return toks, mask, shifts


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped into batches of similar length (less padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


class _Reducer:
    """Reduces one batch's activation ``[batch, pos, ...]`` to its output rows ``[rows, ...]``:
    a plain gather for single-position rows (an exact copy), a weighted sum for means."""

    def __init__(self, batch_of_row: Tensor, index: Tensor, weight: Tensor, single: bool):
        self.batch_of_row, self.index, self.weight = batch_of_row, index, weight
        self.single = single

    def pick(self, act: Tensor) -> Tensor:
        """The kept positions of every row, ``[rows, k, ...]``."""
        if act.device != self.index.device:  # a model split across devices (device_map)
            self.batch_of_row, self.index, self.weight = (
                t.to(act.device) for t in (self.batch_of_row, self.index, self.weight)
            )
        return act[self.batch_of_row[:, None], self.index]

    def average(self, picked: Tensor) -> Tensor:
        """``[rows, k, ...]`` -> ``[rows, ...]``: each row's positions averaged."""
        if self.single:
            return picked[:, 0]
        w = self.weight.to(picked.device, picked.dtype)
        return (picked * w.reshape(*w.shape, *([1] * (picked.ndim - 2)))).sum(1)

    def __call__(self, act: Tensor) -> Tensor:
        return self.average(self.pick(act))


class _Buffers:
    """Host buffers ``[layer, row, ...]`` per site, allocated on first write (once the
    trailing shape is known)."""

    def __init__(
        self, n_layers: dict[str, int], n_rows: int, store: torch.device, dtype: torch.dtype | None
    ):
        self.n_layers, self.n_rows, self.store, self.dtype = n_layers, n_rows, store, dtype
        self.data: dict[str, Tensor] = {}

    def write(self, site: str, layer: int, dest: Tensor, values: Tensor) -> None:
        buf = self.data.get(site)
        if buf is None:
            shape = (self.n_layers[site], self.n_rows, *values.shape[1:])
            buf = torch.empty(shape, dtype=self.dtype or values.dtype, device=self.store)
            self.data[site] = buf
        buf[layer, dest] = values.detach().to(device=self.store, dtype=buf.dtype)


def _site_reads(site: str, n_layers: int, writer: HeadWriter) -> list[tuple[str, str]]:
    """``(description of what is read, layer label)`` per layer of a collected site."""
    if site != "result":
        return site_hooks(site, n_layers)
    out = []
    for layer, (name, label) in enumerate(site_hooks("z", n_layers)):
        norm = writer.scale_hook(layer)
        out.append((f"{name} @ W_O" + ("" if norm is None else f" / {norm}"), label))
    return out


def _batch_hooks(
    plan: dict[str, list[tuple[str, str]]],
    writer: HeadWriter,
    reducer: _Reducer,
    buffers: _Buffers,
    dest: Tensor,
) -> list[tuple[str, Callable]]:
    """Forward hooks for one batch: each reduces its activation to the batch's rows and
    writes them. A head's ``result`` comes from its ``z`` (and, through a post-attention
    norm, that norm's scale at the same positions, applied before positions are
    averaged)."""

    def store(site: str, layer: int, act: Tensor) -> None:
        buffers.write(site, layer, dest, reducer(act.detach()))

    def result(layer: int):
        scale_name = writer.scale_hook(layer)
        if scale_name is None:  # linear in z: average first, then W_O
            return [(hook_name("z", layer), lambda z, hook: buffers.write(
                "result", layer, dest, writer.write(layer, reducer(z.detach()))
            ))]  # fmt: skip
        stash: dict[str, Tensor] = {}

        def keep_z(z: Tensor, hook: Any) -> None:
            stash["z"] = reducer.pick(z.detach())

        def finish(scale: Tensor, hook: Any) -> None:
            heads = writer.write(layer, stash.pop("z"), reducer.pick(scale.detach()))
            buffers.write("result", layer, dest, reducer.average(heads))

        return [(hook_name("z", layer), keep_z), (scale_name, finish)]

    hooks: list[tuple[str, Callable]] = []
    for site, entries in plan.items():
        if site == "result":
            for layer in range(len(entries)):
                hooks += result(layer)
            continue
        for layer, (name, _) in enumerate(entries):
            hooks.append((name, lambda act, hook, s=site, i=layer: store(s, i, act)))
    return hooks


def _row_index(
    rows: Sequence[tuple[int, tuple[int, ...]]],
    out_rows: list[int],
    batch: list[int],
    shift: list[int],
) -> tuple[list[int], Tensor, Tensor]:
    """For the output rows of one batch: each row's batch element, its padded positions
    ``[row, k]`` and its averaging weights (exact copies for single-position rows)."""
    width = max(len(rows[r][1]) for r in out_rows)
    index = torch.zeros((len(out_rows), width), dtype=torch.long)
    weight = torch.zeros((len(out_rows), width))
    b_of = {i: b for b, i in enumerate(batch)}
    row_b = []
    for k, r in enumerate(out_rows):
        i, pos = rows[r]
        row_b.append(b_of[i])
        index[k, : len(pos)] = torch.tensor(pos) + shift[b_of[i]]
        weight[k, : len(pos)] = 1.0 / len(pos)
    return row_b, index, weight


def collect_many(
    model: HookedModel,
    prompts: Sequence[str],
    sites: Sequence[str] = ("resid_post",),
    positions: Positions | str = "last",
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    storage_device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    padding_side: Literal["right", "left"] = "right",
    progress: bool = True,
) -> dict[str, Activations]:
    """Run ``prompts`` through ``model`` once and keep several sites, each reduced to
    ``positions``. See :func:`collect`."""
    checked = plan_collection(model, prompts, sites, positions, batch_size, padding_side)
    spec, tokenized, rows = checked.positions, checked.tokenized, checked.rows
    dev = torch.device(device) if device is not None else model_device(model)
    rows_of_prompt: list[list[int]] = [[] for _ in tokenized]
    for r, (i, _) in enumerate(rows):
        rows_of_prompt[i].append(r)
    writer = HeadWriter(model)
    plan = {site: _site_reads(site, model.cfg.n_layers, writer) for site in sites}
    buffers = _Buffers(
        {s: len(v) for s, v in plan.items()}, len(rows), torch.device(storage_device), dtype
    )
    batches = _batches([len(t) for t in tokenized], batch_size)
    for batch in progress_bar(batches, desc="collect", unit="batch", enabled=progress):
        toks, mask, shift = pad_tokens(model, [tokenized[i] for i in batch], padding_side)
        out_rows = [r for i in batch for r in rows_of_prompt[i]]
        row_b, index, weight = _row_index(rows, out_rows, batch, shift)
        single = index.shape[1] == 1
        reducer = _Reducer(torch.tensor(row_b, device=dev), index.to(dev), weight.to(dev), single)
        hooks = _batch_hooks(plan, writer, reducer, buffers, torch.tensor(out_rows))
        with torch.no_grad():
            model.run_with_hooks(toks.to(dev), fwd_hooks=hooks, attention_mask=mask.to(dev))
    name = model_info(model).name
    return {
        site: Activations(
            site=site,
            tensor=buffers.data[site],
            layer_labels=tuple(label for _, label in plan[site]),
            hook_names=tuple(h for h, _ in plan[site]),
            prompts=tuple(prompts),
            prompt_index=tuple(i for i, _ in rows),
            positions=tuple(p for _, p in rows),
            tokens=tuple(tuple(tokenized[i].str_tokens[q] for q in p) for i, p in rows),
            position_spec=spec.describe(),
            model_name=name,
        )
        for site in sites
    }


@dataclass(frozen=True)
class CollectionPlan:
    """What a collection will read, known before any forward pass.

    Fields:
        positions: the position rule.
        tokenized: every prompt as the model tokenizes it.
        rows: ``(prompt index, positions averaged into the row)`` of every output row.
    """

    positions: Positions
    tokenized: tuple[TokenizedPrompt, ...]
    rows: tuple[tuple[int, tuple[int, ...]], ...]

    def __repr__(self) -> str:
        return f"CollectionPlan({len(self.tokenized)} prompts, {len(self.rows)} rows)"


def plan_collection(
    model: HookedModel,
    prompts: Sequence[str],
    sites: Sequence[str] = ("resid_post",),
    positions: Positions | str = "last",
    batch_size: int = 32,
    padding_side: str = "right",
) -> CollectionPlan:
    """Check every argument and every prompt (each a non-empty string that fits the
    context, each word it names present) and return what will be read: a bad prompt is
    named before the first forward pass, however many prompts come before it."""
    spec = _check_collect(model, prompts, sites, positions, batch_size, padding_side)
    tokenized = tuple(tokenize_prompt(model, p) for p in prompts)
    return CollectionPlan(spec, tokenized, tuple(spec.rows(tokenized)))


def _check_collect(
    model: HookedModel,
    prompts: Sequence[str],
    sites: Sequence[str],
    positions: Positions | str,
    batch_size: int,
    padding_side: str,
) -> Positions:
    """Refuse bad collection arguments by name; the positions as a :class:`Positions`."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    if not prompts:
        raise ValueError("no prompts given")
    unknown = [s for s in sites if s not in SITES]
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; expected some of {SITES}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    hooks = getattr(model, "hook_dict", None)
    for site in sites:
        name = hook_name("z" if site == "result" else site, 0)
        if hooks is not None and name not in hooks:
            why = " (its attention and MLP read one residual)" if site == "resid_mid" else ""
            raise ValueError(f"{architecture_name(model)} has no {site}{why}: no hook {name}")
    if "resid_mid" in sites and not is_additive(model):
        raise NotAdditiveError(RESID_MID_REFUSAL.format(arch=architecture_name(model)))
    return as_positions(positions)


def collect(
    model: HookedModel,
    prompts: Sequence[str],
    site: str = "resid_post",
    positions: Positions | str = "last",
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    storage_device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    padding_side: Literal["right", "left"] = "right",
    progress: bool = True,
) -> Activations:
    """Collect one site at every layer for ``prompts``, reduced to ``positions``.

    Args:
        model: a TransformerLens model (bridge or HookedTransformer) with a tokenizer.
        prompts: the prompts; lengths may differ (batches are padded, with an attention
            mask, and give the same vectors as running each prompt alone).
        site: ``"resid_post"`` (embedding + every block's output), ``"resid_pre"``,
            ``"resid_mid"``, ``"attn_out"``, ``"mlp_out"``, ``"mlp_post"`` (MLP neurons), or
            per head ``"result"`` / ``"z"``.
        positions: a :class:`Positions`, or ``"last"``, ``"mean"``, ``"all"``.
        batch_size: prompts per forward pass (grouped by length to limit padding).
        device: where the model runs; defaults to the model's device.
        storage_device: where the kept activations live (host memory by default).
        dtype: the stored dtype; defaults to the model's.
        padding_side: pad on the right (default) or the left.
        progress: show a progress bar over batches.
    """
    return collect_many(
        model,
        prompts,
        (site,),
        positions,
        batch_size=batch_size,
        device=device,
        storage_device=storage_device,
        dtype=dtype,
        padding_side=padding_side,
        progress=progress,
    )[site]
