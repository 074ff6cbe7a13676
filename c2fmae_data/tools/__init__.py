"""The ``c2fmae-data`` verbs that check, show and move datasets: ``verify``, ``download``,
``inspect`` (+ ``--grid``) and ``convert-coco``.

May import: ``c2fmae_data.format`` and ``c2fmae_data.loading``; never the CLI.
"""
