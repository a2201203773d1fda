"""Which components move a word toward the subjects? Causal attribution of the role shift.

The clustering study (:mod:`~mi_cluster.studies.subject_object.study`) finds that a word
read in subject position ("... Lamp went to the store.") scores higher on the cross-fitted
subjecthood axis than the same word in object position ("... saw lamp at the store."),
within one template family. Here the same words, families and axis answer *which
components carry that shift*, with the batched patching functions and a subjecthood metric
(no special code path for it):

- every pair is (subject form, object form) of one word in one family; the read word sits
  at the same token index in both (checked), and the prompts may differ in length after it
  (``lengths="pad"``);
- the metric is the read word's subjecthood at the read layer, on the axis cross-fitted
  without the word, on the calibrated scale (held-out objects 0, names 1);
- each component (a head's output, an MLP's output, over all positions or at one
  position relative to the read word; the whole residual stream at one position) is
  patched from the subject form into the object form, and its effect per pair is
  ``patched - object form``; the fraction of the shift it carries is ``sum(effect) /
  sum(shift)`` over words and families, with intervals and tests for these templates
  (words jackknifed) and for templates in general (words and families), Holm-corrected
  over the components of a kind. They carry the axis's error: one sweep measures each
  component's effect projected on every word's per-family mean reading, from which every
  jackknife replicate's refitted axes score it
  (:func:`~mi_cluster.methods.stats.component_share_inference`; conservative);
- attribution patching of the same metric, with its correlation to exact patching;
- path patching from every upstream head to the heads that carry the most (through their
  queries, keys and values together): which heads write the shift that a carrier reads.

Single-component fractions need not add up to 1: components act together, and patching
one at a time measures what each is sufficient to move given the others at their object
form values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_cluster.collection.activations import Positions, collect, site_hooks
from mi_cluster.core.hooks import hook_name
from mi_cluster.core.model_info import has_mlps, model_info
from mi_cluster.core.prompts import tokenize_prompt, word_positions
from mi_cluster.core.protocols import HookedModel
from mi_cluster.methods.patching import (
    ATTRIBUTION_SITES,
    Metric,
    MetricInput,
    PatchResult,
    activation_metric,
    activation_patching,
    attribution_patching,
    correlation_with,
    path_patching,
)
from mi_cluster.methods.stats import (
    SCOPES,
    RoleShifts,
    component_share_inference,
    role_shift_inference,
    share_basis,
)
from mi_cluster.studies.subject_object.design import RoleDesign
from mi_cluster.studies.subject_object.role_shift_report import (
    role_shift_answer,
    role_shift_record,
)

__all__ = [
    "DEFAULT_SITES",
    "ComponentShare",
    "ReliableComponent",
    "RolePairs",
    "RoleShiftAttribution",
    "attribute_role_shift",
    "projection_metric",
    "role_pairs",
    "subjecthood_metric",
]

DEFAULT_SITES: tuple[str, ...] = (
    "head_out", "head_out_by_pos", "mlp_out_all", "mlp_out", "resid_pre",
)  # fmt: skip


@dataclass(frozen=True)
class RolePairs:
    """A word in subject and in object position, one pair per word and family.

    Fields:
        subject, object: the two prompts of each pair (patched from, patched into).
        read_position: ``Int[Tensor, "pair"]``, the read word's token index (its last
            sub-token), the same in both prompts.
        word, family: the word (as listed) and template family of each pair.
        word_index: index of the pair's word in ``words``; family_index, in ``families``.
        unit: the word's index in the design's ``words`` (its cross-fitting unit).
        words, families: the words and families, in order.
    """

    subject: tuple[str, ...]
    object: tuple[str, ...]
    read_position: Int[Tensor, " pair"]
    word: tuple[str, ...]
    family: tuple[str, ...]
    word_index: Int[Tensor, " pair"]
    family_index: Int[Tensor, " pair"]
    unit: Int[Tensor, " pair"]
    words: tuple[str, ...]
    families: tuple[str, ...]

    def table(self, values: Float[Tensor, "... pair"]) -> Float[Tensor, "... word family"]:
        """Per-pair values laid out as a words x families table."""
        out = values.new_full((*values.shape[:-1], len(self.words), len(self.families)), 0.0)
        out[..., self.word_index, self.family_index] = values
        return out


def role_pairs(model: HookedModel, design: RoleDesign, word_type: str = "object") -> RolePairs:
    """The (subject form, object form) pairs of ``design`` for words of ``word_type``
    (``"object"`` or ``"name"``); an error names any pair whose read word is not at the
    same token index in both forms."""
    if word_type not in ("object", "name"):
        raise ValueError(f"word_type must be 'object' or 'name', got {word_type!r}")
    by_key = {(it.lemma, it.family, it.role): it for it in design.items}
    words = design.objects if word_type == "object" else design.names
    families = tuple(f.name for f in design.families)
    rows: list[tuple[str, str, str, str, int, int]] = []
    for w_i, word in enumerate(words):
        for f_i, fam in enumerate(families):
            subj, obj = by_key[(word, fam, "subject")], by_key[(word, fam, "object")]
            pos = []
            for it in (subj, obj):
                span = word_positions(tokenize_prompt(model, it.text), it.word)
                if not span:
                    raise ValueError(f"{it.word!r} not found in {it.text!r}")
                pos.append(span[-1])
            if pos[0] != pos[1]:
                raise ValueError(
                    f"{word!r} in family {fam!r} is token {pos[0]} of the subject form but "
                    f"token {pos[1]} of the object form: patching needs it at one index"
                )
            rows.append((subj.text, obj.text, word, fam, pos[0], w_i * len(families) + f_i))
    unit_of = {w: i for i, w in enumerate(design.words)}
    return RolePairs(
        subject=tuple(r[0] for r in rows),
        object=tuple(r[1] for r in rows),
        read_position=torch.tensor([r[4] for r in rows]),
        word=tuple(r[2] for r in rows),
        family=tuple(r[3] for r in rows),
        word_index=torch.tensor([r[5] // len(families) for r in rows]),
        family_index=torch.tensor([r[5] % len(families) for r in rows]),
        unit=torch.tensor([unit_of[r[2]] for r in rows]),
        words=tuple(words),
        families=families,
    )


def subjecthood_metric(
    shifts: RoleShifts, layer: int, pairs: RolePairs, name: str = "subjecthood"
) -> Metric:
    """The read word's subjecthood after block ``layer``, each pair scored by its word's
    axis (fitted without the word) on the calibrated scale (held-out objects 0, names 1),
    as a patching metric."""
    direction = shifts.direction[layer + 1, pairs.unit]  # [pair, d]; layer 0: the embedding
    offset = shifts.offset[layer + 1, pairs.unit]
    pos = pairs.read_position

    def score(act: Tensor, prompt: Tensor) -> Tensor:
        p = prompt.cpu()
        x = act[torch.arange(len(p), device=act.device), pos[p].to(act.device)]
        return (x * direction[p].to(x)).sum(-1) + offset[p].to(x)

    return activation_metric(f"{name} at L{layer}", hook_name("resid_post", layer), score)


def projection_metric(
    shifts: RoleShifts, layer: int, pairs: RolePairs, basis: Float[Tensor, "row d_model"]
) -> Metric:
    """The read word's subjecthood (as :func:`subjecthood_metric`), then its residual
    projected on each row of ``basis`` (:func:`~mi_cluster.methods.stats.share_basis`): one
    sweep gives a component's share and what every refitted axis would score."""
    scalar = subjecthood_metric(shifts, layer, pairs)
    name, pos = scalar.reads[0], pairs.read_position

    def fn(inp: MetricInput) -> Tensor:
        act = inp.activations[name]
        rows = torch.arange(len(inp.prompt), device=act.device)
        x = act[rows, pos[inp.prompt.cpu()].to(act.device)]
        return torch.cat([scalar.fn(inp)[:, None], x @ basis.to(x).T], 1)

    return Metric(scalar.name, fn, None, (name,), (1 + basis.shape[0],))


