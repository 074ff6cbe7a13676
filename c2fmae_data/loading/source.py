"""Where a row's pixels come from: the user's ImageNet copy (joined by key) or ``image_bytes``.

A dataset normally holds labels only; ``ImageSource(imagenet_root)`` reads
``<imagenet_root>/<key>`` (a local folder or any fsspec URL: file://, http(s)://, s3://, gs://)
and checks the bytes against the row's ``source_size`` and ``source_sha256`` so that masks are
never paired with a different image. A self-contained dataset carries ``image_bytes`` instead.

``decode_rgb`` is THE decode rule of the format, shared with the labeler (``upright`` +
``to_rgb``) so masks align and both see the same pixels: PIL decode, EXIF orientation applied
with ``ImageOps.exif_transpose``, then 16-bit / float / grayscale / CMYK / palette / alpha
converted to 8-bit RGB by one rule (alpha is dropped).
"""
from __future__ import annotations

import hashlib
import io
import os

import numpy as np
from PIL import Image, ImageOps

from c2fmae_data.format.schema import FormatError, safe_relpath


class SampleError(RuntimeError):
    """A sample that cannot be produced (missing or unreadable image, hash or size mismatch).
    ``key`` names the row."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def decode_rgb(data: bytes, key: str = "?") -> Image.Image:
    """Decode image bytes to an EXIF-upright RGB PIL image; SampleError naming ``key`` if not."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return to_rgb(upright(img))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise SampleError(key, f"image is not decodable: {e}") from None


def upright(img: Image.Image) -> Image.Image:
    """EXIF orientation applied (a broken EXIF block is ignored, as if absent)."""
    return ImageOps.exif_transpose(img, in_place=False) if _has_orientation(img) else img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, the format's pixel rule (the labeler and the loader both use it):
    16/32-bit integer grey keeps the high byte of 16 bits, float grey is stretched min..max to
    0..255, everything else (L, LA, P, RGBA, CMYK, ...) is PIL's ``convert("RGB")``."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = (np.clip(np.asarray(img).astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(a[:, :, None], 3, axis=2))
    if mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(a.min()), float(a.max())
        a = ((a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)).astype(np.uint8)
        return Image.fromarray(np.repeat(a[:, :, None], 3, axis=2))
    return img if mode == "RGB" else img.convert("RGB")


def _has_orientation(img: Image.Image) -> bool:
    try:
        return img.getexif().get(0x0112, 1) not in (None, 1)
    except Exception:  # broken EXIF block: exif_transpose would fail the same way, ignore it
        return False


def check_image_root(imagenet_root: "str | os.PathLike | None", flag: str = "imagenet_root"
                     ) -> None:
    """Refuse an image root that does not exist, in one line naming it and ``flag``, before any row
    is read. Local folders: ``os.path.isdir``; object stores: one ``exists`` call (errors such as
    missing credentials are left to the reads); http(s) is not checked (a folder URL need not
    answer)."""
    if imagenet_root is None:
        return
    from c2fmae_data.format.fs import open_fs

    root = str(imagenet_root)
    fs, base = open_fs(root)
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if "file" in protos or "local" in protos:
        ok = os.path.isdir(base)
    elif {"http", "https"} & set(protos):
        return
    else:
        try:
            ok = fs.exists(base)
        except Exception:  # noqa: BLE001 - no credentials, no network: the reads will say
            return
    if not ok:
        raise FileNotFoundError(f"{flag} {root}: no such folder (give the folder that holds the "
                                f"keys' first folder: train/ for ImageNet, val2017/ for COCO)")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageSource:
    """Fetch (and check) the source bytes of a row. Picklable: the filesystem handle is opened
    lazily in each process."""

    def __init__(self, imagenet_root: "str | os.PathLike | None" = None, verify: bool = True):
        self.imagenet_root = None if imagenet_root is None else str(imagenet_root)
        self.verify = verify
        self._fs = None
        self._base = None
        self._local = False

    @property
    def uses_image_bytes(self) -> bool:
        return self.imagenet_root is None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fs"] = None
        return state

    def _open(self):
        from c2fmae_data.format.fs import open_fs

        self._fs, self._base = open_fs(self.imagenet_root)
        self._local = "file" in (self._fs.protocol if isinstance(self._fs.protocol, tuple)
                                 else (self._fs.protocol,))

    def path(self, key: str) -> str:
        try:
            safe_relpath(key)
        except FormatError:
            raise SampleError(key, "key is not a plain relative path; refusing to read it") from None
        if self._fs is None:
            self._open()
        return f"{self._base.rstrip('/')}/{key}" if self._base else key

    def read(self, key: str, sha256: "str | None" = None, size: "int | None" = None,
             image_bytes: "bytes | None" = None) -> bytes:
        """The source bytes of ``key``, checked against ``size`` / ``sha256`` when given."""
        if self.imagenet_root is None:
            if image_bytes is None:
                raise SampleError(key, "row has no image_bytes and no imagenet_root was given "
                                       "(pass imagenet_root=<your ImageNet folder>)")
            data = image_bytes
        else:
            path = self.path(key)
            try:
                if self._local:
                    with open(path, "rb") as f:
                        data = f.read()
                else:
                    data = self._fs.cat_file(path)
            except FileNotFoundError:
                raise SampleError(key, f"image not found at {path}") from None
            except (OSError, IOError) as e:
                raise SampleError(key, f"image unreadable at {path}: {e}") from None
        if self.verify:
            if size is not None and len(data) != size:
                raise SampleError(key, f"source image has {len(data)} bytes, the labels were made "
                                       f"from {size} bytes (a different file?)")
            if sha256 is not None and sha256_hex(data) != sha256:
                raise SampleError(key, "source image sha256 does not match the labels' "
                                       "source_sha256 (a different or modified file?)")
        return data

    def load(self, key: str, sha256=None, size=None, image_bytes=None) -> Image.Image:
        return decode_rgb(self.read(key, sha256, size, image_bytes), key)
