"""C2FMAE pretraining model, trainer, export and fine-tuning.

``from model.c2fmae import C2FMAE, C2FMAEConfig, build_model`` is the model entry point; the
submodules are imported lazily so that light tools (configs, CLIs) do not pull in torch/timm.
"""


def __getattr__(name):
    if name in ("C2FMAE", "C2FMAEConfig", "build_model"):
        from . import c2fmae

        return getattr(c2fmae, name)
    raise AttributeError(name)
