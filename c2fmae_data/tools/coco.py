"""``convert-coco``: COCO instance and/or panoptic ground truth -> multi-granular shards.

Things come from the instance annotations (polygons, RLE, crowd RLE via pycocotools) or, when only
a panoptic set is given, from its thing segments; stuff always comes from the panoptic set. Rules:

* instance ids 1..K follow decreasing visible area; objects are painted largest first, so a smaller
  object lying on a larger one stays visible (the usual COCO convention);
* crowd regions get instance 0 but keep their category in the semantic map (painted under the
  non-crowd objects);
* annotations of stuff categories inside an instance file go to the semantic map only;
* semantic values are contiguous COCO-panoptic indices (``COCO_ID_TO_INDEX``), 255 = unlabeled;
* keys are ``<images folder name>/<file_name>`` (``--images coco/val2017`` gives
  ``val2017/000000139.jpg``): the image path relative to the folder that holds the images folder,
  so ``--imagenet-root coco`` joins them as for ImageNet; ``wnid`` is "" and ``class_index`` -1;
* an image that is missing, unreadable or whose size disagrees with its annotation becomes a
  ``failed`` row naming the reason, so the dataset still lists every annotated image.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from typing import Any, Iterator

import numpy as np

from c2fmae_data.format.categories import (COCO_ID_TO_INDEX, COCO_PANOPTIC_ISTHING,
                                           COCO_PANOPTIC_NAMES, SEMANTIC_IGNORE)
from c2fmae_data.format.schema import (STATUS_OK, FormatError, encode_instance_png,
                                       encode_semantic_png, failed_record, safe_relpath)
from c2fmae_data.format.manifest import build_manifest, code_version
from c2fmae_data.format.fs import sha256_local
from c2fmae_data.format.shards import list_shards, write_shard

DEFAULT_SHARD_SIZE = 1000


def infer_split(*json_paths: "str | None") -> str:
    """'train' / 'val' / 'test' from an annotation file name (instances_val2017.json -> val)."""
    for p in json_paths:
        if p:
            m = re.search(r"(train|val|test)", os.path.basename(p))
            if m:
                return m.group(1)
    return "data"


def key_prefix(images_dir: str) -> str:
    """The first key component: the name of the images folder (``coco/val2017/`` -> ``val2017``).
    Keys are then paths relative to its parent, the folder to pass as ``--imagenet-root``."""
    name = os.path.basename(os.path.normpath(os.path.abspath(images_dir)))
    if not name or name in (".", ".."):
        raise ValueError(f"--images {images_dir!r}: give the folder that holds the images, "
                         "e.g. coco/val2017")
    safe_relpath(name)   # a name that could not be a key component is refused here, not per row
    return name


def check_categories(instances_json: "str | None", panoptic_json: "str | None") -> None:
    """Every annotation's category id is a COCO-panoptic one, else a FormatError naming it."""
    for path, key in ((instances_json, "annotations"), (panoptic_json, "annotations")):
        if not path:
            continue
        with open(path) as f:
            anns = json.load(f).get(key, [])
        for a in anns:
            for seg in a.get("segments_info", [a]):
                _category_index(seg["category_id"], f"{os.path.basename(path)}: annotation "
                                f"{seg.get('id', '?')} of image {a.get('image_id', '?')}")


def _category_index(coco_id: int, where: str) -> int:
    try:
        return COCO_ID_TO_INDEX[int(coco_id)]
    except KeyError:
        raise FormatError(f"{where}: category id {coco_id} is not a COCO-panoptic category") from None


def _xywh_to_xyxy(b) -> "list[float]":
    x, y, w, h = (float(v) for v in b)
    return [x, y, x + w, y + h]


