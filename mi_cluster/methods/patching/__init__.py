"""Activation, path and attribution patching, batched and exact, with any metric."""

from mi_cluster.methods.patching.activation import (
    SITE_KINDS,
    PatchResult,
    SiteKind,
    activation_patching,
)
from mi_cluster.methods.patching.attribution import (
    ATTRIBUTION_SITES,
    attribution_patching,
    correlation_with,
)
from mi_cluster.methods.patching.inputs import PromptPair, prepare_pair
from mi_cluster.methods.patching.metrics import (
    Metric,
    MetricInput,
    activation_metric,
    answer_ids,
    answer_probability,
    kl_to_clean,
    logit_difference,
)
from mi_cluster.methods.patching.path import path_patching
from mi_cluster.methods.patching.runner import LayerRunner, PatchingError

__all__ = [
    "ATTRIBUTION_SITES",
    "SITE_KINDS",
    "LayerRunner",
    "Metric",
    "MetricInput",
    "PatchResult",
    "PatchingError",
    "PromptPair",
    "SiteKind",
    "activation_metric",
    "activation_patching",
    "attribution_patching",
    "correlation_with",
    "answer_ids",
    "answer_probability",
    "kl_to_clean",
    "logit_difference",
    "path_patching",
    "prepare_pair",
]
