"""Import semantic maps made elsewhere (e.g. SEEM in its own environment) into existing shards.

PNG layout: ``PNG_DIR/<key without its extension>.png`` (e.g. train/n01440764/x.png for the key
train/n01440764/x.JPEG), single channel 8-bit, at the image's width x height (after EXIF
orientation, as stored in the shard). ``id_space``: 'contiguous' (0..132, 255 unlabeled: the
format's own) or 'coco' (official panoptic ids 1..200, 0 = unlabeled; mapped here). Every PNG is
validated before any shard is rewritten (atomically, same name and metadata), so a bad PNG never
leaves a half-imported dataset or a stale manifest.
"""
from __future__ import annotations

import os
import posixpath

import numpy as np

from c2fmae_data.format.categories import COCO_ID_TO_INDEX, NUM_SEMANTIC_CLASSES, SEMANTIC_IGNORE
from c2fmae_data.format.schema import (STATUS_OK, FormatError, decode_instance_png,
                                       encode_semantic_png)
from c2fmae_data.format.manifest import build_manifest
from c2fmae_data.format.fs import join, open_fs
from c2fmae_data.format.shards import (iter_shard, list_shards, parse_shard_name, shard_meta,
                                       write_shard)

from labeling.compose import assign_categories


def coco_lut() -> np.ndarray:
    lut = np.full(256, SEMANTIC_IGNORE, dtype=np.uint8)
    for cid, idx in COCO_ID_TO_INDEX.items():
        lut[cid] = idx
    return lut


def read_semantic_png(path: str, width: int, height: int, id_space: str) -> np.ndarray:
    """Load and validate one PNG; raises FormatError naming the file."""
    import cv2

    arr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise FormatError(f"{path}: not a readable PNG")
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise FormatError(f"{path}: must be a single-channel 8-bit PNG, got shape {arr.shape} "
                          f"dtype {arr.dtype}")
    if arr.shape != (height, width):
        raise FormatError(f"{path}: is {arr.shape[1]}x{arr.shape[0]}, the image is "
                          f"{width}x{height}")
    if id_space == "coco":
        valid = np.zeros(256, bool)
        valid[list(COCO_ID_TO_INDEX)] = True
        valid[0] = True
        bad = ~valid[arr]
        if bad.any():
            raise FormatError(f"{path}: value {int(arr[bad][0])} is not an official COCO-panoptic "
                              "id (1..200) or 0")
        return coco_lut()[arr]
    if id_space != "contiguous":
        raise ValueError(f"id_space must be 'contiguous' or 'coco', got {id_space!r}")
    bad = (arr >= NUM_SEMANTIC_CLASSES) & (arr != SEMANTIC_IGNORE)
    if bad.any():
        raise FormatError(f"{path}: value {int(arr[bad][0])} outside 0..132 and not 255")
    return arr


def _png_for(png_dir: str, key: str) -> str:
    return os.path.join(png_dir, *posixpath.splitext(key)[0].split("/")) + ".png"


def import_semantic(root: str, png_dir: str, *, id_space: str = "contiguous",
                    missing: str = "error", source: str = "imported") -> dict:
    """Replace ``semantic_png`` of every ok row of ``root``'s shards; returns counts.

    Every PNG of every shard is checked first (a FormatError names the file or key), so a bad or
    missing PNG anywhere leaves the whole dataset untouched. Rows made by the labeler get their
    instances' COCO categories re-derived from the new map (labeling/compose.py, rule 4)."""
    if missing not in ("error", "keep"):
        raise ValueError("missing must be 'error' or 'keep'")
    fs, base = open_fs(root)
    shards = list_shards(root)
    for rel in shards:   # pass 1: validate everything, write nothing
        for r in iter_shard(fs, join(base, rel), ["key", "status", "width", "height"]):
            if r["status"] != STATUS_OK:
                continue
            png = _png_for(png_dir, r["key"])
            if os.path.exists(png):
                read_semantic_png(png, r["width"], r["height"], id_space)
            elif missing == "error":
                raise FormatError(f"no semantic PNG for key {r['key']!r} (expected {png})")
    counts = {"shards": 0, "replaced": 0, "kept": 0}
    infos = []
    for rel in shards:   # pass 2: rewrite each shard atomically
        path = join(base, rel)
        meta = shard_meta(fs, path)
        labeled = (meta.get("provenance") or {}).get("labeler") == "labeling.Labeler"
        rows = list(iter_shard(fs, path))
        for r in rows:
            if r["status"] != STATUS_OK:
                continue
            png = _png_for(png_dir, r["key"])
            if not os.path.exists(png):
                counts["kept"] += 1
                continue
            sem = read_semantic_png(png, r["width"], r["height"], id_space)
            r["semantic_png"] = encode_semantic_png(sem)
            if labeled and r["instances"]:
                assign_categories(decode_instance_png(r["instance_png"]), sem, r["instances"])
            counts["replaced"] += 1
        prov = dict(meta.get("provenance") or {})
        prov["semantic_import"] = {"source": source, "png_dir": str(png_dir), "id_space": id_space}
        meta = {k: v for k, v in meta.items() if k != "format_version"}
        meta["provenance"] = prov
        split, index = parse_shard_name(rel)
        infos.append(write_shard(root, split, index, rows, meta=meta))
        counts["shards"] += 1
    if infos:
        build_manifest(root, known=infos)
    return counts
