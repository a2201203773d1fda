"""The ``mi-cluster`` command line.

Every command checks its arguments and files first (model source, prompts file, output
path, site), with light modules only, and then imports torch and loads the model: a bad
argument is reported in well under a second. An error prints one line, ``mi-cluster:
error: ...``, and exits with status 1 (2 for a usage error); ``--debug`` (or
``MI_CLUSTER_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mi_cluster import __version__
from mi_cluster.core.hooks import SITES
from mi_cluster.models.sources import check_model_source

__all__ = ["CommandError", "main", "read_prompts", "read_text_file", "run_demo"]


class CommandError(ValueError):
    """A command's arguments or input files cannot be used; the message says why."""


def read_text_file(path: str | os.PathLike) -> str:
    """A UTF-8 text file's content, or a :class:`CommandError` naming what is wrong
    (missing, a directory, unreadable, not UTF-8)."""
    p = Path(path)
    if not p.exists():
        raise CommandError(f"{path} does not exist")
    if p.is_dir():
        raise CommandError(f"{path} is a directory, not a file")
    try:
        data = p.read_bytes()
    except OSError as err:
        raise CommandError(f"{path} cannot be read: {err.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CommandError(
            f"{path} is not UTF-8 (byte {err.start} is {data[err.start]:#04x}); convert it, e.g. "
            f"`iconv -f latin1 -t utf-8 {path}`"
        ) from None


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise CommandError(f"{flag} must be a positive integer, got {value}")


