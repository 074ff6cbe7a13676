"""Semantic label space: official ids -> 0..132, model names -> 0..132, and the PNG import."""
import json
import os

import numpy as np
import pytest

from c2fmae_data.tools.verify import verify
from c2fmae_data.format.categories import COCO_ID_TO_INDEX, COCO_PANOPTIC_NAMES, SEMANTIC_IGNORE
from c2fmae_data.format.schema import FormatError, decode_semantic_png
from c2fmae_data.format.manifest import load_manifest
from c2fmae_data.format.fs import open_fs
from c2fmae_data.format.shards import iter_shard, list_shards, shard_meta
from labeling.labeler import Labeler, SourceImage
from labeling.semantic.mask2former import UnmappedClassesError, label_lut
from labeling.semantic.external import coco_lut, import_semantic


def test_official_ids_map_to_contiguous_order(coco_panoptic_sample):
    cats = json.loads((coco_panoptic_sample / "panoptic_coco_categories.json").read_text())
    assert len(cats) == 133
    for i, c in enumerate(cats):
        assert COCO_ID_TO_INDEX[c["id"]] == i
    lut = coco_lut()
    assert [int(lut[c["id"]]) for c in cats] == list(range(133))
    assert lut[0] == SEMANTIC_IGNORE and lut[12] == SEMANTIC_IGNORE   # 12 is not a panoptic id
    # the model-name mapping sends the official names to the same order
    assert label_lut({i: c["name"] for i, c in enumerate(cats)}).tolist() == list(range(133))


def test_model_names_match_by_base_name_and_unmapped_are_refused_unless_dropped():
    names = {0: "wall-other", 1: "sky", 2: "Tree_merged", 3: "door", 4: "unicorn",
             5: "dining table", 6: "floor-other-merged", 7: "window", 9: "person"}
    with pytest.raises(UnmappedClassesError, match="'unicorn' \\(id 4\\)"):
        label_lut(names)
    lut = label_lut(names, drop_classes=["Unicorn"])
    idx = {n: i for i, n in enumerate(COCO_PANOPTIC_NAMES)}
    assert lut.tolist() == [idx["wall-other-merged"], idx["sky-other-merged"], idx["tree-merged"],
                            idx["door-stuff"], 255, idx["dining table"],
                            idx["floor-other-merged"], idx["window-other"], 255, idx["person"]]


def _make_root(tmp_path, n=2):
    import cv2

    imgs = tmp_path / "imgs" / "train" / "n01440764"
    imgs.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(imgs / f"im{i}.png"), np.full((10 + i, 20, 3), 50, np.uint8))
    from labeling.folder import label_folder

    root = tmp_path / "root"
    label_folder(Labeler.from_preset("fake"), str(tmp_path / "imgs"), str(root), log=lambda s: None)
    return root


def test_import_semantic_replaces_maps_and_validates(tmp_path):
    import cv2

    root = _make_root(tmp_path)
    pngs = tmp_path / "seem" / "train" / "n01440764"
    pngs.mkdir(parents=True)
    cv2.imwrite(str(pngs / "im0.png"), np.full((10, 20), 184, np.uint8))   # coco id: tree-merged
    cv2.imwrite(str(pngs / "im1.png"), np.zeros((11, 20), np.uint8))       # 0: unlabeled
    c = import_semantic(str(root), str(tmp_path / "seem"), id_space="coco", source="SEEM-L")
    assert c == {"shards": 1, "replaced": 2, "kept": 0}
    fs, base = open_fs(str(root))
    rows = {r["key"]: r for r in iter_shard(fs, f"{base}/{list_shards(str(root))[0]}")}
    tree = COCO_ID_TO_INDEX[184]
    assert (decode_semantic_png(rows["train/n01440764/im0.png"]["semantic_png"]) == tree).all()
    assert (decode_semantic_png(rows["train/n01440764/im1.png"]["semantic_png"]) == 255).all()
    meta = shard_meta(fs, f"{base}/{list_shards(str(root))[0]}")
    assert meta["provenance"]["semantic_import"]["source"] == "SEEM-L"
    assert load_manifest(str(root))["totals"]["ok"] == 2


