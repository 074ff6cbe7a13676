"""Joint transforms: exact re-canonicalization, crop/flip moving RGB and masks together, shapes."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from tests._datasets import blob_masks, half_bright
from c2fmae_data.loading.transforms import (IGNORE, IMAGENET_MEAN, IMAGENET_STD, EvalTransform,
                                    TrainTransform, canonicalize_instances, center_crop_box,
                                    random_resized_crop_box)


def test_canonicalize_orders_by_area_caps_and_ignores_slivers():
    ids = np.zeros((10, 10), np.uint16)
    ids[0:2, :] = 7        # area 20
    ids[2:7, :] = 3        # area 50
    ids[7:9, 0:5] = 9      # area 10
    ids[7:9, 5:9] = 4      # area 8
    ids[9, 0:2] = 5        # area 2  (sliver with min_area 3)
    out = canonicalize_instances(ids, max_instances=3, min_area=3)
    expect = np.zeros((10, 10), np.int64)
    expect[2:7, :] = 1      # largest
    expect[0:2, :] = 2
    expect[7:9, 0:5] = 3
    expect[7:9, 5:9] = IGNORE  # rank 4 > K = 3
    expect[9, 0:2] = IGNORE    # sliver
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expect)


def test_canonicalize_ties_keep_stored_order_and_background():
    ids = np.array([[0, 2, 2], [1, 1, 0]], np.uint16)
    np.testing.assert_array_equal(canonicalize_instances(ids, min_area=1),
                                  [[0, 2, 2], [1, 1, 0]])
    assert not canonicalize_instances(np.zeros((3, 3), np.uint16)).any()
    with pytest.raises(ValueError):
        canonicalize_instances(ids, max_instances=255)


def test_random_resized_crop_box_respects_bounds_scale_and_ratio():
    rng = random.Random(0)
    for _ in range(300):
        w, h = rng.randint(20, 900), rng.randint(20, 900)
        x0, y0, bw, bh = random_resized_crop_box(w, h, rng=rng)
        assert 0 <= x0 and 0 <= y0 and x0 + bw <= w and y0 + bh <= h and bw > 0 and bh > 0
    # a very wide image falls back to a central crop of the widest allowed aspect
    assert random_resized_crop_box(1000, 10, scale=(0.99, 1.0), rng=rng) == (493, 0, 13, 10)
    assert center_crop_box(512, 256) == (144, 16, 224, 224)


def _edge(row: np.ndarray) -> int:
    """Column where a 0/1 profile changes (the one transition), -1 if none."""
    d = np.flatnonzero(np.diff(row.astype(np.int64)))
    return int(d[0]) + 1 if len(d) else -1


@pytest.mark.parametrize("stride", [1, 4])
def test_crop_and_flip_move_rgb_and_masks_together(stride):
    img, inst, sem = half_bright(96, 64)
    t = TrainTransform(size=32, stride=stride, min_area=1)
    rng = random.Random(1)
    flips = edges = 0
    for _ in range(80):
        out = t(Image.fromarray(img), inst, sem, rng=rng)
        bright = (out["rgb"][0] > 0).numpy()              # bright pixels normalize above 0
        marked = out["instance"].numpy() == 1
        assert ((out["semantic"].numpy() == 5) == marked).all()
        assert (bright == bright[:1]).all() and (marked == marked[:1]).all()  # vertical edge
        b, mk = bright[0], marked[0]
        if b.all() or not b.any():                         # crop fully on one side
            assert (mk == b[0]).all()
            continue
        edges += 1
        eb, em = _edge(b), _edge(mk)
        if em < 0:  # the RGB edge falls in the outer half of a border mask pixel
            assert min(eb, len(b) - eb) <= stride // 2
            continue
        assert abs(eb - em * stride) <= max(1, stride // 2)  # mask edge on the RGB edge
        assert b[0] == mk[0] and b[-1] == mk[-1]           # same side bright / marked
        flips += not b[0]                                  # flipped: bright half on the right
    assert edges > 10 and 0 < flips < edges


def test_flip_only_mirrors_everything():
    img, inst, sem = half_bright(64, 64)
    t = TrainTransform(size=64, stride=1, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    out = t(Image.fromarray(img), inst, sem)
    assert (out["rgb"][:, :, 40:] > 0).all() and (out["rgb"][:, :, :24] < 0).all()
    assert (out["instance"][:, 32:] == 1).all() and (out["instance"][:, :32] == 0).all()
    assert (out["semantic"][:, 32:] == 5).all() and (out["semantic"][:, :32] == 90).all()


@pytest.mark.parametrize("stride,m", [(1, 224), (4, 56), (8, 28)])
def test_output_shapes_dtypes_and_normalization(stride, m):
    w, h = 300, 200
    inst, sem = blob_masks(w, h, n=40, seed=3)
    img = Image.new("RGB", (w, h), (124, 116, 104))  # ~ the ImageNet mean colour
    for t in (TrainTransform(stride=stride), EvalTransform(stride=stride)):
        out = t(img, inst, sem)
        assert out["rgb"].shape == (3, 224, 224) and out["rgb"].dtype == torch.float32
        assert out["rgb"].abs().max() < 0.05
        assert out["instance"].shape == out["semantic"].shape == (m, m)
        assert out["instance"].dtype == out["semantic"].dtype == torch.int64
        ids = out["instance"].unique()
        assert ids.max() <= IGNORE and ((ids <= 32) | (ids == IGNORE)).all()
        kept = ids[(ids > 0) & (ids < IGNORE)]
        assert kept.tolist() == list(range(1, len(kept) + 1))  # contiguous 1..K
    with pytest.raises(ValueError):
        TrainTransform(size=224, stride=3)


def test_eval_transform_is_deterministic_center_crop():
    img, inst, sem = half_bright(512, 256)
    t = EvalTransform(size=224, stride=1)
    a, b = t(Image.fromarray(img), inst, sem), t(Image.fromarray(img), inst, sem)
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["instance"], b["instance"])
    # centre crop of side 224 (=256*224/256) at x0=144: the edge at x=256 lands at column 112
    assert _edge(a["instance"][100].numpy()) == 112
    assert (a["rgb"][0, :, :110] > 0).all() and (a["rgb"][0, :, 114:] < 0).all()
    np.testing.assert_allclose(a["rgb"][:, 0, 0].numpy(),
                               (240 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD),
                               rtol=1e-5)


def test_missing_masks_give_ignore_and_size_mismatch_is_an_error():
    img = Image.new("RGB", (40, 30))
    out = TrainTransform(size=16, stride=4)(img)
    assert (out["instance"] == IGNORE).all() and (out["semantic"] == IGNORE).all()
    with pytest.raises(ValueError, match="instance mask is 30x40"):
        TrainTransform()(img, np.zeros((40, 30), np.uint16), None)


@pytest.mark.parametrize("writer", ["format", "pil"])
def test_png_row_sampling_equals_full_decode(writer):
    import io

    from c2fmae_data.format.schema import decode_png, encode_instance_png, encode_semantic_png
    from c2fmae_data.format.png_rows import sample_png
    from c2fmae_data.loading.transforms import nearest_indices, resize_mask

    inst, sem = blob_masks(123, 77, n=300, seed=5)
    inst = inst * 211 % 60000                         # use the high byte of the 16-bit ids too
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 2, sem.shape, dtype=np.uint8)  # defeats filter None on PIL's side
    for arr, enc in ((inst.astype(np.uint16), encode_instance_png), (sem + noise, encode_semantic_png)):
        if writer == "format":                         # OpenCV: every row Sub -> fast path
            data = enc(arr)
        else:                                          # PIL: adaptive filters -> cv2 fallback
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            data = buf.getvalue()
        np.testing.assert_array_equal(decode_png(data), arr)
        for box in [(0, 0, 123, 77), (5, 9, 40, 30), (100, 60, 23, 17), (7, 3, 3, 2)]:
            for out in (8, 56):
                ys = nearest_indices(box[1], box[3], out)
                xs = nearest_indices(box[0], box[2], out)
                want = arr[np.ix_(ys, xs)]
                np.testing.assert_array_equal(sample_png(data, ys, xs), want)
                np.testing.assert_array_equal(resize_mask(data, box, out), want)


def test_png_rows_with_mixed_none_and_sub_filters():
    """Rows filtered None and Sub alternately (a valid PNG OpenCV does not write): the fast path
    undoes Sub on the Sub rows only and still equals a full decode."""
    import struct
    import zlib

    from c2fmae_data.format.schema import decode_png
    from c2fmae_data.format.png_rows import sample_png

    arr = np.random.default_rng(3).integers(0, 256, (20, 31), dtype=np.uint8)
    lines = []
    for y, row in enumerate(arr):
        if y % 3 == 1:   # Sub: each byte minus its left neighbour, mod 256
            lines.append(b"\x01" + np.diff(row, prepend=np.uint8(0)).astype(np.uint8).tobytes())
        else:
            lines.append(b"\x00" + row.tobytes())

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 31, 20, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(lines))) + chunk(b"IEND", b""))
    np.testing.assert_array_equal(decode_png(data), arr)
    ys, xs = np.array([0, 1, 4, 7, 19]), np.array([0, 3, 30])
    np.testing.assert_array_equal(sample_png(data, ys, xs), arr[np.ix_(ys, xs)])
    ys = np.array([1, 4, 7])                           # only Sub rows: the all-Sub branch
    np.testing.assert_array_equal(sample_png(data, ys, xs), arr[np.ix_(ys, xs)])
