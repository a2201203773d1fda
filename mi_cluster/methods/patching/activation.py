"""Activation patching: one batched sweep for every kind of site.

A site kind is a TransformerLens activation and the axes a patch is indexed by
(:data:`SITE_KINDS`): the residual stream, attention and MLP outputs by (layer, position)
or over all positions,
each head's output over all positions or by position, each head's query, key, value and
attention pattern. :func:`activation_patching` runs the same sweep for all of them:

- many sites per forward pass: the batch is expanded to (site x prompt) rows, up to
  ``max_batch_size`` rows a pass, each row patched at its own site by one indexed write;
- each pass starts at its sites' layer from the cached residual (the layers before are the
  unpatched run) and stops early where the metric reads no logits; the output head runs
  only at the positions the metric reads;
- values stay on the device until the end (no host synchronisation per site).

On post-LayerNorm models (BERT, MiniLM) TransformerLens's bridge hooks ``attn_out`` after
the attention sub-block's LayerNorm, so there it is the residual stream between attention
and MLP, not what attention adds; a head's own contribution is its ``z`` (``head_out``).

Under ``torch.distributed`` (a script launched by ``torchrun``) every rank runs its share
of the passes and every rank returns the whole result, equal to one process's.

Denoising patches the clean run's activations into the corrupted run; noising, the
corrupted run's into the clean run. Results equal ``transformer_lens.patching``'s
``get_act_patch_*`` functions (tested to 1e-5).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from mi_cluster.collection.distributed import my_share, sum_across_ranks
from mi_cluster.core.display import Summary, shape_of, summary_html, summary_repr
from mi_cluster.core.hooks import hook_name
from mi_cluster.core.model_info import architecture_name, has_mlps, model_device, site_heads
from mi_cluster.core.progress import progress_bar
from mi_cluster.core.protocols import HookedModel
from mi_cluster.core.writes import RESID_MID_REFUSAL, is_additive
from mi_cluster.methods.patching.inputs import PromptPair, prepare_pair, resolve_positions
from mi_cluster.methods.patching.metrics import (
    Metric,
    MetricInput,
    check_metric_output,
    n_metric_positions,
    validate,
)
from mi_cluster.methods.patching.prefix import prefix_bytes
from mi_cluster.methods.patching.runner import (
    LayerRunner,
    PatchingError,
    plan_passes,
    row_bytes,
    rows_per_pass,
)

__all__ = [
    "SITE_KINDS",
    "PatchResult",
    "Runs",
    "SiteKind",
    "activation_patching",
    "axis_labels",
    "cached_runs",
    "check_site",
    "metric_hook_layer",
    "metric_on_run",
    "run_offset",
    "run_with_metric",
    "site_order",
]


@dataclass(frozen=True)
class SiteKind:
    """What can be patched: a TransformerLens activation and the axes indexing a patch.

    Fields:
        act: the activation (``hook_name(act, layer)``).
        axes: the patch's index axes after ``layer``: ``"pos"``, ``"head"``.
        description: in words.
    """

    act: str
    axes: tuple[str, ...]
    description: str


SITE_KINDS: dict[str, SiteKind] = {
    "resid_pre": SiteKind("resid_pre", ("pos",), "residual stream entering each block"),
    "resid_mid": SiteKind("resid_mid", ("pos",), "residual stream between attention and MLP"),
    "resid_post": SiteKind("resid_post", ("pos",), "residual stream leaving each block"),
    "attn_out": SiteKind("attn_out", ("pos",), "attention layer output"),
    "mlp_out": SiteKind("mlp_out", ("pos",), "MLP output"),
    "attn_out_all": SiteKind("attn_out", (), "attention layer output, all positions"),
    "mlp_out_all": SiteKind("mlp_out", (), "MLP output, all positions"),
    "head_out": SiteKind("z", ("head",), "each head's output (z), all positions"),
    "head_out_by_pos": SiteKind("z", ("pos", "head"), "each head's output (z) at one position"),
    "q": SiteKind("q", ("head",), "each head's queries, all positions"),
    "k": SiteKind("k", ("head",), "each head's keys, all positions"),
    "v": SiteKind("v", ("head",), "each head's values, all positions"),
    "q_by_pos": SiteKind("q", ("pos", "head"), "each head's query at one position"),
    "k_by_pos": SiteKind("k", ("pos", "head"), "each head's key at one position"),
    "v_by_pos": SiteKind("v", ("pos", "head"), "each head's value at one position"),
    "pattern": SiteKind("pattern", ("head",), "each head's attention pattern"),
}
"""Every kind of site a sweep patches, by name: what it patches and its component axes."""


@dataclass(frozen=True)
class PatchResult:
    """A patching sweep's metric at every site, per prompt.

    Fields:
        values: ``Float[Tensor, "layer ... prompt *value"]``: the metric of the patched
            run, per site (axes ``axes``) and prompt (then the metric's own ``value_shape``
            axes, none for a metric of one number).
        site: the site kind (a key of :data:`SITE_KINDS`, or ``"path"``/``"attribution"``).
        axes: the site axes, e.g. ``("layer", "head")``.
        labels: a label per index of each axis (positions with unique token labels).
        direction: ``"denoise"`` (clean into corrupted) or ``"noise"``.
        metric: the metric's name.
        clean, corrupted: ``Float[Tensor, "prompt *value"]``, the metric on the
            unpatched runs.
        value_shape: the metric's value per prompt (``()``: one number).
    """

    values: Float[Tensor, "..."]
    site: str
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    direction: str
    metric: str
    clean: Float[Tensor, " prompt *value"]
    corrupted: Float[Tensor, " prompt *value"]
    value_shape: tuple[int, ...] = ()

    def summary(self) -> Summary:
        """What the result shows first: the sweep, its shape, the unpatched metric and the
        site whose patch moves it most (normalised, for a metric of one number)."""
        axes = [*self.axes, "prompt", *(f"value{i}" for i in range(len(self.value_shape)))]
        items = [
            ("site", self.site),
            ("direction", self.direction),
            ("metric", self.metric),
            ("values", shape_of(self.values, axes)),
        ]
        if not self.value_shape:
            items += [
                ("clean", f"{float(self.clean.mean()):.4g}"),
                ("corrupted", f"{float(self.corrupted.mean()):.4g}"),
            ]
            try:
                norm = self.normalised()
            except PatchingError:
                return Summary("PatchResult", tuple(items))
            flat = int(norm.abs().nan_to_num(-1.0).argmax())
            index = torch.unravel_index(torch.tensor(flat), tuple(norm.shape))
            where = " ".join(self._label(a, int(i)) for a, i in zip(self.axes, index, strict=True))
            items.append(("largest", f"{where}: {float(norm.flatten()[flat]):.3g} of the gap"))
        return Summary("PatchResult", tuple(items))

    def _label(self, axis: str, i: int) -> str:
        names = self.labels.get(axis, [])
        return names[i] if i < len(names) else f"{axis} {i}"

    def __repr__(self) -> str:
        return summary_repr(self.summary())

    def _repr_html_(self) -> str:
        return summary_html(self.summary())

    def mean(self) -> Float[Tensor, "..."]:
        """The metric averaged over prompts, per site."""
        return self.values.mean(-1 - len(self.value_shape))

    def normalised(self) -> Float[Tensor, "..."]:
        """``(patched - base) / (source - base)`` of the prompt-averaged metric: for
        denoising ``(patched - corrupted) / (clean - corrupted)`` (1 = the patch restores
        the clean behaviour), for noising ``(patched - clean) / (corrupted - clean)``."""
        base, source = (
            (self.corrupted, self.clean)
            if self.direction == "denoise"
            else (self.clean, self.corrupted)
        )
        gap = source.mean(0) - base.mean(0)
        if bool((gap.abs() < 1e-12).any()):
            raise PatchingError(
                "the clean and corrupted runs give the same metric: nothing to normalise by"
            )
        return (self.mean() - base.mean(0)) / gap


@dataclass(frozen=True)
class Runs:
    """The clean and corrupted runs, cached as one batch: clean prompt ``p`` is row ``p``
    of the runner, corrupted prompt ``p`` row ``batch + p``.

    Fields:
        runner: the :class:`LayerRunner` over both.
        batch: prompts per run.
    """

    runner: LayerRunner
    batch: int

    def offset(self, which: str) -> int:
        """The first row of the ``"clean"`` or ``"corrupted"`` prompts in the runs' batch."""
        return run_offset(which, self.batch)

    def cache(self, name: str, which: str) -> Tensor:
        """One run's cached activation at hook ``name``, ``[prompt, ...]``."""
        o = self.offset(which)
        return self.runner.cache[name][o : o + self.batch]

    def logits(self, which: str, positions: Tensor | None) -> Tensor | None:
        """One run's logits at the metric's positions, ``[prompt, k, vocab]``."""
        if positions is None:
            return None
        o = self.offset(which)
        logits = self.runner.logits[o : o + self.batch]
        return logits.gather(
            1, positions.to(logits.device)[..., None].expand(-1, -1, logits.shape[-1])
        )


