"""Adaptive box-threshold walk, class-aware NMS and the per-image instance cap (paper III-A).

The detector is run ONCE per image and returns every candidate scoring at least the floor; the
walk then only filters those candidates, so lowering the threshold costs no extra forward pass.

Walk (docs/LABELING.md): for t in start, start-step, ..., floor (rounded to 1e-6):
    kept(t) = cap(NMS({boxes with score >= t}))
    stop at the first t with len(kept(t)) >= min_boxes; at the floor stop whatever remains.
The threshold finally used is recorded on the image (column ``threshold``). An image with no
candidate even at the floor gets an empty instance map with status ok.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ThresholdPolicy:
    start: float = 0.35        # Grounded-SAM's upper box threshold: confident boxes first
    floor: float = 0.15        # below this Grounding DINO mostly returns parts/background
    step: float = 0.05
    min_boxes: int = 1         # "enough" boxes: one object of the class is what ImageNet promises
    nms_iou: float = 0.5       # class-aware NMS IoU (torchvision.ops.batched_nms)
    max_instances: int = 20    # cap per image, highest scores kept

    def __post_init__(self):
        if not (0.0 <= self.floor <= self.start <= 1.0):
            raise ValueError(f"need 0 <= floor ({self.floor}) <= start ({self.start}) <= 1")
        if self.step <= 0 and self.start != self.floor:
            raise ValueError(f"step must be > 0, got {self.step}")
        if self.min_boxes < 1 or self.max_instances < 1:
            raise ValueError("min_boxes and max_instances must be >= 1")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must lie in (0, 1], got {self.nms_iou}")

    def steps(self) -> "list[float]":
        """The thresholds tried, in order."""
        out, k = [], 0
        while True:
            t = round(self.start - k * self.step, 6)
            if t <= self.floor + 1e-9:
                out.append(round(self.floor, 6))
                return out
            out.append(t)
            k += 1

    def to_json(self) -> dict:
        return asdict(self)


def class_aware_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray,
                    iou: float) -> np.ndarray:
    """Indices kept by NMS run separately per group, ordered by decreasing score (ties: index)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    import torch
    from torchvision.ops import batched_nms

    keep = batched_nms(torch.as_tensor(boxes, dtype=torch.float32),
                       torch.as_tensor(scores, dtype=torch.float32),
                       torch.as_tensor(groups, dtype=torch.int64), float(iou)).numpy()
    order = np.lexsort((keep, -np.asarray(scores, dtype=np.float64)[keep]))
    return keep[order].astype(np.int64)


def select(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray,
           policy: ThresholdPolicy) -> "tuple[np.ndarray, float]":
    """(indices kept, threshold used) for one image's candidates."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    groups = np.asarray(groups, dtype=np.int64).reshape(-1)
    kept = np.zeros(0, dtype=np.int64)
    for t in policy.steps():
        cand = np.flatnonzero(scores >= np.float32(t))
        kept = cand[class_aware_nms(boxes[cand], scores[cand], groups[cand], policy.nms_iou)]
        kept = kept[:policy.max_instances]
        if len(kept) >= policy.min_boxes:
            return kept, t
    return kept, policy.steps()[-1]
