"""Deterministic fake detector / segmenter / semantic model behind the real interfaces.

Used by tests (scripted candidates give exact expectations) and by the pipeline benchmark
(``fake:<latency_ms>`` sleeps once per batch to emulate a model forward). By default their
output is a pure function of the image pixels, so reruns are bit-identical.
"""
from __future__ import annotations

import hashlib
import time
from typing import Callable

import numpy as np

from c2fmae_data.format.categories import NUM_SEMANTIC_CLASSES, SEMANTIC_IGNORE

from labeling.detection.grounding_dino import Detections


def image_seed(image: np.ndarray) -> int:
    h = hashlib.blake2b(np.ascontiguousarray(image[::7, ::7]).tobytes(), digest_size=8)
    h.update(np.asarray(image.shape, np.int64).tobytes())
    return int.from_bytes(h.digest(), "little")


class FakeDetector:
    """``script(image, prompt) -> Detections`` when given; otherwise 0-4 boxes drawn from an RNG
    seeded by the image, scores in [0.05, 0.95). Records each batch size in ``calls``."""

    def __init__(self, script: "Callable | None" = None, latency_ms: float = 0.0):
        self.script, self.latency_ms, self.calls = script, latency_ms, []

    def detect(self, images, prompts, floor):
        self.calls.append(len(images))
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000.0)
        out = []
        for im, prompt in zip(images, prompts):
            d = self.script(im, prompt) if self.script else self._random(im, prompt)
            keep = d.scores >= np.float32(floor)
            out.append(Detections(d.boxes[keep], d.scores[keep], d.phrase_ids[keep],
                                  d.phrases or prompt.phrases, d.groups[keep]))
        return out

    @staticmethod
    def _random(im, prompt):
        h, w = im.shape[:2]
        rng = np.random.default_rng(image_seed(im))
        n = int(rng.integers(0, 5))
        xy = rng.random((n, 2, 2)) * [w, h]
        boxes = np.concatenate([xy.min(1), xy.max(1)], axis=1)
        scores = rng.uniform(0.05, 0.95, n).astype(np.float32)
        return Detections(boxes, scores, rng.integers(0, len(prompt.phrases), n), prompt.phrases)


def ellipse_mask(h: int, w: int, box) -> np.ndarray:
    """Filled ellipse inscribed in ``box`` (pixel centres inside it), an (h, w) bool array."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
    ys = (np.arange(h) + 0.5 - cy) / ry
    xs = (np.arange(w) + 0.5 - cx) / rx
    return ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0


class FakeSegmenter:
    """The ellipse inscribed in each box (or the full box with ``shape='box'``)."""

    def __init__(self, shape: str = "ellipse"):
        self.shape, self.calls = shape, []

    def segment(self, images, boxes):
        self.calls.append([len(b) for b in boxes])
        out = []
        for im, bs in zip(images, boxes):
            h, w = im.shape[:2]
            m = np.zeros((len(bs), h, w), dtype=bool)
            for i, b in enumerate(bs):
                if self.shape == "box":
                    x0, y0, x1, y1 = np.round(np.asarray(b, np.float64)).astype(int)
                    m[i, max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
                else:
                    m[i] = ellipse_mask(h, w, b)
            out.append(m)
        return out


class FakeSemantic:
    """Class = (gray level // 16) * 9 mod 133; near-black pixels (gray < 8) are unlabeled."""

    def __init__(self):
        self.calls = []

    def predict(self, images):
        self.calls.append(len(images))
        out = []
        for im in images:
            g = im.astype(np.uint16).sum(axis=2) // 3
            sem = ((g // 16) * 9 % NUM_SEMANTIC_CLASSES).astype(np.uint8)
            sem[g < 8] = SEMANTIC_IGNORE
            out.append(sem)
        return out
