"""convert-coco on the real COCO samples: pixel-exact against pycocotools and the panoptic PNGs."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from c2fmae_data.format.categories import COCO_ID_TO_INDEX, COCO_PANOPTIC_ISTHING, SEMANTIC_IGNORE
from c2fmae_data.tools.coco import convert_coco, read_panoptic_png
from c2fmae_data.format.schema import decode_instance_png, decode_semantic_png
from c2fmae_data.format.manifest import load_manifest
from c2fmae_data.format.fs import open_fs
from c2fmae_data.format.shards import iter_shard
from c2fmae_data.tools.verify import verify


def rows(root) -> "dict[str, dict]":
    fs, base = open_fs(str(root))
    out = {}
    for s in load_manifest(str(root))["splits"].values():
        for e in s["shards"]:
            out.update({r["key"]: r for r in iter_shard(fs, f"{base}/{e['file']}")})
    return out


@pytest.fixture(scope="module")
def tiny(coco_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("coco_tiny")
    ann = coco_tiny / "annotations" / "instances_val2017.json"
    m = convert_coco(str(out), images_dir=str(coco_tiny / "val2017"), instances_json=str(ann),
                     shard_size=16)
    return out, m, ann


def test_instances_layout_and_provenance(tiny):
    out, m, ann = tiny
    assert list(m["splits"]) == ["val"] and m["totals"]["rows"] == 50 and m["totals"]["ok"] == 50
    assert len(m["splits"]["val"]["shards"]) == 4  # 16 + 16 + 16 + 2
    prov = m["provenance"]["annotations"]["instances"]
    assert prov["sha256"] == hashlib.sha256(ann.read_bytes()).hexdigest()
    r = rows(out)["val2017/000000397133.jpg"]
    assert (r["wnid"], r["class_index"], r["width"], r["height"]) == ("", -1, 640, 427)
    assert r["threshold"] is None and r["image_bytes"] is None
    assert all(i["score"] == 1.0 for i in r["instances"])
    assert verify(str(out), full=True).ok


def test_instances_pixel_exact_against_pycocotools(tiny, coco_tiny):
    from pycocotools.coco import COCO

    out, _, ann = tiny
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann))
    got = rows(out)
    checked_alone = checked_crowd = 0
    for img in coco.loadImgs(coco.getImgIds())[:25]:
        r = got[f"val2017/{img['file_name']}"]
        inst, sem = decode_instance_png(r["instance_png"]), decode_semantic_png(r["semantic_png"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]], iscrowd=None))
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        others = [np.logical_or.reduce([m for j, m in enumerate(masks) if j != i]
                                       + [np.zeros_like(masks[i])]) for i in range(len(anns))]
        for a, m, rest in zip(anns, masks, others):
            idx = COCO_ID_TO_INDEX[a["category_id"]]
            if a["iscrowd"]:
                free = m & ~rest
                assert (inst[free] == 0).all() and (sem[free] == idx).all()
                checked_crowd += 1
                continue
            meta = [x for x in r["instances"]
                    if np.allclose(x["box"], [a["bbox"][0], a["bbox"][1],
                                              a["bbox"][0] + a["bbox"][2],
                                              a["bbox"][1] + a["bbox"][3]], atol=1e-3)]
            assert len(meta) >= 1 and meta[0]["category"] == idx and meta[0]["phrase"]
            if not (m & rest).any():  # not overlapped: the stored mask IS annToMask
                ids = {x["id"] for x in meta}
                own = np.isin(inst, list(ids))
                assert np.array_equal(own, m) and (sem[m] == idx).all()
                checked_alone += 1
        covered = np.logical_or.reduce(masks + [np.zeros(inst.shape, bool)])
        assert (sem[~covered] == SEMANTIC_IGNORE).all() and (inst[~covered] == 0).all()
    assert checked_alone >= 20 and checked_crowd >= 1


def test_panoptic_pixel_exact_against_png(coco_panoptic_sample, tmp_path):
    d = coco_panoptic_sample / "sample_data"
    m = convert_coco(str(tmp_path), images_dir=str(d / "input_images"), split="val",
                     panoptic_json=str(d / "panoptic_examples.json"),
                     panoptic_png_dir=str(d / "panoptic_examples"), self_contained=True)
    assert m["totals"]["rows"] == 2 and m["self_contained"] is True
    pan = json.loads((d / "panoptic_examples.json").read_text())
    got = rows(tmp_path)
    for a in pan["annotations"]:
        img = next(i for i in pan["images"] if i["id"] == a["image_id"])
        r = got[f"input_images/{img['file_name']}"]
        assert r["image_bytes"] == (d / "input_images" / img["file_name"]).read_bytes()
        ids = read_panoptic_png(str(d / "panoptic_examples" / a["file_name"]))
        inst, sem = decode_instance_png(r["instance_png"]), decode_semantic_png(r["semantic_png"])
        assert (sem[ids == 0] == SEMANTIC_IGNORE).all()  # void stays unlabeled
        things = 0
        for seg in a["segments_info"]:
            seg_mask = ids == seg["id"]
            idx = COCO_ID_TO_INDEX[seg["category_id"]]
            assert (sem[seg_mask] == idx).all()
            if COCO_PANOPTIC_ISTHING[idx] and not seg["iscrowd"]:
                k = int(inst[seg_mask][0])
                assert k > 0 and np.array_equal(inst == k, seg_mask)
                assert r["instances"][k - 1]["area"] == seg["area"]
                things += 1
            else:  # stuff and crowd: no instance id
                assert (inst[seg_mask] == 0).all()
        assert r["num_instances"] == things


def test_instances_plus_panoptic_stuff(coco_panoptic_sample, tmp_path):
    d = coco_panoptic_sample / "sample_data"
    convert_coco(str(tmp_path), images_dir=str(d / "input_images"), split="val",
                 instances_json=str(d / "panoptic_coco_detection_format.json"),
                 panoptic_json=str(d / "panoptic_examples.json"),
                 panoptic_png_dir=str(d / "panoptic_examples"))
    pan = json.loads((d / "panoptic_examples.json").read_text())
    a = pan["annotations"][0]
    r = rows(tmp_path)["input_images/000000142238.jpg"]
    ids = read_panoptic_png(str(d / "panoptic_examples" / a["file_name"]))
    sem = decode_semantic_png(r["semantic_png"])
    inst = decode_instance_png(r["instance_png"])
    stuff = [s for s in a["segments_info"] if not COCO_PANOPTIC_ISTHING[COCO_ID_TO_INDEX[s["category_id"]]]]
    assert stuff
    for s in stuff:
        assert (sem[ids == s["id"]] == COCO_ID_TO_INDEX[s["category_id"]]).all()
        assert (inst[ids == s["id"]] == 0).all()
    assert r["num_instances"] > 0 and all(COCO_PANOPTIC_ISTHING[i["category"]]
                                          for i in r["instances"])
    assert verify(str(tmp_path), full=True).ok


def _synthetic(tmp_path, images: "list[tuple[str, int, int]]", anns: list) -> str:
    for name, w, h in images:
        if w:
            Image.new("RGB", (w, h), (10, 20, 30)).save(tmp_path / name)
    coco = {"images": [{"id": i + 1, "file_name": n, "width": abs(w) or 20, "height": h}
                       for i, (n, w, h) in enumerate(images)],
            "annotations": anns, "categories": [{"id": 1, "name": "person"},
                                                {"id": 18, "name": "dog"}]}
    p = tmp_path / "instances_train2017.json"
    p.write_text(json.dumps(coco))
    return str(p)


def test_overlap_order_missing_image_and_overwrite(tmp_path):
    big = {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 16, 12],
           "segmentation": [[0, 0, 16, 0, 16, 12, 0, 12]], "area": 192}
    small = {"id": 2, "image_id": 1, "category_id": 18, "iscrowd": 0, "bbox": [2, 2, 4, 4],
             "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]], "area": 16}
    ann = _synthetic(tmp_path, [("a.jpg", 20, 16), ("gone.jpg", 0, 16)], [small, big])
    out = tmp_path / "out"
    m = convert_coco(str(out), images_dir=str(tmp_path), instances_json=ann)
    assert list(m["splits"]) == ["train"] and m["totals"]["failed"] == 1
    got = rows(out)   # keys: the images folder's name / file name
    assert "gone.jpg" in got[f"{tmp_path.name}/gone.jpg"]["reason"]
    r = got[f"{tmp_path.name}/a.jpg"]
    inst, sem = decode_instance_png(r["instance_png"]), decode_semantic_png(r["semantic_png"])
    assert [i["phrase"] for i in r["instances"]] == ["person", "dog"]  # by decreasing area
    assert inst[4, 4] == 2 and sem[4, 4] == COCO_ID_TO_INDEX[18]  # the small one on top
    assert inst[10, 10] == 1 and sem[10, 10] == 0 and sem[15, 19] == SEMANTIC_IGNORE
    assert r["instances"][0]["area"] == int((inst == 1).sum())
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_coco(str(out), images_dir=str(tmp_path), instances_json=ann)
    convert_coco(str(out), images_dir=str(tmp_path), instances_json=ann, overwrite=True,
                 shard_size=1)
    assert len(load_manifest(str(out))["splits"]["train"]["shards"]) == 2
    assert verify(str(out), full=True).ok


def test_unknown_category_is_refused_before_any_shard_is_replaced(coco_tiny, tmp_path):
    import json

    from c2fmae_data.tools.coco import convert_coco
    from c2fmae_data.format.schema import FormatError
    from c2fmae_data.tools.verify import verify

    ann = json.loads((coco_tiny / "annotations" / "instances_val2017.json").read_text())
    out = tmp_path / "out"
    small = dict(ann, images=ann["images"][:3],
                 annotations=[a for a in ann["annotations"]
                              if a["image_id"] in {i["id"] for i in ann["images"][:3]}])
    good = tmp_path / "good.json"
    good.write_text(json.dumps(small))
    convert_coco(str(out), images_dir=str(coco_tiny / "val2017"), instances_json=str(good),
                 shard_size=1, split="val")
    before = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    small["annotations"][-1] = dict(small["annotations"][-1], category_id=12)  # 12: not in COCO
    bad = tmp_path / "bad_val.json"
    bad.write_text(json.dumps(small))
    with pytest.raises(FormatError, match="category id 12"):
        convert_coco(str(out), images_dir=str(coco_tiny / "val2017"), instances_json=str(bad),
                     shard_size=1, split="val", overwrite=True)
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == before
    assert verify(str(out)).ok