def _check_out_dir(path: str | os.PathLike) -> None:
    """Refuse an output directory that cannot be written (a file, no permission)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CommandError(f"--out {path} is a file, not a directory")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CommandError(f"--out {path}: {probe} is not writable")


def run_demo(
    model_name: str = "minilm",
    out_dir: str | Path = "figures",
    progress: bool = True,
    static: bool = False,
) -> dict:
    """Run the subject/object study (names vs objects, each in subject and in object
    position of five template families, and alone) on ``model_name`` and write the demo
    figures (HTML; with ``static`` also PNG/SVG and a key-frame strip of the animation) and
    ``demo.json`` with the effect per layer, its confidence interval and the provenance."""
    from mi_cluster.core.provenance import provenance
    from mi_cluster.models.loading import load_model
    from mi_cluster.plotting import write_experiment
    from mi_cluster.plotting.subject_object import study_scatter, study_separation, study_shift
    from mi_cluster.studies.subject_object.design import role_design
    from mi_cluster.studies.subject_object.study import run_subject_object_study

    model = load_model(model_name)
    design = role_design(model)
    study = run_subject_object_study(model, design, progress=progress)
    record = study.summary()
    summary = {
        "model": study.model_name,
        "answer": record["answer"],
        "headline": record["answer"].split(". ")[0] + ".",
        "n_prompts": len(design.items),
        "n_names": len(design.names),
        "n_objects": len(design.objects),
        "layers": list(study.layer_labels),
        "shifts": record["shifts"],
        "silhouette": {
            role: record["separation"][role]["silhouette"]["value"] for role in record["separation"]
        },
        "projection_basis": study.projection.basis,
    }
    figures = {
        "pca_by_layer": study_scatter(study),
        "shift_by_layer": study_shift(study),
        "separation_by_layer": study_separation(study),
    }
    prov = provenance([model], design.texts, seed=0)
    written, failed = write_experiment(
        out_dir, "demo", summary, figures, png=static, provenance=prov
    )
    summary["figures"] = [str(p) for p in written]
    summary["export_failures"] = failed
    return summary


def _cmd_demo(args: argparse.Namespace) -> int:
    check_model_source(args.model)
    _check_out_dir(args.out)
    s = run_demo(args.model, args.out, progress=not args.quiet, static=args.static)
    words = f"{s['n_names']} names, {s['n_objects']} objects"
    print(f"model {s['model']}: {s['n_prompts']} prompts ({words})")
    shifts = s["shifts"]
    print("subjecthood shift, subject minus object position, on the calibrated scale")
    print("(held-out objects 0, names 1; 95% CI, jackknife t; Holm-corrected p):")

    def cell(test: dict, i: int) -> str:
        lo, hi = test["ci"][0][i], test["ci"][1][i]
        return f"{test['estimate'][i]:+.3f} [{lo:+.3f}, {hi:+.3f}] p={test['p_holm'][i]:.3f}"

    for scope in shifts["objects"]:
        print(f"\n{scope}:")
        print(f"{'layer':>6}  {'objects':>30}  {'names':>30}  {'interaction':>30}")
        for i, layer in enumerate(s["layers"]):
            row = [cell(shifts[k][scope], i) for k in ("objects", "names", "interaction")]
            print(f"{layer:>6}  " + "  ".join(f"{c:>30}" for c in row))
    print(f"\n{s['answer']}\n")
    for path in s["figures"]:
        print(f"wrote {path}")
    for message in s["export_failures"]:
        print(message, file=sys.stderr)
    return 0


def _lens_texts(args: argparse.Namespace) -> list[str] | None:
    """The corpus from ``--texts`` (checked now, before any import), or None for toy-ioi's
    own training distribution."""
    if args.texts:
        texts = [t for t in read_text_file(args.texts).splitlines() if t.strip()]
        if not texts:
            raise CommandError(f"{args.texts} holds no texts (one text a line)")
        return texts
    if args.model != "toy-ioi":
        raise CommandError("--texts FILE (one text a line) is needed for models other than toy-ioi")
    return None


def _is_tuned_lens(path: Path) -> bool:
    from mi_cluster.methods.lens.tuned import TunedLens

    try:
        TunedLens.load(path)
    except Exception:  # anything that does not read as a lens is someone else's file
        return False
    return True


def _cmd_train_lens(args: argparse.Namespace) -> int:
    from mi_cluster.core.outputs import check_output_file, fresh_path

    _positive(args, "steps", "n_texts")
    texts = _lens_texts(args)
    check_model_source(args.model)
    stem = args.model.rstrip("/").replace("/", "--")
    out = Path(args.out) if args.out else fresh_path(f"tuned-lens-{stem}.safetensors")
    check_output_file(out, "mi-cluster train-lens", _is_tuned_lens, args.force)

    import torch

    from mi_cluster.methods.lens.tuned import train_tuned_lens
    from mi_cluster.models.loading import load_model
    from mi_cluster.models.toy.data import training_texts

    torch.set_num_threads(1)  # one thread: the same lens, to the bit, on every machine
    model = load_model(args.model)
    if texts is None:
        texts = training_texts(args.n_texts, args.seed + 101, model.cfg.n_ctx, model.tokenizer)
    print(f"training a tuned lens for {args.model} on {len(texts)} texts, {args.steps} steps")
    lens = train_tuned_lens(
        model, texts, steps=args.steps, seed=args.seed, progress=not args.quiet, log=print
    )
    lens.save(out)
    print(f"wrote {out}")
    return 0


# Every job that writes figures/, in order: (name, command after the Python interpreter).
# Experiments are scripts of the repository (run from its root), never imported here.
FIGURE_JOBS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("demo", ("-m", "mi_cluster.cli", "demo", "--quiet", "--static")),
    ("layer_similarity", ("experiments/layer_similarity.py",)),
    ("ioi_name_movers", ("experiments/ioi_name_movers.py", "--quiet")),
    ("subject_object_clustering", ("experiments/subject_object_clustering.py", "--quiet")),
    ("numbers_vs_words", ("experiments/numbers_vs_words.py",)),
    ("rsa_embeddings", ("experiments/rsa_embeddings.py",)),
    ("logit_lens", ("experiments/logit_lens.py", "--quiet")),
    ("attention_views", ("experiments/attention_views.py",)),
    ("activation_factors", ("experiments/activation_factors.py",)),
    ("object_to_subject_circuit", ("experiments/object_to_subject_circuit.py", "--quiet")),
    ("embedding_space", ("experiments/embedding_space.py",)),
)


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return (
        {
            p.name: (p.stat().st_mtime_ns, p.stat().st_size)
            for p in directory.iterdir()
            if p.is_file()
        }
        if directory.is_dir()
        else {}
    )


def run_figures(
    out: Path, only: list[str] | None = None, root: Path | None = None, echo=print
) -> list[dict]:
    """Run the figure jobs (all, or those named in ``only``) one after another, each in
    its own process from the repository ``root``, offline, and write ``out/README.md``
    from the figures' JSON. A failing job is reported and the others still run. Returns one
    ``{"name", "ok", "seconds", "files", "error"}`` per job."""
    import os
    import subprocess
    import time

    from mi_cluster.core.atomic import atomic_write_text
    from mi_cluster.plotting.export import figures_index

    root = Path.cwd() if root is None else root
    names = [n for n, _ in FIGURE_JOBS]
    unknown = [n for n in only or [] if n not in names]
    if unknown:
        raise ValueError(f"unknown figure job(s) {unknown}; the jobs are {names}")
    jobs = [(n, c) for n, c in FIGURE_JOBS if not only or n in only]
    if (
        any(c[0].startswith("experiments/") for _, c in jobs)
        and not (root / "experiments").is_dir()
    ):
        raise FileNotFoundError(
            f"no experiments/ folder in {root}: run `mi-cluster figures` from the repository root"
        )
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    results = []
    for i, (name, command) in enumerate(jobs, 1):
        echo(f"[{i}/{len(jobs)}] {name} ...")
        before = _snapshot(out)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, *command, "--out", str(out)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        after = _snapshot(out)
        files = sorted(k for k, v in after.items() if before.get(k) != v)
        error = (
            ""
            if proc.returncode == 0
            else "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        )
        results.append(
            {"name": name, "ok": not error, "seconds": seconds, "files": files, "error": error}
        )
        status = f"done in {seconds:.0f} s, {len(files)} files" if not error else "FAILED"
        echo(f"[{i}/{len(jobs)}] {name}: {status}")
        if error:
            echo("    " + error.replace("\n", "\n    "))
    atomic_write_text(out / "README.md", figures_index(out))
    _write_contact_sheet(out, echo)
    return results


CONTACT_SHEET = "contact_sheet.png"


def _write_contact_sheet(out: Path, echo) -> None:
    """Every PNG figure of ``out`` in one image, ``out/contact_sheet.png``."""
    from mi_cluster.core.atomic import atomic_path
    from mi_cluster.plotting.contact import contact_sheet

    pngs = sorted(p for p in out.glob("*.png") if p.name != CONTACT_SHEET)
    if not pngs:
        return
    try:
        data = contact_sheet(pngs)
    except ImportError:
        echo("contact sheet not written: it needs Pillow (pip install pillow)")
        return
    with atomic_path(out / CONTACT_SHEET) as tmp:
        tmp.write_bytes(data)
    echo(f"wrote {out / CONTACT_SHEET} ({len(pngs)} figures)")


def _cmd_figures(args: argparse.Namespace) -> int:
    results = run_figures(Path(args.out), args.only)
    print(f"\n{'job':<28}{'result':>8}{'seconds':>9}{'files':>7}")
    for r in results:
        result = "ok" if r["ok"] else "FAILED"
        print(f"{r['name']:<28}{result:>8}{r['seconds']:>9.0f}{len(r['files']):>7}")
    print(f"wrote {Path(args.out) / 'README.md'}")
    return 0 if all(r["ok"] for r in results) else 1


def read_prompts(path: str | Path, field: str = "prompt", word_field: str | None = None):
    """Prompts from a JSONL file: each line a JSON string, or an object with ``field``
    (and ``word_field``, a word to read in that prompt), each a non-empty string (a
    ``null`` or a number is refused, not read as ``"None"`` or ``"42"``). Returns
    ``(prompts, words)``; a :class:`CommandError` names the file and line of a bad one."""
    import json

    prompts, words = [], []
    for n, line in enumerate(read_text_file(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CommandError(f"{where}: not JSON ({err.msg})") from None
        if isinstance(row, str) and word_field is None:
            prompts.append(_text(row, where, "the prompt"))
            continue
        if not isinstance(row, dict) or field not in row or (word_field and word_field not in row):
            want = f"{field!r}" + (f" and {word_field!r}" if word_field else "")
            raise CommandError(f"{where}: expected an object with {want}")
        prompts.append(_text(row[field], where, repr(field)))
        if word_field:
            words.append(_text(row[word_field], where, repr(word_field)))
    if not prompts:
        raise CommandError(f"{path} holds no prompts")
    return prompts, (words or None)


def _text(value: object, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CommandError(f"{where}: {what} must be a non-empty string, got {value!r}")
    return value


def _init_distributed() -> tuple[int, int, int]:
    """Join the process group when launched by torchrun (RANK, WORLD_SIZE, MASTER_ADDR set)
    or srun (SLURM_PROCID, SLURM_NTASKS; MASTER_ADDR and MASTER_PORT must be exported):
    ``(rank, world_size, local_rank)``; ``(0, 1, 0)`` for a single process."""
    import os

    import torch

    env = os.environ
    if "RANK" not in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
        env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
    world = int(env.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return torch.distributed.get_rank(), world, int(env.get("LOCAL_RANK", "0"))


def _cmd_collect(args: argparse.Namespace) -> int:
    _positive(args, "shard_size", "batch_size", "max_shards")
    check_model_source(args.model)
    _check_out_dir(args.out)
    from mi_cluster.collection.store_files import check_store_request

    prompts, words = read_prompts(args.prompts, args.field, args.word_field)
    check_store_request(args.out, prompts, args.site, args.shard_size, args.dtype, args.wait)

    import torch

    from mi_cluster.collection.activations import Positions
    from mi_cluster.collection.store import ActivationStore, collect_to_store
    from mi_cluster.models.loading import load_model

    positions = Positions.word(words) if words else args.positions
    rank, world, local = _init_distributed()
    device = args.device or (f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    try:
        model = load_model(args.model, device=device)
        run = collect_to_store(
            model, prompts, args.out, args.site, positions, shard_size=args.shard_size,
            dtype=args.dtype, batch_size=args.batch_size, max_shards=args.max_shards,
            progress=not args.quiet, wait=args.wait,
        )  # fmt: skip
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()
    print(
        f"rank {rank}/{world}: wrote {len(run.written)} shards, {len(run.skipped)} already "
        f"done", file=sys.stderr,
    )  # fmt: skip
    if rank == 0:
        if run.complete:
            store = ActivationStore(args.out)
            print(
                f"{args.out}: complete, {store.n_rows} rows x {len(store.layer_labels)} layers "
                f"in {len(store.shards)} shards, {store.n_bytes / 2**20:.1f} MiB "
                f"({store.spec.dtype}; rounding error max {store.cast_max_abs_error:.2g}, relative "
                f"{store.cast_relative_error:.2g})"
            )
        else:
            print(f"{args.out}: incomplete; run the same command again to finish it")
    return 0


def _command(sub: argparse._SubParsersAction, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose help shows every option's default (and choices)."""
    return sub.add_parser(
        name, help=summary, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )


