"""Hand-made PNG bytes for the untrusted-data tests and the fuzzer: chunks with their CRC, a PNG
around a raw (filtered, uncompressed) stream, optionally followed by a zlib bomb, and Adam7
interlacing."""
from __future__ import annotations

import struct
import zlib

import numpy as np

from c2fmae_data.format.png_check import parse_png
from c2fmae_data.format.png_rows import inflate


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(w: int, h: int, depth: int, raw: bytes, *, interlace: int = 0, ctype: int = 0,
        extra: bytes = b"", zeros: int = 0) -> bytes:
    """A PNG around an already filtered, uncompressed ``raw`` stream (then ``zeros`` zero
    bytes more: a bomb)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    z = zlib.compressobj(1)
    body = z.compress(raw) + b"".join(z.compress(bytes(1 << 24)) for _ in range(zeros >> 24))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", body + z.flush()) + chunk(b"IEND", b""))


def adam7(arr: np.ndarray) -> bytes:
    """The Adam7-interlaced raw stream (every row filter None) of a grey map."""
    from c2fmae_data.format.png_check import ADAM7

    out = []
    big = arr.astype(">u2") if arr.dtype == np.uint16 else arr
    for x0, y0, dx, dy in ADAM7:
        sub = big[y0::dy, x0::dx]
        if sub.size:
            out += [b"\x00" + row.tobytes() for row in sub]
    return b"".join(out)


def raw_stream(data: bytes) -> "tuple[int, int, int, bytes]":
    lay = parse_png(data)
    return lay.width, lay.height, lay.depth, inflate(lay)


