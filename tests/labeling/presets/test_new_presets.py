"""SAM 3 / MM-Grounding-DINO / EoMT: post-processing on hand-built outputs, presets end to end."""
import warnings

import numpy as np
import pytest
import torch

from c2fmae_data.format.categories import COCO_PANOPTIC_NAMES
from labeling.presets.catalog import PRESET_POLICIES, resolve_specs
from labeling.detection.prompts import Prompt
from labeling.segmentation.sam3 import (candidate_scores, masks_to_size, prompt_rows,
                                     select_candidates)
from labeling.semantic.eomt import eomt_id2label, semantic_from_queries, valid_size
from labeling.semantic.mask2former import label_lut


def test_sam3_rows_scores_and_candidates():
    texts, img, ph = prompt_rows([Prompt(("tench", "tinca tinca")), Prompt(("goldfish",))])
    assert texts == ["tench", "tinca tinca", "goldfish"]
    assert img.tolist() == [0, 0, 1] and ph.tolist() == [0, 1, 0]
    logits = torch.tensor([[10.0, -10.0], [0.0, 10.0], [10.0, 10.0]])
    presence = torch.tensor([[10.0], [10.0], [-10.0]])   # concept absent in image 1
    sc = candidate_scores(logits, presence).numpy()
    assert sc[0, 0] == pytest.approx(1.0, abs=1e-4) and sc[1, 0] == pytest.approx(0.5, abs=1e-4)
    assert sc[2].max() < 1e-4                              # presence gates every query
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1]],
                      [[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 1.5, 1.0]],
                      [[0, 0, 1, 1], [0, 0, 1, 1]]], np.float32)
    per = select_candidates(sc, boxes, img, ph, [(100, 200), (50, 50)], floor=0.4)
    flat, s, bx, pid = per[0]
    assert flat.tolist() == [0, 2, 3]                      # (row 0, q 0), (row 1, q 0), (row 1, q 1)
    assert pid.tolist() == [0, 1, 1]
    np.testing.assert_allclose(bx[0], [20, 20, 100, 60])   # x by width 200, y by height 100
    np.testing.assert_allclose(bx[2], [50, 25, 200, 100])  # clipped to the image
    assert len(per[1][0]) == 0


def test_sam3_masks_resize_and_binarise():
    logits = torch.full((2, 4, 4), -5.0)
    logits[0, :2, :2] = 5.0                                # top-left quarter
    logits[1, :, 2:] = 5.0                                 # right half
    m = masks_to_size(logits, (8, 12)).numpy()
    assert m.shape == (2, 8, 12) and m.dtype == bool
    assert m[0, :3, :5].all() and not m[0, 4:, :].any() and not m[0, :, 6:].any()
    assert not m[0, 3, 5]          # the bilinear value there is exactly 0: strictly > 0 wins
    assert m[1, :, 6:].all() and not m[1, :, :6].any()
    assert masks_to_size(logits[:0], (8, 12)).shape == (0, 8, 12)


def test_eomt_semantic_rule_crop_and_mapping():
    # two queries: q0 says class 'person' (0) on the left, q1 says 'sky' on the right
    names = {i: f"LABEL_{i}" for i in range(133)}
    id2label = eomt_id2label(names)
    assert id2label[0] == "person" and id2label[132] == COCO_PANOPTIC_NAMES[132]
    lut = label_lut(id2label)
    sky = [i for i, n in enumerate(COCO_PANOPTIC_NAMES) if n.startswith("sky")][0]
    cls = torch.full((2, 134), -10.0)
    cls[0, 0] = 10.0
    cls[1, sky] = 10.0
    masks = torch.full((2, 8, 8), -10.0)
    masks[0, :, :4] = 10.0
    masks[1, :, 4:] = 10.0
    # padded 8x8 input holding a 8x6 valid part: the padding (columns 6, 7) is cropped
    sem = semantic_from_queries(cls, masks, (8, 8), (8, 6), lut, (16, 12))
    assert sem.shape == (16, 12) and sem.dtype == np.uint8
    assert (sem[:, :8] == 0).all() and (sem[:, 8:] == sky).all()
    assert valid_size((375, 500), 640) == (480, 640)
    real = eomt_id2label({0: "person", 1: "sky-other-merged"})   # real names are kept
    assert real == {0: "person", 1: "sky-other-merged"}


def test_preset_specs():
    s = resolve_specs("sam3", {})
    assert s["detector"] is s["segmenter"] and s["detector"].kind == "sam3"
    assert resolve_specs("sam3", {"segmenter": "org/sam-hq"})["segmenter"].kind == "sam-hq"
    assert resolve_specs("mm-gdino", {})["detector"].kind == "mm-grounding-dino"
    assert resolve_specs("default", {"semantic": "eomt"})["semantic"].kind == "eomt"
    assert PRESET_POLICIES["sam3"].start == 0.5


@pytest.mark.parametrize("preset,semantic", [("sam3-tiny-random", None),
                                             ("mm-gdino-tiny-random", None),
                                             ("tiny-random", "eomt")])
def test_preset_end_to_end(preset, semantic, imagenet_sample, tmp_path, capsys):
    from c2fmae_data.cli import main
    from c2fmae_data.format.manifest import load_manifest

    out = tmp_path / "ds"
    args = ["label", "--images", str(imagenet_sample), "--out", str(out), "--models", preset,
            "--limit", "3", "--shard-size", "2", "--batch-size", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args + (["--semantic", semantic] if semantic else [])) == 0
    m = load_manifest(str(out))
    assert m["totals"]["rows"] == 3 and m["totals"]["ok"] == 3
    models = m["provenance"]["models"]
    assert models["semantic"]["kind"] == (semantic or "mask2former")
    assert models["detector"]["kind"] == {"sam3-tiny-random": "sam3",
                                          "mm-gdino-tiny-random": "mm-grounding-dino",
                                          "tiny-random": "grounding-dino"}[preset]
    assert main(["verify", str(out)]) == 0


def test_sam3_labeler_masks_are_its_own(imagenet_sample):
    """The SAM 3 preset paints SAM 3's masks (no SAM-HQ call) and records phrases of the prompt."""
    from labeling.folder import list_images, read_item
    from labeling.labeler import Labeler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab = Labeler.from_preset("sam3-tiny-random")
    assert lab.detector is lab.segmenter
    k, w = list_images(str(imagenet_sample))[0]
    rec = lab.label_items([read_item(str(imagenet_sample), k, w)])[0]
    assert rec["status"] == "ok" and rec["num_instances"] >= 1
    assert all(r["phrase"] for r in rec["instances"])