def _add_collect(sub: argparse._SubParsersAction) -> None:
    """The ``collect`` command's options."""
    col = _command(
        sub,
        "collect",
        "collect one site at every layer into a sharded on-disk store (resumable); "
        "under torchrun or srun each rank writes its own shards",
    )
    col.add_argument("--model", required=True, help="a model name or directory")
    col.add_argument("--prompts", required=True, help="JSONL: a string or an object a line")
    col.add_argument("--field", default="prompt", help="the prompt's key in JSONL objects")
    col.add_argument("--word-field", help="a per-prompt word to read (positions: that word)")
    col.add_argument("--site", default="resid_post", choices=SITES, help="the site to read")
    col.add_argument(
        "--positions",
        default="last",
        choices=["last", "mean", "all"],
        help="the token(s) kept per prompt",
    )
    col.add_argument("--out", required=True, help="the store's directory")
    col.add_argument("--shard-size", type=int, default=256, help="prompts per shard")
    col.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="the dtype activations are stored in",
    )
    col.add_argument("--batch-size", type=int, default=32, help="prompts per forward pass")
    col.add_argument("--max-shards", type=int, help="write at most this many shards per rank")
    col.add_argument("--device", help="default: cuda:LOCAL_RANK when a GPU exists, else cpu")
    col.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds to wait for another process writing the same store (0: refuse)",
    )
    col.add_argument("--quiet", action="store_true", help="no progress bar")
    col.set_defaults(func=_cmd_collect)


