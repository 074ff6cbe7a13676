"""What a pretraining run is made of (paper IV-A), besides the network: the config files and
their derived batch / lr, the epoch engine (MAE's ``train_one_epoch``), hooks (logging,
checkpoints, panels, probes), checkpoints, AdamW + schedule, data loading, DDP and logs.
``model.pretrain`` puts them together.

May import: ``model.network``, ``c2fmae_data`` (the loader, lazily); never ``model.finetuning``
or the command modules.
"""
