"""Bad input, as a careless or hostile user gives it: each case gets a named error (its
type, and a message naming the problem), never a silent wrong answer, a raw error from
inside torch or transformers, or lost data; command-line argument errors arrive before
torch is even imported. One test per case of the issue, grouped by class of input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mi_cluster.cli import CommandError, read_prompts
from mi_cluster.collection.activations import Positions, collect
from mi_cluster.core.outputs import MARKER, OutputError, check_output_dir, check_output_file
from mi_cluster.core.prompts import UnknownWordError, tokenize_prompt, word_positions
from mi_cluster.methods.patching import PatchingError, logit_difference
from mi_cluster.methods.patching.metrics import Metric, check_metric_output
from mi_cluster.methods.similarity import (
    SimilarityInputError,
    cca,
    linear_cka,
    pairwise,
    pwcca,
    svcca,
)
from mi_cluster.methods.similarity.streaming import StreamingLinearCKA
from mi_cluster.methods.stats import StatsInputError, paired_test, two_sample_test
from mi_cluster.methods.stats.resampling import make_generator
from mi_cluster.models.loading import load_model
from mi_cluster.models.sources import ModelUnavailableError, check_model_source
from mi_cluster.models.toy import TOY_IOI_DIR, TOY_TUNED_LENS
from mi_cluster.models.toy.train import TrainConfig, train
from mi_cluster.plotting.export import save_figure

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.unchecked  # the library's own errors, as a user meets them


# -- commands that write models never destroy -----------------------------------------------


def test_train_toy_refuses_a_users_folder_and_the_shipped_model(tmp_path):
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("a week of notes")
    with pytest.raises(OutputError, match="not empty and is not an earlier output"):
        train(TrainConfig(steps=201), notes, log=lambda line: None)
    assert (notes / "notes.txt").read_text() == "a week of notes"
    for shipped in (TOY_IOI_DIR, TOY_IOI_DIR.parent):
        with pytest.raises(OutputError, match="read-only"):
            check_output_dir(shipped, "mi-cluster train-toy", force=True)
    with pytest.raises(OutputError, match="read-only"):
        check_output_file(TOY_TUNED_LENS, "mi-cluster train-lens", lambda p: True, force=True)


def test_train_toy_replaces_only_its_own_files(tmp_path):
    from mi_cluster.core.outputs import install_dir

    target = tmp_path / "out"
    for run, names in enumerate((("a.bin", "old.bin"), ("a.bin",))):
        built = tmp_path / f"built{run}"
        built.mkdir()
        for n in names:
            (built / n).write_text(f"run {run}")
        if run:
            (target / "my-notes.txt").write_text("keep me")
            check_output_dir(target, "mi-cluster train-toy")  # an earlier output: allowed
        install_dir(built, target, "mi-cluster train-toy")
    assert (target / "a.bin").read_text() == "run 1" and not (target / "old.bin").exists()
    assert (target / "my-notes.txt").read_text() == "keep me"
    assert json.loads((target / MARKER).read_text())["files"] == ["a.bin"]


def test_train_lens_refuses_a_file_that_is_not_a_lens(tmp_path):
    paper = tmp_path / "paper.safetensors"
    paper.write_bytes(b"not a lens")
    with pytest.raises(OutputError, match="not an earlier output"):
        check_output_file(paper, "mi-cluster train-lens", lambda p: False)
    check_output_file(paper, "mi-cluster train-lens", lambda p: False, force=True)


@pytest.mark.parametrize("steps", [-3, 0])
def test_train_toy_refuses_non_positive_steps(steps):
    with pytest.raises(ValueError, match="positive integers"):
        TrainConfig(steps=steps)


# -- model sources ----------------------------------------------------------------------------


@pytest.fixture()
def model_dir(tmp_path):
    out = tmp_path / "model"
    shutil.copytree(TOY_IOI_DIR, out)
    return out


def test_a_missing_path_says_it_does_not_exist(tmp_path):
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_model(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_model("./no-such-model-dir", device="cpu")


def test_truncated_weights_are_named(model_dir):
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ModelUnavailableError, match="truncated"):
        load_model(str(model_dir), device="cpu")


def test_garbage_weights_are_named(model_dir):
    (model_dir / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelUnavailableError, match="safetensors"):
        load_model(str(model_dir), device="cpu")


def test_missing_weights_bad_config_and_missing_tokenizer_are_named(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelUnavailableError, match="has no weights"):
        check_model_source(str(model_dir))
    shutil.copy(TOY_IOI_DIR / "model.safetensors", model_dir)
    (model_dir / "config.json").write_text("{not json")
    with pytest.raises(ModelUnavailableError, match="config.json is not a JSON"):
        check_model_source(str(model_dir))
    shutil.copy(TOY_IOI_DIR / "config.json", model_dir)
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(ModelUnavailableError, match="has no tokenizer"):
        load_model(str(model_dir), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_named():
    with pytest.raises(ValueError, match="no cuda"):
        load_model("toy-ioi", device="cuda")


def test_dtype_names_are_accepted_and_bad_ones_named():
    model = load_model("toy-ioi", device="cpu", dtype="float64")
    assert next(model.parameters()).dtype == torch.float64
    with pytest.raises(ValueError, match="dtype 'float17'"):
        load_model("toy-ioi", device="cpu", dtype="float17")


# -- prompts and words ------------------------------------------------------------------------


def test_unknown_words_are_refused_not_read_as_unk(toy):
    for word in ("Zebra", "Quokka"):
        prompt = tokenize_prompt(toy, f"Mary saw {word} at the store")
        with pytest.raises(UnknownWordError, match=word):
            word_positions(prompt, word)
    with pytest.raises(UnknownWordError, match="Zebra"):
        collect(toy, ["Mary saw Zebra at the store"], positions=Positions.word("Zebra"))


def test_unknown_answers_and_watched_tokens_are_refused(toy):
    from mi_cluster.methods.lens.logit import logit_lens

    with pytest.raises(PatchingError, match="Quokka.*vocabulary"):
        logit_difference(toy, [("Quokka", "Mary")])
    with pytest.raises(UnknownWordError, match="Quokka"):
        logit_lens(toy, ["When Mary and John went"], watch=[" Quokka"], progress=False)


@pytest.mark.parametrize(
    ("words", "kwargs", "match"),
    [(None, {}, "a word or one word per prompt"), ("lamp", {"occurrence": "first"}, "occurrence")],
)
def test_bad_word_positions_are_named(words, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Positions.word(words, **kwargs)


def test_prepend_bos_false_tokenizes(toy, tiny, minilm):
    for model in (toy, tiny, minilm):
        with_bos = tokenize_prompt(model, "Mary went home")
        without = tokenize_prompt(model, "Mary went home", prepend_bos=False)
        assert len(without) == len(with_bos) - 1 and without.ids == with_bos.ids[1:]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"prompt": null}', "non-empty string, got None"),
        ('{"prompt": 42}', "non-empty string, got 42"),
        ('{"prompt": ""}', "non-empty string"),
        ('{"text": "x"}', "expected an object with 'prompt'"),
        ("{oops", "not JSON"),
    ],
)
def test_prompt_files_refuse_what_is_not_a_prompt(tmp_path, line, match):
    path = tmp_path / "p.jsonl"
    path.write_text('"a fine prompt"\n' + line + "\n")
    with pytest.raises(CommandError, match=rf"line 2: .*{match}|line 2: {match}"):
        read_prompts(path)


def test_a_latin1_prompts_file_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes('"Fran\u00e7ois went home"\n'.encode("latin-1"))
    with pytest.raises(CommandError, match="not UTF-8.*iconv"):
        read_prompts(path)


# -- patching ---------------------------------------------------------------------------------


def test_answer_ids_out_of_the_vocabulary_are_named(toy):
    d_vocab = toy.cfg.d_vocab
    for bad in (d_vocab, -1):
        with pytest.raises(PatchingError, match="outside the vocabulary"):
            logit_difference(toy, torch.tensor([[bad, 2]]))
    with pytest.raises(PatchingError, match="integer tensor"):
        logit_difference(toy, torch.tensor([[1.0, 2.0]]))


def test_fewer_answers_than_prompts_is_named(toy):
    from mi_cluster.methods.patching import activation_patching

    prompts = ["When Mary and John went to the store, John gave a drink to"] * 3
    corrupt = ["When Mary and John went to the store, Mary gave a drink to"] * 3
    metric = logit_difference(toy, [("Mary", "John")] * 2)
    with pytest.raises(PatchingError, match="answers for 2 prompts, but 3"):
        activation_patching(toy, prompts, corrupt, metric, "resid_pre", progress=False)


def test_a_metric_returning_nan_is_refused():
    metric = Metric("ratio", lambda inp: inp.logits[:, 0, 0], "last")
    with pytest.raises(PatchingError, match="NaN or infinity for 1 of 2 rows"):
        check_metric_output(metric, torch.tensor([1.0, float("nan")]), 2)


# -- statistics -------------------------------------------------------------------------------


def test_half_precision_statistics_run_in_float32():
    d = torch.randn(3, 12, dtype=torch.float16)
    half = paired_test(d, n_permutations=200, n_bootstrap=200)
    full = paired_test(d.float(), n_permutations=200, n_bootstrap=200)
    torch.testing.assert_close(half.estimate, full.estimate)
    torch.testing.assert_close(half.p_value, full.p_value)


@pytest.mark.parametrize("seed", ["abc", 1.5, True, -1])
def test_bad_seeds_are_named(seed):
    with pytest.raises(StatsInputError, match="seed must be"):
        make_generator(seed)
    with pytest.raises(StatsInputError, match="seed must be"):
        two_sample_test(torch.randn(1, 5), torch.randn(1, 5), seed=seed)


def test_complex_statistics_input_is_refused():
    with pytest.raises(StatsInputError, match="complex"):
        paired_test(torch.randn(2, 6, dtype=torch.complex64))


# -- similarity -------------------------------------------------------------------------------


def test_degenerate_cca_is_refused_not_one():
    gen = torch.Generator().manual_seed(0)
    d = 10
    x, y = (torch.randn(d + 2, d, generator=gen, dtype=torch.float64) for _ in range(2))
    for fn in (cca, pwcca):
        with pytest.raises(SimilarityInputError, match="exactly 1 whatever the data"):
            fn(x, y)
    with pytest.raises(SimilarityInputError, match="exactly 1 whatever the data"):
        svcca(x, y, dims=d)
    with pytest.raises(SimilarityInputError, match="exactly 1"):
        pairwise(torch.stack([x, y]), metric="cca")
    big = torch.randn(200, d, generator=gen, dtype=torch.float64)
    assert float(cca(big, torch.randn(200, d, generator=gen, dtype=torch.float64)).mean_rho) < 0.5


def test_constant_layers_are_refused_by_name_everywhere():
    x = torch.randn(3, 40, 6, dtype=torch.float64)
    x[1] = 0.25
    with pytest.raises(SimilarityInputError, match=r"xs\[1\] has no variance"):
        pairwise(x, metric="linear_cka")
    acc = StreamingLinearCKA()
    acc.update(x)
    with pytest.raises(SimilarityInputError, match=r"layer\(s\) \[1\]"):
        acc.compute()
    with pytest.raises(SimilarityInputError, match="y has no variance"):
        linear_cka(x[0], x[1])


def test_half_precision_cka_is_finite_and_complex_refused():
    gen = torch.Generator().manual_seed(1)
    x, y = (torch.randn(500, 64, generator=gen) * 300 for _ in range(2))
    half = linear_cka(x.half(), y.half())
    assert torch.isfinite(half) and abs(float(half) - float(linear_cka(x, y))) < 1e-3
    with pytest.raises(SimilarityInputError, match="complex"):
        linear_cka(x.to(torch.complex64), y)


# -- figure paths -----------------------------------------------------------------------------


def test_a_figure_path_with_another_suffix_is_refused(tmp_path):
    import plotly.graph_objects as go

    with pytest.raises(ValueError, match=r"\.bmp"):
        save_figure(go.Figure(), tmp_path / "x.bmp")
    assert list(tmp_path.iterdir()) == []


# -- the command line: one line, a non-zero status, before torch is imported -----------------

PROBE = (
    "import sys; from mi_cluster.cli import main; rc = main(sys.argv[1:]); "
    "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(rc)"
)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.fixture()
def jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('"When Mary and John went to the store, John gave a drink to"\n')
    return path


def _cases(tmp_path: Path, jsonl: Path) -> list[tuple[list[str], str]]:
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text("{oops\n")
    file_out = tmp_path / "a-file"
    file_out.write_text("")
    return [
        (["demo", "--model", "gpt-nope"], "could not fetch model 'gpt-nope'"),
        (["demo", "--model", "./missing-dir"], "does not exist"),
        (["demo", "--out", str(file_out)], "is a file"),
        (["collect", "--model", "toy-ioi", "--prompts", str(bad_json), "--out", "x"], "not JSON"),
        (
            [
                "collect",
                "--model",
                "toy-ioi",
                "--prompts",
                str(tmp_path / "none.jsonl"),
                "--out",
                "x",
            ],
            "does not exist",
        ),  # fmt: skip
        (["collect", "--model", "nope/nope", "--prompts", str(jsonl), "--out", "x"], "nope/nope"),
        (
            [
                "collect",
                "--model",
                "toy-ioi",
                "--prompts",
                str(jsonl),
                "--out",
                "x",
                "--shard-size",
                "0",
            ],
            "--shard-size must be a positive",
        ),  # fmt: skip
        (["train-lens", "--model", "gpt2"], "--texts FILE"),
        (["train-lens", "--steps", "-3"], "--steps must be a positive"),
        (["train-toy", "--steps", "-3"], "positive integers"),
        (["train-toy", "--out", str(TOY_IOI_DIR)], "read-only"),
        (["train-lens", "--out", str(TOY_TUNED_LENS)], "read-only"),
    ]


def test_cli_errors_are_one_line_before_torch_is_imported(tmp_path, jsonl):
    for args, match in _cases(tmp_path, jsonl):
        out = _cli(*args, cwd=tmp_path)
        assert out.returncode in (1, 2), (args, out.stderr)  # 2: a usage error (argparse)
        first = next(line for line in out.stderr.splitlines() if "error: " in line)
        assert first.startswith("mi-cluster") and match in first, (args, first)
        assert "Traceback" not in out.stderr, args
        if args[0] != "train-toy":  # train-toy's module imports torch for its trainer
            assert out.stdout.strip().endswith("NO-TORCH"), (args, out.stdout)


def test_usage_errors_are_argparse_errors_and_debug_shows_the_traceback(tmp_path, jsonl):
    out = _cli("figures", "--only", "nonsense")
    assert out.returncode == 2 and "invalid choice: 'nonsense'" in out.stderr
    out = _cli("collect", "--model", "toy-ioi", "--prompts", str(jsonl), "--out", "x",
               "--site", "bogus")  # fmt: skip
    assert out.returncode == 2 and "invalid choice: 'bogus'" in out.stderr
    out = _cli("demo", "--model", "gpt-nope", "--debug")
    assert out.returncode == 1 and "Traceback" in out.stderr


def test_collect_refuses_a_store_of_other_inputs_before_loading_the_model(tmp_path, jsonl, toy):
    from mi_cluster.collection.store import collect_to_store

    out = tmp_path / "store"
    collect_to_store(toy, ["Mary went home"], out, shard_size=4, progress=False)
    res = _cli("collect", "--model", "toy-ioi", "--prompts", str(jsonl), "--out", str(out))
    assert res.returncode == 1 and "prompts_sha256" in res.stderr
    assert res.stdout.strip().endswith("NO-TORCH")


# -- memory: resampling patterns are made a chunk at a time ----------------------------------


def test_resampling_draws_are_chunked_and_the_same_whatever_the_chunk():
    from mi_cluster.methods.stats.resampling import (
        label_permutation_draws,
        permutation_draws,
        sign_flip_draws,
    )

    lab = torch.zeros(12, dtype=torch.bool)
    lab[:5] = True
    makers = [
        lambda g: sign_flip_draws(12, 3000, g),  # random (2**12 > 3000)
        lambda g: sign_flip_draws(6, 3000, g),  # exact
        lambda g: label_permutation_draws(lab, 3000, g),
        lambda g: label_permutation_draws(lab[:6], 3000, g),
        lambda g: permutation_draws(9, 3000, g),
        lambda g: permutation_draws(5, 3000, g),
    ]
    for make in makers:
        gen = make_generator(7)
        draws = make(gen)
        after = torch.rand(3, generator=gen)  # the generator moved past the draws
        whole = draws.materialise()
        assert whole.shape[0] == draws.n_resamples
        for rows in (1, 7, 1000, 10**6):
            assert torch.equal(torch.cat(list(draws.chunks(rows))), whole)
        if not draws.exact:  # as if drawn all at once: the next draws are the same
            ref = make_generator(7)
            make(ref).materialise()
            assert torch.equal(torch.rand(3, generator=ref), after)


def test_a_million_permutations_in_one_mebibyte_give_the_same_test():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 20, generator=gen), torch.randn(2, 20, generator=gen)
    small = two_sample_test(a, b, n_permutations=10**6, n_bootstrap=50, max_memory=2**20)
    large = two_sample_test(a, b, n_permutations=10**6, n_bootstrap=50, max_memory=2**30)
    assert torch.equal(small.p_value, large.p_value) and small.n_permutations == 10**6
