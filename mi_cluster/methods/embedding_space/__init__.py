"""Parameters and activations in embedding space (Dar, Geva, Gupta & Berant 2023): vocabulary
readings of weights and residual vectors (:mod:`~mi_cluster.methods.embedding_space.readings`),
and layer alignment between two models through their shared vocabulary
(:mod:`~mi_cluster.methods.embedding_space.alignment`).
"""
