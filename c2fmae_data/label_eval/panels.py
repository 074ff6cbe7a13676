"""``eval-labels --panels DIR``: one PNG per worst image, ``NN-<stem>.png`` with NN = rank.

Layout: a caption (rank, key, instance F1 at IoU 0.5, pixel accuracy), then a 2 x 2 grid of
TILE x TILE panels: predicted instances | GT instances over predicted semantic | GT semantic.
Colours as ``inspect --grid``: instance ids by hue (0 black), semantic by the COCO-panoptic
palette (255 unlabeled black). Images are ranked by (instance F1 + pixel accuracy) / 2.
"""
from __future__ import annotations

import os
import posixpath
import re
from typing import Any

import numpy as np

from c2fmae_data.format.categories import semantic_palette
from c2fmae_data.format.schema import decode_instance_png, decode_semantic_png
from c2fmae_data.tools.grid import instance_colours

TILE = 256
CAPTION = 36
LABEL = 16


def _fit(img: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resize into TILE x TILE, aspect kept, grey margins."""
    h, w = img.shape[:2]
    s = TILE / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    ys = np.minimum((np.arange(nh) / s).astype(int), h - 1)
    xs = np.minimum((np.arange(nw) / s).astype(int), w - 1)
    out = np.full((TILE, TILE, 3), 64, np.uint8)
    y0, x0 = (TILE - nh) // 2, (TILE - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = img[np.ix_(ys, xs)]
    return out


def _colour(p: dict, g: dict) -> "list[np.ndarray]":
    pi, gi = decode_instance_png(p["instance_png"]), decode_instance_png(g["instance_png"])
    lut_i = instance_colours(int(max(pi.max(), gi.max())))
    lut_s = np.array(semantic_palette(), np.uint8)
    return [_fit(lut_i[pi]), _fit(lut_i[gi]),
            _fit(lut_s[decode_semantic_png(p["semantic_png"])]),
            _fit(lut_s[decode_semantic_png(g["semantic_png"])])]


def panel(rank: int, im: "dict[str, Any]", p: dict, g: dict):
    """The PIL image of one ranked (image summary, prediction row, GT row)."""
    from PIL import Image, ImageDraw

    tiles = _colour(p, g)
    canvas = np.full((CAPTION + 2 * (TILE + LABEL), 2 * TILE, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, 2)
        y = CAPTION + r * (TILE + LABEL) + LABEL
        canvas[y:y + TILE, c * TILE:(c + 1) * TILE] = t
    out = Image.fromarray(canvas)
    d = ImageDraw.Draw(out)
    d.text((4, 2), f"#{rank} {im['key']}"[:60], fill=(0, 0, 0))
    d.text((4, 18), f"instance F1@0.5 {im['instance_f1']:.2f} ({im['pred_instances']} pred / "
                    f"{im['gt_instances']} GT)  pixel acc {im['pixel_acc']:.2f}  thr {im['level']}",
           fill=(0, 0, 0))
    for i, name in enumerate(("prediction instance", "GT instance", "prediction semantic",
                              "GT semantic")):
        r, c = divmod(i, 2)
        d.text((c * TILE + 4, CAPTION + r * (TILE + LABEL) + 2), name, fill=(0, 0, 0))
    return out


def write_panels(out_dir: str, ranked: "list[tuple[dict, dict, dict]]") -> "list[str]":
    """Write the ranked panels into ``out_dir`` (created); returns the file paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for rank, (im, p, g) in enumerate(ranked, 1):
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", posixpath.splitext(posixpath.basename(im["key"]))[0])
        path = os.path.join(out_dir, f"{rank:02d}-{stem}.png")
        panel(rank, im, p, g).save(path)
        paths.append(path)
    return paths