def run_offset(which: str, batch: int) -> int:
    """The first row of the ``"clean"`` or ``"corrupted"`` prompts in a batch holding
    ``batch`` clean prompts, then their corrupted partners."""
    return 0 if which == "clean" else batch


def cached_runs(
    model: HookedModel,
    pair: PromptPair,
    cache_sites: Sequence[str],
    *,
    reuse_prefix: Literal["clean", "corrupted"] | None = None,
) -> Runs:
    """Run the clean and corrupted prompts once, together, keeping ``cache_sites`` (and,
    with ``reuse_prefix``, that run's keys and values at every layer where the model is
    causal, for patched runs that start at a position: see
    :class:`~mi_cluster.methods.patching.runner.LayerRunner`)."""
    tokens = torch.cat([pair.clean, pair.corrupted])
    clean_mask, corrupted_mask = pair.attention_mask("clean"), pair.attention_mask("corrupted")
    mask = None
    if clean_mask is not None and corrupted_mask is not None:
        mask = torch.cat([clean_mask, corrupted_mask])
    reuse = None
    if reuse_prefix is not None:
        start = run_offset(reuse_prefix, pair.batch)
        reuse = torch.arange(start, start + pair.batch)
    runner = LayerRunner(model, tokens, mask, sorted(set(cache_sites)), reuse_prefix=reuse)
    return Runs(runner, pair.batch)


