"""Studies: the project's own questions, built on the methods.

:mod:`~mi_cluster.studies.subject_object` (does subject position make an object word look
like a name, and which components move it) and :mod:`~mi_cluster.studies.ioi` (which
heads move names in IOI prompts, tested as claims, and whole circuits).
"""
