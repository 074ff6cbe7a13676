"""``eval-labels --ilsvrc-boxes``: instance boxes against ImageNet's own localisation boxes.

``LOC_train_solution.csv`` / ``LOC_val_solution.csv`` (Kaggle ImageNet Object Localization
Challenge) have a header ``ImageId,PredictionString``; a PredictionString is a space-separated
sequence of groups ``wnid x0 y0 x1 y1`` (pixels of the original image). A prediction row is
matched by its key's file stem (``train/n01440764/n01440764_10026.JPEG`` -> ``n01440764_10026``).

* recall: the share of ILSVRC boxes matched by the row's instance boxes, one-to-one, greedy by
  highest IoU first, at box IoU >= 0.5;
* precision: the share of the class-prompted instances in the same matching that hit an ILSVRC
  box. The default chain prompts the detector only with the image's class lemmas, so every
  instance of a row is class-prompted; an instance without pixels (area 0) is not counted.
"""
from __future__ import annotations

import csv
import posixpath
from typing import Any

import numpy as np

from c2fmae_data.format.schema import STATUS_OK, FormatError
from c2fmae_data.label_eval.metrics import greedy_matches

IOU = 0.5


def read_ilsvrc_boxes(path: str) -> "dict[str, list[tuple[str, list[float]]]]":
    """ImageId -> [(wnid, [x0, y0, x1, y1]), ...]; a malformed line is one clear error."""
    out: dict[str, list] = {}
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise FileNotFoundError(f"--ilsvrc-boxes {path}: {e.strerror}") from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise FormatError(f"--ilsvrc-boxes {path}: header must be ImageId,PredictionString "
                              f"(got {header!r})")
        for n, row in enumerate(reader, 2):
            if not row:
                continue
            parts = row[1].split() if len(row) > 1 else []
            if len(row) != 2 or not parts or len(parts) % 5:
                raise FormatError(f"--ilsvrc-boxes {path} line {n}: expected ImageId and groups "
                                  f"of 'wnid x0 y0 x1 y1', got {row!r}")
            try:
                boxes = [(parts[i], [float(v) for v in parts[i + 1:i + 5]])
                         for i in range(0, len(parts), 5)]
            except ValueError:
                raise FormatError(f"--ilsvrc-boxes {path} line {n}: a box coordinate is not a "
                                  f"number: {row[1]!r}") from None
            out.setdefault(row[0].strip(), []).extend(boxes)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a (N x 4) and b (M x 4), x0 y0 x1 y1, continuous coordinates."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def key_stem(key: str) -> str:
    return posixpath.splitext(posixpath.basename(key))[0]


def ilsvrc_scores(rows, table: "dict[str, list]") -> "dict[str, Any]":
    """Recall / precision over the ok prediction ``rows`` whose key stem is in ``table``."""
    images = gt_boxes = pred_boxes = matched = 0
    per_image = []
    for r in rows:
        boxes = table.get(key_stem(r["key"]))
        if boxes is None or r["status"] != STATUS_OK:
            continue
        gt = np.array([b for _, b in boxes], np.float64)
        pred = np.array([m["box"] for m in r["instances"] or [] if int(m["area"]) > 0],
                        np.float64).reshape(-1, 4)
        tp = greedy_matches(box_iou(pred, gt), IOU) if len(pred) else 0
        images += 1
        gt_boxes += len(gt)
        pred_boxes += len(pred)
        matched += tp
        per_image.append({"key": r["key"], "ilsvrc_boxes": len(gt), "instances": len(pred),
                          "matched": tp})
    if not images:
        raise ValueError("no prediction row's key stem is an ImageId of --ilsvrc-boxes "
                         "(rows are matched by file stem, e.g. n01440764_10026)")
    return {"iou": IOU, "images": images, "ilsvrc_boxes": gt_boxes, "instances": pred_boxes,
            "matched": matched, "recall": matched / gt_boxes,
            "precision": matched / pred_boxes if pred_boxes else None,
            "images_without_instance": sum(im["instances"] == 0 for im in per_image)}
