"""Ray orchestration of the labeling engine: ``label_imagenet.py`` (what ``ray submit`` runs),
the plan, the Ray stages and driver loop, the final report, the cluster yaml, and the
end-to-end ``c2fmae-data demo``.

May import: ``labeling`` and ``c2fmae_data``. Only this package imports Ray.
"""
