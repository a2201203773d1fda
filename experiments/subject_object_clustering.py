"""Subject/object clustering study: does subject position make an object word name-like?

A 2 x 2 design (word type: person name vs object noun x syntactic role: subject vs object
position) over five template families, every word read at the same token position in both
roles, plus each word alone; subjecthood is the projection on a name-vs-object axis fitted
per layer without the scored word; effects are tested per layer with sign-flip and
label-permutation tests, bootstrap (BCa) intervals over words, and Holm / Benjamini-Hochberg
corrections across layers (see ``mi_cluster/studies/subject_object/study.py``).

Offline it runs on MiniLM (real BERT weights) and the shipped toy IOI model; with network,
``--models gpt2`` (or any hub name). For each model it writes to ``--out``:

- ``subject_object_<model>.json``: the answer in words and every number per layer (also
  with the probe axis, as a robustness check);
- ``subject_object_<model>_scatter.html``: aligned-PCA animation across layers;
- ``subject_object_<model>_shift.{html,png}``: subjecthood shifts with bands and markers;
- ``subject_object_<model>_separation.{html,png}``: separation curves with bands.
"""

from __future__ import annotations

import sys
from pathlib import Path

from study_cli import parse_study_args, print_record, record_written, study_design, study_parser

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
    from mi_cluster.core.provenance import provenance
    from mi_cluster.models.loading import load_model
    from mi_cluster.plotting import write_experiment
    from mi_cluster.plotting.subject_object import study_scatter, study_separation, study_shift
    from mi_cluster.studies.subject_object.study import run_subject_object_study

    model = load_model(model_name)
    design = study_design(model, model_name, words)
    settings = {"n_permutations": n_permutations, "n_bootstrap": n_bootstrap, "progress": progress}
    study = run_subject_object_study(model, design, method="centroid", **settings)
    robust = run_subject_object_study(
        model, design, method="probe", **{**settings, "progress": False}
    )
    record = study.summary()
    robust_record = robust.summary()
    record["robustness_probe_axis"] = {key: robust_record[key] for key in ("answer", "shifts")}
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
    return record_written(record, written, failed)


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(__doc__.splitlines()[0], OFFLINE_MODELS)
    args = parse_study_args(parser, argv, OFFLINE_MODELS)
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
        probe = record["robustness_probe_axis"]["answer"]
        print_record(name, record, f"robustness (probe axis): {probe}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
