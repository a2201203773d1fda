"""The on-disk activation store: equal to in-memory collection (to float rounding: its
shards batch prompts differently); two gloo ranks under
torchrun write the same bytes as one process; a run killed mid-way (SIGKILL) and resumed
gives the same store as an uninterrupted run; a flipped byte or a truncated shard is
caught and named; a store made for other inputs refuses to be appended to; streaming CKA
over a store equals in-memory CKA."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mi_cluster.cli import read_prompts
from mi_cluster.collection.activations import Positions, collect
from mi_cluster.collection.store import ActivationStore, StoreError, collect_to_store
from mi_cluster.methods.similarity import pairwise, store_linear_cka
from mi_cluster.methods.stats.probe import fold_fits
from mi_cluster.models.toy.data import eval_examples

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def examples():
    return eval_examples("held_out_pairs", n=40, seed=1)


@pytest.fixture(scope="module")
def prompts(examples):
    return [e.text for e in examples]


@pytest.fixture()
def prompts_file(tmp_path, examples):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": e.text, "io": e.io}) + "\n" for e in examples))
    return path


def _shas(path: Path) -> list[str]:
    return [s["sha256"] for s in ActivationStore(path).shards]


def _cli(*args: str, torchrun: int = 0) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}"]
    head = (
        launcher + ["-m", "mi_cluster.cli"]
        if torchrun
        else [sys.executable, "-m", "mi_cluster.cli"]
    )
    return head + ["collect", "--model", "toy-ioi", "--quiet", *args]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_a_store_equals_in_memory_collection(toy, prompts, tmp_path):
    words = [p.split()[1] for p in prompts]  # the first name of each prompt
    for positions in ("last", "all", Positions.word(words)):
        out = tmp_path / str(positions)[:8]
        run = collect_to_store(toy, prompts, out, "resid_post", positions, shard_size=7,
                               progress=False)  # fmt: skip
        assert run.complete and run.written == tuple(range(6)) and not run.skipped
        store = ActivationStore(out)
        store.verify()
        ref = collect(toy, prompts, "resid_post", positions, progress=False)
        got = store.to_activations(prompts)
        # shards batch 7 prompts, collect 32: other padding, so float rounding may differ
        torch.testing.assert_close(got.tensor, ref.tensor, atol=2e-6, rtol=1e-6)
        assert got.prompt_index == ref.prompt_index and got.tokens == ref.tokens
        assert got.positions == ref.positions and got.layer_labels == ref.layer_labels
        batches = list(store.batches(rows=9, layers=[0, 3]))
        assert [b.shape[1] for b in batches[:-1]] == [9] * (len(batches) - 1)
        assert torch.equal(torch.cat(batches, 1), got.tensor[[0, 3]])
        view = store.select_layers([3, 1])  # a view at two layers, in that order
        assert view.layer_labels == tuple(got.layer_labels[i] for i in (3, 1))
        assert torch.equal(view.to_activations().tensor, got.tensor[[3, 1]])
        assert torch.equal(torch.cat(list(view.batches(rows=9, layers=[1])), 1), got.tensor[[1]])
        assert torch.equal(store.prompt_index(), torch.tensor(got.prompt_index))
    with pytest.raises(StoreError, match="not the ones"):
        store.to_activations(prompts[::-1])
    with pytest.raises(StoreError, match=r"layers \[9\] do not select from the 4 layers"):
        store.select_layers([9])


def test_two_gloo_ranks_write_the_same_store_as_one_process(prompts_file, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_cli("--prompts", str(prompts_file), "--out", str(one), "--shard-size", "6"),
                   check=True, env=_env(), capture_output=True, timeout=300)  # fmt: skip
    done = subprocess.run(
        _cli("--prompts", str(prompts_file), "--out", str(two), "--shard-size", "6", torchrun=2),
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rank 1/2: wrote 3 shards" in done.stderr and "complete, 40 rows" in done.stdout
    assert _shas(one) == _shas(two)  # byte for byte
    assert [s["rank"] for s in ActivationStore(two).shards] == [0, 1, 0, 1, 0, 1, 0]


def test_srun_variables_launch_the_same_ranks(prompts_file, tmp_path):
    """srun starts every task itself and sets only SLURM_PROCID, SLURM_NTASKS and
    SLURM_LOCALID (plus the exported MASTER_ADDR/PORT): two plain processes launched that
    way, no torchrun, must write the same store as one process."""
    import socket

    one, two = tmp_path / "one", tmp_path / "two"
    args = ("--prompts", str(prompts_file), "--shard-size", "6")
    subprocess.run(_cli(*args, "--out", str(one)), check=True, env=_env(),
                   capture_output=True, timeout=300)  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = {k: v for k, v in _env().items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    tasks = [
        subprocess.Popen(
            _cli(*args, "--out", str(two)),
            env={
                **base,
                "SLURM_PROCID": str(i),
                "SLURM_NTASKS": "2",
                "SLURM_LOCALID": str(i),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = [t.communicate(timeout=300) for t in tasks]
    for t, (_, err) in zip(tasks, outs, strict=True):
        assert t.returncode == 0, err[-2000:]
    assert "rank 1/2: wrote 3 shards" in outs[1][1]
    assert _shas(one) == _shas(two)
    assert [s["rank"] for s in ActivationStore(two).shards] == [0, 1, 0, 1, 0, 1, 0]


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen, rank: int | None = None) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        for side in path.glob(pattern):
            if rank is None or json.loads(side.read_text()).get("rank") == rank:
                return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed: {proc.returncode}")
        time.sleep(0.01)
    raise AssertionError("no shard appeared")


@pytest.mark.parametrize("ranks", [0, 2])
def test_a_killed_run_resumes_to_the_same_store(tmp_path, examples, ranks):
    """SIGKILL (a whole single process, or the torchrun job once rank 1 has written its
    first shard), then the same command again: only the missing shards are written and
    the store equals an uninterrupted run's, byte for byte."""
    many = tmp_path / "many.jsonl"
    texts = [e.text for e in eval_examples("held_out_pairs", n=400, seed=2)]
    many.write_text("".join(json.dumps(t) + "\n" for t in texts))
    out = tmp_path / "killed"
    args = ("--prompts", str(many), "--out", str(out), "--shard-size", "4")
    proc = subprocess.Popen(
        _cli(*args, torchrun=ranks), env=_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(out, "shard-*.json", proc, rank=1 if ranks else None)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "index.json").exists()
    before = {p.name for p in out.glob("shard-*.json")}
    assert 0 < len(before) < 100
    # the killed job's workers may outlive it by a moment: wait for its lock
    resume = _cli(*args, "--wait", "120")
    done = subprocess.run(resume, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    skipped = int(done.stderr.split("shards, ")[1].split(" already")[0])
    assert skipped >= len(before) - 1  # a shard whose sidecar was cut off is redone
    ref = tmp_path / "ref"
    subprocess.run(_cli("--prompts", str(many), "--out", str(ref), "--shard-size", "4"),
                   env=_env(), check=True, capture_output=True, timeout=600)  # fmt: skip
    assert _shas(out) == _shas(ref)
    assert ActivationStore(out).n_rows == 400


def test_partial_runs_torn_writes_and_corruption(toy, prompts, tmp_path):
    out = tmp_path / "s"
    first = collect_to_store(toy, prompts, out, shard_size=6, max_shards=2, progress=False)
    assert first.written == (0, 1) and not first.complete and not (out / "index.json").exists()
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore(out)
    (out / "shard-00002.safetensors").write_bytes(b"torn")  # died before its sidecar
    (out / ".shard-00003.safetensors.x.safetensors").write_bytes(b"tmp")  # a stray temp file
    second = collect_to_store(toy, prompts, out, shard_size=6, progress=False)
    assert second.skipped == (0, 1) and second.written == (2, 3, 4, 5, 6) and second.complete
    ref = tmp_path / "ref"
    collect_to_store(toy, prompts, ref, shard_size=6, progress=False)
    assert _shas(out) == _shas(ref)
    store = ActivationStore(out)
    shard = out / store.shards[3]["file"]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01  # one bit of one activation
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="shard-00003.safetensors is corrupted"):
        store.verify()
    shard.write_bytes(bytes(data[:-40]))
    with pytest.raises(StoreError, match="shard-00003.safetensors is truncated"):
        store.verify()
    third = collect_to_store(toy, prompts, out, shard_size=6, progress=False)
    assert third.written == (3,)  # the damaged shard is collected again
    ActivationStore(out).verify()


