"""Benchmarks of the model and trainers: train step and mask generation (``model_step``), trainer
overhead (``pretrain``), the GPU bf16 step (``gpu_pretrain``), fine-tuning (``finetune``) and the
curriculum plot (``masking_blend_plot``).

May import: ``model``, ``c2fmae_data``, ``bench.report``.
"""
