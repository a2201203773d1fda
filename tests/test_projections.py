import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from mi_cluster.projections import pca_by_layer
from mi_cluster.stats import group_separation


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pca_matches_sklearn_up_to_sign(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 16, generator=gen, dtype=torch.float64) * torch.linspace(
        3, 0.1, 16, dtype=torch.float64
    )
    proj = pca_by_layer(x.to(dtype), n_components=3, align_signs=False)
    assert proj.coords.dtype == dtype
    for layer in range(3):
        ref = PCA(n_components=3).fit(x[layer].numpy())
        coords = ref.transform(x[layer].numpy())
        np.testing.assert_allclose(
            np.abs(proj.coords[layer].double().numpy()), np.abs(coords), atol=1e-4
        )
        np.testing.assert_allclose(
            proj.explained_variance_ratio[layer].double().numpy(),
            ref.explained_variance_ratio_,
            atol=1e-5,
        )


def test_sign_alignment_removes_mirror_flips():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(30, 8, generator=gen) * torch.linspace(4, 0.5, 8)
    x = torch.stack([base, -base, base * 2])  # a mirror image in the middle
    proj = pca_by_layer(x, n_components=2)
    torch.testing.assert_close(proj.coords[1], proj.coords[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(proj.coords[2], 2 * proj.coords[0], atol=1e-4, rtol=1e-4)


def test_pca_errors():
    with pytest.raises(ValueError, match="layer, prompt, d_model"):
        pca_by_layer(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="NaN or inf"):
        pca_by_layer(torch.full((1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="n_components=9"):
        pca_by_layer(torch.randn(1, 4, 8), n_components=9)


def test_group_separation_against_numpy():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 10, 5, generator=gen, dtype=torch.float64)
    x[1, :5] += 10.0
    groups = ["a"] * 5 + ["b"] * 5
    got = group_separation(x, groups, "a", "b")
    for layer in range(2):
        xa, xb = x[layer, :5].numpy(), x[layer, 5:].numpy()
        between = np.linalg.norm(xa.mean(0) - xb.mean(0))
        dev = np.concatenate([xa - xa.mean(0), xb - xb.mean(0)])
        within = np.sqrt((dev**2).sum(1).mean())
        assert got[layer].item() == pytest.approx(between / within, rel=1e-10)
    assert got[1] > 5 * got[0]
    with pytest.raises(ValueError, match="group 'c' has 0 rows"):
        group_separation(x, groups, "a", "c")
