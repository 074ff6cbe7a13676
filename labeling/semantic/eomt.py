"""133-class COCO-panoptic semantic maps from EoMT (transformers ``EomtForUniversalSegmentation``).

EoMT is a plain ViT whose last blocks also carry the mask queries: no pixel decoder, no
deformable attention. The hub's COCO-panoptic checkpoints (``tue-mps/coco_panoptic_eomt_*``)
take a square input: the image is resized so its LONGER side is the model size (640) and padded
bottom/right with zeros (``do_pad``), so every image of a batch has the same tensor shape and
nothing needs bucketing.

Per pixel (the same rule as Mask2Former's semantic inference, docs/LABELING.md):
``score_c = sum_q softmax(class_q)[c] * sigmoid(mask_q)`` with the no-object class dropped; the
mask logits are resized bilinearly to the padded input, the padding is cropped BEFORE the
arg-max, and the label map is resized to the image with nearest neighbour. Class ids go through
``semantic.label_lut`` (the one name mapping of the project). EoMT's COCO configs name their
classes in the contiguous COCO-panoptic order (things 0-79, stuff 80-132); a config that carries
only placeholder names (``LABEL_<i>``) for exactly 133 classes is given the official names in
that order before the mapping.
"""
from __future__ import annotations

import re

import numpy as np

from c2fmae_data.format.categories import COCO_PANOPTIC_NAMES, SEMANTIC_IGNORE

from labeling.semantic.mask2former import label_lut

_PLACEHOLDER = re.compile(r"^LABEL_\d+$")


def eomt_id2label(id2label: dict) -> dict:
    """The config's names, or the official 133 names when the config holds only placeholders."""
    names = {int(k): str(v) for k, v in id2label.items()}
    if len(names) == len(COCO_PANOPTIC_NAMES) and all(_PLACEHOLDER.match(v)
                                                      for v in names.values()):
        return dict(enumerate(COCO_PANOPTIC_NAMES))
    return names


def _nearest(arr: np.ndarray, hw: "tuple[int, int]") -> np.ndarray:
    if arr.shape[:2] == tuple(hw):
        return arr
    import cv2

    return cv2.resize(arr, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def valid_size(hw: "tuple[int, int]", side: int) -> "tuple[int, int]":
    """The resized (h, w) inside the padded ``side`` x ``side`` input (longer side = ``side``)."""
    from transformers.image_transforms import get_size_with_aspect_ratio

    return tuple(get_size_with_aspect_ratio(tuple(hw), side, side))


def semantic_from_queries(class_logits, mask_logits, padded_hw, valid_hw, lut: np.ndarray,
                          out_hw) -> np.ndarray:
    """One image: (Q, C+1) class logits, (Q, h, w) mask logits -> uint8 (out_hw) label map."""
    import torch.nn.functional as F

    cls = class_logits.float().softmax(-1)[:, :-1]                       # (Q, C)
    masks = F.interpolate(mask_logits[None].float(), size=tuple(padded_hw), mode="bilinear",
                          align_corners=False)[0, :, :valid_hw[0], :valid_hw[1]]
    label = (cls.T @ masks.sigmoid().flatten(1)).argmax(0).reshape(valid_hw).cpu().numpy()
    sem = np.full(label.shape, SEMANTIC_IGNORE, np.uint8)
    known = label < len(lut)
    sem[known] = lut[label[known]]
    return _nearest(sem, tuple(out_hw))


class EomtSemantic:
    """``EomtForUniversalSegmentation`` + ``EomtImageProcessor`` (resize longer side, pad)."""

    def __init__(self, model, processor, device: str = "cpu", dtype=None):
        import torch

        self.model, self.processor = model.eval(), processor
        self.device, self.dtype = device, dtype or torch.float32
        self.lut = label_lut(eomt_id2label(model.config.id2label))
        self.side = int(processor.size["longest_edge"] or processor.size["shortest_edge"])

    def predict(self, images):
        import torch

        if not images:
            return []
        inp = self.processor(images=[torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)
                                     for im in images], return_tensors="pt")
        with torch.inference_mode():
            out = self.model(pixel_values=inp["pixel_values"].to(self.device, self.dtype))
        padded = inp["pixel_values"].shape[-2:]
        return [semantic_from_queries(out.class_queries_logits[b], out.masks_queries_logits[b],
                                      padded, valid_size(im.shape[:2], self.side), self.lut,
                                      im.shape[:2])
                for b, im in enumerate(images)]
