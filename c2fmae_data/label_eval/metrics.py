"""Label-quality metrics of ``c2fmae-data eval-labels``: instance mask AP/AR through pycocotools,
semantic mIoU / pixel accuracy / confusions over the 133 COCO-panoptic classes.

Instances are read from a row's ``instance_png`` (one binary mask per id 1..K) and its metadata
(``score`` is the detection score, ``category`` the COCO-panoptic index or -1). An instance whose
id paints no pixel (``area`` 0, fully covered by others) is skipped on both sides: an empty mask
can never be matched. Ground truth from ``convert-coco`` holds no crowd regions as instances
(they are semantic only), so every GT instance has ``iscrowd = 0``.

pycocotools (``COCOeval(gt, dt, "segm")``, standard parameters: IoU 0.50:0.05:0.95, maxDets
1/10/100, area ranges all/small/medium/large) is imported only when a metric is computed.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Iterable

import numpy as np

from c2fmae_data.format.categories import COCO_PANOPTIC_NAMES, NUM_SEMANTIC_CLASSES, SEMANTIC_IGNORE

UNLABELED = NUM_SEMANTIC_CLASSES       # confusion column of predicted 255 (no label) pixels
AGNOSTIC = 1                           # the one category id of the class-agnostic evaluation
STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
              "ar1", "ar10", "ar", "ar_small", "ar_medium", "ar_large")


class MissingDependency(ImportError):
    """pycocotools is needed and not installed."""


def mask_utils():
    """``pycocotools.mask``, or a one-line error saying how to get it."""
    try:
        from pycocotools import mask
    except ImportError:
        raise MissingDependency("eval-labels needs pycocotools for mask AP: "
                                "pip install pycocotools") from None
    return mask


# ----------------------------------------------------------------------------- instances
RLE_BATCH_BYTES = 64 << 20


def instance_rles(ids: np.ndarray, meta: "list[dict[str, Any]]") -> "list[dict[str, Any]]":
    """One entry per painted instance: ``rle`` (compressed COCO RLE), ``area``, ``score``,
    ``category`` (-1 when none)."""
    mu = mask_utils()
    keep = [m for m in meta if int(m["area"]) > 0]
    if not keep:
        return []
    # masks are stacked a batch at a time (~64 MB of uint8): up to 65535 instances per image
    batch = max(1, RLE_BATCH_BYTES // max(1, ids.size))
    rles = []
    for i in range(0, len(keep), batch):
        want = np.array([int(m["id"]) for m in keep[i:i + batch]], ids.dtype)
        rles += mu.encode(np.asfortranarray((ids[:, :, None] == want).astype(np.uint8)))
    return [{"rle": r, "area": int(m["area"]), "score": float(m["score"]),
             "category": int(m["category"])} for r, m in zip(rles, keep)]


class InstanceSet:
    """GT and predicted instances of the joined images, in COCO's annotation layout."""

    def __init__(self):
        self.images: list[dict[str, Any]] = []
        self.gt: list[dict[str, Any]] = []
        self.dt: list[dict[str, Any]] = []

    def add(self, image_id: int, width: int, height: int, gt: "list[dict]", dt: "list[dict]"):
        self.images.append({"id": image_id, "width": width, "height": height})
        for kind, insts, out in (("gt", gt, self.gt), ("dt", dt, self.dt)):
            for inst in insts:
                out.append({"id": len(out) + 1, "image_id": image_id, "iscrowd": 0,
                            "segmentation": inst["rle"], "area": inst["area"],
                            "bbox": [float(v) for v in mask_utils().toBbox(inst["rle"])],
                            "score": inst["score"], "category": inst["category"]})


def _coco(images, anns, cat_ids) -> Any:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):   # COCO() prints progress lines
        c = COCO()
        c.dataset = {"images": images, "annotations": anns,
                     "categories": [{"id": i, "name": str(i)} for i in cat_ids]}
        c.createIndex()
    return c


def coco_eval(s: InstanceSet, *, per_category: bool = False,
              image_ids: "Iterable[int] | None" = None) -> Any:
    """A finished ``COCOeval`` (segm) over ``s``: class-agnostic (every instance category 1), or
    per COCO-panoptic category (category index + 1; instances with category -1 left out)."""
    mask_utils()
    from pycocotools.cocoeval import COCOeval

    def relabel(anns):
        if not per_category:
            return [dict(a, category_id=AGNOSTIC) for a in anns]
        return [dict(a, category_id=a["category"] + 1) for a in anns if a["category"] >= 0]

    cats = list(range(1, NUM_SEMANTIC_CLASSES + 1)) if per_category else [AGNOSTIC]
    gt, dt = _coco(s.images, relabel(s.gt), cats), _coco(s.images, relabel(s.dt), cats)
    ev = COCOeval(gt, dt, iouType="segm")
    if image_ids is not None:
        ev.params.imgIds = sorted(image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def stats_dict(ev) -> "dict[str, float | None]":
    """COCOeval's 12 summary numbers by name; -1 (no GT instance) becomes None."""
    return {n: (float(v) if v >= 0 else None) for n, v in zip(STAT_NAMES, ev.stats)}


def per_category_ap(ev, s: InstanceSet) -> "list[dict[str, Any]]":
    """AP (IoU .50:.95, all areas, 100 detections) of every category that has a GT instance."""
    prec = ev.eval["precision"]            # [T, R, K, A, M]
    gt_n = np.bincount([a["category"] for a in s.gt if a["category"] >= 0],
                       minlength=NUM_SEMANTIC_CLASSES)
    dt_n = np.bincount([a["category"] for a in s.dt if a["category"] >= 0],
                       minlength=NUM_SEMANTIC_CLASSES)
    out = []
    for k, cat_id in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, -1]
        c = int(cat_id) - 1
        if gt_n[c] == 0:
            continue
        out.append({"category": c, "name": COCO_PANOPTIC_NAMES[c],
                    "ap": float(p[p > -1].mean()) if (p > -1).any() else None,
                    "gt_instances": int(gt_n[c]), "pred_instances": int(dt_n[c])})
    return out


