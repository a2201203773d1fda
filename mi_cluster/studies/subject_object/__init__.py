"""The subject/object clustering study: its controlled design
(:mod:`~mi_cluster.studies.subject_object.design`), the study
(:mod:`~mi_cluster.studies.subject_object.study`), the components that carry the role
shift (:mod:`~mi_cluster.studies.subject_object.role_shift`), and the before/after-head view
(:mod:`~mi_cluster.studies.subject_object.head_write`).
"""