class ReliableComponent(NamedTuple):
    """A component whose share is reliable in one scope: its label, fraction, 95%
    interval and Holm-corrected p-value."""

    component: str
    fraction: float
    low: float
    high: float
    p_holm: float


@dataclass(frozen=True)
class ComponentShare:
    """The fraction of the shift carried by each component of one kind.

    Fields:
        site: the site kind (``"head_out"``, ``"mlp_out_all"``, ... or ``"path to LxHy"``).
        axes: the component axes, e.g. ``("layer", "head")``; ``"offset"`` is a position
            relative to the read word (0 = the word).
        labels: a label per index of each axis.
        fraction: ``sum(effect) / sum(shift)``, shaped by ``axes``.
        low, high: its 95% interval for templates in general (words and families
            jackknifed, every axis refitted:
            :func:`~mi_cluster.methods.stats.component_share_inference`).
        low_words, high_words: the 95% interval for these templates (words jackknifed,
            families fixed).
        p_value, p_holm: the test of fraction 0 for these templates, and Holm's
            correction over the components of the kind; p_value_general,
            p_holm_general: the same for templates in general. Both carry the axis's
            error and are conservative.
        attribution_r: Pearson r of attribution patching with exact patching over these
            components (None when not run).
    """

    site: str
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    fraction: Tensor
    low: Tensor
    high: Tensor
    low_words: Tensor
    high_words: Tensor
    p_value: Tensor
    p_holm: Tensor
    p_value_general: Tensor
    p_holm_general: Tensor
    attribution_r: float | None = None

    def component_labels(self) -> list[str]:
        """A label per component, flattened in ``axes`` order (``"L1H3"``, ``"L0 W-1"``)."""
        sizes = [len(self.labels[a]) for a in self.axes]
        out = []
        for flat in range(int(torch.tensor(sizes).prod())):
            index = dict(
                zip(self.axes, torch.unravel_index(torch.tensor(flat), sizes), strict=True)
            )
            name = "".join(self.labels[a][int(index[a])] for a in ("layer", "head") if a in index)
            if "offset" in index:
                name += " at " + self.labels["offset"][int(index["offset"])]
            out.append(name)
        return out


