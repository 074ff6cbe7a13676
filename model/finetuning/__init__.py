"""Fine-tuning and evaluation of a pretrained encoder (paper Table I, IV): the config, the
image-folder data, the classifier made from the encoder, the shared loop of both fine-tuning
commands, resume, and the robustness metrics.

May import: ``model.pretraining`` (config machinery, checkpoints, optimizer schedule, DDP),
``model.network`` and ``c2fmae_data``; never the command modules.
"""
