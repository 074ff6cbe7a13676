"""Benchmarks of the Ray labeling job on a real multi-node cluster on this machine: node scaling
and the object store under a slow shard store (``multinode``), and every documented cluster
command run for real (``commands``).

May import: ``pipelines``, ``labeling``, ``c2fmae_data``, ``bench.report`` and the cluster helpers
of ``tests._ray_cluster``.
"""
