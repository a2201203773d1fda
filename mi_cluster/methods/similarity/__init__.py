"""Representational similarity metrics in torch: exact, on any device, float32 or float64.

Inputs are ``Float[Tensor, "n d"]``: **rows are samples (tokens), columns are neurons**.
(The ``ecco_*`` functions alone take ecco's ``(neurons, tokens)``.) Every metric centres
features before any product and returns tensors on the inputs' device in their dtype.

| name | what |
|---|---|
| ``linear_cka`` | biased (Kornblith 2019) or ``debiased=True`` (unbiased HSIC) |
| ``rbf_cka`` | RBF kernel, bandwidth = threshold x median distance |
| ``MinibatchCKA`` | unbiased HSIC accumulated over minibatches (Nguyen 2021) |
| ``cca`` | all canonical correlations, mean rho, mean rho^2; ``ridge`` |
| ``svcca`` | SVD to 99% variance (or ``dims``), then CCA (Raghu 2017) |
| ``pwcca`` | projection-weighted CCA (Morcos 2018) |
| ``rsa`` | RDMs (correlation/cosine/euclidean) compared by Spearman/Pearson |
| ``mantel_test`` | permutation test of two (dis)similarity matrices (items relabelled) |
| ``procrustes_distance`` | orthogonal Procrustes distance (Ding 2021) |
| ``token_cosine`` | per-row cosine similarity |
| ``kl_divergence``, ``js_divergence`` | between next-token distributions, from logits |
| ``spectrum_distance`` | norm of the difference of singular-value spectra |
| ``pairwise`` | layer-by-layer / model-by-model matrices of any of the above |
| ``StreamingLinearCKA`` | exact linear CKA accumulated over row batches (a store on disk) |
| ``ecco_cka/cca/svcca/pwcca`` | reproduce ecco.analysis exactly (its conventions) |
"""

from mi_cluster.methods.similarity.cca import CCAResult, cca, pwcca, svcca
from mi_cluster.methods.similarity.cka import (
    MinibatchCKA,
    center_gram,
    kernel_cka,
    linear_cka,
    rbf_cka,
    rbf_gram,
)
from mi_cluster.methods.similarity.distances import (
    js_divergence,
    kl_divergence,
    procrustes_distance,
    spectrum_distance,
    token_cosine,
)
from mi_cluster.methods.similarity.ecco import ecco_cca, ecco_cka, ecco_pwcca, ecco_svcca
from mi_cluster.methods.similarity.inputs import SimilarityInputError
from mi_cluster.methods.similarity.matrices import METRICS, SimilarityMatrix, pairwise
from mi_cluster.methods.similarity.rsa import MantelResult, compare_rdms, mantel_test, rdm, rsa
from mi_cluster.methods.similarity.streaming import StreamingLinearCKA, store_linear_cka

__all__ = [
    "CCAResult",
    "METRICS",
    "MantelResult",
    "MinibatchCKA",
    "StreamingLinearCKA",
    "SimilarityInputError",
    "SimilarityMatrix",
    "cca",
    "center_gram",
    "compare_rdms",
    "ecco_cca",
    "ecco_cka",
    "ecco_pwcca",
    "ecco_svcca",
    "js_divergence",
    "kernel_cka",
    "kl_divergence",
    "linear_cka",
    "mantel_test",
    "pairwise",
    "procrustes_distance",
    "pwcca",
    "rbf_cka",
    "rbf_gram",
    "rdm",
    "rsa",
    "store_linear_cka",
    "spectrum_distance",
    "svcca",
    "token_cosine",
]