def metric_on_run(
    runs: Runs, which: str, metric: Metric, positions: Tensor | None, clean_logits: Tensor | None
) -> Tensor:
    """The metric on an unpatched run (its cached logits and activations)."""
    acts = {name: runs.cache(name, which) for name in metric.reads}
    prompt = torch.arange(runs.batch)
    out = metric.fn(MetricInput(prompt, runs.logits(which, positions), acts, clean_logits))
    check_metric_output(metric, out, runs.batch)
    return out.detach()


def metric_hook_layer(name: str) -> int:
    """The block a metric's hook ``name`` reads (``blocks.L....``), or an error naming it."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "blocks" or not parts[1].isdigit():
        raise PatchingError(
            f"metric reads {name!r}: only per-block hooks (blocks.L....) are supported"
        )
    return int(parts[1])


def _setter(act_name: str, axes: tuple[str, ...], source: Tensor):
    """A hook writing ``source``'s values into the patched rows at each row's site."""

    def write(act: Tensor, rows: Tensor, prompt: Tensor, index: dict[str, Tensor]) -> None:
        if not axes:  # the whole activation of the row
            act[rows] = source[prompt].to(act.dtype)
        elif act_name == "pattern":  # [row, head, dest, src]
            act[rows, index["head"]] = source[prompt, index["head"]].to(act.dtype)
        elif axes == ("pos",):  # [row, pos, ...]
            act[rows, index["pos"]] = source[prompt, index["pos"]].to(act.dtype)
        elif axes == ("head",):  # [row, pos, head, d]
            act[rows, :, index["head"]] = source[prompt, :, index["head"]].to(act.dtype)
        else:  # ("pos", "head")
            act[rows, index["pos"], index["head"]] = source[prompt, index["pos"], index["head"]].to(
                act.dtype
            )

    return write


def activation_patching(
    model: HookedModel,
    clean: Sequence[str] | Tensor,
    corrupted: Sequence[str] | Tensor,
    metric: Metric,
    site: str = "head_out",
    *,
    direction: Literal["denoise", "noise"] = "denoise",
    layers: Sequence[int] | None = None,
    lengths: Literal["equal", "pad"] = "equal",
    max_batch_size: int | None = None,
    progress: bool = True,
) -> PatchResult:
    """Patch every site of one kind and measure the metric, per prompt.

    Args:
        model: a TransformerLens model.
        clean: prompts (strings, each pair tokenizing to equal lengths) or token tensors
            ``[prompt, pos]``.
        corrupted: their corrupted partners, as ``clean`` (the same shape).
        metric: what to measure (:mod:`mi_cluster.methods.patching.metrics`).
        site: a key of :data:`SITE_KINDS`.
        direction: ``"denoise"`` (clean into corrupted) or ``"noise"``.
        layers: the layers to sweep (default all).
        lengths: ``"pad"`` lets a clean prompt and its corrupted partner differ in length
            (:func:`~mi_cluster.methods.patching.inputs.prepare_pair`).
        max_batch_size: rows (site x prompt copies) per forward pass; default
            :func:`~mi_cluster.methods.patching.runner.rows_per_pass` (64 on a CPU, what fits in a
            quarter of free memory on a GPU). At least one site's prompts go in a pass.
        progress: a progress bar over forward passes.
    """
    if site not in SITE_KINDS:
        raise PatchingError(f"unknown site {site!r}; use one of {sorted(SITE_KINDS)}")
    if direction not in ("denoise", "noise"):
        raise PatchingError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    kind = SITE_KINDS[site]
    pair = prepare_pair(model, clean, corrupted, lengths)
    layers = sorted(set(range(model.cfg.n_layers) if layers is None else layers))
    hooks = check_site(model, kind, layers)
    validate(metric, pair.batch, pair.n_pos, model.cfg.d_vocab, model.cfg.dtype)
    k = n_metric_positions(metric.positions, pair.n_pos)
    rows = rows_per_pass(model, pair.n_pos, k, max_batch_size)
    base, source = ("corrupted", "clean") if direction == "denoise" else ("clean", "corrupted")
    # A patch at one position leaves a causal model's earlier positions as they were:
    # passes then start at their sites' first position (not where the metric reads
    # activations, which would need them at every position), reading the base run's keys
    # and values, kept where they take less memory than one pass's rows.
    by_position = (
        "pos" in kind.axes
        and not metric.reads
        and prefix_bytes(model.cfg, pair.batch, pair.n_pos)
        <= max(rows, pair.batch) * row_bytes(model, pair.n_pos, k)
    )
    reuse = base if by_position else None
    runs = cached_runs(model, pair, hooks + list(metric.reads), reuse_prefix=reuse)
    positions = resolve_positions(metric.positions, pair)
    clean_logits = runs.logits("clean", positions)
    clean_value = metric_on_run(runs, "clean", metric, positions, clean_logits)
    corrupted_value = metric_on_run(runs, "corrupted", metric, positions, clean_logits)

    sizes = {"head": site_heads(model, kind.act), "pos": pair.n_pos}
    shape = [len(layers)] + [sizes[a] for a in kind.axes]
    values = torch.zeros(
        (*shape, pair.batch, *metric.shape), dtype=clean_value.dtype, device=clean_value.device
    )
    per_layer = int(torch.tensor(shape[1:]).prod())
    flat_values = values.view(len(layers) * per_layer, pair.batch, *metric.shape)
    layer_numbers = torch.tensor(layers)
    reusing = runs.runner.prefix is not None  # asked for by position, and the model allows it
    order = site_order(shape, kind.axes, reusing)
    passes = my_share(plan_passes(len(order), max(1, rows // pair.batch)))
    for first, stop in progress_bar(passes, desc=f"patch {site}", unit="pass", enabled=progress):
        flat = order[first:stop].sort().values  # sites, numbered layer by layer
        layer_index = (flat // per_layer).repeat_interleave(pair.batch)
        grid = torch.unravel_index(flat % per_layer, tuple(shape[1:])) if kind.axes else ()
        prompt = torch.arange(pair.batch).repeat(len(flat))
        index = {a: g.repeat_interleave(pair.batch) for a, g in zip(kind.axes, grid, strict=True)}
        from_pos = int(index["pos"].min()) if reusing else 0
        patches = _patch_hooks(
            kind, layers, layer_index, index, prompt, runs=runs, source=source, from_pos=from_pos
        )
        row_start = layer_numbers[layer_index]
        out = run_with_metric(
            runs,
            base,
            metric,
            prompt,
            row_start=row_start,
            hooks=patches,
            positions=positions,
            clean_logits=clean_logits,
            from_pos=from_pos,
        )
        flat_values[flat] = out.view(len(flat), pair.batch, *metric.shape)
    sum_across_ranks(values)  # under torch.distributed each rank ran its share of passes
    return PatchResult(
        values=values,
        site=site,
        axes=("layer", *kind.axes),
        labels=axis_labels(model, pair, layers, kind.axes, kind.act),
        direction=direction,
        metric=metric.name,
        clean=clean_value,
        corrupted=corrupted_value,
        value_shape=metric.shape,
    )


def site_order(shape: Sequence[int], axes: tuple[str, ...], by_position: bool) -> Tensor:
    """The order passes take the sites in (numbered layer by layer, ``shape`` being
    ``[layer, *axes]``): as numbered, or, for runs that start at their first patched
    position, position by position (so a pass's sites share one position and each row
    recomputes only the layers and positions its patch can change)."""
    flat = torch.arange(int(torch.tensor(list(shape)).prod()))
    if not by_position:
        return flat
    pos = torch.unravel_index(flat, tuple(shape))[1 + axes.index("pos")]
    return flat[torch.argsort(pos * len(flat) + flat)]


def _patch_hooks(
    kind: SiteKind,
    layers: Sequence[int],
    layer_index: Tensor,
    index: dict[str, Tensor],
    prompt: Tensor,
    *,
    runs: Runs,
    source: str,
    from_pos: int = 0,
) -> list[tuple[str, Any]]:
    """One hook per layer a pass patches, writing the ``source`` run's values into each
    row's site (rows of a layer are a block-prefix row range); in a run from position
    ``from_pos`` the activations the hooks see start there."""
    patches = []
    for li in torch.unique(layer_index).tolist():
        at_layer = (layer_index == li).nonzero()[:, 0]
        name = hook_name(kind.act, layers[li])
        source_values = runs.cache(name, source)
        if from_pos:  # [prompt, pos, ...]: the positions the run computes
            source_values = source_values[:, from_pos:]
        write = _setter(kind.act, kind.axes, source_values)
        at = {a: v[at_layer] - (from_pos if a == "pos" else 0) for a, v in index.items()}

        def patch(act: Tensor, hook: Any, w=write, r=at_layer, p=prompt[at_layer], at=at) -> Tensor:
            w(act, r, p, at)
            return act

        patches.append((name, patch))
    return patches


def axis_labels(
    model: HookedModel,
    pair: PromptPair,
    layers: Sequence[int],
    axes: tuple[str, ...],
    act: str = "z",
) -> dict[str, list[str]]:
    """A label per index of ``("layer", *axes)``: ``"L3"``, ``"H7"`` (``"KV1"`` for a
    key/value head under grouped-query attention), and positions by their (unique) token
    labels."""
    n = site_heads(model, act)
    prefix = "KV" if n != model.cfg.n_heads else "H"
    every = {
        "layer": [f"L{layer}" for layer in layers],
        "head": [f"{prefix}{h}" for h in range(n)],
        "pos": pair.position_labels,
    }
    return {a: every[a] for a in ("layer", *axes)}


def run_with_metric(
    runs: Runs,
    base: str,
    metric: Metric,
    prompt: Tensor,
    *,
    row_start: int | Tensor,
    hooks: list,
    positions: Tensor | None,
    clean_logits: Tensor | None,
    final_scale: Tensor | None = None,
    from_pos: int = 0,
) -> Tensor:
    """Run copies of the ``base`` run's prompts (``prompt``, ordered by ``row_start``) with
    ``hooks``; the metric per row. An activation the metric reads comes from the run where
    the row has reached it, from the base run's cache where it has not. ``final_scale``
    (``[prompt, k, 1]``): the final LayerNorm's scale per prompt at the metric's positions,
    used instead of the rows' own. ``from_pos``: run positions from there on only
    (:meth:`~mi_cluster.methods.patching.runner.LayerRunner.run`; not with a metric that
    reads activations)."""
    if from_pos and metric.reads:
        raise PatchingError("a run from a position cannot feed a metric that reads activations")
    runner, offset = runs.runner, runs.offset(base)
    rows = prompt + offset
    start = torch.full((len(prompt),), row_start) if isinstance(row_start, int) else row_start
    acts: dict[str, Tensor] = {}
    kept: dict[str, Tensor] = {}
    read_hooks = []
    for name in metric.reads:
        acts[name] = runner.cache[name][rows.to(runner.cache[name].device)].clone()
        if metric_hook_layer(name) >= int(start[0]):

            def keep(act: Tensor, hook: Any, name: str = name) -> None:
                kept[name] = act.detach().clone()

            read_hooks.append((name, keep))
    stop = None
    if metric.positions is None:
        stop = max([int(start[0])] + [metric_hook_layer(n) + 1 for n in metric.reads])
    row_pos = None if positions is None else positions[prompt]
    scale = None if final_scale is None else final_scale[prompt.to(final_scale.device)]
    logits = runner.run(
        rows,
        start,
        hooks + read_hooks,
        positions=row_pos,
        stop_layer=stop,
        final_scale=scale,
        from_pos=from_pos,
    )
    for name, value in kept.items():  # the rows that reached the hook: a prefix
        acts[name][: value.shape[0]] = value
    out = metric.fn(MetricInput(prompt, logits, acts, clean_logits))
    check_metric_output(metric, out, len(prompt))
    return out.detach()


def check_site(model: HookedModel, kind: SiteKind, layers: Sequence[int]) -> list[str]:
    """The hook names of site ``kind`` at ``layers``, each checked to exist in ``model``
    (an attention-only model's MLP sites are refused by name)."""
    n = model.cfg.n_layers
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad:
        raise PatchingError(f"layers {bad} do not exist: the model has {n} layers")
    names = [hook_name(kind.act, layer) for layer in layers]
    if kind.act == "mlp_out" and not has_mlps(model):
        raise PatchingError(
            f"the model has no {kind.description}: it is attention-only (by its config or "
            "its model card; any MLP hooks it has read 0)"
        )
    hook_dict = getattr(model, "hook_dict", {})
    missing = [name for name in names if name not in hook_dict]
    if missing:
        raise PatchingError(
            f"{architecture_name(model)} has no {kind.description} ({missing[0]} is not one "
            "of its hooks)"
        )
    if kind.act == "resid_mid" and not is_additive(model):
        raise PatchingError(RESID_MID_REFUSAL.format(arch=architecture_name(model)))
    if kind.act == "pattern" and not _pattern_edits_take_effect(model):
        raise PatchingError(
            f"{architecture_name(model)}'s attention patterns cannot be patched: "
            "TransformerLens's bridge delegates this attention to the Hugging Face module and "
            "reads its pattern after the module has used it, so a patched pattern would not "
            "change the output (patch q, k, v or head_out instead)"
        )
    return names


_PATTERN_EDITS = "_mi_cluster_pattern_edits"


def _pattern_edits_take_effect(model: HookedModel) -> bool:
    """Whether a pattern written at ``hook_pattern`` is the one the model uses: checked
    once per model by making every query of layer 0 attend to the first token, which
    must make each head's ``z`` equal its value vector there."""
    verdict = getattr(model, _PATTERN_EDITS, None)
    if verdict is not None:
        return verdict
    seen: dict[str, Tensor] = {}

    def first_token_only(pattern: Tensor, hook: Any) -> Tensor:
        new = torch.zeros_like(pattern)
        new[..., 0] = 1.0
        return new

    def keep(name: str):
        return lambda act, hook: seen.__setitem__(name, act.detach())

    tokens = torch.arange(min(5, model.cfg.d_vocab))[None].to(model_device(model))
    hooks = [
        (hook_name("pattern", 0), first_token_only),
        (hook_name("v", 0), keep("v")),
        (hook_name("z", 0), keep("z")),
    ]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bridge warns that such an edit is discarded
        model.run_with_hooks(tokens, fwd_hooks=hooks)
    z, v = seen["z"], seen["v"]  # [1, pos, head, d], [1, pos, kv_head, d]
    want = v[:, :1].repeat_interleave(z.shape[2] // v.shape[2], dim=2).expand_as(z)
    verdict = bool(torch.allclose(z, want, atol=1e-5 * float(want.abs().max().clamp_min(1))))
    setattr(model, _PATTERN_EDITS, verdict)
    return verdict
