"""Small multi-granular datasets for tests and benchmarks, written with the real shard writer.

Stable helpers (test modules and benchmarks import them: ``from tests._datasets import ...``):

* ``record(key, image_bytes, instance, semantic, ...)`` -> one schema row for given maps.
* ``write_dataset(root, records, split="train", shards=2, self_contained=False)`` -> keys written;
  shards via ``write_shard`` then ``build_manifest``.
* ``synthetic_dataset(root, n=12, ...)`` -> keys: random blob images (PNG) with exact masks,
  self-contained or with the images written under ``image_root``.
* ``imagenet_sample_dataset(root, imagenet_root, limit=None, ...)`` -> keys: labels for the real
  ImageNet sample images (``../shared/data/imagenet-sample``) with generated masks of the
  (EXIF-upright) image size; the images stay where they are and are joined by key.
* ``half_bright(w, h)`` -> (image, instance, semantic): left half bright and marked in both maps.
* ``blob_masks(w, h, n, seed)`` -> canonical instance map (ids by decreasing area) + semantic map.
* ``tiny_record(key, w=8, h=6)`` -> a valid ok row with two instances, no image.
* ``good_dataset(root, images=None)`` -> two train shards and a val shard of tiny rows whose
  source is ``IMAGE`` (written under ``images`` when given): what verify passes.
* ``failed_rows_dataset(root)`` -> one ok row and two failed ones; ``SMALL``: loader options.
* ``label_rows(out)`` -> key -> label columns over every finished shard of a labeled root;
  asserts each key appears once (the pipeline tests' "0 lost, 0 duplicated, same bytes").
* ``imagenet_style_images(root, n, size, classes, seed)`` -> root: ``n`` smooth random JPEGs of
  ``size`` under ``train/<wnid>/`` (large inputs for the pipeline's memory tests).
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from c2fmae_data.format.categories import SEMANTIC_IGNORE, imagenet_wnid_to_index
from c2fmae_data.format.schema import (STATUS_OK, encode_instance_png, encode_semantic_png,
                                       failed_record, make_instances)
from c2fmae_data.format.manifest import build_manifest
from c2fmae_data.format.shards import write_shard
from c2fmae_data.loading.source import decode_rgb

WNID = "n01440764"  # class index 0 in timm's order


def canonical_ids(ids: np.ndarray) -> np.ndarray:
    """Renumber ids 1..K by decreasing area (0 stays background), no cap."""
    counts = np.bincount(ids.ravel().astype(np.int64))
    counts[0] = 0
    order = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    lut = np.zeros(len(counts), np.uint16)
    lut[order] = np.arange(1, len(order) + 1)
    return lut[ids]


def blob_masks(w: int, h: int, n: int = 5, seed: int = 0) -> "tuple[np.ndarray, np.ndarray]":
    """``n`` random ellipses (later ones on top) and a semantic map of bands plus the blobs'
    categories; 255 on a thin top strip (unlabeled)."""
    import cv2

    rng = np.random.default_rng(seed)
    ids = np.zeros((h, w), np.uint16)
    sem = np.zeros((h, w), np.uint8)
    for b in range(4):
        sem[b * h // 4:(b + 1) * h // 4] = 80 + 10 * b  # stuff-like bands
    sem[: max(1, h // 20)] = 255
    for i in range(1, n + 1):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        ax = (int(rng.integers(2, max(3, w // 3))), int(rng.integers(2, max(3, h // 3))))
        layer = np.zeros((h, w), np.uint8)
        cv2.ellipse(layer, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        ids[layer > 0] = i
        sem[layer > 0] = int(rng.integers(0, 80))
    return canonical_ids(ids), sem


def half_bright(w: int = 64, h: int = 48) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    """An image whose left half is bright (240) and right half dark (16); the instance map marks
    the left half as id 1 and the semantic map as class 5 (right half: 0 and 90)."""
    img = np.full((h, w, 3), 16, np.uint8)
    img[:, : w // 2] = 240
    inst = np.zeros((h, w), np.uint16)
    inst[:, : w // 2] = 1
    sem = np.full((h, w), 90, np.uint8)
    sem[:, : w // 2] = 5
    return img, inst, sem


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def record(key: str, image_bytes: bytes, instance: np.ndarray, semantic: np.ndarray, *,
           wnid: str = WNID, embed: bool = True) -> dict:
    """One valid row for ``key`` whose masks are the given full-resolution maps."""
    h, w = instance.shape
    k = int(instance.max())
    boxes, cats = [], []
    for i in range(1, k + 1):
        ys, xs = np.nonzero(instance == i)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0])
        cats.append(int(np.bincount(semantic[instance == i]).argmax()) if len(xs) else -1)
    cats = [c if c < 133 else -1 for c in cats]
    return {
        "key": key, "wnid": wnid, "class_index": imagenet_wnid_to_index().get(wnid, -1),
        "width": w, "height": h, "source_size": len(image_bytes),
        "source_sha256": hashlib.sha256(image_bytes).hexdigest(),
        "instance_png": encode_instance_png(instance), "semantic_png": encode_semantic_png(semantic),
        "num_instances": k,
        "instances": make_instances(instance, boxes, [0.9] * k, ["thing"] * k, cats),
        "threshold": 0.3, "status": STATUS_OK, "reason": None,
        "image_bytes": image_bytes if embed else None,
    }


def write_dataset(root, records: "list[dict]", split: str = "train", shards: int = 2,
                  self_contained: bool = False) -> "list[str]":
    """Write ``records`` as ``shards`` shards of ``split`` under ``root`` (local path or fsspec
    URL) and (re)build the manifest. Returns the sorted keys."""
    records = sorted(records, key=lambda r: r["key"])
    per = -(-len(records) // max(1, shards))
    infos = [write_shard(str(root), split, i, records[i * per:(i + 1) * per],
                         meta={"self_contained": self_contained, "provenance": {"test": True}})
             for i in range(shards) if records[i * per:(i + 1) * per]]
    build_manifest(str(root), known=infos)
    return [r["key"] for r in records]


def synthetic_dataset(root, n: int = 12, size=(48, 40), shards: int = 2, split: str = "train",
                      image_root=None, failed: int = 0, seed: int = 0) -> "list[str]":
    """``n`` random images with blob masks; self-contained unless ``image_root`` is given (then
    the PNGs are written to ``image_root/<key>``). The last ``failed`` rows are failed rows."""
    rng = np.random.default_rng(seed)
    recs = []
    w, h = size
    for i in range(n):
        key = f"{split}/{WNID}/img_{i:05d}.png"
        data = png_bytes(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        if i >= n - failed:
            recs.append(failed_record(key, "no detection", wnid=WNID, class_index=0,
                                      source_size=len(data),
                                      source_sha256=hashlib.sha256(data).hexdigest(),
                                      image_bytes=data if image_root is None else None))
        else:
            inst, sem = blob_masks(w, h, n=4, seed=seed * 1000 + i)
            recs.append(record(key, data, inst, sem, embed=image_root is None))
        if image_root is not None:
            p = Path(image_root) / key
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    return write_dataset(root, recs, split, shards, self_contained=image_root is None)


def imagenet_sample_dataset(root, imagenet_root, limit: "int | None" = None, shards: int = 2,
                            n_instances: int = 6) -> "list[str]":
    """Labels (generated blob masks at the EXIF-upright size) for the real ImageNet sample images
    under ``imagenet_root/train/<wnid>/*.JPEG``, joined by key (images not embedded)."""
    imagenet_root = Path(imagenet_root)
    files = sorted(imagenet_root.glob("train/*/*.JPEG"))[:limit]
    recs = []
    for i, f in enumerate(files):
        data = f.read_bytes()
        w, h = decode_rgb(data).size
        inst, sem = blob_masks(w, h, n=n_instances, seed=i)
        recs.append(record(f.relative_to(imagenet_root).as_posix(), data, inst, sem,
                           wnid=f.parent.name, embed=False))
    return write_dataset(root, recs, "train", shards)


