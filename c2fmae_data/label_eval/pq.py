"""Panoptic quality (PQ, Kirillov et al. 2019) of ``eval-labels``, from the stored maps.

Segments of one image, on either side: every instance id whose metadata has a category (a thing
segment of that category), and, on pixels no such instance covers, one segment per *stuff*
class (index >= 80) of the semantic map. Pixels that are neither (no instance, a thing class or
255 in the semantic map) belong to no segment. GT pixels that belong to no segment are void.

Per image, a predicted and a GT segment of the same category match when IoU > 0.5 (unique by
construction), IoU taken without the predicted pixels on GT void. An unmatched prediction whose
pixels are more than half void is not a false positive. Per category
PQ = sum of matched IoU / (TP + FP/2 + FN/2); PQ is the mean over categories with TP + FP + FN > 0
(PQ_th / PQ_st over things / stuff). GT from ``convert-coco --instances`` has no stuff, so a
prediction's stuff segments are then void and ignored.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from c2fmae_data.format.categories import COCO_PANOPTIC_ISTHING, NUM_SEMANTIC_CLASSES

STUFF_BASE = 1 << 16          # segment id of stuff class c: STUFF_BASE + c (instance ids < 2^16)


def segments(ids: np.ndarray, meta: "list[dict]", sem: np.ndarray
             ) -> "tuple[np.ndarray, dict[int, int]]":
    """(segment id map, 0 = no segment; segment id -> category)."""
    cat = {int(m["id"]): int(m["category"]) for m in meta if int(m["category"]) >= 0}
    lut = np.zeros(int(ids.max()) + 1, np.int64)
    for i in cat:
        if i < len(lut):
            lut[i] = i
    seg = lut[ids]
    stuff = np.array([not t for t in COCO_PANOPTIC_ISTHING]
                     + [False] * (256 - NUM_SEMANTIC_CLASSES))   # 255 and unused values: none
    free = (seg == 0) & stuff[sem]
    seg[free] = STUFF_BASE + sem[free].astype(np.int64)
    cat.update({STUFF_BASE + c: c for c in np.unique(sem[free]).tolist()})
    return seg, cat


class PanopticQuality:
    """Accumulates per-category TP, FP, FN and the IoU sum over images."""

    def __init__(self):
        self.tp = np.zeros(NUM_SEMANTIC_CLASSES, np.int64)
        self.fp = np.zeros(NUM_SEMANTIC_CLASSES, np.int64)
        self.fn = np.zeros(NUM_SEMANTIC_CLASSES, np.int64)
        self.iou = np.zeros(NUM_SEMANTIC_CLASSES, np.float64)

    def add(self, gt: "tuple[np.ndarray, dict]", pred: "tuple[np.ndarray, dict]") -> None:
        (gs, gcat), (ps, pcat) = gt, pred
        pair, n = np.unique(gs.astype(np.int64) * (STUFF_BASE * 2) + ps, return_counts=True)
        inter = {(int(p // (STUFF_BASE * 2)), int(p % (STUFF_BASE * 2))): int(c)
                 for p, c in zip(pair, n)}
        g_area = {g: int(c) for g, c in zip(*np.unique(gs, return_counts=True)) if g}
        p_area = {p: int(c) for p, c in zip(*np.unique(ps, return_counts=True)) if p}
        matched_g, matched_p = set(), set()
        for (g, p), c in inter.items():
            if not g or not p or gcat[g] != pcat[p]:
                continue
            union = g_area[g] + p_area[p] - c - inter.get((0, p), 0)
            if c / union > 0.5:
                matched_g.add(g)
                matched_p.add(p)
                self.tp[gcat[g]] += 1
                self.iou[gcat[g]] += c / union
        for g in set(g_area) - matched_g:
            self.fn[gcat[g]] += 1
        for p in set(p_area) - matched_p:
            if inter.get((0, p), 0) <= 0.5 * p_area[p]:
                self.fp[pcat[p]] += 1

    def result(self) -> "dict[str, Any]":
        den = self.tp + 0.5 * self.fp + 0.5 * self.fn
        seen = den > 0
        pq = np.where(seen, self.iou / np.where(seen, den, 1), np.nan)
        thing = np.array(COCO_PANOPTIC_ISTHING)

        def mean(sel):
            return float(np.nanmean(pq[sel & seen])) if (sel & seen).any() else None

        return {"pq": mean(np.ones_like(thing)), "pq_things": mean(thing), "pq_stuff": mean(~thing),
                "categories": int(seen.sum()), "tp": int(self.tp.sum()), "fp": int(self.fp.sum()),
                "fn": int(self.fn.sum())}