def test_a_store_for_other_inputs_refuses_to_be_appended_to(toy, tiny, prompts, tmp_path):
    out = tmp_path / "s"
    collect_to_store(toy, prompts, out, shard_size=10, max_shards=1, progress=False)
    cases = [
        ((toy, prompts[:-1]), {}, "prompts_sha256"),
        ((toy, prompts), {"site": "resid_mid"}, "site"),
        ((toy, prompts), {"positions": "mean"}, "positions"),
        ((toy, prompts), {"dtype": "float16"}, "dtype"),
        ((toy, prompts), {"shard_size": 5}, "shard_size"),
        ((tiny, prompts), {}, "weights_sha256"),
    ]
    for (model, ps), kw, field in cases:
        with pytest.raises(StoreError, match=f"cannot be appended to.*{field}"):
            collect_to_store(model, ps, out, **{"shard_size": 10, **kw}, progress=False)
    with pytest.raises(StoreError, match="dtype must be one of"):
        collect_to_store(toy, prompts, tmp_path / "x", dtype="int8", progress=False)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_storage_reports_its_error(toy, prompts, tmp_path, dtype):
    out = tmp_path / dtype
    collect_to_store(toy, prompts, out, shard_size=16, dtype=dtype, progress=False)
    store = ActivationStore(out)
    ref = collect(toy, prompts, "resid_post", "last", progress=False).tensor
    got = store.to_activations().tensor
    assert got.dtype == getattr(torch, dtype)
    err = (got.double() - ref.double()).abs()
    assert store.cast_max_abs_error == pytest.approx(float(err.max()), rel=1e-9)
    rel = float(err.pow(2).sum().sqrt() / ref.double().norm())
    assert store.cast_relative_error == pytest.approx(rel, rel=1e-6)
    assert store.cast_relative_error < (1e-3 if dtype == "float16" else 1e-2)


