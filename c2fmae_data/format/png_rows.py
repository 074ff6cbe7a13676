"""Mask pixels straight from checked PNG bytes: only the rows a crop samples, or the whole map.

A training sample needs M x M mask pixels (56 x 56 at stride 4) out of a full-resolution map.
Decoding the whole PNG costs about as much as decoding the JPEG itself, so for the common case
(not interlaced, every row filtered with None or Sub, as OpenCV writes them) ``sample_png``
inflates only up to the last sampled row and undoes the Sub filter only on the sampled rows (Sub
filtering never looks at other rows). ``decode_layout`` inflates the whole stream the same way.
Up/Average/Paeth rows and interlaced files go to ``cv2``, and only after the stream was inflated
here to exactly the size the checked header implies: no decoder is handed a size it did not
check first.

Inflation is capped by construction (the untrusted-data rules, docs/FORMAT.md section 12): the
zlib stream is given ``max_length`` = the bytes needed, at most height x (1 + width x bytes per
pixel). A stream that stops short is an error; a full decode also requires the stream to end there
(nothing inflates past it, the Adler-32 checks, nothing follows). ``sample_png`` reads a prefix,
so it checks what it reads; ``verify --full`` checks the whole rule.

Inflating is the main cost of a mask read, so it uses zlib-ng (``zlib_ng``, the same DEFLATE
format and API as ``zlib``): on this project's masks it inflates 13x faster than CPython's zlib
(0.04 vs 0.53 ms per 500x375 mask, docs/benchmarks.md "loader").
"""
from __future__ import annotations

import numpy as np
from zlib_ng import zlib_ng

from c2fmae_data.format.bounds import FormatError
from c2fmae_data.format.categories import NUM_SEMANTIC_CLASSES, SEMANTIC_IGNORE
from c2fmae_data.format.png_check import PNG_SIG, PngLayout, parse_png, png_size  # noqa: F401

_SEMANTIC_OK = np.zeros(256, bool)
_SEMANTIC_OK[:NUM_SEMANTIC_CLASSES] = True
_SEMANTIC_OK[SEMANTIC_IGNORE] = True


def inflate(layout: PngLayout, nbytes: "int | None" = None) -> bytes:
    """The first ``nbytes`` inflated bytes of the IDAT stream (``None``: all of them, exactly
    ``layout.raw_size``, and the stream must end there). FormatError when it stops short or, for
    the whole stream, inflates past that size or does not end."""
    total = layout.raw_size
    want = total if nbytes is None else min(int(nbytes), total)
    d = zlib_ng.decompressobj()
    try:
        raw = d.decompress(layout.idat_bytes(), want)
        if len(raw) < want:
            how = "ends" if d.eof else "is truncated"
            raise FormatError(f"PNG zlib stream {how} after {len(raw)} bytes; the header's "
                              f"{layout.width}x{layout.height} needs {total}")
        if nbytes is None and not d.eof:
            if d.decompress(d.unconsumed_tail, 1):
                raise FormatError(f"PNG zlib stream inflates past {total} bytes, the size "
                                  f"{layout.width}x{layout.height} allows")
            if not d.eof:
                raise FormatError("PNG zlib stream does not end (truncated)")
    except zlib_ng.error as e:
        raise FormatError(f"PNG zlib stream corrupt: {e}") from None
    if nbytes is None and d.unused_data:
        raise FormatError(f"PNG has {len(d.unused_data)} bytes after its zlib stream")
    return raw


def _rows(layout: PngLayout, raw: bytes, nrows: int) -> "tuple[np.ndarray, int]":
    """(nrows x stride filtered rows, their largest filter type); FormatError on a type > 4."""
    rows = np.frombuffer(raw, np.uint8, nrows * layout.stride).reshape(nrows, layout.stride)
    top = int(rows[:, 0].max())
    if top > 4:
        bad = int(np.flatnonzero(rows[:, 0] > 4)[0])
        raise FormatError(f"PNG row {bad} has filter type {rows[bad, 0]} (0..4 exist)")
    return rows, top