def image_instance_f1(gt: "list[dict]", dt: "list[dict]", iou: float = 0.5) -> float:
    """F1 of a greedy one-to-one match at mask IoU >= ``iou`` (highest IoU first); 1.0 when
    both sides are empty. Used to rank images for the panels."""
    if not gt and not dt:
        return 1.0
    if not gt or not dt:
        return 0.0
    ious = np.asarray(mask_utils().iou([d["rle"] for d in dt], [g["rle"] for g in gt],
                                       [0] * len(gt)), np.float64).reshape(len(dt), len(gt))
    tp = greedy_matches(ious, iou)
    return 2 * tp / (len(gt) + len(dt))


def greedy_matches(ious: np.ndarray, thr: float) -> int:
    """Pairs of a one-to-one matching that takes the highest remaining IoU >= thr first."""
    ious = ious.copy()
    n = 0
    while ious.size and ious.max() >= thr:
        i, j = np.unravel_index(int(ious.argmax()), ious.shape)
        ious[i, :] = -1
        ious[:, j] = -1
        n += 1
    return n


# ----------------------------------------------------------------------------- semantic
class Confusion:
    """Pixel counts [GT class 0..132] x [predicted class 0..132, 133 = unlabeled (255)].
    GT pixels that are 255 (unlabeled) are ignored."""

    def __init__(self):
        self.m = np.zeros((NUM_SEMANTIC_CLASSES, NUM_SEMANTIC_CLASSES + 1), np.int64)

    def add(self, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Count one image; returns its own confusion matrix."""
        g = gt.ravel().astype(np.int64)
        p = pred.ravel().astype(np.int64)
        keep = g != SEMANTIC_IGNORE
        g, p = g[keep], p[keep]
        p[p >= NUM_SEMANTIC_CLASSES] = UNLABELED
        one = np.bincount(g * (NUM_SEMANTIC_CLASSES + 1) + p,
                          minlength=self.m.size).reshape(self.m.shape)
        self.m += one
        return one


def semantic_metrics(m: np.ndarray, top: int = 10) -> "dict[str, Any]":
    """mIoU over the classes present in GT or prediction (IoU = TP / (TP + FP + FN), a class
    absent from both is excluded), pixel accuracy over GT-labeled pixels, the ``top`` largest
    off-diagonal cells as confusions."""
    n = NUM_SEMANTIC_CLASSES
    tp = np.diag(m[:, :n]).astype(np.float64)
    gt_px = m.sum(1).astype(np.float64)
    pred_px = m[:, :n].sum(0).astype(np.float64)
    union = gt_px + pred_px - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    total = float(gt_px.sum())
    off = m.copy()
    off[np.arange(n), np.arange(n)] = 0
    order = np.argsort(-off.ravel(), kind="stable")[:top]
    conf = []
    for flat in order:
        g, p = divmod(int(flat), n + 1)
        if off[g, p] == 0:
            break
        conf.append({"gt": COCO_PANOPTIC_NAMES[g],
                     "pred": "unlabeled" if p == UNLABELED else COCO_PANOPTIC_NAMES[p],
                     "pixels": int(off[g, p]), "share": float(off[g, p]) / total})
    return {"miou": float(np.nanmean(iou)) if present.any() else None,
            "pixel_acc": float(tp.sum()) / total if total else None,
            "classes": int(present.sum()), "labeled_pixels": int(total),
            "unlabeled_pred_share": float(m[:, UNLABELED].sum()) / total if total else None,
            "per_class_iou": {COCO_PANOPTIC_NAMES[c]: float(iou[c])
                              for c in np.nonzero(present)[0]},
            "confusions": conf}


def pixel_accuracy(one: np.ndarray) -> float:
    """Pixel accuracy of one image's confusion matrix (1.0 when GT labels no pixel)."""
    total = one.sum()
    return float(np.trace(one[:, :NUM_SEMANTIC_CLASSES]) / total) if total else 1.0
