"""The on-disk store: collection throughput with 1 process vs 2 (torchrun, gloo), bytes per
row (float32 and float16), and peak memory of streaming CKA and a streaming separation
test over the store vs loading it and computing them in memory. Every measurement runs in
its own process; times are the whole process (start, model build, collection, writes), the
same for both.

    python benchmarks/bench_store.py [--prompts 2048] [--layers 6] [--d-model 512]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_collect import PeakRSS, prompts  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _model(args: argparse.Namespace):
    from mi_cluster.models.loading import load_model
    from mi_cluster.models.tiny import TinyConfig

    cfg = TinyConfig(
        n_layers=args.layers, d_model=args.d_model, n_heads=args.d_model // 64,
        d_mlp=4 * args.d_model, n_ctx=64,
    )  # fmt: skip
    return load_model(cfg, device="cpu")


def child(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from mi_cluster.collection.store import ActivationStore, collect_to_store
    from mi_cluster.methods.similarity import pairwise

    if args.child == "collect":
        if "RANK" in os.environ:
            dist.init_process_group("gloo")
        torch.set_num_threads(args.threads)
        model = _model(args)
        start = time.perf_counter()
        collect_to_store(
            model, prompts(args.prompts), args.out, "resid_post", "all", shard_size=args.shard_size,
            dtype=args.dtype, progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        if dist.is_initialized():
            dist.destroy_process_group()
        print(json.dumps({"collect_s": seconds}))
        return
    from mi_cluster.methods.stats import separation_test

    store = ActivationStore(args.out)
    peak = PeakRSS()
    peak.start()
    start = time.perf_counter()
    task, how = args.child.split("_")
    source = store if how == "stream" else store.to_activations().tensor.double()
    if task == "cka":
        values = pairwise(source, metric="linear_cka").values
    else:  # units = prompts, labelled by their index's parity (a null contrast)
        units = store.prompt_index()
        res = separation_test(source, units % 2 == 0, "centroid", units, n_permutations=1000,
                              n_bootstrap=500)  # fmt: skip
        values = torch.stack([res.value, res.p_value, res.interval.low, res.interval.high])
    seconds = time.perf_counter() - start
    print(json.dumps({"s": seconds, "peak_mib": peak.stop(), "values": values.tolist()}))


def _run(cmd: list[str], env: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--child")
    parser.add_argument("--out")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    me = [sys.executable, __file__]
    common = [f"--prompts={args.prompts}", f"--layers={args.layers}", f"--d-model={args.d_model}",
              f"--shard-size={args.shard_size}"]  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        _measure(args, me, common, env, tmp)
    finally:  # the stores take gigabytes
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(args: argparse.Namespace, me: list, common: list, env: dict, tmp: Path) -> None:
    from mi_cluster.collection.store import ActivationStore

    runs = {}
    for name, launcher, threads, dtype in (
        ("1 process x 2 threads", me, 2, "float32"),
        ("2 processes x 1 thread (torchrun, gloo)",
         [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", __file__], 1,
         "float32"),
        ("1 process, float16 storage", me, 2, "float16"),
    ):  # fmt: skip
        out = tmp / name.split(" ")[0] / dtype
        wall, res = _run(
            launcher + common + ["--child=collect", f"--out={out}", f"--threads={threads}",
                                 f"--dtype={dtype}"], env,
        )  # fmt: skip
        store = ActivationStore(out)
        runs[name] = (wall, res["collect_s"], store, store.n_bytes)
    base = runs["1 process x 2 threads"]
    print(f"{args.prompts} prompts ({base[2].n_rows} token rows) x {len(base[2].layer_labels)} "
          f"layers x {args.d_model}, resid_post at every token, shards of {args.shard_size} "
          "prompts")  # fmt: skip
    print(f"\n{'run':<42}{'process s':>11}{'collect s':>11}{'rows/s':>10}{'bytes/row':>11}")
    for name, (wall, coll, store, size) in runs.items():
        print(f"{name:<42}{wall:>11.1f}{coll:>11.1f}{store.n_rows / wall:>10.0f}"
              f"{size / store.n_rows:>11.0f}")  # fmt: skip
    one, two = runs["1 process x 2 threads"], runs["2 processes x 1 thread (torchrun, gloo)"]
    same = [s["sha256"] for s in one[2].shards] == [s["sha256"] for s in two[2].shards]
    print(f"\n2 processes / 1 process: {one[0] / two[0]:.2f}x (whole processes); "
          f"same shards byte for byte: {same}")  # fmt: skip
    ideal = len(base[2].layer_labels) * args.d_model * 4
    print(
        f"bytes per row: float32 {base[3] / base[2].n_rows:.0f} (activations alone "
        f"{ideal}), float16 {runs['1 process, float16 storage'][3] / base[2].n_rows:.0f} "
        f"(relative error {runs['1 process, float16 storage'][2].cast_relative_error:.1e})"
    )
    path = next(iter(runs.values()))[2].path
    import torch

    for task, title in (("cka", "linear CKA, all layer pairs"),
                        ("sep", "centroid separation test (units: prompts)")):  # fmt: skip
        res = {}
        for how in ("memory", "stream"):
            _, res[how] = _run(me + common + [f"--child={task}_{how}", f"--out={path}"], env)
        stream, memory = (
            torch.tensor(res[h]["values"], dtype=torch.float64) for h in ("stream", "memory")
        )
        diff = stream - memory
        print(f"\n{title:<42}{'time s':>11}{'peak MiB':>11}")
        for how, label in (("memory", "load the store, then in memory"),
                           ("stream", "streamed over the store")):  # fmt: skip
            print(f"{label:<42}{res[how]['s']:>11.2f}{res[how]['peak_mib']:>11.0f}")
        print(f"peak memory ratio {res['memory']['peak_mib'] / res['stream']['peak_mib']:.1f}x"
              f"; max |difference| {float(diff.abs().max()):.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
