"""The structure of a mask PNG, checked before anything is inflated or decoded.

``parse_png(data, width=, height=, depth=)`` walks the chunks of untrusted PNG bytes and returns a
``PngLayout`` (size, bit depth, where the IDAT data lies) only when the whole file follows the rules
of docs/FORMAT.md section 12:

* the 8-byte signature, then IHDR (13 bytes) first, IDAT chunks consecutive, IEND last with
  nothing after it; every chunk length inside the data; every chunk's CRC-32 right (zlib-ng's
  crc32 runs at ~30 GB/s: 0.13 us for a 500 x 375 mask);
* IHDR: grey (colour type 0), the column's bit depth (16 instance, 8 semantic), compression and
  filter method 0, interlace 0 or 1, sides 1..65535 and at most 2^27 pixels, and exactly the
  row's width and height;
* no other critical chunk (PLTE has no meaning for grey masks); ancillary chunks are skipped.

Every violation is a FormatError saying what is wrong and at which byte; callers add the shard,
row, key and column. Nothing here allocates more than the chunk list.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from zlib_ng import zlib_ng

from c2fmae_data.format.bounds import MAX_MASK_PIXELS, MAX_MASK_SIDE, FormatError

PNG_SIG = b"\x89PNG\r\n\x1a\n"
_CHUNK = struct.Struct(">I4s")
_IHDR = struct.Struct(">IIBBBBB")
_MAX_CHUNK = (1 << 31) - 1          # the PNG spec's bound on a chunk length
#: Adam7 passes: (x start, y start, x step, y step)
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2))


@dataclass(frozen=True)
class PngLayout:
    """A checked mask PNG. ``idat``: (start, end) byte ranges of the IDAT chunks' data in order.
    ``max_id``: instance masks, the row's K (ids above it are refused where pixels are read);
    ``semantic``: values must lie in 0..132 or be 255. ``name``: the column (messages)."""
    data: bytes
    width: int
    height: int
    depth: int
    interlace: int
    idat: "tuple[tuple[int, int], ...]"
    max_id: "int | None" = None
    semantic: bool = False
    name: str = ""        # the column, for messages of what reads the pixels

    @property
    def bpp(self) -> int:
        return self.depth // 8

    @property
    def stride(self) -> int:
        """Bytes of one filtered row: the filter byte and width x bytes per pixel."""
        return 1 + self.width * self.bpp

    @property
    def raw_size(self) -> int:
        """Exactly the bytes the zlib stream must inflate to: height x (1 + width x bpp), or the
        sum over the seven Adam7 passes when interlaced."""
        if not self.interlace:
            return self.height * self.stride
        total = 0
        for x0, y0, dx, dy in ADAM7:
            pw, ph = -(-(self.width - x0) // dx), -(-(self.height - y0) // dy)
            if pw > 0 and ph > 0:
                total += ph * (1 + pw * self.bpp)
        return total

    def idat_bytes(self):
        """The concatenated zlib stream (a view, not a copy, when there is one IDAT chunk)."""
        if len(self.idat) == 1:
            s, e = self.idat[0]
            return memoryview(self.data)[s:e]
        return b"".join(memoryview(self.data)[s:e] for s, e in self.idat)


def png_size(data) -> "tuple[int, int]":
    """(width, height) from the IHDR chunk, without decoding (not a validity check)."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 24 \
            or data[:8] != PNG_SIG or data[12:16] != b"IHDR":
        raise FormatError("not a PNG")
    return struct.unpack(">II", bytes(data[16:24]))


def _check_ihdr(data: bytes, width, height, depth) -> "tuple[int, int, int, int]":
    w, h, bits, ctype, comp, filt, interlace = _IHDR.unpack_from(data, 16)
    if not (1 <= w <= MAX_MASK_SIDE and 1 <= h <= MAX_MASK_SIDE) or w * h > MAX_MASK_PIXELS:
        raise FormatError(f"PNG header says {w}x{h}: outside the bounds (sides 1..{MAX_MASK_SIDE}, "
                          f"at most {MAX_MASK_PIXELS} pixels)")
    if (width is not None and w != width) or (height is not None and h != height):
        raise FormatError(f"PNG header says {w}x{h}, image is {width}x{height} (the row's size)")
    if ctype != 0:
        raise FormatError(f"PNG colour type {ctype}: masks are grey (colour type 0)")
    if bits != (depth or bits) or bits not in (8, 16):
        raise FormatError(f"PNG bit depth {bits}: this mask is {depth or '8 or 16'}-bit grey")
    if comp or filt or interlace > 1:
        raise FormatError(f"PNG compression/filter/interlace method {comp}/{filt}/{interlace} "
                          "is not 0/0/0 or 0/0/1")
    return w, h, bits, interlace


def _walk(data: bytes, crc: bool) -> "tuple[tuple[int, int], ...]":
    """IDAT data ranges; checks lengths, order, types and CRCs of every chunk."""
    n, i, idat, view = len(data), 8, [], memoryview(data)
    idat_done = False
    while True:
        if i + 12 > n:
            raise FormatError(f"PNG truncated at byte {i}: no IEND chunk")
        length, kind = _CHUNK.unpack_from(data, i)
        end = i + 12 + length
        if length > _MAX_CHUNK or end > n:
            raise FormatError(f"PNG chunk {kind!r} at byte {i} declares {length} bytes, "
                              f"{max(0, n - i - 12)} are left")
        if crc and zlib_ng.crc32(view[i + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            raise FormatError(f"PNG chunk {kind!r} at byte {i}: CRC mismatch (corrupted)")
        if i == 8 and (kind != b"IHDR" or length != 13):
            raise FormatError("PNG does not start with a 13-byte IHDR chunk")
        if kind == b"IDAT":
            if idat_done:
                raise FormatError(f"PNG IDAT chunk at byte {i} after another chunk type")
            idat.append((i + 8, end - 4))
        elif kind == b"IEND":
            if end != n:
                raise FormatError(f"PNG has {n - end} bytes after IEND")
            break
        else:
            idat_done = idat_done or bool(idat)
            if i != 8 and not (kind.isalpha() and kind[0] & 0x20):   # ancillary only
                raise FormatError(f"PNG critical chunk {kind!r} at byte {i} is not allowed in "
                                  "a grey mask")
        i = end
    if not idat:
        raise FormatError("PNG has no IDAT chunk")
    return tuple(idat)


def parse_png(data, *, width: "int | None" = None, height: "int | None" = None,
              depth: "int | None" = None, max_id: "int | None" = None, semantic: bool = False,
              name: str = "", crc: bool = True) -> PngLayout:
    """Check untrusted mask PNG bytes (see the module docstring) and return their layout.
    ``width``/``height``/``depth``: what the row and column require (None: any within bounds)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"mask is {type(data).__name__}, not PNG bytes")
    data = bytes(data)
    if len(data) < 8 + 25 + 12 or data[:8] != PNG_SIG:
        raise FormatError("not a PNG (no PNG signature)")
    idat = _walk(data, crc)
    w, h, bits, interlace = _check_ihdr(data, width, height, depth)
    return PngLayout(data, w, h, bits, interlace, idat, max_id, semantic, name)
