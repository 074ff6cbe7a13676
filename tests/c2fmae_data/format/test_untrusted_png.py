"""Mask PNGs are untrusted (issue 19): structure, CRCs, header and the inflate cap are checked
before any pixel is produced, and no decoder is handed a size that was not checked first."""
from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from c2fmae_data.format import png_rows
from c2fmae_data.format.png_check import parse_png
from c2fmae_data.format.png_rows import decode_layout, inflate, sample_png
from c2fmae_data.format.schema import (FormatError, check_record, decode_instance_png,
                                       decode_png, decode_semantic_png, encode_instance_png,
                                       encode_semantic_png)
from tests._pngs import adam7, chunk, png

SEM = (np.arange(12 * 20).reshape(12, 20) % 133).astype(np.uint8)
IDS = (np.arange(12 * 20).reshape(12, 20) % 7).astype(np.uint16)


def none_rows(arr: np.ndarray) -> bytes:
    big = arr.astype(">u2") if arr.dtype == np.uint16 else arr
    return b"".join(b"\x00" + r.tobytes() for r in big)


def test_header_must_match_the_row_and_the_column():
    data = encode_semantic_png(SEM)
    assert parse_png(data, width=20, height=12, depth=8).raw_size == 12 * 21
    with pytest.raises(FormatError, match="PNG header says 20x12, image is 21x12"):
        parse_png(data, width=21, height=12, depth=8)
    with pytest.raises(FormatError, match="bit depth 8: this mask is 16-bit"):
        decode_instance_png(data)
    rgb = png(20, 12, 8, b"".join(b"\x00" + bytes(60) for _ in range(12)), ctype=2)
    with pytest.raises(FormatError, match="colour type 2: masks are grey"):
        decode_semantic_png(rgb)
    with pytest.raises(FormatError, match="outside the bounds"):   # before any allocation
        parse_png(png(70000, 1, 8, b"\x00"))


def test_chunk_lengths_must_stay_inside_the_data():
    data = bytearray(encode_semantic_png(SEM))
    data[33:37] = struct.pack(">I", 2 ** 31 - 1)        # the IDAT chunk's length field
    with pytest.raises(FormatError, match=r"chunk b'IDAT' at byte 33 declares 2147483647 bytes"):
        decode_semantic_png(bytes(data))
    good = encode_semantic_png(SEM)
    with pytest.raises(FormatError, match="no IEND"):
        decode_semantic_png(good[:-12])                 # the IEND chunk cut off
    with pytest.raises(FormatError, match="bytes after IEND"):
        decode_semantic_png(good + b"junk")


def test_crc_mismatch_is_caught_in_any_chunk():
    data = bytearray(encode_semantic_png(SEM))
    data[45] ^= 0x10                                    # a byte of IDAT data, CRC not fixed
    with pytest.raises(FormatError, match=r"chunk b'IDAT' at byte 33: CRC mismatch"):
        decode_semantic_png(bytes(data))
    data = bytearray(encode_semantic_png(SEM))
    data[17] ^= 0x01                                    # the width in IHDR
    with pytest.raises(FormatError, match=r"chunk b'IHDR' at byte 8: CRC mismatch"):
        sample_png(bytes(data), np.array([0]), np.array([0]))


def test_critical_chunks_other_than_the_format_s_are_refused():
    raw = none_rows(SEM)
    assert np.array_equal(decode_semantic_png(png(20, 12, 8, raw, extra=chunk(b"tEXt", b"a\0b"))),
                          SEM)
    for extra in (chunk(b"PLTE", bytes(3)), chunk(b"ABCD", b"")):
        with pytest.raises(FormatError, match="critical chunk"):
            decode_semantic_png(png(20, 12, 8, raw, extra=extra))


