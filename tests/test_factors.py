"""NMF of activations: the torch factorisation against scikit-learn, activation_factors
against a plain-torch hook on MiniLM's MLP, and the factor figures."""

import shutil
from pathlib import Path

import pytest
import torch
from sklearn.decomposition import NMF

from mi_cluster.methods.factors import activation_factors, nmf
from mi_cluster.plotting import save_figure
from mi_cluster.plotting.factors import (
    plot_factor_heatmap,
    plot_factor_text,
    plot_factor_top_tokens,
)

PASSAGE = (
    (Path(__file__).parents[1] / "experiments" / "data" / "underground.txt").read_text().strip()
)
SHORT = PASSAGE[:600]


@pytest.fixture(scope="module")
def mlp_matrix(minilm):
    f = activation_factors(minilm, SHORT, 4)  # also exercises the full path once
    from mi_cluster.collection.activations import Positions, collect

    acts = collect(minilm, [SHORT], "mlp_post", Positions.all(exclude_special=True), progress=False)
    return f, acts.tensor.permute(1, 0, 2).reshape(acts.tensor.shape[1], -1).clamp_min(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_objective_within_one_percent_of_scikit_learn(mlp_matrix, dtype):
    _, X = mlp_matrix
    ours = nmf(X.to(dtype), 8)
    ref = NMF(8, max_iter=2000, tol=1e-6).fit(X.double().numpy())
    assert ours.error <= 1.01 * ref.reconstruction_err_, (ours.error, ref.reconstruction_err_)
    assert ours.W.dtype == dtype and (ours.W >= 0).all() and (ours.H >= 0).all()
    assert ours.error == pytest.approx(float((X.to(dtype) - ours.W @ ours.H).norm()), rel=1e-4)


def test_exact_low_rank_data_is_reconstructed():
    g = torch.Generator().manual_seed(0)
    W0 = torch.rand(60, 4, generator=g, dtype=torch.float64)
    H0 = torch.rand(4, 40, generator=g, dtype=torch.float64)
    r = nmf(W0 @ H0, 4, max_iter=3000, tol=1e-12)
    assert r.relative_error < 0.01  # multiplicative updates approach an exact fit slowly


def test_activation_factors_match_a_plain_torch_hook(mlp_matrix, minilm, hf_minilm):
    f, X = mlp_matrix
    # the MLP activations through a forward hook on Hugging Face's own BERT
    captured = []
    handles = [
        layer.intermediate.register_forward_hook(lambda m, i, o: captured.append(o.detach()[0]))
        for layer in hf_minilm.encoder.layer
    ]
    try:
        with torch.no_grad():
            hf_minilm(**minilm.tokenizer(SHORT, return_tensors="pt"))
    finally:
        for h in handles:
            h.remove()
    want = torch.cat([c[1:-1] for c in captured], dim=-1).clamp_min(0)  # drop CLS and SEP
    torch.testing.assert_close(X, want, atol=1e-4, rtol=1e-4)
    assert f.activations.shape == (4, X.shape[0]) and f.loadings.shape == (4, X.shape[1])
    assert f.neuron_layer[0] == 0 and f.neuron_layer[-1] == 5 and "[CLS]" not in f.tokens
    rel = (X - f.activations.T @ f.loadings).norm() / X.norm()
    assert float(rel) == pytest.approx(f.relative_error, rel=1e-4)
    top = f.top_tokens(3)
    assert len(top) == 4 and all(
        a[1] >= b[1] for row in top for a, b in zip(row, row[1:], strict=False)
    )


def test_residual_stream_is_shifted_not_clipped(minilm):
    f = activation_factors(minilm, SHORT, 3, site="resid_post", layers=[5])
    assert f.negative == "shift" and f.layers == (5,) and f.loadings.shape[1] == minilm.cfg.d_model


def test_bad_input_is_refused(minilm):
    with pytest.raises(ValueError, match="non-negative"):
        nmf(torch.tensor([[1.0, -1.0], [0.0, 2.0]]), 1)
    with pytest.raises(ValueError, match="n_components must be between"):
        nmf(torch.rand(3, 5), 4)
    with pytest.raises(ValueError, match="layers must be in"):
        activation_factors(minilm, SHORT, 2, layers=[9])


def test_factor_figures(mlp_matrix, tmp_path):
    f, _ = mlp_matrix
    text = plot_factor_text(f)
    assert len(text.layout.shapes) == len(f.tokens)
    assert len([t for t in text.data if t.mode == "markers"]) == f.n_components
    assert (
        plot_factor_heatmap(f).data[0].z is not None and len(plot_factor_heatmap(f).data[0].y) == 4
    )
    assert len(plot_factor_top_tokens(f, n=5).data) == 4
    only = plot_factor_text(f, components=[1])
    assert len([t for t in only.data if t.mode == "markers"]) == 1
    if shutil.which("chromium") is None:
        pytest.skip("static export needs Chromium: apt-get install chromium")
    for fmt in ("png", "svg"):
        assert save_figure(text, tmp_path / f"nmf.{fmt}")[0].stat().st_size > 5_000
