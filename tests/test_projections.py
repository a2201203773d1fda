import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from unchecked import unchecked

from mi_cluster.methods.projections import (
    BASES,
    head_circuit_directions,
    pca_by_layer,
    project_on_directions,
)


def _stack(layers=3, n=40, d=16, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(layers, n, d, generator=gen, dtype=torch.float64)
    return (x * torch.linspace(3, 0.1, d, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_layer_pca_matches_sklearn_up_to_sign(dtype):
    x = _stack()
    proj = pca_by_layer(x.to(dtype), n_components=3, basis="per_layer")
    assert proj.coords.dtype == dtype and proj.basis == "PCA fitted per layer"
    for layer in range(3):
        ref = PCA(n_components=3).fit(x[layer].numpy())
        np.testing.assert_allclose(
            np.abs(proj.coords[layer].double().numpy()),
            np.abs(ref.transform(x[layer].numpy())),
            atol=1e-4,
        )
        np.testing.assert_allclose(
            proj.explained_variance_ratio[layer].double().numpy(),
            ref.explained_variance_ratio_,
            atol=1e-5,
        )


@pytest.mark.parametrize("basis", BASES)
def test_every_basis_reconstructs_its_input(basis):
    x = _stack(n=40, d=12)
    proj = pca_by_layer(x, n_components=12, basis=basis)
    torch.testing.assert_close(proj.reconstruct(), x)
    eye = torch.eye(12, dtype=x.dtype).expand(3, -1, -1)
    torch.testing.assert_close(proj.components @ proj.components.transpose(1, 2), eye)
    torch.testing.assert_close(proj.explained_variance_ratio.sum(-1), torch.ones(3, dtype=x.dtype))


def _rotating_trajectory(n_layers=12, n=30, d=10, step=0.12):
    """Points in a plane of R^d whose 2-D shape turns a little at each layer and whose
    two principal variances are nearly equal, so per-layer PCA axes are unstable."""
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    base = base / base.std(0) * torch.tensor([1.0, 0.97], dtype=torch.float64)
    frame = torch.linalg.qr(torch.randn(d, 2, generator=gen, dtype=torch.float64))[0].T
    layers = []
    for k in range(n_layers):
        c, s = math.cos(k * step), math.sin(k * step)
        rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        noise = 1e-3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
        layers.append((base @ rot.T) @ frame * (1 + 0.3 * k) + noise)
    return torch.stack(layers)


def test_aligned_basis_never_flips_or_rotates_between_consecutive_layers():
    x = _rotating_trajectory()
    aligned = pca_by_layer(x, 2, basis="aligned")
    per_layer = pca_by_layer(x, 2, basis="per_layer")

    def jumps(coords):
        c = coords / coords.pow(2).sum((1, 2), keepdim=True).sqrt()  # scale-free frames
        return (c[1:] - c[:-1]).pow(2).sum((1, 2)).sqrt()

    # the shape turns by 0.12 rad a layer; aligned frames follow it, never jumping more
    assert float(jumps(aligned.coords).max()) < 0.2
    assert float(jumps(per_layer.coords).max()) > 0.5  # per-layer axes jump somewhere
    # consecutive aligned frames differ by less than any reflection or quarter turn would
    for k in range(1, x.shape[0]):
        a, b = aligned.coords[k - 1], aligned.coords[k]
        u, _, vt = torch.linalg.svd(b.T @ a)
        best = u @ vt  # the rotation that would map frame k onto k-1: near the identity
        assert (
            torch.linalg.det(best) > 0
            and float((best - torch.eye(2, dtype=best.dtype)).abs().max()) < 1e-6
        )
    # same subspace as per-layer PCA: the same total explained variance
    torch.testing.assert_close(
        aligned.explained_variance_ratio.sum(-1), per_layer.explained_variance_ratio.sum(-1)
    )


def test_shared_basis_is_one_basis_fitted_on_normalised_layers():
    x = _stack()
    x[2] *= 100.0  # a late layer with a far larger norm must not dominate the fit
    shared = pca_by_layer(x, 2, basis="shared")
    assert torch.equal(shared.components[0], shared.components[2])
    centred = x - x.mean(1, keepdim=True)
    rms = centred.pow(2).sum(-1).mean(-1).sqrt()
    stacked = (centred / rms[:, None, None]).reshape(-1, 16).numpy()
    ref = PCA(2).fit(stacked)
    np.testing.assert_allclose(
        np.abs(shared.components[0].numpy()), np.abs(ref.components_), atol=1e-8
    )
    on_layer = pca_by_layer(x, 2, basis="shared", fit_layer=1)
    ref1 = PCA(2).fit(x[1].numpy())
    np.testing.assert_allclose(
        np.abs(on_layer.components[2].numpy()), np.abs(ref1.components_), atol=1e-8
    )
    assert "layer 1" in on_layer.basis and "all layers" in shared.basis
    var = (centred @ shared.components.transpose(1, 2)).pow(2).sum(1) / centred.pow(2).sum((1, 2))[
        :, None
    ]
    torch.testing.assert_close(shared.explained_variance_ratio, var)


def test_projection_on_given_directions():
    x = _stack(layers=2, d=6)
    dirs = torch.zeros(2, 6, dtype=torch.float64)
    dirs[0, 0], dirs[1, 1] = 2.0, -3.0
    proj = project_on_directions(x, dirs, ("a", "b"), "two axes")
    centred = x - x.mean(1, keepdim=True)
    torch.testing.assert_close(proj.coords[..., 0], centred[..., 0])
    torch.testing.assert_close(proj.coords[..., 1], -centred[..., 1])
    assert proj.basis == "two axes" and proj.component_labels == ("a", "b")
    per_layer = torch.randn(2, 1, 6, dtype=torch.float64)
    one = project_on_directions(x, per_layer, ["axis"], "per-layer axis")
    unit = per_layer / per_layer.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(one.coords[..., 0], torch.einsum("lnd,ld->ln", centred, unit[:, 0]))
    with unchecked(), pytest.raises(ValueError, match="do not fit"):
        project_on_directions(x, torch.ones(2, 5), ("a", "b"), "")
    with pytest.raises(ValueError, match="zero vector"):
        project_on_directions(x, torch.zeros(1, 6), ("a",), "")


def test_head_circuit_directions_equal_a_dense_svd(tiny):
    w_v, w_o = tiny.W_V[1, 2].detach().double(), tiny.W_O[1, 2].detach().double()
    w_q, w_k = tiny.W_Q[1, 2].detach().double(), tiny.W_K[1, 2].detach().double()
    for circuit, dense in (("OV", w_v @ w_o), ("QK", w_q @ w_k.T)):
        u, s, vh = torch.linalg.svd(dense)
        for side, ref in (("input", u[:, :3].T), ("output", vh[:3])):
            got = head_circuit_directions(tiny, 1, 2, circuit, side, k=3)
            np.testing.assert_allclose(
                got.singular_values.double().numpy(), s[:3].numpy(), rtol=1e-4
            )
            cos = (got.directions.double() * ref).sum(-1).abs()  # same directions up to sign
            np.testing.assert_allclose(cos.numpy(), np.ones(3), atol=1e-4)
            assert got.labels[0].startswith(f"L1H2 {circuit}")
    with pytest.raises(ValueError, match="no head L5H0"):
        head_circuit_directions(tiny, 5, 0)


@pytest.mark.unchecked
def test_pca_errors():
    with pytest.raises(ValueError, match=r"\[layer, row, d_model\]"):
        pca_by_layer(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="NaN or inf"):
        pca_by_layer(torch.full((1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="n_components=9"):
        pca_by_layer(torch.randn(1, 4, 8), n_components=9)
    with pytest.raises(ValueError, match="unknown basis"):
        pca_by_layer(torch.randn(1, 4, 8), basis="spin")
    with pytest.raises(ValueError, match="fit_layer=3"):
        pca_by_layer(torch.randn(2, 4, 8), basis="shared", fit_layer=3)
