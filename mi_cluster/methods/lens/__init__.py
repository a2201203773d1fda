"""Lenses: the logit lens and the tuned lens (:mod:`~mi_cluster.methods.lens.logit`),
and the tuned lens's translators and their training (:mod:`~mi_cluster.methods.lens.tuned`).
"""
