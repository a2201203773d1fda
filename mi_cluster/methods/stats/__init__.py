"""Statistics on representations by layer: torch, vectorised over layers and resamples,
on the inputs' device and dtype, reproducible with a seed or a CPU ``torch.Generator``.

| name | what |
|---|---|
| ``centroid_separation`` | centroid distance / RMS within-group spread |
| ``variance_ratio`` | between / within variance (Calinski-Harabasz, 2 groups) |
| ``silhouette`` | mean silhouette width (Euclidean) |
| ``probe_accuracy`` | ridge probe accuracy, whole words held out |
| ``separation_test`` | any of the above: label-permutation test + bootstrap CI |
| ``fit_subjecthood_axis`` | name-vs-object axis per layer (centroid or probe) |
| ``cross_fitted_subjecthood`` | scores from an axis fitted without the scored word |
| ``role_shift_inference`` | role shifts on a name-object axis, its error carried, two scopes |
| ``component_share_inference`` | the share of a role shift a component carries, likewise |
| ``paired_test`` | mean paired difference: sign-flip test + bootstrap CI |
| ``crossed_ratio_interval`` | ratio of sums, words x templates crossed bootstrap |
| ``two_sample_test`` | difference of means: label-permutation test + CI |
| ``correlation_test`` | Pearson's r with a covariate: permutation test + CI |
| ``correspondence_test`` | matched pairs more similar than random pairings? |
| ``holm``, ``benjamini_hochberg`` | corrections across layers |

The separation statistics, their tests, the probe and the subjecthood axes also take an
on-disk :class:`~mi_cluster.collection.store.ActivationStore` in place of ``x``, streamed
in bounded memory to the same numbers (:mod:`mi_cluster.methods.stats.sufficient`).
"""

from mi_cluster.methods.stats.corrections import benjamini_hochberg, holm
from mi_cluster.methods.stats.effects import (
    EffectTest,
    correlation_test,
    correspondence_test,
    paired_test,
    two_sample_test,
)
from mi_cluster.methods.stats.inputs import StatsInputError
from mi_cluster.methods.stats.jackknife import word_variance
from mi_cluster.methods.stats.probe import ProbeResult, probe_accuracy, ridge_fit, unit_folds
from mi_cluster.methods.stats.resampling import (
    BootstrapInterval,
    RatioInterval,
    bootstrap_interval,
    crossed_ratio_interval,
    label_permutations,
    make_generator,
    permutation_p_value,
    permutations,
    sign_flips,
)
from mi_cluster.methods.stats.separation import (
    STATISTICS,
    SeparationTest,
    centroid_separation,
    separation_test,
    silhouette,
    variance_ratio,
)
from mi_cluster.methods.stats.shares import ComponentShares, component_share_inference, share_basis
from mi_cluster.methods.stats.shifts import SCOPES, RoleShifts, ScopedShift, role_shift_inference
from mi_cluster.methods.stats.subjecthood import (
    AXIS_METHODS,
    CrossFittedScores,
    SubjecthoodAxis,
    cross_fitted_subjecthood,
    fit_subjecthood_axis,
)

__all__ = [
    "AXIS_METHODS",
    "SCOPES",
    "STATISTICS",
    "BootstrapInterval",
    "ComponentShares",
    "CrossFittedScores",
    "EffectTest",
    "ProbeResult",
    "RatioInterval",
    "RoleShifts",
    "ScopedShift",
    "SeparationTest",
    "StatsInputError",
    "SubjecthoodAxis",
    "benjamini_hochberg",
    "component_share_inference",
    "bootstrap_interval",
    "centroid_separation",
    "correlation_test",
    "correspondence_test",
    "cross_fitted_subjecthood",
    "crossed_ratio_interval",
    "fit_subjecthood_axis",
    "holm",
    "label_permutations",
    "make_generator",
    "paired_test",
    "permutation_p_value",
    "permutations",
    "probe_accuracy",
    "ridge_fit",
    "role_shift_inference",
    "separation_test",
    "share_basis",
    "sign_flips",
    "silhouette",
    "two_sample_test",
    "unit_folds",
    "variance_ratio",
    "word_variance",
]
