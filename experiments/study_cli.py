"""What the two subject/object experiments share (``subject_object_clustering.py`` and
``object_to_subject_circuit.py``): their command line, their design (the word lists checked
against each model, with its warnings printed), and how they report what they wrote.

Imported by those scripts as a sibling module (the experiments are scripts, not a
package: ``python experiments/<name>.py`` puts this folder first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path


def study_parser(
    description: str, offline_models: tuple[str, ...], resamples: bool = True
) -> argparse.ArgumentParser:
    """The options both studies take (``--n-permutations``/``--n-bootstrap`` only where
    the study ``resamples``); a script adds its own before parsing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--models",
        "--model",
        nargs="+",
        default=list(offline_models),
        help=f"models (default: {' '.join(offline_models)}, offline; e.g. gpt2 with network)",
    )
    parser.add_argument("--out", type=Path, default=Path("figures"))
    if resamples:
        parser.add_argument("--n-permutations", type=int, default=10_000)
        parser.add_argument("--n-bootstrap", type=int, default=10_000)
    parser.add_argument(
        "--words", type=int, default=None, help="use only the first N names and objects"
    )
    parser.add_argument("--no-png", action="store_true", help="skip static PNG/SVG export")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_study_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, offline_models: tuple[str, ...]
) -> argparse.Namespace:
    """Parse; when every model asked for is an offline one, keep the hub offline."""
    args = parser.parse_args(argv)
    if all(m in offline_models for m in args.models):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return args


def study_design(model, model_name: str, words: int | None):
    """The role design on the first ``words`` names and objects (all by default), its
    warnings (words the model's tokenizer drops) printed to stderr with the model's name."""
    from mi_cluster.studies.subject_object.design import (
        NAMES,
        OBJECTS,
        UnknownWordWarning,
        role_design,
    )

    names, objects = (NAMES, OBJECTS) if words is None else (NAMES[:words], OBJECTS[:words])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownWordWarning)
        design = role_design(model, names, objects)
    for w in caught:
        print(f"[{model_name}] {w.message}", file=sys.stderr)
    return design


def record_written(record: dict, written: list, failed: list[str]) -> dict:
    """Print the exports that failed (e.g. no Chromium for PNG) and list the files written
    in the record."""
    for message in failed:
        print(message, file=sys.stderr)
    record["files"] = [str(p) for p in written]
    return record


def print_record(name: str, record: dict, *extra: str) -> None:
    """The answer, any extra lines, then every file written."""
    print(f"\n== {name} ==\n{record['answer']}\n")
    for line in extra:
        print(f"{line}\n")
    for path in record["files"]:
        print(f"wrote {path}")
