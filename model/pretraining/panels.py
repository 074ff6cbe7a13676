"""Reconstruction panels for a fixed set of validation images (the paper's Figs. 4-6).

- ``fig4_<tag>.png``: one row per image; for each granularity (semantic, instance, RGB) the masked
  input, the prediction of the masked patches beside the visible ones, and the target, with part of every granularity visible (Fig. 4).
- ``fig5_from_rgb_<tag>.png``, ``fig6_from_instance_<tag>.png``, ``fig6_from_semantic_<tag>.png``:
  the other granularities predicted from one granularity only (Figs. 5-6): the given input, then
  prediction and target for each of the others.

Semantic maps use the COCO-panoptic palette (``semantic_palette()``), unlabeled (255) black.
Instance ids get fixed distinct colours, background black, ignore (255) white. Masked patches are
drawn grey. Panels draw random masks from a generator seeded the same way each time, so panels of
different epochs show the same masks and never disturb the training RNG streams.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from c2fmae_data.format.categories import SEMANTIC_IGNORE, semantic_palette

GRANULARITIES = ("semantic", "instance", "rgb")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
MASK_GREY = np.array([128, 128, 128], np.uint8)
HEADER = 18
MIN_TILE = 128  # small images are enlarged (nearest) so that column titles fit
# Fig. 4 default: 98 visible tokens of 3 x 196 spread evenly over the granularities
FIG4_VISIBLE = {"semantic": 1 / 6, "instance": 1 / 6, "rgb": 1 / 6}


def _semantic_lut() -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    pal = np.asarray(semantic_palette(), np.uint8)
    lut[:len(pal)] = pal
    lut[SEMANTIC_IGNORE] = 0
    return lut


def _instance_lut() -> np.ndarray:
    rng = np.random.default_rng(12345)  # fixed colours: id k looks the same in every panel
    lut = rng.integers(40, 256, size=(256, 3)).astype(np.uint8)
    lut[0] = 0
    lut[255] = 255
    return lut


SEM_LUT, INST_LUT = _semantic_lut(), _instance_lut()


def rgb_to_uint8(x: torch.Tensor) -> np.ndarray:
    """3xSxS ImageNet-normalized tensor -> SxSx3 uint8."""
    a = x.detach().float().cpu().numpy().transpose(1, 2, 0) * STD + MEAN
    return (a.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def map_to_uint8(m: torch.Tensor, kind: str, size: int) -> np.ndarray:
    """MxM id map -> size x size x 3 colours (nearest upsampling)."""
    ids = m.detach().cpu().numpy().astype(np.int64).clip(0, 255)
    rgb = (SEM_LUT if kind == "semantic" else INST_LUT)[ids]
    rep = size // ids.shape[0]
    return np.repeat(np.repeat(rgb, rep, axis=0), rep, axis=1)


def grey_out(img: np.ndarray, masked: "torch.Tensor | None") -> np.ndarray:
    """Paint the masked patches (N = g x g bool, True = masked) of an SxSx3 image grey."""
    if masked is None:
        return img
    masked = masked.detach().cpu().numpy().astype(bool)
    g = int(round(masked.size ** 0.5))
    p = img.shape[0] // g
    big = np.repeat(np.repeat(masked.reshape(g, g), p, 0), p, 1)
    out = img.copy()
    out[big] = MASK_GREY
    return out


def with_visible(pred: np.ndarray, target: np.ndarray, masked: "torch.Tensor | None"
                 ) -> np.ndarray:
    """The prediction on the masked patches, the given input on the visible ones (as MAE's
    "reconstruction + visible"): the losses never train a prediction of a visible patch."""
    if masked is None:
        return pred
    keep = grey_out(np.zeros_like(pred), masked).any(-1)   # True where masked (painted grey)
    return np.where(keep[..., None], pred, target)


def tile(kind: str, value: torch.Tensor, size: int) -> np.ndarray:
    return rgb_to_uint8(value) if kind == "rgb" else map_to_uint8(value, kind, size)


def grid(rows: "Sequence[Sequence[np.ndarray]]", titles: Sequence[str]) -> Image.Image:
    """Rows of equal tiles with a title above each column."""
    k = -(-MIN_TILE // rows[0][0].shape[0])
    if k > 1:
        rows = [[np.repeat(np.repeat(t, k, 0), k, 1) for t in row] for row in rows]
    s = rows[0][0].shape[0]
    cols = len(titles)
    canvas = Image.new("RGB", (cols * s, HEADER + len(rows) * s), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, t in enumerate(titles):
        draw.text((c * s + 4, 3), t, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            canvas.paste(Image.fromarray(img), (c * s, HEADER + r * s))
    return canvas


def _masks(out: dict) -> dict:
    m = out.get("mask") or out.get("masks") or {}
    return m if isinstance(m, dict) else {}


def fig4(model, batch: dict, visible: "dict | None" = None) -> Image.Image:
    """Masked input | prediction | target for each granularity (Fig. 4)."""
    grans = [g for g in GRANULARITIES if g in batch and g in _granularities(model)]
    vis = {g: (visible or FIG4_VISIBLE)[g] for g in grans}
    out = model.reconstruct(batch, visible=vis)
    masks, s = _masks(out), batch["rgb"].shape[-1]
    rows = []
    for i in range(batch["rgb"].shape[0]):
        row = []
        for g in grans:
            tgt = tile(g, batch[g][i], s)
            m = masks[g][i] if g in masks else None
            row += [grey_out(tgt, m), with_visible(tile(g, out[g][i], s), tgt, m), tgt]
        rows.append(row)
    titles = [f"{g} {w}" for g in grans for w in ("masked", "pred+visible", "target")]
    return grid(rows, titles)


def cross_modal(model, batch: dict, source: str) -> Image.Image:
    """The other granularities predicted from ``source`` alone (Figs. 5-6): the given ``source``
    map is drawn once, as the input; it is not "predicted" (every one of its tokens is visible,
    and the losses never train a prediction of a visible token)."""
    grans = [g for g in GRANULARITIES if g in batch and g in _granularities(model)]
    out = model.reconstruct(batch, visible={g: "all" if g == source else "none" for g in grans})
    s = batch["rgb"].shape[-1]
    targets = [g for g in grans if g != source]
    rows = []
    for i in range(batch["rgb"].shape[0]):
        row = [tile(source, batch[source][i], s)]
        for g in targets:
            row += [tile(g, out[g][i], s), tile(g, batch[g][i], s)]
        rows.append(row)
    titles = [f"input {source}"] + [f"{g} {w}" for g in targets for w in ("pred", "target")]
    return grid(rows, titles)


def _granularities(model) -> "tuple[str, ...]":
    cfg = getattr(model, "config", None)
    return tuple(getattr(cfg, "granularities", None) or getattr(cfg, "inputs", None)
                 or GRANULARITIES)


FIGURES = (("fig4", None), ("fig5_from_rgb", "rgb"), ("fig6_from_instance", "instance"),
           ("fig6_from_semantic", "semantic"))


class PanelWriter:
    """Holds the fixed panel images and writes all figures for a model on demand."""

    def __init__(self, dataset, num_images: int, out_dir: str, seed: int = 0):
        n = max(1, min(int(num_images), len(dataset)))
        idx = sorted({round(i * (len(dataset) - 1) / max(1, n - 1)) for i in range(n)})
        samples = [dataset[i] for i in idx]
        self.batch = torch.utils.data.default_collate(
            [{k: v for k, v in s.items() if k in ("rgb", "instance", "semantic")}
             for s in samples])
        self.out_dir, self.seed = out_dir, seed

    @torch.no_grad()
    def write(self, model, tag: str, progress: float = 1.0) -> "list[str]":
        was_training = model.training
        model.eval()
        dev = next(model.parameters()).device
        batch = {k: v.to(dev) for k, v in self.batch.items()}
        os.makedirs(self.out_dir, exist_ok=True)
        grans = _granularities(model)
        paths = []
        devices = [dev.index or 0] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            for name, source in FIGURES:
                if source is not None and source not in grans:
                    continue
                img = fig4(model, batch) if source is None else cross_modal(model, batch, source)
                path = os.path.join(self.out_dir, f"{name}_{tag}.png")
                tmp = path + ".tmp.png"
                img.save(tmp)
                os.replace(tmp, path)
                paths.append(path)
        model.train(was_training)
        return paths
