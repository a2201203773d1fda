"""The store verifies itself: every corruption the issue lists, and each file kind damaged
in turn, is either repaired (the shard is redone) or refused by name; never are wrong
rows yielded. A second writer is refused, naming the holder; a bad site or prompt is
refused before anything is written."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest
import torch

from mi_cluster.collection.store import ActivationStore, StoreError, collect_to_store
from mi_cluster.collection.store_files import store_lock
from mi_cluster.core.prompts import WordNotFoundError
from mi_cluster.models.toy.data import eval_examples


@pytest.fixture(scope="module")
def prompts():
    return [e.text for e in eval_examples("held_out_pairs", n=12, seed=3)]


@pytest.fixture(scope="module")
def other_prompts():
    return [e.text for e in eval_examples("held_out_pairs", n=12, seed=4)]


@pytest.fixture(scope="module")
def pristine(toy, prompts, tmp_path_factory):
    out = tmp_path_factory.mktemp("pristine") / "store"
    collect_to_store(toy, prompts, out, shard_size=4, progress=False)
    return out


@pytest.fixture()
def store(pristine, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(pristine, out)
    return out


def _rows(path: Path) -> torch.Tensor:
    return torch.cat(list(ActivationStore(path).batches(rows=5)), dim=1)


def _resume(toy, prompts, out, **kw):
    return collect_to_store(toy, prompts, out, shard_size=4, progress=False, **kw)


def test_a_shard_from_another_store_is_redone_on_resume_and_refused_by_verify(
    toy, prompts, other_prompts, store, pristine, tmp_path
):
    foreign = tmp_path / "foreign"
    collect_to_store(toy, other_prompts, foreign, shard_size=4, progress=False)
    for name in ("shard-00001.safetensors", "shard-00001.json"):
        shutil.copy(foreign / name, store / name)
    with pytest.raises(StoreError, match="shard 1|shard-00001"):
        ActivationStore(store)  # the index no longer matches the sidecar
    run = _resume(toy, prompts, store)
    assert run.written == (1,) and run.complete
    ActivationStore(store).verify()
    torch.testing.assert_close(_rows(store), _rows(pristine), atol=0, rtol=0)


def test_only_the_shard_copied_in_is_caught_too(toy, prompts, other_prompts, store, tmp_path):
    foreign = tmp_path / "foreign"
    collect_to_store(toy, other_prompts, foreign, shard_size=4, progress=False)
    shutil.copy(foreign / "shard-00002.safetensors", store / "shard-00002.safetensors")
    with pytest.raises(StoreError, match="shard-00002"):
        ActivationStore(store).verify()
    assert _resume(toy, prompts, store).written == (2,)


def test_two_swapped_shards_are_caught(toy, prompts, store, pristine):
    for suffix in ("safetensors", "json"):
        a, b = store / f"shard-00000.{suffix}", store / f"shard-00002.{suffix}"
        tmp = a.with_name("swap")
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
    with pytest.raises(StoreError):
        ActivationStore(store)
    run = _resume(toy, prompts, store)
    assert sorted(run.written) == [0, 2]
    torch.testing.assert_close(_rows(store), _rows(pristine), atol=0, rtol=0)


def test_a_store_without_its_spec_is_refused(toy, prompts, store):
    (store / "spec.json").unlink()
    with pytest.raises(StoreError, match="no spec.json"):
        _resume(toy, prompts, store, dtype="float16")
    with pytest.raises(StoreError, match="no spec.json"):
        ActivationStore(store)


def test_an_edited_index_is_refused(store):
    index = json.loads((store / "index.json").read_text())
    index["shards"][1]["rows"] -= 1
    index["n_rows"] -= 1
    (store / "index.json").write_text(json.dumps(index))
    with pytest.raises(StoreError, match="entry for shard 1 differs"):
        ActivationStore(store)
    index["shards"].pop()
    (store / "index.json").write_text(json.dumps(index))
    with pytest.raises(StoreError, match="lists 2 shards; the spec needs 3"):
        ActivationStore(store)


def test_index_and_sidecar_edited_alike_are_caught_by_the_shard_header(store):
    for path in (store / "shard-00001.json",):
        side = json.loads(path.read_text())
        side["rows"] -= 1
        path.write_text(json.dumps(side))
    index = json.loads((store / "index.json").read_text())
    index["shards"][1]["rows"] -= 1
    index["n_rows"] -= 1
    (store / "index.json").write_text(json.dumps(index))
    with pytest.raises(StoreError, match="rows, the record says"):
        ActivationStore(store)


def test_a_bad_site_writes_nothing_and_the_corrected_run_succeeds(toy, prompts, tmp_path):
    out = tmp_path / "s"
    with pytest.raises(ValueError, match="unknown site"):
        collect_to_store(toy, prompts, out, "bogus", shard_size=4, progress=False)
    assert not (out / "spec.json").exists()
    assert collect_to_store(toy, prompts, out, shard_size=4, progress=False).complete


def test_a_bad_prompt_anywhere_is_refused_before_anything_is_written(toy, prompts, tmp_path):
    out = tmp_path / "s"
    words = ["Mary"] * len(prompts)
    with pytest.raises(WordNotFoundError):
        collect_to_store(toy, prompts, out, positions=_word(words),
                         shard_size=4, progress=False)  # fmt: skip
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(ValueError, match="non-empty string"):
        collect_to_store(toy, [*prompts, ""], out, shard_size=4, progress=False)
    assert not (out / "spec.json").exists()


def _word(words):
    from mi_cluster.collection.activations import Positions

    return Positions.word(words)


def _hold(path: str, ready, release) -> None:
    with store_lock(Path(path)):
        ready.set()
        release.wait(30)


def test_a_second_writer_is_refused_naming_the_holder(toy, prompts, store):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(store), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(StoreError, match=rf"pid {holder.pid} on host"):
            _resume(toy, prompts, store)
        with pytest.raises(StoreError, match="being written"):
            _resume(toy, prompts, store, wait=0.5)
    finally:
        release.set()
        holder.join(30)
    assert _resume(toy, prompts, store, wait=5).complete


KINDS = ["spec.json", "index.json", "shard-00001.json", "shard-00001.safetensors"]
DAMAGE = ["truncate", "garbage", "delete", "flip"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("damage", DAMAGE)
def test_fault_injection_repairs_or_refuses_never_wrong_rows(
    toy, prompts, store, pristine, kind, damage
):
    path = store / kind
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not what was written\xff" * 3)
    elif damage == "delete":
        path.unlink()
    else:  # one byte flipped in the middle
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes([data[mid] ^ 0x55]) + data[mid + 1 :])
    want = _rows(pristine)
    try:  # reading either refuses by name or gives exactly the rows collected
        store_ = ActivationStore(store)
        store_.verify()
        torch.testing.assert_close(_rows(store), want, atol=0, rtol=0)
    except StoreError as err:
        assert str(err)
    try:  # resuming either repairs the store or refuses by name
        run = _resume(toy, prompts, store)
    except StoreError as err:
        assert kind == "spec.json" and str(err)
        return
    assert run.complete
    ActivationStore(store).verify()
    torch.testing.assert_close(_rows(store), want, atol=0, rtol=0)
