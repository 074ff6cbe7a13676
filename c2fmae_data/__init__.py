"""The multi-granular ImageNet format, its PyTorch loader and the ``c2fmae-data`` CLI.

``from c2fmae_data import ImageNetMultiGranular`` is the entry point for training code. Torch is
imported only when the dataset classes are first touched, so the format/CLI stay light.

Sub-packages, each importing only those before it: ``format`` (schema, shards, index, manifest)
<- ``loading`` (datasets, sampler, transforms) <- ``tools`` (verify, download, inspect,
convert-coco) <- ``label_eval`` (eval-labels). ``cli`` dispatches to all of them. c2fmae_data
imports neither ``labeling`` nor ``model`` nor ``pipelines``.
"""
from c2fmae_data.format.categories import NUM_SEMANTIC_CLASSES, SEMANTIC_IGNORE
from c2fmae_data.format.schema import FORMAT_VERSION, SCHEMA, FormatError

__all__ = ["ImageNetMultiGranular", "ImageNetMultiGranularStream", "FORMAT_VERSION", "SCHEMA",
           "FormatError", "NUM_SEMANTIC_CLASSES", "SEMANTIC_IGNORE"]


def __getattr__(name):
    if name == "ImageNetMultiGranular":
        from c2fmae_data.loading.dataset import ImageNetMultiGranular

        return ImageNetMultiGranular
    if name == "ImageNetMultiGranularStream":
        from c2fmae_data.loading.stream import ImageNetMultiGranularStream

        return ImageNetMultiGranularStream
    raise AttributeError(name)