@dataclass(frozen=True)
class RoleShiftAttribution:
    """Which components carry the role shift of ``word_type`` words at the read layer.

    Fields:
        model_name: the model.
        layer: the read layer (block index); layer_label, its label.
        word_type: ``"object"`` or ``"name"``.
        pairs: the prompt pairs.
        shifts: the clustering study's inference on these readings
            (:func:`~mi_cluster.methods.stats.role_shift_inference`): each word's axis, fitted
            without it, that the metric scores with, and the objects' and names' shifts at
            every layer in both scopes, with the axis's error carried.
        layer_chosen: ``"last"``, ``"given"``, or ``"peak"`` (the layer of the largest
            mean shift, chosen on these data: its test is then optimistic).
        shift_per_pair: ``[pair]``, subject minus object form.
        components: site kind -> :class:`ComponentShare`.
        paths: receiver head label -> :class:`ComponentShare` of the sender heads.
        alpha: significance level for "reliable".
    """

    model_name: str
    layer: int
    layer_label: str
    word_type: str
    pairs: RolePairs
    shifts: RoleShifts
    layer_chosen: str
    shift_per_pair: Tensor
    components: dict[str, ComponentShare]
    paths: dict[str, ComponentShare]
    alpha: float = 0.05

    def reliable(self, share: ComponentShare, interval: str = "crossed") -> list[ReliableComponent]:
        """The components whose effect is significant (Holm p < alpha) and whose interval
        excludes 0, in one scope (``"crossed"``: templates in general; ``"words"``: these
        templates), largest first."""
        if interval not in ("crossed", "words"):
            raise ValueError(f"interval must be 'crossed' or 'words', got {interval!r}")
        low, high, p_holm = (
            (share.low, share.high, share.p_holm_general)
            if interval == "crossed"
            else (share.low_words, share.high_words, share.p_holm)
        )
        out = []
        flat = zip(
            share.component_labels(),
            share.fraction.flatten().tolist(),
            low.flatten().tolist(),
            high.flatten().tolist(),
            p_holm.flatten().tolist(),
            strict=True,
        )
        for label, f, lo, hi, p in flat:
            if p < self.alpha and (lo > 0 or hi < 0):
                out.append(ReliableComponent(label, f, lo, hi, p))
        return sorted(out, key=lambda r: -abs(r.fraction))

    def shift(self, scope: str = SCOPES[0]) -> dict[str, float]:
        """The total shift of ``word_type`` words (subject minus object form) at the read
        layer, on the calibrated scale, in ``scope``: ``estimate``, ``low``, ``high`` (95%),
        ``p`` (two-sided), ``df``."""
        test = (self.shifts.objects if self.word_type == "object" else self.shifts.names)[scope]
        i = self.layer + 1
        fields = ("estimate", "low", "high", "p_value", "df")
        return {k.removesuffix("_value"): float(getattr(test, k)[i]) for k in fields}

    def answer(self) -> str:
        """The result in words, with its numbers."""
        return role_shift_answer(self)

    def summary(self) -> dict[str, Any]:
        """Every number, JSON-ready."""
        return role_shift_record(self)