def test_import_semantic_refuses_bad_png_without_touching_the_shard(tmp_path):
    import cv2

    root = _make_root(tmp_path)
    shard = root / list_shards(str(root))[0]
    before = shard.read_bytes()
    pngs = tmp_path / "seem" / "train" / "n01440764"
    pngs.mkdir(parents=True)
    cv2.imwrite(str(pngs / "im0.png"), np.zeros((10, 20), np.uint8))
    cv2.imwrite(str(pngs / "im1.png"), np.zeros((10, 20), np.uint8))        # wrong height
    with pytest.raises(FormatError, match="im1.png: is 20x10, the image is 20x11"):
        import_semantic(str(root), str(tmp_path / "seem"))
    cv2.imwrite(str(pngs / "im1.png"), np.full((11, 20), 140, np.uint8))    # not 0..132/255
    with pytest.raises(FormatError, match="value 140"):
        import_semantic(str(root), str(tmp_path / "seem"))
    os.remove(pngs / "im1.png")
    with pytest.raises(FormatError, match="no semantic PNG for key 'train/n01440764/im1.png'"):
        import_semantic(str(root), str(tmp_path / "seem"))
    assert shard.read_bytes() == before


def test_import_semantic_validates_every_shard_first_and_refreshes_categories(tmp_path):
    import cv2

    from labeling.folder import label_folder

    imgs = tmp_path / "imgs" / "train" / "n01440764"
    imgs.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(imgs / f"im{i}.png"), np.full((40, 48, 3), 60 + 60 * i, np.uint8))
    root = tmp_path / "root"
    label_folder(Labeler.from_preset("fake"), str(tmp_path / "imgs"), str(root), shard_size=1,
                 log=lambda s: None)
    shards = [root / rel for rel in list_shards(str(root))]
    before = [p.read_bytes() for p in shards]
    pngs = tmp_path / "seem" / "train" / "n01440764"
    pngs.mkdir(parents=True)
    dog = COCO_ID_TO_INDEX[18]
    cv2.imwrite(str(pngs / "im0.png"), np.full((40, 48), dog, np.uint8))
    cv2.imwrite(str(pngs / "im1.png"), np.full((40, 48), 140, np.uint8))   # bad, in shard 1
    with pytest.raises(FormatError, match="im1.png: value 140"):
        import_semantic(str(root), str(tmp_path / "seem"))
    assert [p.read_bytes() for p in shards] == before       # shard 0 was not rewritten either
    cv2.imwrite(str(pngs / "im1.png"), np.full((40, 48), dog, np.uint8))
    import_semantic(str(root), str(tmp_path / "seem"))
    fs, base = open_fs(str(root))
    insts = [m for rel in list_shards(str(root))
             for r in iter_shard(fs, f"{base}/{rel}") for m in r["instances"]]
    assert insts and all(m["category"] == dog for m in insts)
    assert verify(str(root), full=True).ok


def test_semantic_labeler_refuses_to_start_on_an_unmapped_label_space():
    from types import SimpleNamespace

    import torch

    from labeling.semantic.mask2former import Mask2FormerSemantic

    class _M(torch.nn.Module):
        config = SimpleNamespace(id2label={i: n for i, n in enumerate(COCO_PANOPTIC_NAMES)}
                                 | {133: "hoverboard"})

    with pytest.raises(UnmappedClassesError, match="hoverboard"):
        Mask2FormerSemantic(_M(), processor=None)
    sem = Mask2FormerSemantic(_M(), processor=None, drop_classes=("hoverboard",))
    assert sem.lut[133] == 255 and sem.lut[:133].tolist() == list(range(133))


def test_semantic_runs_at_the_coco_eval_size_keeping_the_aspect_ratio():
    from types import SimpleNamespace

    import torch
    from transformers import Mask2FormerImageProcessor

    from labeling.semantic.mask2former import Mask2FormerSemantic, parse_semantic_size

    class _M(torch.nn.Module):
        config = SimpleNamespace(id2label=dict(enumerate(COCO_PANOPTIC_NAMES)))

    hub_like = Mask2FormerImageProcessor(size={"height": 384, "width": 384})   # the hub's squash
    img = torch.zeros(3, 375, 500, dtype=torch.uint8)
    sem = Mask2FormerSemantic(_M(), hub_like)
    # 800 x 1067, rounded by the processor to its size_divisor 32: the aspect ratio is kept
    assert tuple(sem._inputs([img])["pixel_values"].shape[-2:]) == (800, 1088)
    tall = torch.zeros(3, 1000, 500, dtype=torch.uint8)                  # long side caps at 1333
    h, w = sem._inputs([tall])["pixel_values"].shape[-2:]
    assert 1312 <= h <= 1344 and abs(h / w - 2) < 0.05
    sem.size = parse_semantic_size("processor")
    assert tuple(sem._inputs([img])["pixel_values"].shape[-2:]) == (384, 384)
    assert parse_semantic_size("512,853") == {"shortest_edge": 512, "longest_edge": 853}
    with pytest.raises(ValueError, match="SHORT,LONG"):
        parse_semantic_size("big")
