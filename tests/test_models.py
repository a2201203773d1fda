import time

import pytest
import torch

from mi_cluster.core.model_info import LogitsUnavailableError, model_info, require_meaningful_logits
from mi_cluster.models import loading, sources
from mi_cluster.models.loading import load_model
from mi_cluster.models.sources import ModelUnavailableError
from mi_cluster.models.tiny import TinyConfig, save_tiny_pretrained

HOOKS = [
    "blocks.0.hook_resid_pre",
    "blocks.0.hook_resid_mid",
    "blocks.1.hook_resid_post",
    "blocks.0.attn.hook_z",
    "blocks.0.attn.hook_pattern",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_mlp_out",
    "ln_final.hook_scale",
]


def test_tiny_config_model_has_standard_hooks(tiny):
    _, cache = tiny.run_with_cache("Adam went to the store")
    for name in HOOKS + ["blocks.1.attn.hook_result"]:
        assert name in cache, name
    n = cache["blocks.0.hook_resid_pre"].shape[1]
    assert cache["blocks.1.attn.hook_result"].shape == (1, n, 4, 64)
    assert model_info(tiny).name == "tiny-gpt2-2L-64d"
    assert model_info(tiny).logits_meaningful


def test_tiny_config_is_deterministic():
    a = load_model(TinyConfig(seed=3), device="cpu")
    b = load_model(TinyConfig(seed=3), device="cpu")
    c = load_model(TinyConfig(seed=4), device="cpu")
    toks = a.to_tokens("Mary went to the store")
    assert torch.equal(a(toks), b(toks))
    assert not torch.allclose(a(toks), c(toks))


def test_tiny_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="not divisible"):
        TinyConfig(d_model=30, n_heads=4)


def test_local_directory(tmp_path):
    save_tiny_pretrained(TinyConfig(seed=1), tmp_path / "m")
    model = load_model(tmp_path / "m", device="cpu")
    reference = load_model(TinyConfig(seed=1), device="cpu")
    toks = model.to_tokens("John gave a lamp to Mary")
    assert torch.allclose(model(toks), reference(toks), atol=1e-5)
    assert model_info(model).name == "m"


def test_local_directory_without_config(tmp_path):
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        load_model(tmp_path, device="cpu")


def test_hub_name_offline_fails_fast_and_clearly():
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        load_model("gpt2", device="cpu")
    assert time.perf_counter() - start < 3.0
    message = str(err.value)
    assert "'gpt2'" in message and "load_model('DIR')" in message and "minilm" in message


def test_hub_name_unreachable_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(loading, "cached_snapshot", lambda name: None)
    with pytest.raises(ModelUnavailableError, match="cannot be reached"):
        load_model("some-org/some-model", device="cpu")


def test_hub_probe_times_out(monkeypatch):
    """The reachability probe returns within its timeout even if DNS hangs."""

    def hang(*args, **kwargs):
        time.sleep(10)
        raise TimeoutError("timed out")  # as a real connection attempt ends

    monkeypatch.setattr(sources.socket, "create_connection", hang)
    start = time.perf_counter()
    assert sources.hub_reachable(timeout=0.3) is False
    assert time.perf_counter() - start < 1.0


def test_minilm_logits_refused(minilm):
    info = model_info(minilm)
    assert info.name == "minilm" and not info.logits_meaningful
    with pytest.raises(LogitsUnavailableError, match="logit lens.*minilm.*randomly initialised"):
        require_meaningful_logits(minilm, "logit lens")
    assert minilm.cfg.n_layers == 6 and minilm.cfg.d_model == 384


@pytest.mark.unchecked
def test_unknown_source_type():
    with pytest.raises(TypeError, match="cannot load a model from int"):
        load_model(3)


def test_named_models_come_from_a_registry_packages_add_to(tiny):
    from mi_cluster.models.registry import register_model, registered_models

    named = registered_models()
    assert {"minilm", "toy-ioi"} <= set(named)  # mi_cluster's own entry points
    calls = []

    def load(device, dtype, compat):
        calls.append((device, dtype, compat))
        return tiny

    register_model("test-only-model", load, "a test")
    assert load_model("test-only-model", device="cpu", dtype=torch.float64) is tiny
    assert calls == [(torch.device("cpu"), torch.float64, True)]
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-only-model", lambda *a: None, "another")
    with pytest.raises(ModelUnavailableError, match="'test-only-model'"):
        load_model("no-such-model-anywhere")  # the error lists the named models


def test_device_map_passes_through_to_the_bridge():
    """A hub or directory model can be placed by a device map (Accelerate's); one CPU map
    gives the same logits as device="cpu" and collects the same activations. (A real split
    across GPUs needs a machine with several: see the README.)"""
    import torch

    from mi_cluster.collection.activations import collect
    from mi_cluster.models.toy import TOY_IOI_DIR

    plain = load_model(str(TOY_IOI_DIR), device="cpu")
    mapped = load_model(str(TOY_IOI_DIR), device_map={"": "cpu"})
    prompts = ["When Mary and John went to the store , John gave a ring to", "Mary had fun ."]
    tokens = plain.to_tokens(prompts[0])
    assert torch.equal(plain(tokens), mapped(tokens)) and mapped.cfg.n_devices == 1
    a = collect(plain, prompts, "resid_post", "all", progress=False)
    b = collect(mapped, prompts, "resid_post", "all", progress=False)
    assert torch.equal(a.tensor, b.tensor)
    with pytest.raises(ValueError, match="small shipped model"):
        load_model("toy-ioi", device_map="auto")
    with pytest.raises(ValueError, match="not both"):
        load_model(str(TOY_IOI_DIR), device="cpu", n_devices=2)
