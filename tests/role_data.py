"""Simulated subject/object studies with known population values, for calibrating
:func:`mi_cluster.methods.stats.role_shift_inference`.

Shaped like the study: names and objects (20 and 20 by default), template families (5),
each word read in subject and in object position of every family, ``d_model`` correlated
dimensions, Student-t noise (3 degrees of freedom), word random effects, family-by-type
effects, word-specific role effects. Every "layer" is an independent dataset, so one call
of the inference calibrates on ``n_datasets`` at once.

Scenarios (keyword arguments of :func:`generate`):
    off: role moves every word by ``off`` x the name-object gap, at right angles to both
        the population axis and these templates' axis (so no shift along either);
    on_objects: a planted shift of the objects along the axis (fraction of the gap);
    on_both: both word types shifted alike along the axis (a real shift, no interaction);
    n_names, n_objects, object_noise: unequal groups, objects' readings noisier;
    family_role_sd: random family x type x role effects along the axis (sd, fraction of the
        gap): zero on average over templates in general, not over these templates.

The population values in ``truth``: ``objects``/``names`` over templates in general (the
gap direction), ``objects_fixed``/``names_fixed`` over these templates (the axis the
families' own type effects tilt, and the families' own role effects included), all as
fractions of the gap.
"""

from __future__ import annotations

import math

import torch

SCENARIOS: dict[str, dict[str, float]] = {
    "no role effect": {},
    "off-axis 0.3x gap": {"off": 0.3},
    "off-axis 1x gap": {"off": 1.0},
    "off-axis 3x gap": {"off": 3.0},
    "both types alike": {"on_both": 0.2},
    "31 names, 19 noisier objects": {"n_names": 31, "n_objects": 19, "object_noise": 2.0},
    "family x type x role": {"family_role_sd": 0.2},
}


def generate(
    gen: torch.Generator,
    *,
    n_datasets: int = 4,
    n_names: int = 20,
    n_objects: int = 20,
    n_families: int = 5,
    d: int = 64,
    off: float = 0.0,
    on_objects: float = 0.0,
    on_both: float = 0.0,
    sd_word: float = 0.2,
    sd_family_type: float = 0.03,
    sd_role_word: float = 0.15,
    sd_noise: float = 0.3,
    family_role_sd: float = 0.0,
    noise_df: int = 3,
    object_noise: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(cells [dataset, word, family, role, d], is_name [word], truth)``; role 0 is
    subject position, 1 object; names come first."""
    f64 = {"dtype": torch.float64, "generator": gen}
    n_words, n = n_names + n_objects, n_datasets
    is_name = torch.arange(n_words) < n_names
    mix = torch.eye(d, dtype=torch.float64) * 0.7 + 0.3 * torch.randn(d, d, **f64) / math.sqrt(d)
    delta = torch.zeros(d, dtype=torch.float64)
    delta[0] = 1.0  # the name-object gap is the unit
    centre = torch.where(is_name[:, None], delta / 2, -delta / 2)
    word = sd_word * torch.randn(n, n_words, d, **f64) @ mix
    fam_type = sd_family_type * torch.randn(n, 2, n_families, d, **f64) @ mix  # type 0: names
    axis_fixed = delta + fam_type[:, 0].mean(1) - fam_type[:, 1].mean(1)
    perp = _orthogonal_to(delta, axis_fixed)
    role_obj = (on_objects + on_both) * delta + off * perp
    role_name = on_both * delta + off * perp
    role = torch.where(is_name[None, :, None], role_name[:, None], role_obj[:, None])
    role = role + sd_role_word * torch.randn(n, n_words, d, **f64) @ mix
    fam_role = family_role_sd * torch.randn(n, 2, n_families, 1, **f64) * delta
    noise = torch.randn(n, n_words, n_families, 2, d, **f64)
    if noise_df:
        chi2 = torch.randn(n, n_words, n_families, 2, 1, noise_df, **f64).pow(2).sum(-1)
        noise = noise / (chi2 / noise_df).sqrt()
    noise = sd_noise * noise @ mix
    noise[:, ~is_name] *= object_noise
    typ = (~is_name).long()
    x = (centre[None] + word)[:, :, None, None] + fam_type[:, typ][:, :, :, None] + noise
    moved = role[:, :, None] + fam_role[:, typ]  # [dataset, word, family, d]
    x[:, :, :, 0] += moved / 2
    x[:, :, :, 1] -= moved / 2
    truth = {
        "objects": _along(role_obj, delta),
        "names": _along(role_name, delta),
        "objects_fixed": _along(role_obj + fam_role[:, 1].mean(1), axis_fixed),
        "names_fixed": _along(role_name + fam_role[:, 0].mean(1), axis_fixed),
    }
    return x, is_name, truth


def _along(v: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """``v``'s coordinate on ``axis`` (1 = one axis length)."""
    axis = axis.expand_as(v)
    return (v * axis).sum(-1) / axis.pow(2).sum(-1)


def _orthogonal_to(delta: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    """Per dataset, a unit vector at right angles to both ``delta`` and ``axes[i]``."""
    basis = torch.stack([delta.expand_as(axes), axes], -1)  # [n, d, 2]
    q, _ = torch.linalg.qr(basis)
    e = torch.zeros_like(delta)
    e[1] = 1.0
    perp = e - torch.einsum("ndk,nk->nd", q, torch.einsum("ndk,d->nk", q, e))
    return perp / perp.norm(dim=-1, keepdim=True)
