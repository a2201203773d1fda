"""Methods: the analyses, each generic in the model and the prompts.

Lenses (:mod:`~mi_cluster.methods.lens`), patching (:mod:`~mi_cluster.methods.patching`),
similarity metrics (:mod:`~mi_cluster.methods.similarity`), statistics
(:mod:`~mi_cluster.methods.stats`), projections, attention views, activation factors
and paired-prompt comparisons.
"""
