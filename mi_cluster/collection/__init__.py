"""Collecting activations: the residual stream and per-head outputs at every layer
(:mod:`~mi_cluster.collection.activations`), written to an on-disk store shard by shard
(:mod:`~mi_cluster.collection.store`, its files in :mod:`~mi_cluster.collection.store_files`),
split across processes (:mod:`~mi_cluster.collection.distributed`).
"""
