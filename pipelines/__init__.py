"""Ray orchestration of the labeling engine: ``label_imagenet.py`` (what ``ray submit`` and
``ray job submit`` run), the plan, the Ray stages and the driver loop (node loss, bounded
memory), reaching Ray (``connect.py``), the test-only fault hooks (``hooks.py``), the final
report, the cluster yamls (``cluster.yaml`` for AWS, ``cluster-local.yaml`` for several nodes on
one machine) and their check (``check_cluster.py``), and the end-to-end ``c2fmae-data demo``.

May import: ``labeling`` and ``c2fmae_data``. Only this package imports Ray.
"""
