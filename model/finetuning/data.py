"""Image folders for fine-tuning and evaluation, labelled in timm's ImageNet-1K class order.

``ImageFolderSplit(root)`` reads the layout ImageNet and its robustness variants are distributed in,
``<root>/<wnid>/<image>``, and labels each image with the index of its wnid in a class list
(timm's 1000-class order by default, so a folder holding only some classes still gets the true
ImageNet index). A folder whose name is not in the class list is an error naming that folder,
so a wrong ``--root`` never trains or scores silently against shifted labels.

``limit`` keeps a deterministic, class-interleaved prefix (image 0 of every class, then image 1,
...), so a smoke run with ``--limit 32`` still sees many classes.

Transforms come from timm (``create_transform``): RandAugment, random erasing and bicubic
RandomResizedCrop for training (MAE's fine-tuning recipe), resize + center crop (crop_pct 0.875 =
224/256) for evaluation, both normalised with ImageNet mean/std like the pretraining loader.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageFolderSplit(torch.utils.data.Dataset):
    """``<root>/<class folder>/<image>`` -> ``(tensor, label)``; label = index in ``classes``."""

    def __init__(self, root: str, classes: Optional[Sequence[str]] = None,
                 transform: Optional[Callable] = None, limit: Optional[int] = None):
        if classes is None:
            from c2fmae_data.format.categories import imagenet_wnids

            classes = imagenet_wnids()
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root} does not exist")
        self.root, self.classes, self.transform = root, tuple(classes), transform
        index = {c: i for i, c in enumerate(self.classes)}
        per_class = []
        for d in sorted(os.listdir(root)):
            full = os.path.join(root, d)
            if not os.path.isdir(full):
                continue
            if d not in index:
                raise ValueError(f"folder {full!r} is not one of the {len(self.classes)} classes "
                                 f"of this benchmark (expected wnid folders like "
                                 f"{self.classes[0]!r})")
            files = sorted(f for f in os.listdir(full) if f.lower().endswith(IMG_EXTENSIONS))
            per_class.append([(os.path.join(full, f), index[d]) for f in files])
        samples = _interleave(per_class)
        if not samples:
            raise ValueError(f"no images found under {root} (expected <root>/<wnid>/*.JPEG)")
        if limit is not None:
            samples = samples[:limit]
        self.samples = samples
        self.targets = [y for _, y in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, y = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")  # grayscale / CMYK / palette -> RGB
        except Exception as e:
            raise OSError(f"cannot decode image {path}: {e}") from e
        if self.transform is not None:
            img = self.transform(img)
        return img, y


def _interleave(groups: "list[list]") -> list:
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out.extend(g[i] for g in groups if i < len(g))
        i += 1
    return out


def train_transform(img_size: int, aug: dict):
    """MAE fine-tuning augmentation through timm (RandAugment, bicubic RRC, random erasing)."""
    return create_transform(
        input_size=img_size, is_training=True, auto_augment=aug.get("auto_augment"),
        interpolation="bicubic", re_prob=aug.get("reprob", 0.0), re_mode=aug.get("remode", "pixel"),
        re_count=aug.get("recount", 1), color_jitter=aug.get("color_jitter"),
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)


def eval_transform(img_size: int, crop_pct: float = 224 / 256):
    """Resize the short side to img_size / crop_pct (bicubic), center crop, normalise."""
    return create_transform(input_size=img_size, is_training=False, interpolation="bicubic",
                            crop_pct=crop_pct, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
