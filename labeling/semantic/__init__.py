"""133-class COCO-panoptic semantic maps: Mask2Former / OneFormer (and the by-name class
mapping every semantic model shares), EoMT, and importing maps made elsewhere (SEEM).

May import: ``c2fmae_data.format``, ``labeling.preflight``, ``labeling.compose``; transformers
lazily. Inside: ``eomt`` -> ``mask2former``; ``external`` stands alone.
"""
