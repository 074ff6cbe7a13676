"""Adaptive threshold walk, class-aware NMS and the cap, through fake models and the Labeler."""
import numpy as np
import pytest

from c2fmae_data.format.schema import check_record, decode_instance_png
from labeling.detection.grounding_dino import Detections
from labeling.presets.fakes import FakeDetector, FakeSegmenter, FakeSemantic
from labeling.labeler import Labeler, SourceImage
from labeling.detection.prompt_table import clean_lemma
from labeling.detection.prompts import class_prompt
from labeling.detection.thresholds import ThresholdPolicy, class_aware_nms, select


def _png(h=40, w=60):
    import cv2

    return cv2.imencode(".png", np.full((h, w, 3), 128, np.uint8))[1].tobytes()


def test_policy_steps_are_exact():
    assert ThresholdPolicy().steps() == [0.35, 0.3, 0.25, 0.2, 0.15]
    assert ThresholdPolicy(start=0.3, floor=0.22, step=0.05).steps() == [0.3, 0.25, 0.22]
    assert ThresholdPolicy(start=0.2, floor=0.2).steps() == [0.2]
    with pytest.raises(ValueError):
        ThresholdPolicy(start=0.1, floor=0.2)


@pytest.mark.parametrize("scores,expect_t,expect_idx", [
    ([0.50, 0.40, 0.10], 0.35, [0, 1]),   # confident boxes: kept at the start
    ([0.31, 0.26, 0.10], 0.30, [0]),      # walks one step down
    ([0.21, 0.16, 0.10], 0.20, [0]),
    ([0.16, 0.149, 0.0], 0.15, [0]),      # found at the floor
    ([0.14, 0.10, 0.0], 0.15, []),        # nothing even at the floor: empty, floor recorded
])
def test_walk_down(scores, expect_t, expect_idx):
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    idx, t = select(boxes, np.array(scores), np.zeros(3), ThresholdPolicy())
    assert t == expect_t and idx.tolist() == expect_idx


def test_min_boxes_keeps_walking_until_enough():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    idx, t = select(boxes, np.array([0.5, 0.27, 0.22]), np.zeros(3), ThresholdPolicy(min_boxes=3))
    assert t == 0.2 and idx.tolist() == [0, 1, 2]


def test_nms_is_class_aware_and_cap_keeps_best():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # boxes 0 and 1 overlap in group 0 -> 1 suppressed; box 2 is group 1 -> kept
    assert class_aware_nms(boxes, scores, np.array([0, 0, 1, 0]), 0.5).tolist() == [0, 2, 3]
    idx, _ = select(boxes, scores, np.array([0, 0, 1, 0]), ThresholdPolicy(max_instances=2))
    assert idx.tolist() == [0, 2]


def _scripted(cands):
    def script(im, prompt):
        b, s = zip(*cands) if cands else ((), ())
        return Detections(np.array(b).reshape(-1, 4), np.array(s), np.zeros(len(s)), prompt.phrases)
    return script


def test_labeler_records_threshold_nms_and_cap():
    cands = [([0, 0, 20, 20], 0.28), ([1, 1, 20, 20], 0.27), ([30, 5, 55, 35], 0.26),
             ([5, 20, 25, 38], 0.24), ([40, 0, 60, 10], 0.12)]
    lab = Labeler(FakeDetector(_scripted(cands)), FakeSegmenter("box"), FakeSemantic(),
                  policy=ThresholdPolicy(max_instances=2))
    rec = lab.label_items([SourceImage("train/n01440764/a.png", "n01440764", 0, _png())])[0]
    assert check_record(rec) == []
    assert rec["threshold"] == pytest.approx(0.25)        # 0.35, 0.30 empty; 0.25 has 3 boxes
    # NMS drops box 1 (IoU with box 0 > 0.5), the cap keeps the 2 best of the remaining 2
    assert sorted(m["score"] for m in rec["instances"]) == pytest.approx([0.26, 0.28])
    assert rec["num_instances"] == 2


def test_empty_image_is_ok_with_zero_instances():
    det = FakeDetector(_scripted([]))
    lab = Labeler(det, FakeSegmenter(), FakeSemantic())
    rec = lab.label_items([SourceImage("train/n01440764/e.png", "n01440764", 0, _png())])[0]
    assert rec["status"] == "ok" and rec["num_instances"] == 0 and rec["instances"] == []
    assert rec["threshold"] == pytest.approx(0.15)
    assert not decode_instance_png(rec["instance_png"]).any()
    assert check_record(rec) == []


def test_prompt_rule():
    assert class_prompt(0).text == "tench ."                       # "Tinca tinca" dropped
    assert class_prompt(2).phrases == ("great white shark", "white shark", "man-eater")
    assert class_prompt(2, max_lemmas=1).text == "great white shark ."
    assert clean_lemma("St. Bernard") == "st bernard" and clean_lemma("A-b  c?") == "a-b c"
    with pytest.raises(ValueError):
        class_prompt(1000)
