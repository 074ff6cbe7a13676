"""Overlap resolution, id ordering and metadata of the composed instance map."""
import numpy as np
import pytest

from c2fmae_data.format.schema import check_record, decode_instance_png
from labeling.compose import compose, finalize, paint
from labeling.detection.grounding_dino import Detections
from labeling.presets.fakes import FakeDetector, FakeSegmenter, FakeSemantic
from labeling.labeler import Labeler, SourceImage


def test_higher_score_on_top_and_ids_by_area():
    m = np.zeros((3, 4, 4), bool)
    m[0, :2, :2] = True        # score .9, 4 px, fully on top
    m[1, :, :3] = True         # score .5, 12 px minus the 4 covered = 8
    m[2, 3, 3] = True          # score .3, 1 px
    ids, rows = compose(m, np.arange(12).reshape(3, 4), np.array([0.9, 0.5, 0.3]), "abc")
    assert ids.dtype == np.uint16
    assert ids.tolist() == [[2, 2, 1, 0], [2, 2, 1, 0], [1, 1, 1, 0], [1, 1, 1, 3]]
    assert [(r["id"], r["phrase"], r["area"]) for r in rows] == [(1, "b", 8), (2, "a", 4), (3, "c", 1)]
    assert rows[1]["box"] == [0.0, 1.0, 2.0, 3.0]


def test_equal_scores_earlier_wins_and_hidden_masks_are_dropped():
    m = np.zeros((3, 2, 2), bool)
    m[0] = True
    m[1] = True               # same score as 0, later -> loses every pixel -> dropped
    m[2, 0, 0] = True         # lower score, under 0 -> dropped
    ids, rows = compose(m, np.zeros((3, 4)), np.array([0.5, 0.5, 0.1]), "xyz")
    assert (ids == 1).all() and [r["phrase"] for r in rows] == ["x"]


def test_area_ties_break_by_score():
    m = np.zeros((2, 2, 4), bool)
    m[0, :, :2] = True
    m[1, :, 2:] = True
    ids, rows = compose(m, np.zeros((2, 4)), np.array([0.4, 0.6]), "pq")
    assert [r["phrase"] for r in rows] == ["q", "p"] and ids[0, 3] == 1


def test_paint_rejects_mismatch():
    with pytest.raises(ValueError):
        paint(np.zeros((2, 3, 3), bool), np.array([0.1]))
    with pytest.raises(ValueError):
        finalize(np.full((2, 2), 3), np.zeros((1, 4)), np.array([0.1]), "a")


def test_large_image_boxes_and_masks_come_back_in_source_pixels():
    import cv2

    h, w = 300, 2000     # longer than max_model_side=500 -> models see a 4x smaller copy
    data = cv2.imencode(".png", np.full((h, w, 3), 90, np.uint8))[1].tobytes()

    def script(im, prompt):
        assert im.shape[1] == 500
        return Detections([[0, 0, 250, 75]], [0.9], [0], prompt.phrases)

    lab = Labeler(FakeDetector(script), FakeSegmenter("box"), FakeSemantic(), max_model_side=500)
    rec = lab.label_items([SourceImage("train/n01440764/w.png", "n01440764", 0, data)])[0]
    assert check_record(rec) == []
    assert rec["instances"][0]["box"] == pytest.approx([0, 0, 1000, 300])
    ids = decode_instance_png(rec["instance_png"])
    assert ids.shape == (h, w) and rec["instances"][0]["area"] == 1000 * 300
    assert (ids[:, :1000] == 1).all() and not ids[:, 1000:].any()


def test_instance_category_is_the_majority_thing_class_of_the_semantic_map():
    from labeling.compose import assign_categories

    ids = np.zeros((4, 6), np.uint16)
    ids[:, :3] = 1          # 12 px: 8 px 'dog' (thing 16), 4 px 'wall' (stuff) -> dog
    ids[:2, 3:] = 2         # 6 px: 2 px 'cat' (thing 15), 4 px unlabeled -> under half -> -1
    ids[2:, 3:] = 3         # 6 px: 3 px 'cat', 3 px 'dog' -> tie -> smaller index (cat)
    sem = np.full((4, 6), 255, np.uint8)
    sem[:, :2] = 16
    sem[:, 2] = 131         # a stuff class never names an instance
    sem[0, 3:5] = 15
    sem[2:, 3] = 15
    sem[3, 4:] = 15
    sem[2, 4:] = 16
    sem[3, 3] = 16
    rows = [{"id": i, "area": int((ids == i).sum()), "category": -1} for i in (1, 2, 3)]
    got = [r["category"] for r in assign_categories(ids, sem, rows)]
    assert got == [16, -1, 15]