def tiny_record(key: str, w: int = 8, h: int = 6, class_index: int = 3) -> dict:
    """A valid ok row: two instances (areas 12 > 4) on a w x h image."""
    inst = np.zeros((h, w), np.uint16)
    inst[0:3, 0:4] = 1
    inst[4:6, 6:8] = 2
    sem = np.full((h, w), SEMANTIC_IGNORE, np.uint8)
    sem[inst == 1], sem[inst == 2] = 0, 17
    return {"key": key, "wnid": "n01440764", "class_index": class_index, "width": w, "height": h,
            "source_size": 10, "source_sha256": hashlib.sha256(key.encode()).hexdigest(),
            "instance_png": encode_instance_png(inst), "semantic_png": encode_semantic_png(sem),
            "num_instances": 2,
            "instances": make_instances(inst, [[0, 0, 4, 3], [6, 4, 8, 6]], [0.9, 0.5],
                                        ["tench", "tench"], [0, 17]),
            "threshold": 0.3, "status": "ok", "reason": None, "image_bytes": None}


IMAGE = b"\xff\xd8 not really a jpeg but bytes with a hash"


def good_dataset(root, *, images=None) -> str:
    """Two train shards (3 rows each) and one val shard, with sources under ``images``."""
    root = str(root)
    shards = {("train", i): [tiny_record(f"train/n0/{i}{j}.JPEG") for j in range(3)] for i in range(2)}
    shards["val", 0] = [tiny_record("val/v.JPEG")]
    for (split, i), recs in shards.items():
        for r in recs:
            r["source_size"], r["source_sha256"] = len(IMAGE), hashlib.sha256(IMAGE).hexdigest()
            if images is not None:
                p = os.path.join(images, r["key"])
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(IMAGE)
        write_shard(root, split, i, recs)
    build_manifest(root)
    return root


