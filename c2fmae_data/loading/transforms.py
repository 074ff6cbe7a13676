"""Joint transforms: one crop and one flip applied identically to RGB, instance and semantic maps.

Every transform reduces to a *box* in source pixels plus a flip flag. The RGB image is resized
from that box with PIL's antialiased bilinear filter; the masks are sliced to the same box
(crop BEFORE resizing, so no work is spent on pixels that are thrown away) and resized with
center-aligned nearest neighbour (``nearest_indices``), so mask pixel centres land on the same
source points as the RGB sample grid; masks may be given as PNG bytes, of which only the sampled
pixels are decoded. After the crop, instance ids are re-canonicalized:

* ids whose area inside the crop (at mask output resolution) is below ``min_area`` pixels are
  *slivers* and become ``IGNORE`` (255);
* the remaining ids are renumbered 1..K by decreasing area in the crop (ties: smaller stored id,
  i.e. the larger object in the full image, first);
* ids ranked beyond ``max_instances`` (K, default 32) become ``IGNORE`` too. 0 stays background.

``min_area`` defaults to 64 pixels of the *input* resolution expressed at the mask resolution,
i.e. ``max(1, 64 // stride**2)``: 4 mask pixels at stride 4 (56x56), 64 at stride 1.
"""
from __future__ import annotations

import math
import random
from typing import Optional

import numpy as np
import torch
from PIL import Image

from c2fmae_data.format.png_check import PngLayout, png_size
from c2fmae_data.format.png_rows import sample_png

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE = 255
SLIVER_INPUT_PIXELS = 64


# ----------------------------------------------------------------------------- boxes
def random_resized_crop_box(width: int, height: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3),
                            rng: "random.Random | None" = None) -> "tuple[int, int, int, int]":
    """(x0, y0, w, h) of a random crop covering ``scale`` of the area with aspect in ``ratio``
    (the RandomResizedCrop sampling rule: 10 tries, then a central crop with clamped aspect)."""
    rng = rng or random
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    w, h = max(1, min(w, width)), max(1, min(h, height))
    return (width - w) // 2, (height - h) // 2, w, h


def center_crop_box(width: int, height: int, crop_fraction: float = 224 / 256
                    ) -> "tuple[int, int, int, int]":
    """(x0, y0, w, h) of the square that 'resize the shorter side to S/crop_fraction, then
    center-crop S' keeps, expressed in source pixels."""
    side = max(1, int(round(min(width, height) * crop_fraction)))
    return (width - side) // 2, (height - side) // 2, side, side


# ----------------------------------------------------------------------------- masks
def canonicalize_instances(ids: np.ndarray, max_instances: int = 32, min_area: int = 1,
                           ignore: int = IGNORE) -> np.ndarray:
    """Renumber an instance map (0 = background) to 1..K by decreasing area; slivers
    (area < ``min_area``) and ranks beyond ``max_instances`` become ``ignore``. Returns int64."""
    if not 0 < max_instances < ignore:
        raise ValueError(f"max_instances must lie in 1..{ignore - 1}, got {max_instances}")
    flat = np.asarray(ids).astype(np.int64, copy=False)
    counts = np.bincount(flat.ravel(), minlength=1)
    counts[0] = 0
    present = np.flatnonzero(counts >= max(1, min_area))
    order = present[np.argsort(-counts[present], kind="stable")]  # stable: ties by stored id
    lut = np.full(len(counts), ignore, dtype=np.int64)
    lut[0] = 0
    keep = order[:max_instances]
    lut[keep] = np.arange(1, len(keep) + 1)
    return lut[flat]


