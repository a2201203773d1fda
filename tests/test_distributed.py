"""Patching sweeps under torch.distributed: two gloo ranks launched by torchrun split the
passes, and every rank returns exactly the single-process result."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from mi_cluster.collection.distributed import distributed_rank, my_share, sum_across_ranks

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist
    from mi_cluster.models.loading import load_model
    from mi_cluster.methods.patching import activation_patching, logit_difference, path_patching
    from mi_cluster.models.toy.data import eval_examples

    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    model = load_model("toy-ioi", device="cpu")
    ex = eval_examples("held_out_pairs", n=12, seed=4)
    clean = [e.text for e in ex]
    corrupted = [e.text.replace(" " + e.s + " gave", " Kate gave") for e in ex]
    metric = logit_difference(model, [(e.io, e.s) for e in ex])
    kw = {"max_batch_size": 24, "progress": False}
    out = {
        "heads": activation_patching(model, clean, corrupted, metric, "head_out", **kw).values,
        "resid": activation_patching(model, clean, corrupted, metric, "resid_pre", **kw).values,
        "path": path_patching(model, clean, corrupted, metric, [(2, 2, "q")], **kw).values,
    }
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save(out, os.path.join(sys.argv[1], f"rank{rank}.pt"))
    if dist.is_initialized():
        dist.destroy_process_group()
    """
)


def test_patching_sweeps_split_across_two_ranks_equal_one_process(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    subprocess.run([sys.executable, str(script), str(one)], env=env, check=True, timeout=300)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(script),
         str(two)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    ref = torch.load(one / "rank0.pt")
    for rank in (0, 1):
        got = torch.load(two / f"rank{rank}.pt")
        for key, values in ref.items():
            assert torch.equal(got[key], values), (rank, key)  # exactly, on every rank
    assert ref["heads"].abs().sum() > 0 and ref["path"].shape == (3, 4, 12)


def test_one_process_keeps_all_the_work():
    assert distributed_rank() == (0, 1)
    assert my_share(range(5)) == [0, 1, 2, 3, 4]
    x = torch.arange(3.0)
    assert sum_across_ranks(x) is x and torch.equal(x, torch.arange(3.0))
