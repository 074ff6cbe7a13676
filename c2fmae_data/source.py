"""Where a row's pixels come from: the user's ImageNet copy (joined by key) or ``image_bytes``.

A dataset normally holds labels only; ``ImageSource(imagenet_root)`` reads
``<imagenet_root>/<key>`` (a local folder or any fsspec URL: file://, http(s)://, s3://, gs://)
and checks the bytes against the row's ``source_size`` and ``source_sha256`` so that masks are
never paired with a different image. A self-contained dataset carries ``image_bytes`` instead.

``decode_rgb`` is THE decode rule of the format: PIL decode, EXIF orientation applied with
``ImageOps.exif_transpose`` (as the labeler does, so masks align), then grayscale / CMYK /
palette / alpha converted to RGB (alpha is dropped).
"""
from __future__ import annotations

import hashlib
import io
import os
import posixpath

from PIL import Image, ImageOps


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
        img = ImageOps.exif_transpose(img, in_place=False) if _has_orientation(img) else img
        if img.mode != "RGB":
            img = img.convert("RGB")
        return img
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise SampleError(key, f"image is not decodable: {e}") from None


def _has_orientation(img: Image.Image) -> bool:
    try:
        return img.getexif().get(0x0112, 1) not in (None, 1)
    except Exception:  # broken EXIF block: exif_transpose would fail the same way, ignore it
        return False


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
        from .shards import open_fs

        self._fs, self._base = open_fs(self.imagenet_root)
        self._local = "file" in (self._fs.protocol if isinstance(self._fs.protocol, tuple)
                                 else (self._fs.protocol,))

    def path(self, key: str) -> str:
        norm = posixpath.normpath(key)
        if key.startswith("/") or norm.startswith("..") or norm != key:
            raise SampleError(key, "key is not a plain relative path; refusing to read it")
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