def paint(h: int, w: int, objects: "list[dict[str, Any]]",
          semantic: "np.ndarray | None" = None) -> "tuple[np.ndarray, np.ndarray, list[dict]]":
    """Paint objects into (instance map, semantic map, instance metadata).

    Each object: ``mask`` (HxW bool), ``category`` (contiguous index), ``crowd`` (bool),
    ``thing`` (bool), ``box`` (xyxy), ``phrase``. Crowd and stuff objects go under, then things by
    decreasing area (larger first, so smaller ones stay on top). Ids follow decreasing visible area.
    """
    sem = np.full((h, w), SEMANTIC_IGNORE, np.uint8) if semantic is None else semantic
    owner = np.full((h, w), -1, np.int64)  # index into `things` of the visible object per pixel
    under = [o for o in objects if o["crowd"] or not o["thing"]]
    things = [o for o in objects if not o["crowd"] and o["thing"]]
    for o in under:
        sem[o["mask"]] = o["category"]
        owner[o["mask"]] = -1
    order = sorted(range(len(things)), key=lambda i: -int(things[i]["mask"].sum()))
    for i in order:
        m = things[i]["mask"]
        sem[m] = things[i]["category"]
        owner[m] = i
    visible = np.bincount(owner.ravel() + 1, minlength=len(things) + 1)[1:]
    ranked = sorted(range(len(things)), key=lambda i: -int(visible[i]))  # stable: ties keep order
    lut = np.zeros(len(things) + 1, np.int64)  # owner+1 -> new id
    meta = []
    for new_id, i in enumerate(ranked, 1):
        lut[i + 1] = new_id
        o = things[i]
        meta.append({"id": new_id, "box": [float(v) for v in o["box"]], "score": 1.0,
                     "phrase": o["phrase"], "category": int(o["category"]),
                     "area": int(visible[i])})
    inst = lut[owner + 1].astype(np.uint16)
    return inst, sem, meta


def _instance_objects(coco, img_id: int, where: str) -> "list[dict[str, Any]]":
    objs = []
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=None)):
        idx = _category_index(ann["category_id"], f"{where} annotation {ann.get('id')}")
        objs.append({"mask": coco.annToMask(ann).astype(bool), "category": idx,
                     "crowd": bool(ann.get("iscrowd", 0)), "thing": COCO_PANOPTIC_ISTHING[idx],
                     "box": _xywh_to_xyxy(ann["bbox"]), "phrase": COCO_PANOPTIC_NAMES[idx]})
    return objs


def read_panoptic_png(path: str) -> np.ndarray:
    """Segment-id map of a COCO panoptic PNG: id = R + 256 G + 256^2 B (0 = void)."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _panoptic_objects(ann: "dict[str, Any]", ids: np.ndarray, *, stuff_only: bool,
                      where: str) -> "list[dict[str, Any]]":
    objs = []
    for seg in ann.get("segments_info", []):
        idx = _category_index(seg["category_id"], f"{where} segment {seg.get('id')}")
        thing = COCO_PANOPTIC_ISTHING[idx]
        if stuff_only and thing:
            continue
        objs.append({"mask": ids == int(seg["id"]), "category": idx,
                     "crowd": bool(seg.get("iscrowd", 0)), "thing": thing,
                     "box": _xywh_to_xyxy(seg["bbox"]), "phrase": COCO_PANOPTIC_NAMES[idx]})
    return objs


def _image_record(key: str, path: str, width: int, height: int, self_contained: bool
                  ) -> "tuple[dict[str, Any], str | None]":
    """Base row fields from the image file, or a failure reason."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return {}, f"image {path} unreadable: {e.strerror or e}"
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
    except Exception as e:  # PIL raises many types for broken files
        return {}, f"image {path} does not decode: {e}"
    if size != (width, height):
        return {}, f"image {path} is {size[0]}x{size[1]} but the annotation says {width}x{height}"
    return {"key": key, "wnid": "", "class_index": -1, "width": width, "height": height,
            "source_size": len(data), "source_sha256": hashlib.sha256(data).hexdigest(),
            "threshold": None, "status": STATUS_OK, "reason": None,
            "image_bytes": data if self_contained else None}, None


