"""CPU stage: bytes -> 8-bit RGB array (+ a model-sized copy), or a failed record with a reason.

Decoding rules (docs/LABELING.md): exactly the training loader's (``c2fmae_data.loading.source.upright``
and ``to_rgb``): EXIF orientation applied, so masks are stored at the size of the image as it
should be displayed; CMYK / L / LA / P / RGBA / 16-bit / float converted to 8-bit RGB by one rule
(alpha dropped; 16-bit values take their high byte). Refused: zero-byte, unreadable or truncated data, and
images above ``max_pixels`` (decompression-bomb guard, checked from the header before decoding).
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np

from c2fmae_data.format.schema import failed_record
from c2fmae_data.loading.source import sha256_hex, to_rgb, upright

DEFAULT_MAX_PIXELS = 50_000_000   # ~7000x7000: any real photo, not a decompression bomb
DEFAULT_MAX_MODEL_SIDE = 1333     # Grounding DINO's longest edge; larger sources are shrunk once
MIN_MODEL_SIDE = 32               # tiny images are padded up to this for the models
MAX_MODEL_ASPECT = 4.0            # elongated images are padded to at most 4:1 for the models
PAD_RGB = (124, 116, 104)         # ImageNet mean: padding normalizes to ~0


@dataclass
class SourceImage:
    key: str
    wnid: str
    class_index: int
    data: bytes


@dataclass
class Prepared:
    """A decoded image ready for the models (picklable: numpy arrays and plain fields)."""
    key: str
    wnid: str
    class_index: int
    width: int
    height: int
    source_sha256: str
    source_size: int
    rgb: np.ndarray                       # H x W x 3 uint8, EXIF-applied source pixels
    model_rgb: "np.ndarray | None" = None  # shrunk and/or padded copy; None = use rgb
    model_scale: float = 1.0              # source pixels per model pixel
    valid_hw: "tuple[int, int] | None" = None  # the un-padded part of model_rgb

    @property
    def model_image(self) -> np.ndarray:
        return self.rgb if self.model_rgb is None else self.model_rgb

    def base_fields(self) -> dict:
        return {"wnid": self.wnid, "class_index": self.class_index,
                "source_sha256": self.source_sha256, "source_size": self.source_size}


def to_rgb8(img) -> np.ndarray:
    """Any PIL mode -> H x W x 3 uint8 (writable), by the format's pixel rule."""
    return np.array(to_rgb(img), dtype=np.uint8)


def model_copy(rgb: np.ndarray, max_side: int):
    """(model_rgb or None, scale, valid_hw): shrink to ``max_side`` then pad (bottom/right) so the
    short side is >= MIN_MODEL_SIDE and the aspect ratio <= MAX_MODEL_ASPECT."""
    h, w = rgb.shape[:2]
    scale = max(1.0, max(h, w) / max_side)
    img = rgb
    if scale > 1.0:
        import cv2

        nh, nw = max(1, round(h / scale)), max(1, round(w / scale))
        img = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    vh, vw = img.shape[:2]
    ph = max(vh, MIN_MODEL_SIDE, math.ceil(vw / MAX_MODEL_ASPECT))
    pw = max(vw, MIN_MODEL_SIDE, math.ceil(vh / MAX_MODEL_ASPECT))
    if (ph, pw) != (vh, vw):
        pad = np.empty((ph, pw, 3), np.uint8)
        pad[:] = PAD_RGB
        pad[:vh, :vw] = img
        img = pad
    if img is rgb:
        return None, 1.0, (h, w)
    return img, scale, (vh, vw)


def prepare(item: SourceImage, *, max_pixels: int = DEFAULT_MAX_PIXELS,
            max_model_side: int = DEFAULT_MAX_MODEL_SIDE) -> "Prepared | dict":
    """Decode ``item``; never raises for bad image data (returns a failed record instead)."""
    from PIL import Image

    data = item.data if item.data is not None else b""
    base = {"wnid": item.wnid, "class_index": item.class_index,
            "source_sha256": sha256_hex(data), "source_size": len(data)}
    if not data:
        return failed_record(item.key, "empty file (0 bytes)", **base)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit
            img = Image.open(io.BytesIO(data))
            w0, h0 = img.size
            if w0 * h0 > max_pixels:
                return failed_record(item.key, f"image is {w0}x{h0} = {w0 * h0} pixels, above "
                                     f"the limit of {max_pixels} (decompression-bomb guard; "
                                     f"raise max_pixels to accept it)", **base)
            img.load()
            rgb = to_rgb8(upright(img))   # the loader decodes exactly so (c2fmae_data.loading.source)
    except Image.DecompressionBombError as e:
        return failed_record(item.key, f"refused by PIL's decompression-bomb guard: {e}", **base)
    except Exception as e:  # noqa: BLE001 - any decoder error is a per-image failure
        return failed_record(item.key, f"cannot decode image: {type(e).__name__}: {e}", **base)
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        return failed_record(item.key, f"decoded to an empty array {rgb.shape}", **base)
    mrgb, scale, valid = model_copy(rgb, max_model_side)
    return Prepared(key=item.key, wnid=item.wnid, class_index=int(item.class_index),
                    width=int(rgb.shape[1]), height=int(rgb.shape[0]),
                    source_sha256=base["source_sha256"], source_size=len(data), rgb=rgb,
                    model_rgb=mrgb, model_scale=scale, valid_hw=valid)
