"""``c2fmae-data eval-labels``: exact metric values on synthetic datasets written with the real
shard writer (rectangles, so every IoU is known by hand), a direct pycocotools cross-check, the
real coco-tiny GT against itself, ILSVRC box recall, panels and the CLI's error paths."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests._datasets import canonical_ids, png_bytes, record, write_dataset
from c2fmae_data.cli import main
from c2fmae_data.label_eval.run import evaluate_labels

pytest.importorskip("pycocotools")

W, H = 64, 48
RW, RH = 20, 16                       # rectangle size: eroding 1 px per side gives IoU 252/320
STUFF = 100                           # semantic class of the background
# per image: three rectangles (x, y, COCO-panoptic thing index)
RECTS = [[(2, 4, 0), (24, 4, 2), (44, 26, 16)], [(2, 26, 0), (22, 8, 0), (44, 4, 2)],
         [(4, 6, 16), (26, 28, 2), (44, 6, 0)], [(0, 30, 2), (22, 10, 16), (42, 28, 0)]]
RECALL_GRID = np.linspace(0, 1, 101)  # COCOeval's 101 recall points


def maps(rects, erode=(), drop=()):
    """Instance and semantic maps of one image; rectangles in ``erode`` lose 1 px per side,
    those in ``drop`` are left out of the instance map (the semantic map keeps them)."""
    inst = np.zeros((H, W), np.uint16)
    sem = np.full((H, W), STUFF, np.uint8)
    sem[0] = 255                      # GT unlabeled row: ignored
    for j, (x, y, c) in enumerate(rects):
        sem[y:y + RH, x:x + RW] = c
        if j in drop:
            continue
        e = 1 if j in erode else 0
        inst[y + e:y + RH - e, x + e:x + RW - e] = j + 1
    return canonical_ids(inst), sem


def rows(erode=None, drop=None, low_score=(), threshold=0.3, key_prefix="val2017"):
    """One record per image of RECTS; ``erode``/``drop``: {image: set of rectangle indices};
    instances smaller than a full rectangle get score ``0.5`` when ``low_score``."""
    recs = []
    for i, rects in enumerate(RECTS):
        inst, sem = maps(rects, (erode or {}).get(i, ()), (drop or {}).get(i, ()))
        rec = record(f"{key_prefix}/img_{i:02d}.png", png_bytes(np.full((4, 4, 3), i, np.uint8)),
                     inst, sem, wnid="")
        for m in rec["instances"]:
            if low_score and m["area"] < RW * RH:
                m["score"] = 0.5
        rec["threshold"] = threshold(i) if callable(threshold) else threshold
        recs.append(rec)
    return recs


def dataset(tmp_path, name, recs, shards=2):
    root = tmp_path / name
    write_dataset(root, recs, split="val", shards=shards)
    return str(root)


@pytest.fixture
def gt(tmp_path):
    return dataset(tmp_path, "gt", rows(threshold=None), shards=1)


def test_gt_against_itself_is_perfect(gt):
    rep, _ = evaluate_labels(gt, gt)
    ins, sem = rep["instance"], rep["semantic"]
    assert ins["images"] == 4 and ins["gt_instances"] == ins["pred_instances"] == 12
    for k in ("ap", "ap50", "ap75", "ar", "category_ap"):
        assert ins[k] == pytest.approx(1.0)
    assert {c["name"] for c in ins["per_category"]} == {"person", "car", "dog"}
    assert sem["miou"] == pytest.approx(1.0) and sem["pixel_acc"] == 1.0
    assert sem["confusions"] == []
    assert sem["labeled_pixels"] == 4 * (H - 1) * W            # the 255 row is ignored
    pan = rep["panoptic"]
    assert pan["pq"] == pan["pq_things"] == pan["pq_stuff"] == pytest.approx(1.0)
    assert (pan["tp"], pan["fp"], pan["fn"], pan["categories"]) == (12 + 4, 0, 0, 4)  # + road


def test_deleting_a_third_of_instances(gt, tmp_path):
    # 4 of 12 GT instances missing, the rest exact: recall 8/12 at every IoU threshold,
    # precision 1 up to it, so AP = (recall points <= 2/3) / 101 = 67/101
    pred = dataset(tmp_path, "pred", rows(drop={0: {0}, 1: {1, 2}, 3: {0}}))
    rep, _ = evaluate_labels(pred, gt)
    ins = rep["instance"]
    assert ins["pred_instances"] == 8
    assert ins["ap"] == pytest.approx(67 / 101) and ins["ap50"] == pytest.approx(67 / 101)
    assert ins["ar"] == pytest.approx(8 / 12)
    assert np.sum(RECALL_GRID <= 8 / 12) == 67
    assert rep["semantic"]["miou"] == pytest.approx(1.0)       # semantic maps untouched
    # a deleted instance leaves thing-class pixels without an instance: no segment, a missed one
    assert (rep["panoptic"]["fp"], rep["panoptic"]["fn"]) == (0, 4)


def test_eroding_a_third_of_instances(gt, tmp_path):
    # 4 of 12 instances eroded by 1 px (IoU 18*14 / (20*16) = 0.7875) and scored lower:
    # IoU thresholds .50...75 (6 of 10) match all 12 -> AP 1; .80...95 (4) match the 8 exact
    # ones ranked first -> AP 67/101, recall 2/3
    iou = (RW - 2) * (RH - 2) / (RW * RH)
    assert 0.75 < iou < 0.8
    pred = dataset(tmp_path, "pred", rows(erode={0: {1}, 2: {0, 2}, 3: {1}}, low_score=True))
    ins = evaluate_labels(pred, gt)[0]["instance"]
    assert ins["ap"] == pytest.approx((6 * 1 + 4 * 67 / 101) / 10)
    assert ins["ap50"] == pytest.approx(1.0) and ins["ap75"] == pytest.approx(1.0)
    assert ins["ar"] == pytest.approx((6 * 1 + 4 * 8 / 12) / 10)
    # PQ: every segment still matches (IoU > 0.5); person 1 of 5 eroded, car 1 of 4, dog 2 of
    # 3, the road (stuff) segments are unchanged
    pq = [(4 + iou) / 5, (3 + iou) / 4, (1 + 2 * iou) / 3]
    pan = evaluate_labels(pred, gt)[0]["panoptic"]
    assert pan["pq_things"] == pytest.approx(sum(pq) / 3)
    assert pan["pq"] == pytest.approx((sum(pq) + 1) / 4) and pan["pq_stuff"] == pytest.approx(1)
    assert (pan["tp"], pan["fp"], pan["fn"]) == (16, 0, 0)


def test_relabeling_a_known_share_of_pixels(gt, tmp_path):
    recs = rows()
    from c2fmae_data.format.schema import decode_semantic_png, encode_semantic_png

    gt_sem = [decode_semantic_png(r["semantic_png"]) for r in rows()]
    moved = 0
    for r, s in zip(recs, gt_sem):
        s = s.copy()
        sel = np.zeros_like(s, bool)
        sel[40:, :] = s[40:, :] == STUFF      # bottom rows of background -> "wall" (index 131)
        moved += int(sel.sum())
        s[sel] = 131
        s[0] = 7                              # GT ignores row 0: whatever is predicted there
        r["semantic_png"] = encode_semantic_png(s)
    rep = evaluate_labels(dataset(tmp_path, "pred", recs), gt)[0]
    total = sum(int((s != 255).sum()) for s in gt_sem)
    stuff = sum(int((s == STUFF).sum()) for s in gt_sem)
    # IoU(stuff) = (stuff - moved) / stuff; IoU(wall) = 0 (predicted only); things stay 1
    expect = (3 * 1.0 + (stuff - moved) / stuff + 0.0) / 5
    sem = rep["semantic"]
    assert sem["classes"] == 5
    assert sem["miou"] == pytest.approx(expect)
    assert sem["pixel_acc"] == pytest.approx(1 - moved / total)
    top = sem["confusions"][0]
    assert (top["gt"], top["pred"], top["pixels"]) == ("road", "wall-other-merged", moved)
    assert len(sem["confusions"]) == 1
    assert rep["instance"]["ap"] == pytest.approx(1.0)


def test_ap_matches_direct_pycocotools(tmp_path):
    """Overlapping blobs, random scores and shifted predictions: our AP equals COCOeval run by
    hand on masks built here from the same numpy maps."""
    from tests._datasets import blob_masks
    from pycocotools import mask as mu
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    g_recs, p_recs, gts, dts = [], [], [], []
    for i in range(5):
        g_inst, sem = blob_masks(W, H, n=6, seed=i)
        p_inst = canonical_ids(np.roll(np.where(rng.random((H, W)) < 0.05, 0, g_inst),
                                       int(rng.integers(-3, 4)), axis=1))
        data = png_bytes(np.full((4, 4, 3), i, np.uint8))
        g, p = record(f"v/{i}.png", data, g_inst, sem), record(f"v/{i}.png", data, p_inst, sem)
        for m in p["instances"]:
            m["score"] = float(rng.random())
        g_recs.append(g)
        p_recs.append(p)
        for rec, ids, out in ((g, g_inst, gts), (p, p_inst, dts)):
            for m in rec["instances"]:
                mk = np.asfortranarray((ids == m["id"]).astype(np.uint8))
                if mk.any():
                    out.append({"image_id": i + 1, "category_id": 1, "segmentation": mu.encode(mk),
                                "area": float(mk.sum()), "iscrowd": 0, "id": len(out) + 1,
                                "score": m["score"], "bbox": list(mu.toBbox(mu.encode(mk)))})
    coco_gt = COCO()
    coco_gt.dataset = {"images": [{"id": i + 1, "width": W, "height": H} for i in range(5)],
                       "annotations": gts, "categories": [{"id": 1, "name": "object"}]}
    coco_gt.createIndex()
    ev = COCOeval(coco_gt, coco_gt.loadRes(dts), iouType="segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    rep = evaluate_labels(dataset(tmp_path, "p", p_recs), dataset(tmp_path, "g", g_recs))[0]
    assert 0.05 < ev.stats[0] < 0.95                               # a non-trivial case
    assert rep["instance"]["ap"] == pytest.approx(ev.stats[0])
    assert rep["instance"]["ap50"] == pytest.approx(ev.stats[1])
    assert rep["instance"]["ar"] == pytest.approx(ev.stats[8])


def test_by_threshold_and_sha256_join(gt, tmp_path):
    # images 0, 1 at threshold 0.2 are exact; images 2, 3 at 0.35 miss one instance each.
    # Keys differ from GT (train/ instead of val2017/): rows join by source_sha256.
    pred = dataset(tmp_path, "pred", rows(drop={2: {0}, 3: {2}}, key_prefix="train",
                                          threshold=lambda i: 0.2 if i < 2 else 0.35))
    rep, _ = evaluate_labels(pred, gt)
    assert rep["join"]["by_sha256"] == 4 and rep["join"]["by_key"] == 0
    lv = {t["threshold"]: t for t in rep["by_threshold"]}
    assert set(lv) == {"0.200", "0.350"}
    assert (lv["0.200"]["images"], lv["0.200"]["pred_instances"], lv["0.200"]["ap"]) == (2, 6, 1.0)
    assert (lv["0.350"]["images"], lv["0.350"]["gt_instances"]) == (2, 6)
    assert lv["0.350"]["pred_instances"] == 4
    assert lv["0.350"]["ap"] == pytest.approx(np.sum(RECALL_GRID <= 4 / 6) / 101)


def test_real_coco_tiny_gt_against_itself(coco_tiny, tmp_path):
    from c2fmae_data.tools.coco import convert_coco

    out = str(tmp_path / "gt")
    convert_coco(out, images_dir=str(coco_tiny / "val2017"),
                 instances_json=str(coco_tiny / "annotations" / "instances_val2017.json"))
    rep, _ = evaluate_labels(out, out)
    assert rep["instance"]["images"] == 50 and rep["instance"]["gt_instances"] > 100
    assert rep["instance"]["ap"] == pytest.approx(1.0)
    assert rep["instance"]["category_ap"] == pytest.approx(1.0)
    assert rep["semantic"]["miou"] == pytest.approx(1.0)


def test_ilsvrc_box_recall_and_precision(tmp_path, capsys):
    # keys train/img_0i.png -> ImageIds img_0i. Rectangles of image 0: [2,4,22,20],
    # [24,4,44,20], [44,26,64,42]; of image 1: [2,26,22,42], [22,8,42,24], [44,4,64,20].
    pred = dataset(tmp_path, "pred", rows(key_prefix="train"))
    csv = tmp_path / "LOC_train_solution.csv"
    csv.write_text("ImageId,PredictionString\n"
                   "img_00,n01440764 2 4 22 20 n01440764 24 4 34 20 \n"  # IoU 1; IoU 0.5: hit
                   "img_01,n01440764 22 8 42 30 n01440764 0 0 10 10\n"    # 320/440 hit; miss
                   "img_99,n01440764 0 0 5 5\n")                           # not in the dataset
    rc = main(["eval-labels", pred, "--ilsvrc-boxes", str(csv), "--json", str(tmp_path / "r.json")])
    assert rc == 0
    il = json.loads((tmp_path / "r.json").read_text())["ilsvrc"]
    assert (il["images"], il["ilsvrc_boxes"], il["instances"], il["matched"]) == (2, 4, 6, 3)
    assert il["recall"] == pytest.approx(3 / 4) and il["precision"] == pytest.approx(3 / 6)
    assert "recall 75.0%" in capsys.readouterr().out


def test_table_json_and_worst_first_panels(gt, tmp_path, capsys):
    pred = dataset(tmp_path, "pred", rows(drop={2: {0, 1, 2}, 1: {0}}))
    out = tmp_path / "panels"
    rc = main(["eval-labels", pred, gt, "--json", str(tmp_path / "r.json"), "--panels", str(out),
               "--n-panels", "2"])
    text = capsys.readouterr().out
    assert rc == 0 and "class-agnostic" in text and "mIoU 100.0%" in text
    rep = json.loads((tmp_path / "r.json").read_text())
    assert set(rep) >= {"instance", "semantic", "by_threshold"}
    assert 0 < rep["instance"]["ap"] < 1
    files = sorted(p.name for p in out.iterdir())
    assert files == ["01-img_02.png", "02-img_01.png"]             # no instance left, then 1 of 3
    from PIL import Image

    assert Image.open(out / files[0]).size[0] > 2 * W


@pytest.mark.parametrize("case", ["not_dataset", "disjoint", "nothing_to_compare", "bad_csv",
                                  "json_folder"])
def test_cli_errors_exit_2_with_one_line(case, gt, tmp_path, capsys):
    if case == "not_dataset":
        argv = ["eval-labels", str(tmp_path), gt]
        word = "PRED_ROOT"
    elif case == "disjoint":
        other = [dict(r, source_sha256="f" * 64) for r in rows(key_prefix="other")]
        argv = ["eval-labels", dataset(tmp_path, "other", other), gt]
        word = "share no image"
    elif case == "nothing_to_compare":
        argv, word = ["eval-labels", gt], "--ilsvrc-boxes"
    elif case == "json_folder":
        argv, word = ["eval-labels", gt, gt, "--json", str(tmp_path / "no" / "r.json")], "--json"
    else:
        (tmp_path / "b.csv").write_text("ImageId,PredictionString\nimg_00,n0 1 2 3\n")
        argv, word = ["eval-labels", gt, "--ilsvrc-boxes", str(tmp_path / "b.csv")], "line 2"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0] and "Traceback" not in err[0]


def test_failed_prediction_rows_are_counted_not_scored(gt, tmp_path):
    from c2fmae_data.format.schema import failed_record

    recs = rows()
    recs[1] = failed_record(recs[1]["key"], "detector crashed",
                            source_sha256=recs[1]["source_sha256"])
    rep, _ = evaluate_labels(dataset(tmp_path, "pred", recs), gt)
    assert rep["join"]["pred_failed"] == 1 and rep["join"]["gt_unmatched"] == 0
    assert rep["instance"]["images"] == 3 and rep["instance"]["ap"] == pytest.approx(1.0)


def test_missing_pycocotools_is_one_line(gt, monkeypatch, capsys):
    import sys

    for name in ("pycocotools", "pycocotools.mask", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)      # import now raises ImportError
    assert main(["eval-labels", gt, gt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install pycocotools" in err[0]