def nearest_indices(start: int, length: int, out: int) -> np.ndarray:
    """Source indices sampled by a center-aligned nearest resize of ``length`` pixels starting at
    ``start`` to ``out`` pixels: ``start + floor((i + 0.5) * length / out)``."""
    i = np.arange(out, dtype=np.int64)
    return start + np.minimum((2 * i + 1) * length // (2 * out), length - 1)


def resize_mask(mask, box, out: int) -> np.ndarray:
    """Crop ``box`` = (x0, y0, w, h) from an HxW mask and nearest-resize it to out x out, touching
    only the sampled pixels. ``mask`` is an array, or the PNG bytes of one or their checked
    ``PngLayout`` (then only the rows up to the last sampled one are inflated, see
    ``png_rows``)."""
    x0, y0, w, h = box
    ys, xs = nearest_indices(y0, h, out), nearest_indices(x0, w, out)
    if isinstance(mask, PngLayout):
        return sample_png(mask, ys, xs)
    if isinstance(mask, (bytes, bytearray, memoryview)):
        return sample_png(bytes(mask), ys, xs)
    return mask[np.ix_(ys, xs)]


def mask_hw(mask) -> "tuple[int, int]":
    """(height, width) of an array, a checked PNG layout or PNG bytes (read from the header)."""
    if isinstance(mask, PngLayout):
        return mask.height, mask.width
    if isinstance(mask, (bytes, bytearray, memoryview)):
        w, h = png_size(bytes(mask))
        return h, w
    return tuple(mask.shape[:2]) if mask.ndim == 2 else tuple(mask.shape)


# ----------------------------------------------------------------------------- transforms
class JointTransform:
    """Base: crop ``box`` from the image and both masks, resize, flip, normalize.

    ``__call__(img, instance, semantic, rng=None)`` takes a PIL RGB image and two HxW numpy maps of
    the same size (or their PNG bytes; either may be None: RGB-only, or a failed row) and returns a dict with
    ``rgb`` (float32 3xSxS normalized), ``instance`` and ``semantic`` (int64 MxM, M = S/stride;
    all-``IGNORE`` when the map is None).
    """

    def __init__(self, size: int = 224, stride: int = 4, max_instances: int = 32,
                 min_area: Optional[int] = None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if stride < 1 or size % stride:
            raise ValueError(f"size {size} must be a multiple of stride {stride}")
        self.size, self.stride, self.mask_size = size, stride, size // stride
        self.max_instances = max_instances
        self.min_area = (max(1, SLIVER_INPUT_PIXELS // stride ** 2) if min_area is None
                         else int(min_area))
        mean, std = torch.tensor(mean), torch.tensor(std)
        # normalize((x / 255 - mean) / std) as one multiply-add per element
        self._scale = (1.0 / (255.0 * std)).view(3, 1, 1)
        self._shift = (-mean / std).view(3, 1, 1)

    def box(self, width: int, height: int, rng) -> "tuple[tuple[int, int, int, int], bool]":
        raise NotImplementedError

    def __call__(self, img: Image.Image, instance: "np.ndarray | None" = None,
                 semantic: "np.ndarray | None" = None, rng=None) -> "dict[str, torch.Tensor]":
        w, h = img.size
        for name, m in (("instance", instance), ("semantic", semantic)):
            if m is not None and mask_hw(m) != (h, w):
                mh, mw = mask_hw(m)
                raise ValueError(f"{name} mask is {mw}x{mh}, image is {w}x{h}")
        box, flip = self.box(w, h, rng or random)
        x0, y0, bw, bh = box
        img = img.resize((self.size, self.size), Image.BILINEAR, box=(x0, y0, x0 + bw, y0 + bh))
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        out = {"rgb": self.to_tensor(img)}
        m = self.mask_size
        if instance is None:
            out["instance"] = torch.full((m, m), IGNORE, dtype=torch.int64)
        else:
            ids = canonicalize_instances(resize_mask(instance, box, m), self.max_instances,
                                         self.min_area)
            out["instance"] = torch.from_numpy(np.ascontiguousarray(ids[:, ::-1] if flip else ids))
        if semantic is None:
            out["semantic"] = torch.full((m, m), IGNORE, dtype=torch.int64)
        else:
            sem = resize_mask(semantic, box, m)
            out["semantic"] = torch.from_numpy(np.ascontiguousarray(sem[:, ::-1] if flip else sem)
                                               .astype(np.int64))
        return out

    def to_tensor(self, img: Image.Image) -> torch.Tensor:
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float()
        return x.mul_(self._scale).add_(self._shift).contiguous()


class TrainTransform(JointTransform):
    """RandomResizedCrop (scale 0.2-1.0, ratio 3/4-4/3) + horizontal flip with probability
    ``flip_p``, identical for RGB and masks (the C2FMAE / MAE pretraining augmentation)."""

    def __init__(self, size: int = 224, stride: int = 4, scale=(0.2, 1.0),
                 ratio=(3 / 4, 4 / 3), flip_p: float = 0.5, **kw):
        super().__init__(size, stride, **kw)
        self.scale, self.ratio, self.flip_p = tuple(scale), tuple(ratio), flip_p

    def box(self, width, height, rng):
        box = random_resized_crop_box(width, height, self.scale, self.ratio, rng)
        return box, rng.random() < self.flip_p

    def __repr__(self):
        return (f"TrainTransform(size={self.size}, stride={self.stride}, scale={self.scale}, "
                f"ratio={tuple(round(r, 4) for r in self.ratio)}, flip_p={self.flip_p}, "
                f"max_instances={self.max_instances}, min_area={self.min_area})")


class EvalTransform(JointTransform):
    """Resize the shorter side to ``resize`` then center-crop ``size`` (256 -> 224 by default; the
    same 224/256 ratio at other sizes), done as one center box in source pixels so masks and RGB
    stay aligned; no flip."""

    def __init__(self, size: int = 224, stride: int = 4, resize: "int | None" = None, **kw):
        super().__init__(size, stride, **kw)
        self.resize = resize if resize is not None else round(size * 256 / 224)

    def box(self, width, height, rng):
        return center_crop_box(width, height, self.size / self.resize), False

    def __repr__(self):
        return (f"EvalTransform(size={self.size}, resize={self.resize}, stride={self.stride}, "
                f"max_instances={self.max_instances}, min_area={self.min_area})")
