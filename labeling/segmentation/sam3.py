"""SAM 3 (transformers ``Sam3Model``) as one text-prompted instance labeler: detector AND segmenter.

Prompt format (docs/LABELING.md): SAM 3 takes one short noun phrase per forward, so every phrase
of the class prompt (``Prompt.phrases``: the cleaned lemmas, "tench", "tinca tinca") is its own
row; the vision encoder runs ONCE per image and its features are shared by that image's rows.
Text features are computed once per distinct phrase and cached (1000 classes x <= 3 lemmas).

Scores (SAM 3's own rule, as in transformers' ``post_process_instance_segmentation``):
``score = sigmoid(pred_logits) * sigmoid(presence_logit)``: the presence head says whether the
concept is in the image at all, the query logit which object it is. Every (row, query) with
score >= floor is a candidate; its phrase is the row's phrase. All phrases of a prompt name one
class, so the threshold walk's class-aware NMS merges the same object found by two synonyms.

Masks: the kept candidates' mask logits (a 288x288 grid for the 1008x1008 model input, whatever
the aspect ratio) are resized bilinearly (align_corners=False) to the image the labeler gave and
binarised at logit > 0 (probability > 0.5, transformers' ``mask_threshold``). Boxes are SAM 3's
own (normalised x0,y0,x1,y1 of the resized square) scaled to that image's pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from labeling.detection.grounding_dino import Detections
from labeling.detection.prompts import Prompt

TEXT_CACHE_MAX = 4096


@dataclass
class Sam3Detections(Detections):
    """Detections that carry their own low-resolution mask logits (row-aligned with ``boxes``)."""
    mask_logits: object = None      # torch.Tensor (N, h, w) on the model's device


def prompt_rows(prompts: "Sequence[Prompt]") -> "tuple[list[str], np.ndarray, np.ndarray]":
    """(phrase per row, image index per row, phrase index per row): one row per image x phrase."""
    texts, img, ph = [], [], []
    for b, p in enumerate(prompts):
        for j, phrase in enumerate(p.phrases):
            texts.append(phrase)
            img.append(b)
            ph.append(j)
    return texts, np.asarray(img, np.int64), np.asarray(ph, np.int64)


def candidate_scores(pred_logits, presence_logits):
    """(R, Q) SAM 3 instance scores: sigmoid(query logit) * sigmoid(presence logit of the row)."""
    return pred_logits.float().sigmoid() * presence_logits.float().sigmoid().reshape(-1, 1)


def select_candidates(scores: np.ndarray, boxes: np.ndarray, row_image: np.ndarray,
                      row_phrase: np.ndarray, sizes: "Sequence[tuple[int, int]]", floor: float
                      ) -> "list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]":
    """Per image: (flat candidate index r*Q+q, scores, boxes in pixels, phrase ids).

    ``scores`` (R, Q); ``boxes`` (R, Q, 4) normalised x0,y0,x1,y1; ``sizes`` (h, w) per image.
    Candidates are ordered by row then query (deterministic)."""
    r_count, q_count = scores.shape
    out = []
    for b, (h, w) in enumerate(sizes):
        rows = np.flatnonzero(row_image == b)
        sc = scores[rows]                                   # (r, Q)
        rr, qq = np.nonzero(sc >= np.float32(floor))
        flat = rows[rr] * q_count + qq
        bx = boxes[rows[rr], qq].astype(np.float32) * np.array([w, h, w, h], np.float32)
        bx = np.clip(bx, 0, [w, h, w, h]).astype(np.float32)
        out.append((flat.astype(np.int64), sc[rr, qq].astype(np.float32), bx,
                    row_phrase[rows[rr]].astype(np.int64)))
    return out


def masks_to_size(mask_logits, hw: "tuple[int, int]"):
    """(K, h, w) logits -> (K, H, W) bool tensor: bilinear resize, then logit > 0."""
    import torch.nn.functional as F

    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros((0, *hw), dtype=bool)
    up = F.interpolate(mask_logits[None].float(), size=tuple(hw), mode="bilinear",
                       align_corners=False)[0]
    return up > 0


class Sam3Instances:
    """``Sam3Model`` + ``Sam3ImageProcessor`` + CLIP tokenizer. ``detect`` returns
    ``Sam3Detections``; ``segment_detections`` returns the masks of the kept candidates."""

    def __init__(self, model, image_processor, tokenizer, device: str = "cpu", dtype=None):
        import torch

        self.model, self.image_processor, self.tokenizer = model.eval(), image_processor, tokenizer
        self.device, self.dtype = device, dtype or torch.float32
        self._text: dict = {}

    # -------------------------------------------------------------- text features (cached)
    def _text_features(self, texts: "list[str]"):
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        todo = sorted({t for t in texts if t not in self._text})
        if len(self._text) + len(todo) > TEXT_CACHE_MAX:
            self._text.clear()
            todo = sorted(set(texts))
        if todo:
            tok = self.tokenizer(todo, padding="max_length", max_length=32, truncation=True,
                                 return_tensors="pt")
            am = tok["attention_mask"].to(self.device)
            with torch.inference_mode():
                feats = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                     attention_mask=am).pooler_output
            for i, t in enumerate(todo):
                self._text[t] = (feats[i], am[i])
        feats = torch.stack([self._text[t][0] for t in texts])
        mask = torch.stack([self._text[t][1] for t in texts])
        return BaseModelOutputWithPooling(pooler_output=feats), mask

    # -------------------------------------------------------------- one batched forward
    def forward(self, images, prompts):
        """Raw outputs for ``len(images)`` images: (outputs, row_image, row_phrase)."""
        import torch
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        texts, row_image, row_phrase = prompt_rows(prompts)
        pix = self.image_processor(
            images=[torch.from_numpy(np.require(im, requirements="CW")).permute(2, 0, 1)
                    for im in images], return_tensors="pt")["pixel_values"]
        text, mask = self._text_features(texts)
        idx = torch.as_tensor(row_image, device=self.device)
        with torch.inference_mode():
            vis = self.model.get_vision_features(pixel_values=pix.to(self.device, self.dtype))
            shared = Sam3VisionEncoderOutput(
                fpn_hidden_states=tuple(t.index_select(0, idx) for t in vis.fpn_hidden_states),
                fpn_position_encoding=tuple(t.index_select(0, idx)
                                            for t in vis.fpn_position_encoding))
            out = self.model(vision_embeds=shared, text_embeds=text, attention_mask=mask)
        return out, row_image, row_phrase

    def detect(self, images, prompts, floor) -> "list[Sam3Detections]":
        import torch

        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        if any(not p.phrases for p in prompts):
            raise ValueError("every prompt needs at least one phrase for SAM 3")
        out, row_image, row_phrase = self.forward(images, prompts)
        scores = candidate_scores(out.pred_logits, out.presence_logits).cpu().numpy()
        boxes = out.pred_boxes.float().cpu().numpy()
        sizes = [im.shape[:2] for im in images]
        picked = select_candidates(scores, boxes, row_image, row_phrase, sizes, floor)
        flat_masks = out.pred_masks.flatten(0, 1)                 # (R*Q, h, w), on device
        dets = []
        for (flat, sc, bx, ph), prompt in zip(picked, prompts):
            sel = flat_masks.index_select(0, torch.as_tensor(flat, device=flat_masks.device))
            dets.append(Sam3Detections(bx, sc, ph, prompt.phrases, mask_logits=sel))
        return dets

    def segment_detections(self, images, dets, kept) -> "list[np.ndarray]":
        """Bool masks (len(k), H, W) per image; images of one size share one resize call."""
        import torch

        out: list = [None] * len(images)
        by_size: dict = {}
        for i, im in enumerate(images):
            by_size.setdefault(tuple(im.shape[:2]), []).append(i)
        for hw, idx in by_size.items():
            parts = [dets[i].mask_logits.index_select(
                0, torch.as_tensor(np.asarray(kept[i], np.int64),
                                   device=dets[i].mask_logits.device)) for i in idx]
            masks = masks_to_size(torch.cat(parts), hw).cpu().numpy()
            start = 0
            for i, p in zip(idx, parts):
                out[i] = masks[start:start + len(p)]
                start += len(p)
        return out