def _offsets(values: Tensor, pos_axis: int, read: Tensor, span: range) -> Tensor:
    """Re-index a position axis by offset from each pair's read word: ``values`` with its
    ``pos_axis`` over absolute positions and its last axis over pairs."""
    v = values.movedim(pos_axis, -2)  # [..., pos, pair]
    index = (read[None, :] + torch.tensor(list(span))[:, None]).to(v.device)  # [offset, pair]
    out = v.gather(-2, index.expand(*v.shape[:-2], *index.shape))
    return out.movedim(-2, pos_axis)


def _share(
    site: str,
    result: PatchResult,
    *,
    values: Tensor,
    pairs: RolePairs,
    axes: tuple[str, ...],
    labels: dict[str, list[str]],
    cells: Tensor,
    is_name: Tensor,
    attribution: Tensor | None = None,
) -> ComponentShare:
    """Fractions, intervals and tests from patched values ``[..., pair, 1 + basis]``
    (:func:`projection_metric`): the subjecthood for the fraction, the projections for
    the inference (:func:`~mi_cluster.methods.stats.component_share_inference` on ``cells``, the
    read layer's readings)."""
    effect = values - result.corrupted  # [..., pair, 1 + basis]
    shape = effect.shape[:-2]
    shift = result.clean[:, 0] - result.corrupted[:, 0]
    flat = effect.reshape(-1, *effect.shape[-2:]).double().cpu()
    fraction = flat[..., 0].sum(-1) / shift.double().cpu().sum()
    shares = component_share_inference(
        cells, is_name, flat[..., 1:], pairs.unit, pairs.family_index
    ).share
    these, general = (shares[scope] for scope in SCOPES)
    r = None
    if attribution is not None:
        scalar = dataclasses.replace(
            result, values=values[..., 0], clean=result.clean[:, 0],
            corrupted=result.corrupted[:, 0], value_shape=(),
        )  # fmt: skip
        r = correlation_with(dataclasses.replace(scalar, values=attribution), scalar)
    return ComponentShare(
        site=site,
        axes=axes,
        labels=labels,
        fraction=fraction.reshape(shape),
        low=general.low.reshape(shape),
        high=general.high.reshape(shape),
        low_words=these.low.reshape(shape),
        high_words=these.high.reshape(shape),
        p_value=these.p_value.reshape(shape),
        p_holm=these.p_holm.reshape(shape),
        p_value_general=general.p_value.reshape(shape),
        p_holm_general=general.p_holm.reshape(shape),
        attribution_r=r,
    )


def _role_cells(x: Tensor, design: RoleDesign, in_context: Tensor) -> Tensor:
    """Readings of the in-context items ``x [layer, item, d]`` as the study's cells
    ``[layer, word, family, role (subject, object), d]``."""
    row = torch.cumsum(in_context.long(), 0) - 1  # design item -> row of x
    cells = [row[design.cell_index(role)] for role in ("subject", "object")]
    return torch.stack([x[:, c] for c in cells], dim=3)


