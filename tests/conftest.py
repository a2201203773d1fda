"""Shared fixtures. Every test runs offline: a stray hub call fails at once."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from mi_cluster.models import TinyConfig, load_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    return load_model(TinyConfig(n_layers=2, d_model=64, n_heads=4), device="cpu")


@pytest.fixture(scope="session")
def minilm():
    return load_model("minilm", device="cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
