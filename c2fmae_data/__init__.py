"""The multi-granular ImageNet format, its PyTorch loader and the ``c2fmae-data`` CLI.

``from c2fmae_data import ImageNetMultiGranular`` is the entry point for training code. Torch is
imported only when the dataset classes are first touched, so the format/CLI stay light.
"""
from .categories import NUM_SEMANTIC_CLASSES, SEMANTIC_IGNORE
from .format import FORMAT_VERSION, SCHEMA, FormatError

__all__ = ["ImageNetMultiGranular", "ImageNetMultiGranularStream", "FORMAT_VERSION", "SCHEMA",
           "FormatError", "NUM_SEMANTIC_CLASSES", "SEMANTIC_IGNORE"]


def __getattr__(name):
    if name == "ImageNetMultiGranular":
        from .dataset import ImageNetMultiGranular

        return ImageNetMultiGranular
    if name == "ImageNetMultiGranularStream":
        from .stream import ImageNetMultiGranularStream

        return ImageNetMultiGranularStream
    raise AttributeError(name)