#: loader options of the small datasets below
SMALL = {"size": 32, "stride": 4, "transform": "eval"}


def failed_rows_dataset(root) -> "list[str]":
    """One ok row and two failed ones (one with pixels, one whose image cannot be decoded)."""
    import numpy as np

    img = png_bytes(np.full((40, 48, 3), 90, np.uint8))
    inst, sem = blob_masks(48, 40, n=3, seed=1)
    broken = b"\x89PNG\r\n\x1a\n but the rest is gone"
    recs = [record(f"train/{WNID}/a_ok.png", img, inst, sem, embed=True),
            failed_record(f"train/{WNID}/b_no_detection.png", "no detection", class_index=0,
                          source_size=len(img), source_sha256=hashlib.sha256(img).hexdigest(),
                          image_bytes=img),
            failed_record(f"train/{WNID}/c_broken.png", "image unreadable", class_index=0,
                          source_size=len(broken),
                          source_sha256=hashlib.sha256(broken).hexdigest(), image_bytes=broken)]
    return write_dataset(root, recs, shards=1, self_contained=True)


def label_rows(out) -> "dict[str, tuple]":
    """key -> label columns over every finished shard; asserts each key appears once."""
    from c2fmae_data.format.fs import open_fs
    from c2fmae_data.format.schema import LABEL_COLUMNS
    from c2fmae_data.format.shards import iter_shard, list_shards

    fs, base = open_fs(str(out))
    rows: dict = {}
    for rel in list_shards(str(out)):
        for r in iter_shard(fs, f"{base}/{rel}", columns=list(LABEL_COLUMNS)):
            assert r["key"] not in rows, f"{r['key']} appears twice"
            rows[r["key"]] = tuple(r[c] for c in LABEL_COLUMNS)
    return rows


def imagenet_style_images(root: Path, n: int, size=(1024, 768), classes: int = 5,
                          seed: int = 1) -> Path:
    """``n`` JPEGs of ``size`` (an upsampled random 1/16 image: smooth, realistic file sizes)
    spread over the first ``classes`` ImageNet synsets, as ``root/train/<wnid>/imNNNN.JPEG``."""
    from c2fmae_data.format.categories import imagenet_wnids

    rng = np.random.default_rng(seed)
    for i in range(n):
        d = Path(root) / "train" / imagenet_wnids()[i % classes]
        d.mkdir(parents=True, exist_ok=True)
        small = (rng.random((size[1] // 16, size[0] // 16, 3)) * 255).astype(np.uint8)
        Image.fromarray(small).resize(size, Image.BICUBIC).save(d / f"im{i:04d}.JPEG", quality=90)
    return Path(root)
