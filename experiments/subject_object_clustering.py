"""Subject/object clustering study: does subject position make an object word name-like?

A 2 x 2 design (word type: person name vs object noun x syntactic role: subject vs object
position) over five template families, every word read at the same token position in both
roles, plus each word alone; subjecthood is the projection on a name-vs-object axis fitted
per layer without the scored word; effects are tested per layer with sign-flip and
label-permutation tests, bootstrap (BCa) intervals over words, and Holm / Benjamini-Hochberg
corrections across layers (see ``mi_cluster/subject_object.py``).

Offline it runs on MiniLM (real BERT weights) and the shipped toy IOI model; with network,
``--models gpt2`` (or any hub name). For each model it writes to ``--out``:

- ``subject_object_<model>.json``: the answer in words and every number per layer (also
  with the probe axis, as a robustness check);
- ``subject_object_<model>_scatter.html``: aligned-PCA animation across layers;
- ``subject_object_<model>_shift.{html,png}``: subjecthood shifts with bands and markers;
- ``subject_object_<model>_separation.{html,png}``: separation curves with bands.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

OFFLINE_MODELS = ("minilm", "toy-ioi")  # the study's offline defaults


def run(
    model_name: str,
    out: Path,
    n_permutations: int = 10_000,
    n_bootstrap: int = 10_000,
    png: bool = True,
    words: int | None = None,
    progress: bool = True,
) -> dict:
    """Run the study on one model and write its files; returns the JSON record."""
    from mi_cluster.designs import NAMES, OBJECTS, UnknownWordWarning, role_design
    from mi_cluster.models import load_model
    from mi_cluster.plotting import write_experiment
    from mi_cluster.plotting.subject_object import study_scatter, study_separation, study_shift
    from mi_cluster.provenance import provenance
    from mi_cluster.subject_object import run_subject_object_study

    model = load_model(model_name)
    names, objects = (NAMES, OBJECTS) if words is None else (NAMES[:words], OBJECTS[:words])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownWordWarning)
        design = role_design(model, names, objects)
    for w in caught:
        print(f"[{model_name}] {w.message}", file=sys.stderr)
    settings = {"n_permutations": n_permutations, "n_bootstrap": n_bootstrap, "progress": progress}
    study = run_subject_object_study(model, design, method="centroid", **settings)
    robust = run_subject_object_study(
        model, design, method="probe", **{**settings, "progress": False}
    )
    record = study.summary()
    robust_record = robust.summary()
    record["robustness_probe_axis"] = {
        key: robust_record[key] for key in ("answer", "object_shift", "name_shift", "interaction")
    }
    record["settings"] = {
        "n_permutations": n_permutations,
        "n_bootstrap": n_bootstrap,
        "seed": 0,
        "site": "resid_post (embedding output, then each block's output)",
    }
    stem = f"subject_object_{study.model_name.replace('/', '_')}"
    figures = {
        "scatter": study_scatter(study),
        "shift": study_shift(study),
        "separation": study_separation(study),
    }
    record["headline"] = record["answer"].split(". ")[0] + "."
    prov = provenance([model], design.texts, seed=0)
    written, failed = write_experiment(
        out,
        stem,
        record,
        figures,
        png=png,
        html_only={"scatter"},  # the animation
        provenance=prov,
    )
    for message in failed:
        print(message, file=sys.stderr)
    record["files"] = [str(p) for p in written]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        "--model",
        nargs="+",
        default=list(OFFLINE_MODELS),
        help="models to study (default: minilm toy-ioi, offline; e.g. gpt2 with network)",
    )
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--n-permutations", type=int, default=10_000)
    parser.add_argument("--n-bootstrap", type=int, default=10_000)
    parser.add_argument(
        "--words", type=int, default=None, help="use only the first N names and objects"
    )
    parser.add_argument("--no-png", action="store_true", help="skip static PNG export")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if all(m in OFFLINE_MODELS for m in args.models):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in args.models:
        record = run(
            name,
            args.out,
            args.n_permutations,
            args.n_bootstrap,
            png=not args.no_png,
            words=args.words,
            progress=not args.quiet,
        )
        print(f"\n== {name} ==\n{record['answer']}\n")
        print(f"robustness (probe axis): {record['robustness_probe_axis']['answer']}\n")
        for path in record["files"]:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
