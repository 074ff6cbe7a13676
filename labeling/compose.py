"""Compose one instance-id map from overlapping masks, with exact, documented rules.

1. Paint: masks are painted in increasing score order, so where masks overlap the pixel goes to
   the HIGHER-scoring detection (equal scores: the earlier detection wins). The painted map holds
   detection index + 1, 0 = background.
2. (The labeler may crop padding and resize this map to the source size, nearest neighbour.)
3. Finalize: areas are counted on the final map; detections left with zero pixels are dropped;
   the rest get ids 1..K by decreasing area (equal areas: higher score, then earlier detection).
   Boxes are the detector boxes in source pixels; ``area`` is the pixel count of the id.
4. Category: an instance's COCO category is the COCO-panoptic *thing* class that covers most of its
   pixels in the semantic map (ties: the smaller index), provided it covers at least half of them;
   otherwise -1 (the semantic model saw no COCO thing there, e.g. a jellyfish).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from c2fmae_data.format.categories import COCO_PANOPTIC_ISTHING
from c2fmae_data.format.schema import MAX_STORED_INSTANCES

_THING = np.zeros(256, dtype=bool)
_THING[:len(COCO_PANOPTIC_ISTHING)] = COCO_PANOPTIC_ISTHING


def paint(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(N, H, W) bool masks -> (H, W) int32 map of detection index + 1 (0 = none)."""
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if masks.ndim != 3 or len(masks) != len(scores):
        raise ValueError(f"masks {masks.shape} do not match {len(scores)} scores")
    out = np.zeros(masks.shape[1:], dtype=np.int32)
    # lexsort: primary key score ascending, then index descending -> earlier wins ties
    order = np.lexsort((-np.arange(len(scores)), scores))
    for i in order:
        out[masks[i]] = i + 1
    return out


def finalize(painted: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
             phrases: "Sequence[str]", categories: "Sequence[int] | None" = None
             ) -> "tuple[np.ndarray, list[dict]]":
    """Painted map -> (uint16 id map, instance metadata rows) following the rules above."""
    painted = np.asarray(painted)
    n = len(scores)
    counts = np.bincount(painted.ravel(), minlength=n + 1)
    if len(counts) > n + 1:
        raise ValueError(f"painted map holds index {len(counts) - 1} but only {n} detections")
    alive = [i for i in range(n) if counts[i + 1] > 0]
    alive.sort(key=lambda i: (-int(counts[i + 1]), -float(scores[i]), i))
    alive = alive[:MAX_STORED_INSTANCES]
    lut = np.zeros(n + 1, dtype=np.uint16)
    rows = []
    for new_id, i in enumerate(alive, 1):
        lut[i + 1] = new_id
        rows.append({"id": new_id, "box": [float(v) for v in np.asarray(boxes[i]).reshape(4)],
                     "score": float(scores[i]), "phrase": str(phrases[i]),
                     "category": int(categories[i]) if categories is not None else -1,
                     "area": int(counts[i + 1])})
    return lut[painted], rows


def compose(masks: np.ndarray, boxes: np.ndarray, scores: np.ndarray, phrases: "Sequence[str]"
            ) -> "tuple[np.ndarray, list[dict]]":
    """paint + finalize at the masks' own size."""
    return finalize(paint(masks, scores), boxes, scores, phrases)


def assign_categories(ids: np.ndarray, semantic: np.ndarray, rows: "list[dict]",
                      min_share: float = 0.5) -> "list[dict]":
    """Rule 4: set each row's ``category`` from the semantic map (same size as ``ids``)."""
    if not rows:
        return rows
    ids = np.asarray(ids).ravel().astype(np.int64)
    sem = np.asarray(semantic).ravel().astype(np.int64)
    if ids.shape != sem.shape:
        raise ValueError(f"instance map {ids.shape} and semantic map {sem.shape} differ in size")
    k = len(rows)
    sel = (ids > 0) & _THING[sem]
    votes = np.bincount(ids[sel] * 256 + sem[sel], minlength=(k + 1) * 256).reshape(-1, 256)
    for r in rows:
        v = votes[r["id"]]
        best = int(v.argmax())
        r["category"] = best if v[best] > 0 and v[best] >= min_share * r["area"] else -1
    return rows
