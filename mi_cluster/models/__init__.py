"""Models: loading hub names, local directories and tiny random models of every
architecture as TransformerLens bridges (:mod:`~mi_cluster.models.loading`), the
named-model registry (:mod:`~mi_cluster.models.registry`), sources checked before
anything heavy loads (:mod:`~mi_cluster.models.sources`), and the shipped zoo: MiniLM
(:mod:`~mi_cluster.models.minilm`), the trained toy IOI model
(:mod:`~mi_cluster.models.toy`) and the compiled IOI model
(:mod:`~mi_cluster.models.compiled`).

Nothing is imported here, so ``mi_cluster.models.sources`` stays light (the command line
checks its arguments before torch is imported).
"""