def test_streaming_cka_over_a_store_equals_in_memory_cka(toy, prompts, tmp_path):
    out = tmp_path / "s"
    collect_to_store(toy, prompts * 3, out, "resid_post", "all", shard_size=11, progress=False)
    store = ActivationStore(out)
    x = store.to_activations().tensor.double()
    want = pairwise(x, metric="linear_cka").values
    got = pairwise(store, metric="linear_cka")
    assert got.symmetric and torch.allclose(got.values, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="streams linear_cka"):
        pairwise(store, metric="rbf_cka")
    # accumulators of two layers' features at most: blocks of layers, a pass per pair
    width = x.shape[-1]
    blocked = store_linear_cka(store, rows=50, max_memory=8 * (2 * width) ** 2)
    assert torch.allclose(blocked, want, atol=1e-6, rtol=0)


def test_prompt_files_are_read_strictly(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('"a b"\n\n{"prompt": "c d", "w": "d"}\n')
    assert read_prompts(good) == (["a b", "c d"], None)
    with pytest.raises(ValueError, match="line 1: expected an object with 'prompt' and 'w'"):
        read_prompts(good, word_field="w")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{"prompt": \n')
    with pytest.raises(ValueError, match="bad.jsonl, line 2: not JSON"):
        read_prompts(bad)


@pytest.mark.parametrize("basis", ["per_layer", "aligned", "shared"])
def test_streaming_pca_over_a_store_equals_in_memory_pca(toy, prompts, tmp_path, basis):
    from mi_cluster.methods.projections import pca_by_layer

    out = tmp_path / "s"
    collect_to_store(toy, prompts, out, "resid_post", "all", shard_size=9, progress=False)
    store = ActivationStore(out)
    x = store.to_activations().tensor.double()
    for fit_layer in (None, 2) if basis == "shared" else (None,):
        want = pca_by_layer(x, 3, basis, fit_layer)
        got = pca_by_layer(store, 3, basis, fit_layer)
        assert got.basis == want.basis and got.component_labels == want.component_labels
        for field in ("coords", "components", "explained_variance_ratio", "mean"):
            torch.testing.assert_close(
                getattr(got, field), getattr(want, field), atol=1e-6, rtol=1e-6
            )


def test_collect_command_reads_a_word_per_prompt(prompts_file, examples, tmp_path, toy):
    out = tmp_path / "words"
    args = ("--prompts", str(prompts_file), "--word-field", "io", "--out", str(out))
    done = subprocess.run(_cli(*args), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = ActivationStore(out).to_activations()
    assert [t[0].strip() for t in got.tokens] == [e.io for e in examples]  # the IO name
    ref = collect(toy, [e.text for e in examples], "resid_post",
                  Positions.word([e.io for e in examples]), progress=False)  # fmt: skip
    torch.testing.assert_close(got.tensor, ref.tensor, atol=2e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def word_store(toy, examples, tmp_path_factory):
    """Every token of 40 prompts (3 templates' worth of rows per prompt), in shards of 7
    prompts; units = prompts, grouped by their IO name's first letter."""
    out = tmp_path_factory.mktemp("stats") / "s"
    collect_to_store(toy, [e.text for e in examples], out, "resid_post", "all",
                     shard_size=7, progress=False)  # fmt: skip
    store = ActivationStore(out)
    index = store.prompt_index()
    per_prompt = torch.tensor([e.io[0] < "J" for e in examples])
    return store, store.to_activations().tensor.double(), per_prompt[index], index


@pytest.mark.parametrize("statistic", ["centroid", "variance_ratio", "silhouette", "probe"])
def test_separation_tests_stream_from_a_store_and_equal_in_memory(word_store, statistic):
    from mi_cluster.methods.stats import separation_test

    store, x, labels, units = word_store
    assert 8 <= int(labels.sum()) <= x.shape[1] - 8
    kw = dict(n_permutations=300, n_bootstrap=200, seed=3)
    want = separation_test(x, labels, statistic, units, **kw)
    # silhouette: blocks of about 128 rows; centroid: unit sums of a few layers per pass;
    # probe: batches of about 250 rows (its layer blocks: the next test)
    small = {"silhouette": 2**22, "probe": 2**21}.get(statistic, 40 * x.shape[2] * 8 * 3)
    for got in (
        separation_test(store, labels, statistic, units, **kw),
        separation_test(store, labels, statistic, units, **kw, max_memory=small),
    ):
        assert got.value.dtype == torch.float64 and got.exact == want.exact
        for field in ("value", "p_value", "null_median", "null_high", "p_holm"):
            torch.testing.assert_close(getattr(got, field), getattr(want, field))
        for field in ("low", "high", "bca_low", "bca_high"):
            torch.testing.assert_close(getattr(got.interval, field), getattr(want.interval, field))


def test_plain_statistics_and_centroid_axes_stream_from_a_store(word_store):
    from sklearn.metrics import calinski_harabasz_score, silhouette_score

    import mi_cluster.methods.stats as S

    store, x, labels, units = word_store
    for fn, ref in (
        (S.silhouette, silhouette_score),
        (S.variance_ratio, calinski_harabasz_score),
        (S.centroid_separation, None),
    ):
        got = fn(store, labels)
        torch.testing.assert_close(got, fn(x, labels))
        if ref is not None:  # and against scikit-learn at two layers (its distances go
            for layer in (0, x.shape[0] - 1):  # through a Gram: sqrt(rounding) apart)
                want = ref(x[layer].numpy(), labels.numpy())
                assert got[layer].item() == pytest.approx(want, rel=1e-7)
    some = store.select_layers([2, 0])  # any statistic reads a subset of layers
    torch.testing.assert_close(S.variance_ratio(some, labels), S.variance_ratio(x[[2, 0]], labels))
    got, want = (S.probe_accuracy(s, labels, units, n_folds=4, ridge=0.5) for s in (store, x))
    torch.testing.assert_close(got.accuracy, want.accuracy)
    torch.testing.assert_close(got.decision, want.decision)
    row_fold = got.folds[units]  # the probe's fold fits, one layer per pass or all at once
    unit_y = torch.zeros(len(got.folds), dtype=torch.float64).index_put_(
        (units,), labels.double() * 2 - 1
    )
    args = (store, row_fold, units, got.folds, unit_y, [0, 1, None])
    d = x.shape[2]
    for a, b in zip(fold_fits(*args), fold_fits(*args, max_memory=8 * d * 6 * d + 2**16),
                    strict=True):  # fmt: skip
        torch.testing.assert_close(a.coef, b.coef, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(a.mean, b.mean)
    fit_rows = torch.arange(x.shape[1]) % 3 != 0  # an axis fitted on two rows in three
    for method in ("centroid", "probe"):
        axis, want = (S.fit_subjecthood_axis(s, labels, method, ridge=0.5) for s in (store, x))
        torch.testing.assert_close(axis.direction, want.direction)
        torch.testing.assert_close(axis.offset, want.offset)
        assert (axis.n_names, axis.n_objects, axis.method) == (
            want.n_names, want.n_objects, method
        )  # fmt: skip
        got, want = (
            S.cross_fitted_subjecthood(s, labels, units, fit_rows, method=method, n_folds=4,
                                       seed=2)
            for s in (store, x)
        )  # fmt: skip
        assert torch.equal(got.folds, want.folds) and len(got.axes) == 4
        torch.testing.assert_close(got.scores, want.scores)
        for a, b in zip(got.axes, want.axes, strict=True):
            torch.testing.assert_close(a.direction, b.direction)
            torch.testing.assert_close(a.offset, b.offset)
            assert (a.n_names, a.n_objects) == (b.n_names, b.n_objects)


@pytest.mark.unchecked
def test_store_statistics_refuse_what_does_not_fit(word_store):
    import mi_cluster.methods.stats as S

    store, x, labels, units = word_store
    with pytest.raises(ValueError, match="unknown subjecthood method 'lda'"):
        S.fit_subjecthood_axis(store, labels, method="lda")
    with pytest.raises(ValueError, match="the probe's decision map .* more than half"):
        S.separation_test(store, labels, "probe", units, max_memory=10_000)
    one_fold = torch.zeros(x.shape[1], dtype=torch.long)
    with pytest.raises(ValueError, match="the probe's fold moments of one layer take"):
        fold_fits(store, one_fold, (~labels).long(), torch.tensor([0, 0]),
                  torch.tensor([1.0, -1.0]), [None], max_memory=10_000)  # fmt: skip
    with pytest.raises(ValueError, match=f"labels has 5 entries for {x.shape[1]} rows"):
        S.centroid_separation(store, labels[:5])
    with pytest.raises(ValueError, match="unit sums of one layer take .* more than max_memory"):
        S.separation_test(store, labels, "centroid", units, max_memory=10_000)
    with pytest.raises(ValueError, match="distance sums .* more than half of max_memory"):
        S.separation_test(store, labels, "silhouette", max_memory=10_000)