def iter_records(*, images_dir: str, instances_json: "str | None" = None,
                 panoptic_json: "str | None" = None, panoptic_png_dir: "str | None" = None,
                 self_contained: bool = False) -> Iterator["dict[str, Any]"]:
    """One format record per annotated image (images of the instance file when given, else of the
    panoptic file)."""
    if not instances_json and not panoptic_json:
        raise ValueError("give --instances and/or --panoptic")
    coco = None
    if instances_json:
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(instances_json)
    pan_by_image: dict[int, dict] = {}
    pan_images: list[dict] = []
    if panoptic_json:
        if not panoptic_png_dir:
            raise ValueError("--panoptic needs the folder of panoptic PNGs")
        with open(panoptic_json) as f:
            pan = json.load(f)
        pan_by_image = {a["image_id"]: a for a in pan["annotations"]}
        pan_images = [im for im in pan["images"] if im["id"] in pan_by_image]
    images = coco.loadImgs(coco.getImgIds()) if coco is not None else pan_images
    prefix = key_prefix(images_dir)
    for im in sorted(images, key=lambda im: im["file_name"]):  # rows in key order, streamed
        key = f"{prefix}/{im['file_name']}"
        w, h = int(im["width"]), int(im["height"])
        rec, err = _image_record(key, os.path.join(images_dir, im["file_name"]), w, h,
                                 self_contained)
        if err:
            yield failed_record(key, err, width=w, height=h)
            continue
        sem = None
        objects: list[dict] = []
        pan_ann = pan_by_image.get(im["id"])
        if pan_ann is not None:
            png = os.path.join(panoptic_png_dir, pan_ann["file_name"])
            try:
                ids = read_panoptic_png(png)
            except Exception as e:
                yield failed_record(key, f"panoptic PNG {png} unreadable: {e}", width=w, height=h)
                continue
            if ids.shape != (h, w):
                yield failed_record(key, f"panoptic PNG {png} is {ids.shape[1]}x{ids.shape[0]}, "
                                         f"image is {w}x{h}", width=w, height=h)
                continue
            objects += _panoptic_objects(pan_ann, ids, stuff_only=coco is not None, where=png)
        if coco is not None:
            objects += _instance_objects(coco, im["id"], instances_json)
        inst, sem, meta = paint(h, w, objects, sem)
        rec.update(instance_png=encode_instance_png(inst), semantic_png=encode_semantic_png(sem),
                   num_instances=len(meta), instances=meta)
        yield rec


def convert_coco(out: str, *, images_dir: str, instances_json: "str | None" = None,
                 panoptic_json: "str | None" = None, panoptic_png_dir: "str | None" = None,
                 split: "str | None" = None, self_contained: bool = False,
                 shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False,
                 progress: bool = False) -> "dict[str, Any]":
    """Convert a COCO set into a dataset root ``out``; returns the manifest written."""
    split = split or infer_split(instances_json, panoptic_json)
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"--images {images_dir}: no such folder")
    if shard_size < 1:
        raise ValueError("--shard-size must be at least 1")
    existing = list_shards(out, split)
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {len(existing)} shard(s) of split {split!r} "
                              f"(e.g. {existing[0]}); pass --overwrite to replace them")
    provenance: dict[str, Any] = {"source": "coco", "converter": "c2fmae_data.tools.coco",
                                  "code_version": code_version(), "split": split,
                                  "key_prefix": key_prefix(images_dir), "annotations": {}}
    for kind, path in (("instances", instances_json), ("panoptic", panoptic_json)):
        if path:
            provenance["annotations"][kind] = {"file": os.path.basename(path),
                                               "sha256": sha256_local(path)}
    meta = {"provenance": provenance, "self_contained": self_contained}
    records = iter_records(images_dir=images_dir, instances_json=instances_json,
                           panoptic_json=panoptic_json, panoptic_png_dir=panoptic_png_dir,
                           self_contained=self_contained)
    if progress:
        from tqdm import tqdm

        records = tqdm(records, desc=f"convert {split}", unit="img")
    check_categories(instances_json, panoptic_json)   # refuse before any shard is replaced
    infos, chunk = [], []
    try:
        for rec in records:  # already in key order: one shard in memory at a time
            chunk.append(rec)
            if len(chunk) == shard_size:
                infos.append(write_shard(out, split, len(infos), chunk, meta=meta))
                chunk = []
        if chunk:
            infos.append(write_shard(out, split, len(infos), chunk, meta=meta))
    except Exception as e:
        if infos:   # keep the manifest true to the files on disk, and say what was replaced
            build_manifest(out, provenance=provenance, known=infos, self_contained=self_contained)
            msg = (f"conversion stopped after writing {len(infos)} shard(s) "
                   f"({infos[0].file}..{infos[-1].file}); the manifest lists what is on disk; "
                   "rerun with --overwrite")
            raise FormatError(f"{type(e).__name__}: {e}; {msg}") from e
        raise
    if overwrite:  # drop stale shards beyond the new count
        from c2fmae_data.format.fs import join, open_fs

        fs, base = open_fs(out)
        keep = {i.file for i in infos}
        for rel in existing:
            if rel not in keep:
                fs.rm(join(base, rel))
    return build_manifest(out, provenance=provenance, known=infos, self_contained=self_contained)
