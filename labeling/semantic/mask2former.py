"""133-class COCO-panoptic semantic maps from Mask2Former (default) or OneFormer.

The paper uses SEEM-L; SEEM needs a git-only detectron2 fork, so the default is Mask2Former
trained on COCO panoptic (same 133 classes). The model's label space (``config.id2label``) is
mapped to the contiguous 0..132 order of ``c2fmae_data.format.categories`` BY NAME (docs/LABELING.md):
  1. exact match after lower-casing, '_' and '-' -> ' ' and collapsing spaces;
  2. otherwise match on the base name, i.e. with the suffixes 'merged', 'other' and 'stuff'
     stripped repeatedly from both sides ('sky-other-merged', 'sky_other', 'sky' all meet);
  3. a class still unmatched is refused (``UnmappedClassesError``, naming it) unless it is
     listed in ``drop_classes`` as deliberately dropped; a dropped class maps to 255 (unlabeled).
Input size: the COCO-evaluation size (short side 800, long side at most 1333, aspect ratio kept;
``COCO_EVAL_SIZE``) that Mask2Former/OneFormer are evaluated at, not the hub preprocessor's
384x384 squash (which distorts the aspect ratio and leaves a 96x96 mask grid); ``size=None`` keeps
the processor's own size. Per pixel: score_c = sum_q softmax(class_q)[c] * sigmoid(mask_q)
(Mask2Former's semantic inference), computed at the resolution the model saw, arg-maxed, then
resized to the image with nearest neighbour.
"""
from __future__ import annotations

import functools
from typing import Protocol, Sequence

import numpy as np

from c2fmae_data.format.categories import COCO_PANOPTIC_NAMES, SEMANTIC_IGNORE

from labeling.preflight import NonFiniteOutputError

_SUFFIXES = (" merged", " other", " stuff")
#: Mask2Former's / OneFormer's COCO evaluation input size (their configs: MIN_SIZE_TEST 800,
#: MAX_SIZE_TEST 1333), in the image processors' ``size`` form
COCO_EVAL_SIZE = {"shortest_edge": 800, "longest_edge": 1333}


def parse_semantic_size(text: "str | None") -> "dict | None":
    """``coco`` (default) -> COCO_EVAL_SIZE; ``processor`` -> None (the processor's own size);
    ``SHORT,LONG`` -> that aspect-keeping size."""
    if text in (None, "", "coco"):
        return dict(COCO_EVAL_SIZE)
    if text == "processor":
        return None
    try:
        short, long = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"semantic size {text!r}: expected coco, processor or SHORT,LONG") from None
    if not 0 < short <= long:
        raise ValueError(f"semantic size {text!r}: need 0 < SHORT <= LONG")
    return {"shortest_edge": short, "longest_edge": long}


class SemanticModel(Protocol):
    def predict(self, images: "Sequence[np.ndarray]") -> "list[np.ndarray]": ...


def normalize_name(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def base_name(name: str) -> str:
    n = normalize_name(name)
    changed = True
    while changed:
        changed = False
        for s in _SUFFIXES:
            if n.endswith(s):
                n, changed = n[: -len(s)], True
    return n


@functools.lru_cache(maxsize=1)
def _official_lookup() -> "tuple[dict[str, int], dict[str, int]]":
    exact = {normalize_name(n): i for i, n in enumerate(COCO_PANOPTIC_NAMES)}
    base: dict[str, int] = {}
    for i, n in enumerate(COCO_PANOPTIC_NAMES):
        b = base_name(n)
        if b in base:
            raise AssertionError(f"base name {b!r} is ambiguous in the official list")
        base[b] = i
    return exact, base


class UnmappedClassesError(ValueError):
    """A semantic model names classes outside the 133 COCO-panoptic classes."""


def label_lut(id2label: "dict", drop_classes: "Sequence[str]" = ()) -> np.ndarray:
    """uint8 lookup: model class id -> contiguous 0..132, or 255 for a class in ``drop_classes``.

    Length = max id + 1 (ids the model does not have map to 255). Every other class must map by
    name; otherwise ``UnmappedClassesError`` names them all, so a model with another label space
    is refused before labeling instead of silently painting its classes unlabeled."""
    exact, base = _official_lookup()
    ids = {int(k): v for k, v in id2label.items()}
    dropped = {normalize_name(n) for n in drop_classes}
    lut = np.full(max(ids) + 1 if ids else 0, SEMANTIC_IGNORE, dtype=np.uint8)
    unmapped = []
    for k, name in sorted(ids.items()):
        idx = exact.get(normalize_name(name), base.get(base_name(name)))
        if idx is not None:
            lut[k] = idx
        elif normalize_name(name) not in dropped:
            unmapped.append(f"{name!r} (id {k})")
    if unmapped:
        raise UnmappedClassesError(
            f"{len(unmapped)} semantic model class(es) do not map to the 133 COCO-panoptic classes: "
            f"{', '.join(unmapped)}; map them or list them as deliberately dropped (drop_classes)")
    return lut


def _resize_nearest(arr: np.ndarray, hw: "tuple[int, int]") -> np.ndarray:
    if arr.shape[:2] == tuple(hw):
        return arr
    import cv2

    return cv2.resize(arr, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


class Mask2FormerSemantic:
    """``Mask2FormerForUniversalSegmentation`` (or OneFormer, ``task="semantic"``)."""

    def __init__(self, model, processor, device: str = "cpu", dtype=None, oneformer=False,
                 drop_classes: "Sequence[str]" = (), size: "dict | None" = COCO_EVAL_SIZE):
        import torch

        self.model, self.processor = model.eval(), processor
        self.size = dict(size) if size else None
        self.device, self.dtype, self.oneformer = device, dtype or torch.float32, oneformer
        self.lut = label_lut(model.config.id2label, drop_classes)

    def _inputs(self, tensors):
        kw = {"size": self.size} if self.size else {}
        if self.oneformer:
            return self.processor(images=tensors, task_inputs=["semantic"] * len(tensors),
                                  return_tensors="pt", **kw)
        return self.processor(images=tensors, return_tensors="pt", **kw)

    def predict(self, images):
        import torch
        import torch.nn.functional as F

        if not images:
            return []
        inp = self._inputs([torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)
                            for im in images])
        kw = {"pixel_values": inp["pixel_values"].to(self.device, self.dtype),
              "pixel_mask": inp["pixel_mask"].to(self.device)}
        if self.oneformer:
            kw["task_inputs"] = inp["task_inputs"].to(self.device)
        with torch.inference_mode():
            out = self.model(**kw)
        hp, wp = inp["pixel_values"].shape[-2:]
        outs = []
        for b, im in enumerate(images):
            pm = inp["pixel_mask"][b].bool()
            hr, wr = int(pm.any(1).sum()), int(pm.any(0).sum())
            cls = out.class_queries_logits[b].float().softmax(-1)[:, :-1]          # (Q, C)
            masks = F.interpolate(out.masks_queries_logits[b:b + 1].float(), size=(hp, wp),
                                  mode="bilinear", align_corners=False)[0, :, :hr, :wr]
            score = torch.einsum("qc,qhw->chw", cls, masks.sigmoid())
            if not torch.isfinite(score).all():
                raise NonFiniteOutputError("the semantic model returned non-finite scores")
            label = score.argmax(0).cpu().numpy()
            sem = np.full(label.shape, SEMANTIC_IGNORE, np.uint8)   # ids past the table: 255
            known = label < len(self.lut)
            sem[known] = self.lut[label[known]]
            outs.append(_resize_nearest(sem.astype(np.uint8), im.shape[:2]))
        return outs
