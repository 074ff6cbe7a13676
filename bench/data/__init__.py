"""Benchmarks of the format and loader: per-sample cost (``loader``), ImageNet-scale costs
(``scale``), bytes to open over HTTP (``http_open``), convert-coco / verify (``verify_convert``).

May import: ``c2fmae_data``, ``bench.report``, ``tests._datasets`` and each other's helpers.
"""
