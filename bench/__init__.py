"""Benchmarks. Each script rewrites its own section of docs/benchmarks.md (``bench.report``) and
is run from the repository root as ``python -m bench.<group>.<name>``; ``bench.demo`` times the
README demo and ``bench.pipeline`` the Ray labeling job.

May import: every package of the project and ``tests._datasets`` (the shared synthetic data);
nothing imports bench.
"""
