"""Paths and bytes of a dataset root on any filesystem: fsspec opening, joining, hashing.

Everything here is a leaf: it imports only fsspec (lazily) and the standard library.
"""
from __future__ import annotations

import hashlib


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