def attribute_role_shift(
    model: HookedModel,
    design: RoleDesign,
    *,
    layer: int | str | None = None,
    word_type: str = "object",
    sites: Sequence[str] = DEFAULT_SITES,
    n_receivers: int = 3,
    attribution: bool = True,
    alpha: float = 0.05,
    max_batch_size: int | None = None,
    progress: bool = True,
) -> RoleShiftAttribution:
    """Attribute the role shift of ``word_type`` words at ``layer`` to components.

    Args:
        model: a TransformerLens model.
        design: the clustering study's design
            (:func:`~mi_cluster.studies.subject_object.design.role_design`).
        layer: the read layer: a block index, None for the last block, or ``"peak"`` for
            the block whose output shows the largest mean shift of ``word_type`` words
            (chosen on the same data, which the answer says).
        word_type: whose shift: ``"object"`` (the question) or ``"name"`` (a control).
        sites: site kinds to patch; MLP sites are skipped on attention-only models.
        n_receivers: path patching into this many heads, those carrying the largest
            positive fraction (at layers 1 .. ``layer``); 0 for none.
        attribution: also run attribution patching and report its correlation.
        alpha: significance level.
        max_batch_size: rows per patching forward pass (default: what fits).
        progress: progress bars over the patching passes.
    """
    sites = _check_request(model, layer, sites)
    all_cells, is_name = _study_cells(model, design, progress)  # [layer, word, family, role, d]
    shifts = role_shift_inference(all_cells, is_name)
    pairs = role_pairs(model, design, word_type)
    read_layer, chosen = _read_layer(layer, shifts, word_type, model.cfg.n_layers)
    job = _ShareJob(
        model=model,
        pairs=pairs,
        metric=projection_metric(shifts, read_layer, pairs, share_basis(all_cells[read_layer + 1])),
        cells=all_cells[read_layer + 1],
        is_name=is_name,
        layer=read_layer,
        max_batch_size=max_batch_size,
        progress=progress,
    )
    att: dict[str, PatchResult] = {}
    if attribution:  # one gradient, of the scalar subjecthood
        scalar = subjecthood_metric(shifts, read_layer, pairs)
        att = attribution_patching(model, pairs.subject, pairs.object, scalar, sites, lengths="pad")
    components, shift = _component_shares(job, sites, att)
    heads = components.get("head_out")
    paths = _path_shares(job, heads, n_receivers) if heads is not None else {}
    return RoleShiftAttribution(
        model_name=model_info(model).name,
        layer=read_layer,
        layer_label=site_hooks("resid_post", model.cfg.n_layers)[read_layer + 1][1],
        word_type=word_type,
        pairs=pairs,
        shifts=shifts,
        layer_chosen=chosen,
        shift_per_pair=shift.double().cpu(),
        components=components,
        paths=paths,
        alpha=alpha,
    )


def _check_request(model: HookedModel, layer: int | str | None, sites: Sequence[str]) -> list[str]:
    """The site kinds to patch (MLP kinds dropped on an attention-only model), after
    checking the read layer and the site names."""
    n_layers = model.cfg.n_layers
    if isinstance(layer, str) and layer != "peak":
        raise ValueError(f"layer must be a block index, None or 'peak', got {layer!r}")
    if isinstance(layer, int) and not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} does not exist: the model has {n_layers} layers")
    unknown = [s for s in sites if s not in ATTRIBUTION_SITES]
    if unknown:
        raise ValueError(f"unknown site kinds {unknown}; use some of {ATTRIBUTION_SITES}")
    kept = [s for s in sites if has_mlps(model) or not s.startswith("mlp")]
    if not kept:
        raise ValueError(
            "no site to patch: the model is attention-only, so give a head site "
            "('head_out', 'head_out_by_pos')"
        )
    return kept


def _study_cells(
    model: HookedModel, design: RoleDesign, progress: bool
) -> tuple[Float[Tensor, "layer word family role d_model"], Tensor]:
    """The design's in-context readings of each word at every layer as the study's cells,
    and which words are names."""
    in_context = ~design.mask("alone")
    keep = in_context.tolist()
    texts = [t for t, k in zip(design.texts, keep, strict=True) if k]
    words = [it.word for it, k in zip(design.items, keep, strict=True) if k]
    acts = collect(
        model, texts, "resid_post", Positions.word(words, subtoken="last"), progress=progress
    )
    is_name = torch.arange(len(design.words)) < len(design.names)
    return _role_cells(acts.tensor, design, in_context), is_name


def _read_layer(
    layer: int | str | None, shifts: RoleShifts, word_type: str, n_layers: int
) -> tuple[int, str]:
    """The read block and how it was chosen (``"given"``, ``"last"`` or ``"peak"``: the
    block with the largest mean shift of ``word_type`` words, index 0 being the embedding)."""
    if layer == "peak":
        total = shifts.objects if word_type == "object" else shifts.names
        return int(total[SCOPES[0]].estimate[1:].argmax()), "peak"
    if layer is None:
        return n_layers - 1, "last"
    return int(layer), "given"


