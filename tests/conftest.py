"""Shared fixtures. Every test runs offline: a stray hub call fails at once."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from mi_cluster.models.loading import load_model  # noqa: E402
from mi_cluster.models.tiny import TinyConfig


@pytest.fixture(scope="session")
def tiny():
    return load_model(TinyConfig(n_layers=2, d_model=64, n_heads=4), device="cpu")


@pytest.fixture(scope="session")
def tiny64():
    """The same shape in float64."""
    return load_model(
        TinyConfig(n_layers=2, d_model=64, n_heads=4), device="cpu", dtype=torch.float64
    )


@pytest.fixture(scope="session")
def toy():
    """The shipped toy IOI model, loaded once for every test that reads it."""
    return load_model("toy-ioi", device="cpu")


@pytest.fixture(scope="session")
def minilm():
    return load_model("minilm", device="cpu")


@pytest.fixture
def run_starts(monkeypatch):
    """The positions patched runs started at (``from_pos`` of each finished
    ``LayerRunner.run``), in order."""
    from mi_cluster.methods.patching.runner import LayerRunner

    starts: list[int] = []
    run = LayerRunner.run

    def spy(self, *args, **kwargs):
        out = run(self, *args, **kwargs)
        starts.append(kwargs.get("from_pos", 0))
        return out

    monkeypatch.setattr(LayerRunner, "run", spy)
    return starts


@pytest.fixture(autouse=True)
def _progress_as_the_environment_says():
    """A test (or a documentation example run in this process) that turns progress bars
    off leaves them as it found them."""
    from mi_cluster.core.progress import set_progress

    yield
    set_progress(None)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _runtime_types(request):
    """Tests marked ``unchecked`` feed bad input as a user would, without the runtime type
    checker the suite otherwise runs under, so that they see the library's own errors."""
    if request.node.get_closest_marker("unchecked") is None:
        yield
        return
    from unchecked import unchecked

    with unchecked():
        yield


@pytest.fixture(scope="session")
def hf_toy():
    """The toy model as plain Hugging Face GPT-2 (no TransformerLens), for references."""
    from transformers import GPT2LMHeadModel

    from mi_cluster.models.toy import TOY_IOI_DIR

    return GPT2LMHeadModel.from_pretrained(str(TOY_IOI_DIR), attn_implementation="eager").eval()


@pytest.fixture(scope="session")
def hf_minilm():
    """MiniLM as plain Hugging Face BERT (no TransformerLens), for references."""
    from transformers import BertModel

    from mi_cluster.models.minilm import minilm_directory

    return BertModel.from_pretrained(str(minilm_directory()), attn_implementation="eager").eval()
