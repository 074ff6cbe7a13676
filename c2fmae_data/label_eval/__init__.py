"""``c2fmae-data eval-labels``: label quality of one dataset against another (mask AP/AR, mIoU,
PQ, ILSVRC box recall, worst-image panels).

May import: ``c2fmae_data.format``, ``c2fmae_data.loading`` and ``c2fmae_data.tools.grid``
(drawing); pycocotools lazily. ``cli`` is the verb, ``run`` joins and scores, the rest are metrics.
"""
