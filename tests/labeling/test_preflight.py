"""Fail fast: a model that returns NaN (or crashes) stops the run before any shard is written."""
import numpy as np
import pytest

from labeling.detection.grounding_dino import Detections
from labeling.presets.fakes import FakeDetector, FakeSegmenter, FakeSemantic
from labeling.labeler import Labeler
from labeling.preflight import PreflightError


class NaNDetector:
    def detect(self, images, prompts, floor):
        return [Detections(np.full((2, 4), np.nan), [np.nan, 0.5], [0, 0], p.phrases)
                for p in prompts]


class CrashingSemantic(FakeSemantic):
    def predict(self, images):
        raise RuntimeError("expected scalar type BFloat16 but found Float")


def _folder(tmp_path):
    import cv2

    d = tmp_path / "in" / "train" / "n01440764"
    d.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(d / f"im{i}.png"), np.full((20, 30, 3), 40 * i, np.uint8))
    return tmp_path / "in"


@pytest.mark.parametrize("models, match", [
    ((NaNDetector(), FakeSegmenter(), FakeSemantic()), "non-finite"),
    ((FakeDetector(), FakeSegmenter(), CrashingSemantic()), "BFloat16"),
])
def test_preflight_stops_the_run_before_any_shard(tmp_path, models, match):
    from labeling.folder import label_folder

    out = tmp_path / "out"
    with pytest.raises(PreflightError, match=match):
        label_folder(Labeler(*models), str(_folder(tmp_path)), str(out), log=lambda s: None)
    assert not list(out.rglob("*.parquet"))


def test_preflight_passes_on_working_models_and_isolation_still_holds():
    good = Labeler(FakeDetector(), FakeSegmenter(), FakeSemantic())
    assert good.preflight()["status"] == "ok"
    bad = Labeler(NaNDetector(), FakeSegmenter(), FakeSemantic())
    from labeling.images import SourceImage
    from labeling.preflight import preflight_image
    import cv2

    png = cv2.imencode(".png", preflight_image())[1].tobytes()
    rec = bad.label_items([SourceImage("train/n01440764/a.png", "n01440764", 0, png)])[0]
    assert rec["status"] == "failed" and "non-finite" in rec["reason"]   # never a NaN box row
