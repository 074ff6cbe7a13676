"""Paths and bytes of a dataset root on any filesystem: fsspec opening, joining, hashing.

Everything here is a leaf: it imports only fsspec (lazily), the standard library and ``bounds``.
"""
from __future__ import annotations

import hashlib
import os

from c2fmae_data.format.bounds import FormatError


def open_fs(root: str):
    """(fsspec filesystem, path) for a local path or URL (file://, http(s)://, s3://, gs://...)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(root))
    return fs, path.rstrip("/") if path not in ("/", "") else path


def join(path: str, *parts: str) -> str:
    return "/".join([path.rstrip("/"), *parts])


def sha256_local(path: str) -> str:
    """Hex sha256 of a local file, streamed."""
    import fsspec

    return sha256_file(fsspec.filesystem("file"), path)[0]


def sha256_file(fs, path: str, chunk: int = 1 << 22) -> "tuple[str, int]":
    h, n = hashlib.sha256(), 0
    with fs.open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
            n += len(b)
    return h.hexdigest(), n


def is_local(fs) -> bool:
    proto = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in proto or "local" in proto


def inside_root(fs, base: str, rel: str) -> str:
    """``base/rel`` (``rel`` already a safe relative path), refused with a FormatError naming
    ``rel`` when, on a local filesystem, a symlink on the way leads outside ``base``: a dataset
    folder from elsewhere may hold ``shards/x.parquet -> /etc/...``. Object stores have no links."""
    path = join(base, rel)
    if not is_local(fs):
        return path
    root = os.path.realpath(base or ".")
    real = os.path.realpath(path)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise FormatError(f"{rel}: a symlink leads outside the dataset root (to {real}); "
                          "refusing to read it")
    return path