def _unsub(sel: np.ndarray, ncols: int, bpp: int) -> np.ndarray:
    """Pixels (rows x ncols) of None/Sub-filtered rows ``sel``: Sub undone as a running sum."""
    px = sel[:, 1:1 + ncols * bpp].reshape(len(sel), ncols, bpp)
    sub = sel[:, 0] == 1
    if sub.all():   # undo Sub: a running sum mod 256 (every row Sub: no masked copies)
        px = np.cumsum(px, axis=1, dtype=np.uint8)
    elif sub.any():
        px = px.copy()
        px[sub] = np.cumsum(px[sub], axis=1, dtype=np.uint8)
    if bpp == 1:
        return px[..., 0]
    return (px[..., 0].astype(np.uint16) << 8) | px[..., 1]


def _cv2_decode(layout: PngLayout) -> np.ndarray:
    """Full decode by OpenCV, for what the numpy path does not undo; called only after
    ``inflate`` proved the stream inflates to exactly the checked header's size."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(layout.data, np.uint8), cv2.IMREAD_UNCHANGED)
    want = np.uint16 if layout.depth == 16 else np.uint8
    if arr is None or arr.shape != (layout.height, layout.width) or arr.dtype != want:
        raise FormatError("PNG not decodable as a one-channel grey mask")
    return arr


def decode_layout(layout: PngLayout) -> np.ndarray:
    """The whole HxW map of a checked PNG (uint8 or uint16), the stream checked end to end."""
    raw = inflate(layout)
    if layout.interlace:
        return _cv2_decode(layout)
    rows, top = _rows(layout, raw, layout.height)
    if top > 1:
        return _cv2_decode(layout)
    return _unsub(rows, layout.width, layout.bpp)


def check_ids(px: np.ndarray, layout: PngLayout) -> np.ndarray:
    """``px`` (pixels read from ``layout``) when their values are allowed: semantic 0..132 or 255,
    instance ids at most the row's K; FormatError naming the first bad value otherwise."""
    if layout.semantic:
        ok = _SEMANTIC_OK[px]
        if not ok.all():
            raise FormatError(f"semantic id {int(px[~ok].flat[0])} outside "
                              f"0..{NUM_SEMANTIC_CLASSES - 1} and not {SEMANTIC_IGNORE}")
    elif layout.max_id is not None and px.size and int(px.max()) > layout.max_id:
        raise FormatError(f"instance id {int(px.max())} above num_instances {layout.max_id}")
    return px


def _named(layout: PngLayout, err: FormatError) -> FormatError:
    return FormatError(f"{layout.name}: {err}") if layout.name else err


def sample_png(mask: "PngLayout | bytes", ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``mask[np.ix_(ys, xs)]`` of a single-channel PNG mask (bytes are checked with
    ``parse_png`` first), reading as little as possible; the values read are checked
    (``check_ids``). Errors start with the layout's ``name`` (its column) when it has one."""
    layout = mask if isinstance(mask, PngLayout) else parse_png(mask)
    try:
        return check_ids(_sample(layout, ys, xs), layout)
    except FormatError as e:
        raise _named(layout, e) from None


def _sample(layout: PngLayout, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    if not len(ys) or not len(xs):
        return decode_layout(layout)[np.ix_(ys, xs)]
    last, ncols = int(ys.max()) + 1, int(xs.max()) + 1
    if last > layout.height or ncols > layout.width or min(ys.min(), xs.min()) < 0:
        raise ValueError(f"sampled rows/columns outside the {layout.width}x{layout.height} mask")
    if layout.interlace:
        return decode_layout(layout)[np.ix_(ys, xs)]
    rows, top = _rows(layout, inflate(layout, last * layout.stride), last)
    if top > 1:  # Up / Average / Paeth somewhere: rows depend on each other
        return decode_layout(layout)[np.ix_(ys, xs)]
    return _unsub(rows[ys], ncols, layout.bpp)[:, xs]
