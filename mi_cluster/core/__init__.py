"""The lowest layer: what every other layer stands on, with no model loaded.

Hook and site names (:mod:`~mi_cluster.core.hooks`), what is known of a loaded model
(:mod:`~mi_cluster.core.model_info`), the protocols the library asks of a model and of a
row source (:mod:`~mi_cluster.core.protocols`), tokens and word positions
(:mod:`~mi_cluster.core.prompts`), IOI prompt sets (:mod:`~mi_cluster.core.ioi_prompts`),
the residual-to-logits readout and frozen norms (:mod:`~mi_cluster.core.readout`,
:mod:`~mi_cluster.core.norms`), what each component writes (:mod:`~mi_cluster.core.writes`),
and safe files: atomic writes, digests, provenance, command outputs.
"""