def _add_train_lens(sub: argparse._SubParsersAction) -> None:
    """The ``train-lens`` command's options."""
    lens = _command(
        sub,
        "train-lens",
        "train a tuned lens (per-layer translators, Belrose et al. 2023); for toy-ioi on "
        "its training distribution. Writes a new file (the shipped lens is read-only)",
    )
    lens.add_argument("--model", default="toy-ioi", help="model")
    lens.add_argument(
        "--texts",
        help="corpus file, one text a line (default for toy-ioi: its training distribution)",
    )
    lens.add_argument("--n-texts", type=int, default=3000, help="toy-ioi corpus size")
    lens.add_argument("--steps", type=int, default=400, help="optimiser steps")
    lens.add_argument("--seed", type=int, default=0, help="random seed")
    lens.add_argument(
        "--out",
        help="where to write the lens (.safetensors); default: a new "
        "tuned-lens-MODEL[-N].safetensors in the current directory",
    )
    lens.add_argument("--force", action="store_true", help="replace an existing file")
    lens.add_argument("--quiet", action="store_true", help="no progress bar")
    lens.set_defaults(func=_cmd_train_lens)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mi-cluster",
        description="Mechanistic-interpretability toolkit: residual streams by layer, clustering, "
        "similarity metrics and patching on TransformerLens models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = _command(
        sub,
        "demo",
        "test whether subject position makes objects name-like (names vs objects in "
        "subject/object position, per layer, with CIs) and write figures to figures/",
    )
    demo.add_argument("--model", default="minilm", help="model to load (offline)")
    demo.add_argument("--out", default="figures", help="output directory")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument(
        "--static", action="store_true", help="also PNG/SVG (needs a Chromium), as make figures"
    )
    demo.set_defaults(func=_cmd_demo)
    figures = _command(
        sub,
        "figures",
        "regenerate figures/ offline: the demo and every experiment, deterministically, "
        "with figures/README.md (run from the repository root)",
    )
    figures.add_argument("--out", default="figures", help="output directory")
    figures.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=[n for n, _ in FIGURE_JOBS],
        help=f"run only these jobs: {[n for n, _ in FIGURE_JOBS]}",
    )
    figures.set_defaults(func=_cmd_figures)
    _add_collect(sub)
    _add_train_lens(sub)
    train = sub.add_parser(
        "train-toy",
        help="retrain the shipped toy IOI model (1 thread, fixed seed; see its MODEL_CARD.md)",
        add_help=False,
    )
    train.set_defaults(func=None)
    return parser


DEBUG_ENV = "MI_CLUSTER_DEBUG"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an error is one line on stderr and a non-zero status (the
    traceback with ``--debug`` or ``MI_CLUSTER_DEBUG=1``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        if argv[:1] == ["train-toy"]:
            from mi_cluster.models.toy.train import main as train_main

            return train_main(argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except KeyboardInterrupt:
        print("mi-cluster: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        message = str(err).strip() or type(err).__name__
        print(f"mi-cluster: error: {message}", file=sys.stderr)
        print(f"(run with --debug or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
