"""The labeling engine (no Ray): ImageNet images -> instance + semantic records of the format.

Sub-packages: ``detection`` (Grounding DINO, prompts, threshold walk), ``segmentation`` (HQ-SAM,
SAM 3), ``semantic`` (Mask2Former / OneFormer / EoMT, imported maps) and ``presets`` (which models,
how they load, weights, tiny-random, fakes). Top-level modules: the leaves ``images`` (decode),
``compose`` (instance map), ``preflight``, ``listing`` and ``overlap``; ``labeler`` (one
``Labeler`` over a preset) imports them and the sub-packages; ``folder`` (one-machine runs) and
``cli`` (the ``c2fmae-data label / weights / import-semantic`` plugins) sit on top.

May import: ``c2fmae_data`` only, of this project; never ``pipelines`` or ``model``.
"""