@dataclass(frozen=True)
class _ShareJob:
    """What every component sweep of one attribution shares: the model and pairs, the
    metric (subjecthood, then projections on the share basis), the read layer's cells for
    the inference, and the patching settings."""

    model: HookedModel
    pairs: RolePairs
    metric: Metric
    cells: Tensor
    is_name: Tensor
    layer: int
    max_batch_size: int | None
    progress: bool

    def offsets(self) -> range:
        """Positions relative to the read word that every pair has (W-k .. W+m)."""
        read = self.pairs.read_position
        after = min(
            len(tokenize_prompt(self.model, t)) - 1 - int(p)
            for texts in (self.pairs.subject, self.pairs.object)
            for t, p in zip(texts, read.tolist(), strict=True)
        )
        return range(-int(read.min()), after + 1)

    def share(self, site: str, result: PatchResult, **view: Any) -> ComponentShare:
        return _share(
            site, result, pairs=self.pairs, cells=self.cells, is_name=self.is_name, **view
        )


def _component_shares(
    job: _ShareJob, sites: Sequence[str], att: dict[str, PatchResult]
) -> tuple[dict[str, ComponentShare], Tensor]:
    """Each site kind's shares (positions re-indexed by offset from the read word), and
    the shift per pair (subject minus object form: the same unpatched runs for every
    site, read from the first)."""
    span, read = job.offsets(), job.pairs.read_position
    offset_labels = [f"W{o:+d}" if o else "W" for o in span]
    components: dict[str, ComponentShare] = {}
    shift: Tensor | None = None
    for site in sites:
        res = activation_patching(
            job.model, job.pairs.subject, job.pairs.object, job.metric, site,
            layers=list(range(job.layer + 1)), lengths="pad",
            max_batch_size=job.max_batch_size, progress=job.progress,
        )  # fmt: skip
        if shift is None:
            shift = res.clean[:, 0] - res.corrupted[:, 0]
        values, axes, labels = res.values, res.axes, dict(res.labels)
        a = att[site].values[: job.layer + 1] if site in att else None
        if "pos" in res.axes:
            p_axis = res.axes.index("pos")
            values = _offsets(values.movedim(-1, 0), p_axis + 1, read, span).movedim(0, -1)
            a = None if a is None else _offsets(a, p_axis, read, span)
            axes = tuple("offset" if x == "pos" else x for x in res.axes)
            labels = {("offset" if k == "pos" else k): v for k, v in labels.items()}
            labels["offset"] = offset_labels
        components[site] = job.share(
            site, res, values=values, axes=axes, labels=labels, attribution=a
        )
    if shift is None:
        raise ValueError("no site to patch")
    return components, shift


def _path_shares(
    job: _ShareJob, heads: ComponentShare, n_receivers: int
) -> dict[str, ComponentShare]:
    """Path patching from every upstream head into the ``n_receivers`` heads carrying the
    largest positive fractions (their queries, keys and values together)."""
    paths: dict[str, ComponentShare] = {}
    if n_receivers <= 0 or job.layer < 1:
        return paths
    frac = heads.fraction.clone()
    frac[0] = -float("inf")  # layer-0 heads have no upstream heads
    order = frac.flatten().argsort(descending=True)[:n_receivers]
    for k in order.tolist():
        rl, rh = divmod(k, job.model.cfg.n_heads)
        if not frac[rl, rh] > 0:
            continue
        recv = [(rl, rh, w) for w in ("q", "k", "v")]
        res = path_patching(
            job.model, job.pairs.subject, job.pairs.object, job.metric, recv,
            direction="denoise", lengths="pad",
            max_batch_size=job.max_batch_size, progress=job.progress,
        )  # fmt: skip
        labels = {"layer": res.labels["layer"][:rl], "head": res.labels["head"]}
        paths[f"L{rl}H{rh}"] = job.share(
            f"path to L{rl}H{rh}", res, values=res.values[:rl], axes=res.axes, labels=labels
        )
    return paths
