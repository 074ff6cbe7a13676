"""C2FMAE: the network, its pretraining, export and fine-tuning.

``from model import build_model`` (also ``C2FMAE``, ``C2FMAEConfig``) is the model entry point,
imported lazily so that light tools (configs, CLIs) do not pull in torch/timm.

The top level holds the commands, each ``python -m model.<name>``: ``pretrain``, ``finetune``,
``multigranular_ft``, ``evaluate``, ``export``. What they run lives in three sub-packages, each
importing only those before it: ``network`` (the nn.Modules, eq. 1-12) <- ``pretraining``
(engine, hooks, checkpoints, configs, data, DDP) <- ``finetuning`` (classifier, loop, resume,
robustness). Commands import sub-packages, never each other. model imports ``c2fmae_data`` and
nothing else of this project.
"""


def __getattr__(name):
    if name in ("C2FMAE", "C2FMAEConfig", "build_model"):
        from model.network import c2fmae

        return getattr(c2fmae, name)
    raise AttributeError(name)
