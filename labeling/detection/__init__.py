"""Boxes from text: Grounding DINO behind one batched interface, the ImageNet prompt table and
its generator, the adaptive threshold walk with class-aware NMS (paper III-A).

May import: ``c2fmae_data.format`` and ``labeling.preflight`` (the finite-output check);
transformers lazily. Inside: ``prompt_table`` <- ``prompts``; ``thresholds`` is a leaf.
"""
