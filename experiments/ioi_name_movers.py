"""IOI name movers: which heads move the indirect object to the answer, tested.

    python experiments/ioi_name_movers.py [--models ioi-compiled toy-ioi] [--n 40]
    python experiments/ioi_name_movers.py --models gpt2 --device cuda      # needs the network

For each model, on its IOI distribution with the paper's ABC corruption (IO, S1 and S2
replaced by three other names):

1. behaviour: logit difference IO - S and accuracy; on ABC prompts, name-flipped prompts
   (S2 replaced by IO) and prompts whose S1 is replaced by a third name;
2. discovery (prompts of seed 0): head patching (noising and denoising), residual patching
   by position (one template), path patching to the logits, attribution patching, direct
   logit attribution (DLA), attention END -> IO / S1 / S2 and S2 -> S1, copy scores.
   Candidates: name movers are heads whose direct effect (path to the logits) is at least
   5% of the clean logit difference and that attend END -> IO at least 0.1 more than
   END -> S1; negative movers the same with a negative effect; backups are later heads whose
   DLA rises by 5% of the logit difference when the movers are mean-ablated; their upstream
   heads come from path patching to the movers' queries and keys (without movers: to the
   head with the largest direct effect);
3. confirmation (fresh prompts of seed 1, so heads are not chosen and tested on the same
   prompts): each claim tested with a 95% bootstrap interval and a p-value against random
   head sets of the same size (or sign flips, for attention);
4. agreement with what is known: the compiled model's construction (its card) and the toy
   model's card, checked; for GPT-2 the paper's heads, printed beside ours.

Writes ``ioi_name_movers_<model>.json`` and figures ``ioi_name_movers_<model>_<kind>`` with
kind in patching, resid, upstream, heads, scatter, claims (``.html``, and ``.png`` unless
``--no-png``) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

OFFLINE_MODELS = ("ioi-compiled", "toy-ioi")
SHARE = 0.05  # a candidate's direct effect: at least this share of the clean logit difference
ATTENTION_MARGIN = 0.1  # a mover attends END -> IO at least this much more than END -> S1
# What Wang et al. (2022) report for GPT-2 small; not checkable offline.
GPT2_PAPER = {
    "name_movers": ["L9H9", "L9H6", "L10H0"],
    "negative_name_movers": ["L10H7", "L11H10"],
    "clean_logit_difference": 3.56,
}
# The compiled model's construction (mi_cluster/models/compiled/MODEL_CARD.md).
COMPILED_TRUTH = {
    "name_movers": ["L2H0", "L2H1"],
    "negative_name_movers": ["L2H2"],
    "backup_name_movers": ["L3H0"],
    "query_senders": ["L1H0"],
}


# The circuit each offline model's card documents, evaluated as a whole (IOI paper, Sec. 4).
CARD_CIRCUITS = {
    "ioi-compiled": [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (3, 0)],  # the construction
    # duplicate-token heads, the layer-1 intro-name copiers and L2H2 (toy MODEL_CARD.md)
    "toy-ioi": [(0, 0), (0, 2), (1, 0), (1, 1), (1, 3), (2, 2)],
}


def circuit_evaluation(model: Any, name: str, make, names, n: int) -> dict | None:
    """The card's circuit on fresh prompts: every other head mean-ablated over ABC prompts
    (the paper's reference), and resampled from other prompts of the same length."""
    from mi_cluster.core import ioi_prompts as ioi
    from mi_cluster.studies.ioi.circuits import evaluate_circuit

    if name not in CARD_CIRCUITS:
        return None
    clean = make(n, 1)
    abc = ioi.abc_corruption(clean, names, seed=1)
    return {
        method: evaluate_circuit(
            model, clean, CARD_CIRCUITS[name], reference=ref, method=method
        ).summary()
        for method, ref in (("mean", abc), ("resample", None))
    }


def prompt_maker(model: Any, name: str):
    """``(make(n, seed, one_template=False), names)`` for the model's IOI distribution."""
    from mi_cluster.core import ioi_prompts as ioi
    from mi_cluster.models import compiled
    from mi_cluster.models.toy import data as toy

    lists: dict = {}
    templates = ioi.TEMPLATES
    if name == "ioi-compiled":
        lists = {"names": compiled.NAMES, "places": compiled.PLACES, "objects": compiled.OBJECTS}
        templates = compiled.TEMPLATES
    elif name == "toy-ioi":
        lists = {"names": toy.NAMES, "places": toy.PLACES, "objects": toy.OBJECTS}
        templates = toy.IOI_TEMPLATES[: toy.N_TRAIN_TEMPLATES]

    def make(n: int, seed: int, one_template: bool = False) -> list:
        if name == "toy-ioi" and not one_template:  # as its card: held-out name pairs
            return toy.eval_examples("held_out_pairs", n=n, seed=123 + seed)
        kept = templates[:1] if one_template else templates
        return ioi.ioi_prompts(model, n, templates=kept, seed=seed, **lists)

    return make, tuple(lists.get("names", ioi.NAMES))


def _label(heads) -> list[str]:
    return [f"L{a}H{b}" for a, b in heads]


def _grid(t) -> list:
    from mi_cluster.core.records import rounded

    return rounded(t, 4)


def behaviour(model: Any, clean: list, names: tuple[str, ...], abc_ld: float) -> dict:
    """Logit differences IO - S (IO and S of the clean prompt, also on the altered ones)."""
    from mi_cluster.core import ioi_prompts as ioi
    from mi_cluster.studies.ioi import heads as H

    rng = random.Random(0)
    third = [rng.choice([m for m in names if m not in (p.io, p.s)]) for p in clean]
    s1 = [ioi.replace_subject(p, "s1", t) for p, t in zip(clean, third, strict=True)]
    ld = H.logit_difference(model, clean)
    return {
        "clean_logit_difference": round(float(ld.mean()), 4),
        "clean_accuracy": round(float((ld > 0).float().mean()), 4),
        "abc_logit_difference": round(abc_ld, 4),
        "name_flip_logit_difference": round(
            float(H.logit_difference(model, ioi.name_flip(clean)).mean()), 4
        ),
        "s1_replaced_logit_difference": round(float(H.logit_difference(model, s1).mean()), 4),
    }


def discover(model: Any, make, names, n: int, progress: bool) -> dict:
    """Every sweep on the discovery prompts, and the candidate heads."""
    from mi_cluster.core import ioi_prompts as ioi
    from mi_cluster.methods import patching as P
    from mi_cluster.studies.ioi import heads as H
    from mi_cluster.studies.ioi.claims import ablation_hooks

    clean = make(n, 0)
    abc = ioi.abc_corruption(clean, names, seed=0)
    pair = ([p.text for p in clean], [p.text for p in abc])
    metric = P.logit_difference(model, [(p.io, p.s) for p in clean])
    kw = {"progress": progress}
    found: dict[str, Any] = {
        "noise": P.activation_patching(model, *pair, metric, "head_out", direction="noise", **kw),
        "denoise": P.activation_patching(model, *pair, metric, "head_out", **kw),
        "path": P.path_patching(model, *pair, metric, final_ln="frozen", **kw),
        "path_recomputed": P.path_patching(model, *pair, metric, **kw),
        "attr": P.attribution_patching(model, *pair, metric, ("head_out",))["head_out"],
    }
    one = make(n, 0, one_template=True)
    one_pair = ([p.text for p in one], [p.text for p in ioi.abc_corruption(one, names)])
    one_metric = P.logit_difference(model, [(p.io, p.s) for p in one])
    for d in ("denoise", "noise"):
        found[f"resid_{d}"] = P.activation_patching(
            model, *one_pair, one_metric, "resid_pre", direction=d, **kw
        )
    scale = float(found["path"].clean.mean())
    direct = (found["path"].clean.mean() - found["path"].mean()).cpu()  # drop, noising the path
    att = {
        f"{q}_to_{k}": H.attention_between(model, clean, q, k).mean(-1)
        for q, k in (("end", "io"), ("end", "s1"), ("end", "s2"), ("s2", "s1"), ("s2", "s1_next"))
    }
    prefer_io = att["end_to_io"] - att["end_to_s1"]
    heads = [(a, b) for a in range(model.cfg.n_layers) for b in range(model.cfg.n_heads)]
    big = [h for h in heads if abs(float(direct[h])) >= SHARE * abs(scale)]
    movers = [h for h in big if direct[h] > 0 and prefer_io[h] >= ATTENTION_MARGIN]
    negative = [h for h in big if direct[h] < 0 and prefer_io[h] >= ATTENTION_MARGIN]
    top = sorted(heads, key=lambda h: -abs(float(direct[h])))[:3]
    dla = H.head_direct_logit_attribution(model, clean)
    backup, rise = [], None
    if movers:
        hooks = ablation_hooks(model, clean, movers, reference=abc)
        rise = (H.head_direct_logit_attribution(model, clean, hooks) - dla).mean(-1)
        last = max(a for a, _ in movers)
        backup = [h for h in heads if h[0] > last and rise[h] >= SHARE * abs(scale)]
    groups = [movers] if movers else []
    if top[0] not in movers + negative:
        groups.append([top[0]])
    upstream = {}  # per target group: path patching to its queries and keys, and the senders
    for group in groups:
        entry: dict[str, Any] = {"targets": group}
        for w in ("q", "k"):
            result = P.path_patching(model, *pair, metric, [(a, b, w) for a, b in group], **kw)
            share = result.normalised()
            ranked = sorted(heads, key=lambda h: -float(share[h]))[:3]
            entry[w] = result  # senders: up to 3 heads with at least 5% of the effect
            entry[f"{w}_senders"] = [h for h in ranked if float(share[h]) >= SHARE]
        upstream[", ".join(_label(group))] = entry
    copy = {
        "copy_score_paper": H.copy_scores(model, [], variant="paper", prompts=clean),
        "negative_copy_score_paper": H.copy_scores(
            model, [], negative=True, variant="paper", prompts=clean
        ),
    }
    return {
        "clean": clean,
        "results": found,
        "direct": direct,
        "dla": dla,
        "dla_rise_under_mover_ablation": rise,
        "attention": att,
        "copy": copy,
        "movers": movers,
        "negative": negative,
        "backup": backup,
        "top_direct": top,
        "upstream": upstream,
        "attribution_r": P.correlation_with(found["attr"], found["denoise"]),
    }


def confirm(model: Any, make, names, n: int, found: dict) -> list[tuple[str, Any]]:
    """The candidates' claims, as ``(role, claim)``, tested on fresh prompts."""
    from mi_cluster.core import ioi_prompts as ioi
    from mi_cluster.methods import patching as P
    from mi_cluster.studies.ioi.claims import (
        ablation_test,
        attention_test,
        copy_score_test,
        direct_effect_test,
    )

    clean = make(n, 1)
    abc = ioi.abc_corruption(clean, names, seed=1)
    metric = P.logit_difference(model, [(p.io, p.s) for p in clean])
    path = P.path_patching(model, [p.text for p in clean], [p.text for p in abc], metric,
                           final_ln="frozen", progress=False)  # fmt: skip

    def direct(heads, sign):
        return direct_effect_test(model, clean, abc, heads, alternative=sign, pool="all", path=path)

    def copy(heads, negative):
        return copy_score_test(model, heads, names, negative=negative, variant="paper",
                               prompts=clean)  # fmt: skip

    movers, negative, backup = found["movers"], found["negative"], found["backup"]
    claims = []
    for role, group, sign in (("name movers", movers, "greater"),
                              ("negative name movers", negative, "less")):  # fmt: skip
        if not group:
            continue
        claims.append((role, direct(group, sign)))
        if len(group) > 1:
            claims += [(f"{role}, one by one", direct([h], sign)) for h in group]
        claims.append((role, attention_test(model, clean, group)))
        claims.append((role, copy(group, sign == "less")))
    if movers:
        claims.append(("name movers", ablation_test(model, clean, movers, reference=abc)))
        if backup:
            claim = ablation_test(model, clean, movers + backup, reference=abc)
            claims.append(("name movers and backups", claim))
    top = found["top_direct"][0]
    if top not in movers + negative:  # what the largest direct effect is, if not a mover
        sign = "greater" if found["direct"][top] > 0 else "less"
        suppresses_s = found["attention"]["end_to_s2"][top] > found["attention"]["end_to_io"][top]
        role = "largest direct effect"
        claims.append((role, direct([top], sign)))
        claims.append((role, attention_test(model, clean, [top])))
        claims.append((role, attention_test(model, clean, [top], key="s2", versus="io")))
        claims.append((role, copy([top], bool(suppresses_s))))
    return claims


def confirmed(claims: list[dict], role: str) -> list[str]:
    """Heads of ``role`` whose direct effect and END -> IO attention are both supported."""
    ok = {
        kind: [c["heads"] for c in claims if c["role"] == role and c["claim"].startswith(kind)
               and c["supported"]]
        for kind in ("direct effect", "attention end->io")
    }  # fmt: skip
    return sorted({h for hs in ok["direct effect"] if hs in ok["attention end->io"] for h in hs})


def _upstream(found: dict, group: list, which: str) -> list:
    """The heads sending to ``group``'s queries or keys (``which``), if it was a target."""
    entry = found["upstream"].get(", ".join(_label(group)))
    return entry[f"{which}_senders"] if entry else []


def agreement(name: str, found: dict, record: dict) -> dict:
    """What the model's card (or the paper) says, what we found, and whether they agree."""
    claims = record["claims"]
    ours = {
        "name_movers": confirmed(claims, "name movers"),
        "negative_name_movers": confirmed(claims, "negative name movers"),
        "backup_name_movers": _label(found["backup"]),
        "query_senders": _label(_upstream(found, found["movers"], "q")[:1]),
    }
    if name == "ioi-compiled":
        checks = {k: ours[k] == v for k, v in COMPILED_TRUTH.items()}
        checks["every_claim_supported"] = all(c["supported"] for c in claims)
        checks["constructed_circuit_is_faithful_and_beats_random_circuits"] = all(
            abs(e["kept"] - 1) < 0.05 and e["p_value"] < 0.05 for e in record["circuit"].values()
        )
        return {"reference": COMPILED_TRUTH, "found": ours, "checks": checks}
    if name == "toy-ioi":  # its card: no positive movers; L2H2 suppresses S2 found via L0 heads
        top = found["top_direct"][0]
        att = found["attention"]
        l2h2 = {c["claim"].split(" (")[0]: c for c in claims if c["heads"] == ["L2H2"]}

        def first_of_all(kind: str) -> bool:
            """Beats every other head (the smallest p its null allows; 12 heads give no
            lower than 1/12) with an interval that excludes zero."""
            c = l2h2.get(kind)
            return bool(c) and c["p_value"] <= c["p_min"] + 1e-12 and c["ci_low"] > 0

        checks = {
            "no_confirmed_name_movers": not ours["name_movers"],
            "largest_direct_effect_is_L2H2": top == (2, 2),
            "L2H2_direct_effect_first_of_all_heads": first_of_all("direct effect"),
            "L2H2_attends_S2_over_IO": bool(l2h2)
            and l2h2["attention end->s2 minus end->io"]["supported"],
            "L2H2_negative_copy_first_of_all_heads": first_of_all("negative copy score"),
            "duplicate_heads_L0H0_L0H2": sorted(
                h for h in [(0, 0), (0, 1), (0, 2), (0, 3)] if att["s2_to_s1"][h] > 0.3
            )
            == [(0, 0), (0, 2)],
            "cards_circuit_beats_random_circuits_under_resampling": record["circuit"]["resample"][
                "p_value"
            ]
            < 0.05,
            "L2H2_key_senders_are_the_cards_duplicate_heads": (0, 2)
            in _upstream(found, [(2, 2)], "k")
            and set(_upstream(found, [(2, 2)], "k")) <= {(0, 0), (0, 2), (1, 2)},
        }
        ours["largest_direct_effect"] = _label([top])
        ours["L2H2_key_senders"] = _label(_upstream(found, [(2, 2)], "k"))
        return {"reference": "mi_cluster/models/toy/MODEL_CARD.md", "found": ours, "checks": checks}
    if name == "gpt2":
        return {"reference": GPT2_PAPER, "found": ours, "checks": {}}
    return {"reference": None, "found": ours, "checks": {}}


def figures(name: str, found: dict, claims: list) -> dict:
    from mi_cluster.plotting import value_scatter
    from mi_cluster.plotting.heads import claims_forest, head_maps
    from mi_cluster.plotting.patching import patching_maps

    r, att = found["results"], found["attention"]
    n = r["path"].values.shape[-1]
    scatter_heads = found["movers"] + found["negative"] or found["top_direct"][:2]
    x, y, groups, hover = [], [], [], []
    end_io = found["end_io_per_prompt"]
    for h in scatter_heads:
        x += end_io[h].tolist()
        y += found["dla"][h].tolist()
        groups += [f"L{h[0]}H{h[1]}"] * n
        hover += [p.text for p in found["clean"]]
    return {
        "patching": patching_maps(
            [r["noise"], r["denoise"], r["path"], r["path_recomputed"], r["attr"]],
            [
                "heads, noising",
                "heads, denoising",
                "path to logits (final LN frozen)",
                "path to logits (final LN recomputed)",
                f"attribution (r = {found['attribution_r']:.2f})",
            ],
            title=f"{name}: which heads carry IO − S? ({n} prompts, ABC corruption)",
        ),
        "resid": patching_maps(
            [r["resid_denoise"], r["resid_noise"]],
            ["residual stream, denoising", "residual stream, noising"],
            title=f"{name}: the residual stream by layer and position (one template)",
        ),
        "upstream": patching_maps(
            [e[w] for e in found["upstream"].values() for w in ("q", "k")],
            [f"path to {w} of {t}" for t in found["upstream"] for w in ("queries", "keys")],
            title=f"{name}: which heads steer the candidates? (path patching, noising)",
        ),
        "heads": head_maps(
            [
                found["direct"],
                found["dla"].mean(-1),
                att["end_to_io"],
                att["end_to_s1"],
                att["end_to_s2"],
                att["s2_to_s1"],
                found["copy"]["copy_score_paper"],
                found["copy"]["negative_copy_score_paper"],
            ],  # fmt: skip
            [
                "direct effect (path, drop)",
                "direct logit attribution",
                "attention END→IO",
                "attention END→S1",
                "attention END→S2",
                "attention S2→S1 (duplicate)",
                "copy score (paper)",
                "negative copy score (paper)",
            ],  # fmt: skip
            ["logit diff (IO − S)"] * 2 + ["attention"] * 4 + ["fraction of names"] * 2,
            title=f"{name}: every head, discovery prompts (n = {n})",
            columns=4,
            stated={"attention": (0.0, 1.0), "fraction of names": (0.0, 1.0)},
        ),
        "scatter": value_scatter(
            x,
            y,
            "attention END → IO",
            "direct logit attribution (IO − S)",
            title=f"{name}: attention to IO vs what the head writes, per prompt",
            hover=hover,
            groups=groups,
        ),  # fmt: skip
        "claims": claims_forest(
            [c for _, c in claims], title=f"{name}: head-role claims on fresh prompts"
        ),
    }


def run(name: str, out: Path, n: int = 40, device: str | None = None, png: bool = True,
        progress: bool = True) -> dict:  # fmt: skip
    from mi_cluster.core.provenance import provenance
    from mi_cluster.models.loading import load_model
    from mi_cluster.plotting import write_experiment
    from mi_cluster.studies.ioi import heads as H

    model = load_model(name, device=device)
    make, names = prompt_maker(model, name)
    found = discover(model, make, names, n, progress)
    found["end_io_per_prompt"] = H.attention_between(model, found["clean"], "end", "io")
    claims = confirm(model, make, names, n, found)
    circuit = circuit_evaluation(model, name, make, names, n)
    r = found["results"]
    record: dict[str, Any] = {
        "model": name,
        "n_prompts": n,
        "corruption": "ABC: IO, S1 and S2 replaced by three other names",
        "behaviour": behaviour(model, found["clean"], names, float(r["noise"].corrupted.mean())),
        "candidates": {
            "rule": f"|direct effect| >= {SHARE} x clean logit difference and attention "
            f"END->IO - END->S1 >= {ATTENTION_MARGIN}; backups: DLA rises by {SHARE} x "
            "logit difference when the movers are mean-ablated (ABC means)",
            "name_movers": _label(found["movers"]),
            "negative_name_movers": _label(found["negative"]),
            "backup_name_movers": _label(found["backup"]),
            "largest_direct_effects": _label(found["top_direct"]),
            "upstream": {
                target: {
                    "query_senders": _label(e["q_senders"]),
                    "key_senders": _label(e["k_senders"]),
                }
                for target, e in found["upstream"].items()
            },
        },
        "claims": [
            {"role": role, **asdict(c), "heads": _label(c.heads), "supported": c.supported()}
            for role, c in claims
        ],
        "per_head": {
            "direct_effect_path_drop": _grid(found["direct"]),  # final LayerNorm frozen
            "dla": _grid(found["dla"].mean(-1)),
            **{f"attention_{k}": _grid(v) for k, v in found["attention"].items()},
            **{k: _grid(v) for k, v in found["copy"].items()},
            "head_out_noise_normalised": _grid(r["noise"].normalised()),
            "head_out_denoise_normalised": _grid(r["denoise"].normalised()),
            "path_to_logits_normalised": _grid(r["path"].normalised()),
            "direct_effect_ln_recomputed": _grid(
                r["path_recomputed"].clean.mean() - r["path_recomputed"].mean()
            ),
            **{
                f"path_to_{w}_of_{t}_normalised": _grid(e[w].normalised())
                for t, e in found["upstream"].items()
                for w in ("q", "k")
            },
        },
        "attribution_correlation": round(found["attribution_r"], 4),
    }
    if found["dla_rise_under_mover_ablation"] is not None:
        record["per_head"]["dla_rise_under_mover_ablation"] = _grid(
            found["dla_rise_under_mover_ablation"]
        )
    if circuit is not None:
        record["circuit"] = circuit
    record["agreement"] = agreement(name, found, record)
    stem = f"ioi_name_movers_{name.replace('/', '_')}"
    figs = figures(name, found, claims)
    confirmed = record["agreement"]["found"]
    movers, negative = confirmed["name_movers"], confirmed["negative_name_movers"]
    record["headline"] = (
        f"logit difference {record['behaviour']['clean_logit_difference']:+.2f}; name movers "
        f"{movers or 'none'}, negative {negative or 'none'}"
    )
    prov = provenance([model], [p.text for p in found["clean"]], seed=0)
    files, failed = write_experiment(out, stem, record, figs, png=png, indent=1, provenance=prov)
    for message in failed:
        print(message, file=sys.stderr)
    record["files"] = [str(f) for f in files]
    return record


def report(record: dict) -> str:
    b, c = record["behaviour"], record["candidates"]
    lines = [
        f"== {record['model']} ({record['n_prompts']} prompts a set) ==",
        f"logit difference {b['clean_logit_difference']:+.3f}, accuracy "
        f"{100 * b['clean_accuracy']:.1f}%; ABC {b['abc_logit_difference']:+.3f}, name flip "
        f"{b['name_flip_logit_difference']:+.3f}, "
        f"S1 replaced {b['s1_replaced_logit_difference']:+.3f}",
        f"candidates: name movers {c['name_movers'] or 'none'}; negative "
        f"{c['negative_name_movers'] or 'none'}; backup {c['backup_name_movers'] or 'none'}; "
        f"largest direct effects {c['largest_direct_effects']}",
        *[
            f"upstream of {t}: queries from {u['query_senders']}, keys from {u['key_senders']}"
            for t, u in c["upstream"].items()
        ],
        "claims on fresh prompts:",
    ]
    for claim in record["claims"]:
        verdict = "yes" if claim["supported"] else "no "
        lines.append(
            f"  [{verdict}] {claim['role']}: {claim['claim']} {claim['heads']}: "
            f"{claim['effect']:+.3f} [{claim['ci_low']:+.3f}, {claim['ci_high']:+.3f}], "
            f"p = {claim['p_value']:.3g} (smallest possible {claim['p_min']:.2g}) "
            f"vs {claim['null']}"
        )
    for method, e in record.get("circuit", {}).items():
        lines.append(
            f"card's circuit {e['heads']}, the rest {method}-ablated: keeps "
            f"{100 * e['kept']:.0f}% of the logit difference ({e['circuit_metric']:+.2f} "
            f"[{e['circuit_ci'][0]:+.2f}, {e['circuit_ci'][1]:+.2f}] of {e['model_metric']:+.2f}); "
            f"completeness gap mean {e['completeness_mean']:.2f}, worst "
            f"{e['completeness_worst']:.2f}; random circuits keep {e['random_mean']:+.2f} "
            f"(p = {e['p_value']:.3g})"
        )
    a = record["agreement"]
    movers, negative = a["found"]["name_movers"], a["found"]["negative_name_movers"]
    lines.append(
        "confirmed (direct effect and attention to IO both supported): name movers "
        f"{movers or 'none'}; negative {negative or 'none'}"
    )
    if a["checks"]:
        failed = [k for k, ok in a["checks"].items() if not ok]
        source = a["reference"] if isinstance(a["reference"], str) else "the construction"
        verdict = "all checks pass" if not failed else f"FAILED {failed}"
        lines.append(f"agreement with {source}: {verdict}")
    elif a["reference"]:
        lines.append(f"the paper reports (not checkable offline): {a['reference']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", "--model", nargs="+", default=list(OFFLINE_MODELS))
    parser.add_argument("--n", type=int, default=40, help="prompts per set (default 40)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--no-png", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    ok = True
    for name in args.models:
        record = run(name, args.out, args.n, args.device, not args.no_png, not args.quiet)
        print(report(record))
        for path in record["files"]:
            print(f"wrote {path}")
        ok &= all(record["agreement"]["checks"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
