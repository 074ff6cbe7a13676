"""Grounding DINO (transformers) as a batched, prompt-per-image box detector.

``detect`` runs the model once per batch and returns, per image, every query scoring at least
``floor`` (boxes in the pixels of the image it was given); ``thresholds.select`` then walks the
threshold down over these candidates. Scoring follows Grounding DINO's official COCO evaluation
(its ``PostProcessCocoGrounding`` normalises each category's positive map over the category's
tokens): a query's score for a phrase is the MEAN of its token probabilities over that phrase's
tokens, and the query takes the phrase with the highest mean (separator tokens '.', '?', [CLS],
[SEP], padding are ignored). The mean keeps one modifier word from carrying a multi-word phrase:
with "dog sled", a query on a dog scores high on "dog" and low on "sled", so its mean stays low
(docs/LABELING.md, "Phrase scoring").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from labeling.preflight import check_finite
from labeling.detection.prompts import Prompt


@dataclass
class Detections:
    """Candidates of one image: boxes x0,y0,x1,y1 in pixels, score, phrase index and NMS group."""
    boxes: np.ndarray                      # (N, 4) float32
    scores: np.ndarray                     # (N,) float32
    phrase_ids: np.ndarray                 # (N,) int64 index into phrases
    phrases: "tuple[str, ...]" = ()
    groups: np.ndarray = field(default=None)  # (N,) int64; default: all one class

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.phrase_ids = np.asarray(self.phrase_ids, dtype=np.int64).reshape(-1)
        if self.groups is None:
            self.groups = np.zeros(len(self.scores), dtype=np.int64)
        self.groups = np.asarray(self.groups, dtype=np.int64).reshape(-1)
        n = len(self.scores)
        if not (len(self.boxes) == len(self.phrase_ids) == len(self.groups) == n):
            raise ValueError("Detections fields differ in length")

    def phrase(self, i: int) -> str:
        return self.phrases[int(self.phrase_ids[i])] if self.phrases else ""


class Detector(Protocol):
    def detect(self, images: "Sequence[np.ndarray]", prompts: "Sequence[Prompt]",
               floor: float) -> "list[Detections]": ...


def phrase_spans(input_ids: "Sequence[int]", separators: "set[int]") -> "list[list[int]]":
    """Token positions of each phrase: maximal runs of non-separator tokens, in order."""
    spans, cur = [], []
    for pos, tok in enumerate(input_ids):
        if int(tok) in separators:
            if cur:
                spans.append(cur)
            cur = []
        else:
            cur.append(pos)
    if cur:
        spans.append(cur)
    return spans


def score_queries(probs: np.ndarray, spans: "Sequence[Sequence[int]]"
                  ) -> "tuple[np.ndarray, np.ndarray]":
    """Per query: (score, phrase index) from token probabilities ``probs`` (Q, L).

    A phrase's score is the mean of its tokens' probabilities; the query keeps its best phrase.
    """
    per_phrase = np.stack([probs[:, list(s)].mean(axis=1) for s in spans], axis=1)   # (Q, P)
    return per_phrase.max(axis=1).astype(np.float32), per_phrase.argmax(axis=1)


class GroundingDinoDetector:
    """Wraps ``GroundingDinoForObjectDetection`` + its image processor and tokenizer."""

    def __init__(self, model, image_processor, tokenizer, device: str = "cpu", dtype=None):
        import torch

        self.model, self.image_processor, self.tokenizer = model.eval(), image_processor, tokenizer
        self.device, self.dtype = device, dtype or torch.float32
        tok = tokenizer
        self.separators = {i for i in (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id,
                                       *tok.convert_tokens_to_ids([".", "?"])) if i is not None}
        self.max_text_len = int(getattr(model.config, "max_text_len", 256))

    def detect(self, images, prompts, floor):
        import torch

        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        pix = self.image_processor(images=[torch.from_numpy(np.require(im, requirements="CW")).permute(2, 0, 1)
                                           for im in images], return_tensors="pt")
        text = self.tokenizer([p.text for p in prompts], padding="longest", truncation=True,
                              max_length=self.max_text_len, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(pixel_values=pix["pixel_values"].to(self.device, self.dtype),
                             pixel_mask=pix["pixel_mask"].to(self.device),
                             input_ids=text["input_ids"].to(self.device),
                             attention_mask=text["attention_mask"].to(self.device),
                             token_type_ids=text["token_type_ids"].to(self.device))
        length = text["input_ids"].shape[1]
        probs = out.logits[:, :, :length].float().sigmoid().cpu().numpy()   # (B, Q, L)
        cxcywh = out.pred_boxes.float().cpu().numpy()                       # (B, Q, 4), 0..1
        check_finite("Grounding DINO", probs, cxcywh)   # NaN would only vanish below the floor
        results = []
        for b, (im, prompt) in enumerate(zip(images, prompts)):
            h, w = im.shape[:2]
            spans = phrase_spans(text["input_ids"][b].tolist(), self.separators)
            spans = spans[:len(prompt.phrases)]
            if not spans:
                results.append(Detections(np.zeros((0, 4)), [], [], prompt.phrases))
                continue
            scores, phrase_ids = score_queries(probs[b], spans)
            keep = np.flatnonzero(scores >= np.float32(floor))
            c = cxcywh[b][keep]
            boxes = np.stack([c[:, 0] - c[:, 2] / 2, c[:, 1] - c[:, 3] / 2,
                              c[:, 0] + c[:, 2] / 2, c[:, 1] + c[:, 3] / 2], axis=1)
            boxes = np.clip(boxes * np.array([w, h, w, h], np.float32), 0, [w, h, w, h])
            results.append(Detections(boxes, scores[keep], phrase_ids[keep], prompt.phrases))
        return results
