"""Which models a preset names and how they are built: the preset catalog (hub ids, revisions),
loading real weights, the weights lock (download / verify), the tiny-random offline builds and
the deterministic fakes.

May import: ``labeling.detection``, ``labeling.segmentation``, ``labeling.semantic`` and
``c2fmae_data.format``; never the labeler, the folder runner or the CLI.
"""
