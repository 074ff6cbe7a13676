"""Benchmarks of the labeling engine: CPU work outside the forwards (``engine``, ``cpu``),
FLOPs per image (``flops``), throughput projection (``projection``), the one-call GPU device
check (``gpu``) and the full-size random-weight builds they use (``models``); their
machine-readable results are in ``results/``.

May import: ``labeling``, ``c2fmae_data``, ``bench.report``; ``samples`` and ``models`` are leaves.
"""
