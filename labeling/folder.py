"""Single-machine labeling of an ImageNet-layout folder into shards (no Ray).

Keys are paths relative to ``images`` of files whose parent folder is an ImageNet wnid
(``train/n01440764/x.JPEG`` or ``n01440764/x.JPEG``), sorted; shard i holds keys
[i*shard_size, (i+1)*shard_size). An existing shard is kept (resume) unless ``overwrite``, and
only when it holds exactly the keys this run plans for it: a resume with another ``limit`` or
``shard_size`` (or a changed folder) is refused instead of silently skipping images.
"""
from __future__ import annotations

import os
from typing import Callable

from c2fmae_data.categories import imagenet_wnid_to_index
from c2fmae_data.format import failed_record
from c2fmae_data.manifest import build_manifest
from c2fmae_data.shards import SHARD_DIR, iter_shard, join, open_fs, shard_name, write_shard

from .images import SourceImage

IMAGE_EXTS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(images: str) -> "list[tuple[str, str]]":
    """Sorted (key, wnid) of the image files under ``images``."""
    wnids = imagenet_wnid_to_index()
    out = []
    for dp, dns, fns in os.walk(images):
        dns.sort()
        wnid = os.path.basename(dp)
        if wnid not in wnids:
            continue
        for fn in fns:
            if fn.lower().endswith(IMAGE_EXTS):
                rel = os.path.relpath(os.path.join(dp, fn), images).replace(os.sep, "/")
                out.append((rel, wnid))
    return sorted(out)


def read_item(images: str, key: str, wnid: str) -> SourceImage:
    with open(os.path.join(images, *key.split("/")), "rb") as f:
        data = f.read()
    return SourceImage(key, wnid, imagenet_wnid_to_index()[wnid], data)


def _label_batch(labeler, images: str, batch, embed_images: bool) -> "list[dict]":
    """Records of one batch; a file that cannot be read becomes a failed row naming the error."""
    srcs, recs = [], {}
    for k, w in batch:
        try:
            srcs.append(read_item(images, k, w))
        except OSError as e:
            recs[k] = failed_record(k, f"read error: {e}", wnid=w,
                                    class_index=imagenet_wnid_to_index()[w])
    for r, s in zip(labeler.label_items(srcs), srcs):
        if embed_images:
            r["image_bytes"] = s.data
        recs[s.key] = r
    return [recs[k] for k, _ in batch]


def label_folder(labeler, images: str, out: str, *, split: str = "train",
                 shard_size: int = 1000, batch_size: int = 8, limit: "int | None" = None,
                 embed_images: bool = False, overwrite: bool = False,
                 log: Callable[[str], None] = print) -> dict:
    """Label every image under ``images`` into ``out``/shards and (re)build the manifest."""
    items = list_images(images)[:limit]
    if not items:
        raise FileNotFoundError(f"no images under {images} in <wnid>/ folders "
                                "(expected the ImageNet layout, e.g. train/n01440764/*.JPEG)")
    fs, base = open_fs(out)
    labeler.preflight()          # a model that cannot label stops here, before any shard
    prov = labeler.provenance()
    infos, totals = [], {"images": len(items), "ok": 0, "failed": 0, "skipped_shards": 0}
    for index, start in enumerate(range(0, len(items), shard_size)):
        chunk = items[start:start + shard_size]
        path = join(base, SHARD_DIR, shard_name(split, index))
        if not overwrite and fs.exists(path):
            held = [r["key"] for r in iter_shard(fs, path, ["key"])]
            if held != [k for k, _ in chunk]:
                raise FileExistsError(
                    f"{path} holds {len(held)} keys that differ from the {len(chunk)} this run "
                    f"plans for shard {index} (another --limit/--shard-size, or the folder "
                    "changed); pass --overwrite to relabel, or use a new --out")
            totals["skipped_shards"] += 1
            log(f"shard {index}: exists with the planned keys, kept (use --overwrite to relabel)")
            continue
        records = []
        for b in range(0, len(chunk), batch_size):
            records.extend(_label_batch(labeler, images, chunk[b:b + batch_size], embed_images))
        info = write_shard(out, split, index, records,
                           meta={"provenance": prov, "self_contained": embed_images})
        infos.append(info)
        totals["ok"] += info.ok
        totals["failed"] += info.failed
        log(f"shard {index}: {info.rows} rows ({info.ok} ok, {info.failed} failed) -> {info.file}")
    build_manifest(out, provenance=prov, known=infos, self_contained=embed_images)
    return totals
