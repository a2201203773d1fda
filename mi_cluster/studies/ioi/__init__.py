"""Indirect-object identification: head analyses (:mod:`~mi_cluster.studies.ioi.heads`),
head-role claims as hypothesis tests (:mod:`~mi_cluster.studies.ioi.claims`) and circuit
evaluation (:mod:`~mi_cluster.studies.ioi.circuits`).
"""
