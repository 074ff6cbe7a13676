"""An image's labels do not depend on its batch: batch size 1 and 8 write identical PNG columns."""
import numpy as np
import pyarrow.parquet as pq
import pytest

from labeling.presets.fakes import FakeDetector, FakeSegmenter, FakeSemantic
from labeling.labeler import Labeler


def _mixed_folder(tmp_path):
    import cv2

    d = tmp_path / "in" / "train" / "n01440764"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(60, 90), (90, 60), (60, 90), (40, 40), (90, 60), (75, 50),
                                (60, 90), (33, 97), (90, 60), (60, 90)]):
        cv2.imwrite(str(d / f"im{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return tmp_path / "in"


def _columns(root):
    t = pq.read_table(sorted((root / "shards").glob("*.parquet"))[0])
    return t.column("instance_png").to_pylist(), t.column("semantic_png").to_pylist()


def test_tiny_random_labels_are_batch_invariant(tmp_path):
    from labeling.folder import label_folder

    images = _mixed_folder(tmp_path)
    lab = Labeler.from_preset("tiny-random")
    cols = []
    for bs in (1, 8):
        out = tmp_path / f"bs{bs}"
        label_folder(lab, str(images), str(out), batch_size=bs, log=lambda s: None)
        cols.append(_columns(out))
    assert cols[0][0] == cols[1][0]          # instance_png, byte for byte
    assert cols[0][1] == cols[1][1]          # semantic_png


SIZES = [(200, 300), (300, 200), (200, 300), (300, 200), (200, 300)]


def test_batches_are_split_into_same_size_buckets():
    import cv2

    from labeling.images import SourceImage

    det = FakeDetector()
    lab = Labeler(det, FakeSegmenter(), FakeSemantic())
    items = [SourceImage(f"train/n01440764/{i}.png", "n01440764", 0,
                         cv2.imencode(".png", np.zeros(hw + (3,), np.uint8))[1].tobytes())
             for i, hw in enumerate(SIZES)]
    recs = lab.label_items(items)
    assert sorted(det.calls) == [2, 3]                   # one call per input size
    assert [r["key"] for r in recs] == [it.key for it in items] and all(
        (r["height"], r["width"]) == hw for r, hw in
        zip(recs, SIZES))
