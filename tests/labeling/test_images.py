"""Robustness of prepare/label on generated files: every image is labeled or failed with a
reason, never an exception."""
import io
import pickle

import numpy as np
import pytest
from PIL import Image

from c2fmae_data.format.schema import check_record, decode_instance_png, decode_semantic_png
from labeling.presets.fakes import FakeDetector, FakeSegmenter, FakeSemantic
from labeling.images import Prepared
from labeling.labeler import Labeler, SourceImage


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(w, h):
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    return np.broadcast_to(x, (h, w, 3)).copy()


def _exif_rotated() -> bytes:
    img = Image.fromarray(_gradient(64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6          # orientation: rotate 90 CW on display
    return _encode(img, "JPEG", exif=exif.tobytes())


def _sixteen_bit() -> bytes:
    import cv2

    a = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100)
    return cv2.imencode(".png", a)[1].tobytes()


CASES = {
    "zero": (b"", "failed", "empty file"),
    "truncated": (_encode(Image.fromarray(_gradient(200, 150)), "JPEG")[:600], "failed", "decode"),
    "garbage": (b"not an image at all" * 10, "failed", "decode"),
    "cmyk": (_encode(Image.fromarray(_gradient(40, 30)).convert("CMYK"), "JPEG"), "ok", (30, 40)),
    "png16": (_sixteen_bit(), "ok", (20, 30)),
    "rgba": (_encode(Image.fromarray(np.zeros((25, 35, 4), np.uint8), "RGBA"), "PNG"), "ok", (25, 35)),
    "palette": (_encode(Image.fromarray(_gradient(16, 12)).convert("P"), "PNG"), "ok", (12, 16)),
    "gray": (_encode(Image.fromarray(_gradient(16, 12)[:, :, 0]), "JPEG"), "ok", (12, 16)),
    "exif": (_exif_rotated(), "ok", (64, 32)),          # stored 64 wide, displayed 32 wide
    "one_pixel": (_encode(Image.new("RGB", (1, 1), (9, 200, 3)), "PNG"), "ok", (1, 1)),
    "elongated": (_encode(Image.fromarray(_gradient(4000, 1)), "PNG"), "ok", (1, 4000)),
    "too_large": (_encode(Image.new("L", (3000, 2000)), "PNG"), "failed", "limit"),
}


@pytest.fixture(scope="module")
def labeler():
    return Labeler(FakeDetector(), FakeSegmenter(), FakeSemantic(), max_pixels=5_000_000)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_case_labeled_or_failed_with_reason(labeler, name):
    data, status, expect = CASES[name]
    rec = labeler.label_items([SourceImage(f"train/n01440764/{name}.x", "n01440764", 0, data)])[0]
    assert rec["status"] == status, rec["reason"]
    assert check_record(rec) == []
    assert rec["source_size"] == len(data) and len(rec["source_sha256"]) == 64
    assert rec["wnid"] == "n01440764" and rec["class_index"] == 0
    if status == "failed":
        assert expect in rec["reason"]
        assert rec["instance_png"] is None
    else:
        assert (rec["height"], rec["width"]) == expect
        assert decode_instance_png(rec["instance_png"]).shape == expect
        assert decode_semantic_png(rec["semantic_png"]).shape == expect


def test_batch_with_bad_images_keeps_order_and_good_ones(labeler):
    names = ["zero", "cmyk", "truncated", "exif"]
    recs = labeler.label_items([SourceImage(f"k/n01440764/{n}", "n01440764", 0, CASES[n][0])
                                for n in names])
    assert [r["key"].split("/")[-1] for r in recs] == names
    assert [r["status"] for r in recs] == ["failed", "ok", "failed", "ok"]


def test_exif_rotation_is_applied_to_pixels(labeler):
    p = labeler.prepare(SourceImage("a/n01440764/r", "n01440764", 0, CASES["exif"][0]))
    assert p.rgb.shape == (64, 32, 3)
    # the horizontal gradient of the stored image runs vertically once rotated
    col = p.rgb[:, 16, 0].astype(int)
    assert col[0] < col[-1] - 150 and abs(int(p.rgb[10, 0, 0]) - int(p.rgb[10, -1, 0])) < 20


def test_sixteen_bit_keeps_the_high_byte(labeler):
    p = labeler.prepare(SourceImage("a/n01440764/s", "n01440764", 0, CASES["png16"][0]))
    assert p.rgb.dtype == np.uint8 and p.rgb[-1, -1, 0] == (599 * 100) >> 8


def test_prepared_is_picklable_and_elongated_is_padded(labeler):
    p = labeler.prepare(SourceImage("a/n01440764/e", "n01440764", 0, CASES["elongated"][0]))
    q = pickle.loads(pickle.dumps(p))
    assert isinstance(q, Prepared) and np.array_equal(q.rgb, p.rgb)
    h, w = q.model_image.shape[:2]
    assert w / h <= 4.0 and q.valid_hw == (1, 1333) and q.model_scale == pytest.approx(4000 / 1333)


class _OOMOnLarge(FakeDetector):
    def detect(self, images, prompts, floor):
        import torch

        if max(images[0].shape[:2]) > 600:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return super().detect(images, prompts, floor)


def test_oom_retries_smaller_then_fails_only_that_image():
    lab = Labeler(_OOMOnLarge(), FakeSegmenter(), FakeSemantic())
    big = _encode(Image.fromarray(_gradient(1200, 900)), "PNG")
    recs = lab.label_items([SourceImage("a/n01440764/big", "n01440764", 0, big)])
    assert recs[0]["status"] == "ok" and (recs[0]["width"], recs[0]["height"]) == (1200, 900)
    assert check_record(recs[0]) == []

    class _AlwaysOOM(FakeDetector):
        def detect(self, images, prompts, floor):
            import torch

            h, w = images[0].shape[:2]
            if len(images) > 1 or abs(w / h - 4 / 3) < 0.01:   # the 1200x900 one, any size
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
            return super().detect(images, prompts, floor)

    lab = Labeler(_AlwaysOOM(), FakeSegmenter(), FakeSemantic())
    small = _encode(Image.fromarray(_gradient(700, 500)), "PNG")
    recs = lab.label_items([SourceImage("a/n01440764/big", "n01440764", 0, big),
                            SourceImage("a/n01440764/ok", "n01440764", 0, small)])
    assert recs[0]["status"] == "failed" and "out of memory" in recs[0]["reason"]
    assert recs[1]["status"] == "ok"


def test_failure_reasons_hold_no_memory_address(labeler):
    rec = labeler.label_items([SourceImage("train/n01440764/g.x", "n01440764", 0,
                                           CASES["garbage"][0])])[0]
    assert rec["status"] == "failed" and " at 0x" not in rec["reason"], rec["reason"]


def test_two_runs_over_the_bad_inputs_write_identical_shards(tmp_path):
    from c2fmae_data.cli import main

    src = tmp_path / "in" / "train" / "n01440764"
    src.mkdir(parents=True)
    for name, (data, _, _) in CASES.items():
        (src / f"{name}.JPEG").write_bytes(data)
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        rc = main(["label", "--images", str(tmp_path / "in"), "--out", str(out), "--models", "fake"])
        assert rc in (0, 1)       # failed rows may set the exit status; the shards are the point
        outs.append(out)
    shards = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*.parquet"))
    assert shards
    for rel in shards:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