def test_inflation_stops_at_the_cap_and_must_reach_it():
    raw = none_rows(SEM)
    with pytest.raises(FormatError, match="inflates past 252 bytes"):
        decode_semantic_png(png(20, 12, 8, raw + b"\x00"))
    with pytest.raises(FormatError, match="stream ends after 231 bytes; .* needs 252"):
        decode_semantic_png(png(20, 12, 8, raw[:-21]))
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 12, 8, 0, 0, 0, 0))
    cut = b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(raw)[:-6]) + chunk(b"IEND", b"")
    with pytest.raises(FormatError, match="truncated"):
        decode_semantic_png(cut)
    trailing = (b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(raw) + b"xx")
                + chunk(b"IEND", b""))
    with pytest.raises(FormatError, match="2 bytes after its zlib stream"):
        decode_semantic_png(trailing)
    # the loader reads a prefix: rows up to the last sampled one, still capped and checked
    assert np.array_equal(sample_png(png(20, 12, 8, raw + bytes(999)), np.array([2]),
                                     np.array([3])), SEM[2:3, 3:4])


def test_a_zlib_bomb_costs_no_more_than_its_declared_size():
    """256 MB of zeros in ~1.1 MB of zlib behind a 20x12 header: inflating it without the cap
    would allocate 256 MB; capped, the check holds the mask's 252 bytes and zlib's copies of the
    unread input (``unconsumed_tail``): a small multiple of the bytes read, not of the bomb."""
    z = zlib.compressobj(1)
    body = z.compress(none_rows(SEM)) + b"".join(z.compress(bytes(1 << 24)) for _ in range(16))
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 12, 8, 0, 0, 0, 0))
    bomb = (b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", body + z.flush())
            + chunk(b"IEND", b""))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="inflates past"):
            decode_semantic_png(bomb)
        sample_png(bomb, np.arange(12), np.arange(20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(bomb) < (8 << 20), peak


def test_no_decoder_is_handed_an_unchecked_size(monkeypatch):
    """Rows filtered Up go to OpenCV, but only after the stream was inflated to exactly the
    header's size: a stream with one row too many never reaches cv2."""
    rows = [b"\x02" + bytes(20) for _ in range(12)]     # Up filter everywhere (all zeros)
    good = png(20, 12, 8, b"".join(rows))
    assert not decode_semantic_png(good).any()          # the cv2 fallback path
    calls = []
    monkeypatch.setattr(png_rows, "_cv2_decode", lambda lay: calls.append(lay) or None)
    with pytest.raises(FormatError, match="inflates past"):
        decode_semantic_png(png(20, 12, 8, b"".join(rows + rows[:1])))
    assert not calls
    with pytest.raises(FormatError, match="row 3 has filter type 7"):
        bad = bytearray(none_rows(SEM))
        bad[3 * 21] = 7
        decode_semantic_png(png(20, 12, 8, bytes(bad)))


def test_interlaced_masks_are_read_through_the_checked_size():
    for arr, depth in ((SEM, 8), (IDS * 9000, 16)):
        data = png(20, 12, depth, adam7(arr), interlace=1)
        lay = parse_png(data, width=20, height=12, depth=depth)
        assert lay.raw_size == len(adam7(arr)) != 12 * (1 + 20 * depth // 8)
        assert np.array_equal(decode_png(data), arr)
        ys, xs = np.array([1, 5, 11]), np.array([0, 19])
        assert np.array_equal(sample_png(data, ys, xs), arr[np.ix_(ys, xs)])
        with pytest.raises(FormatError, match="stream ends"):   # a progressive size lie
            decode_png(png(20, 12, depth, adam7(arr)[:-3], interlace=1))


def test_inflate_prefix_and_whole():
    lay = parse_png(png(20, 12, 8, none_rows(SEM)))
    assert inflate(lay, 21) == none_rows(SEM)[:21]
    assert inflate(lay) == none_rows(SEM) and decode_layout(lay).shape == (12, 20)


def test_check_record_names_the_column_of_a_broken_mask():
    from tests._datasets import tiny_record

    r = tiny_record("train/a.JPEG")
    data = bytearray(r["semantic_png"])
    data[45] ^= 0x04
    r["semantic_png"] = bytes(data)
    assert any(p.startswith("semantic_png: PNG chunk b'IDAT'") and "CRC mismatch" in p
               for p in check_record(r))
    r = tiny_record("train/a.JPEG")
    r["instance_png"] = encode_instance_png(np.full((6, 8), 3, np.uint16))
    assert "instance_png has id 3 but only 2 metadata rows" in "\n".join(check_record(r))
