"""Single-machine labeling of an ImageNet-layout folder into shards (no Ray).

The images are those of ``labeling.listing.list_imagenet`` (the rule the Ray pipeline uses too):
keys ``<split>/<wnid>/<file>`` relative to the ImageNet root, sorted; shard i holds keys
[i*shard_size, (i+1)*shard_size). An existing shard is kept (resume) unless ``overwrite``, and
only when it holds exactly the keys this run plans for it: a resume with another ``limit`` or
``shard_size`` (or a changed folder) is refused instead of silently skipping images.
"""
from __future__ import annotations

import os
from typing import Callable

from c2fmae_data.format.categories import imagenet_wnid_to_index
from c2fmae_data.format.schema import failed_record
from c2fmae_data.format.manifest import build_manifest
from c2fmae_data.format.fs import join, open_fs
from c2fmae_data.format.shards import SHARD_DIR, iter_shard, shard_name, write_shard

from labeling.images import SourceImage
from labeling.listing import IMAGE_EXTS, Item, find_root, list_imagenet  # noqa: F401  (IMAGE_EXTS: re-export)


def list_images(images: str, split: str = "train", limit: "int | None" = None
                ) -> "list[tuple[str, str]]":
    """Sorted (key, wnid) of ``<images>/<split>/<wnid>/*`` (``listing.list_imagenet``)."""
    return [(it.key, it.wnid) for it in list_imagenet(images, split, limit=limit).items]


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


def _kept_shards(out: str, split: str, shards: "list[list[Item]]",
                 overwrite: bool) -> "set[int]":
    """Indices of the shards already finished with exactly their planned keys. Refuses (before
    anything is labeled) a shard of another plan, or one past the planned count."""
    from c2fmae_data.format.shards import list_shards, parse_shard_name

    hint = ("(another --limit/--shard-size, or the folder changed); pass --overwrite to "
            "relabel, or use a new --out")
    kept = set()
    fs, base = open_fs(out)
    for rel in list_shards(out, split):
        index = parse_shard_name(rel)[1]
        if index >= len(shards):
            if overwrite:
                raise FileExistsError(f"{rel}: --overwrite would leave this shard past the "
                                      f"{len(shards)} planned; use a new --out")
            raise FileExistsError(f"{rel} lies past the {len(shards)} shard(s) this run plans "
                                  + hint)
        if overwrite:
            continue
        held = [r["key"] for r in iter_shard(fs, join(base, rel), ["key"])]
        if held != [it.key for it in shards[index]]:
            raise FileExistsError(f"{join(base, rel)} holds {len(held)} keys that differ from "
                                  f"the {len(shards[index])} this run plans for shard {index} "
                                  + hint)
        kept.add(index)
    return kept


def label_folder(labeler, images: str, out: str, *, split: str = "train",
                 shard_size: int = 1000, batch_size: int = 8, limit: "int | None" = None,
                 embed_images: bool = False, overwrite: bool = False,
                 log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """Label the images of ``images`` (the ImageNet root, or its ``<split>`` folder) into
    ``out``/shards and (re)build the manifest. Returns this run's counts and, under ``"split"``,
    the totals of the whole split as the manifest now lists them."""
    root, note = find_root(images, split)
    if note:
        log(note)
    listing = list_imagenet(root, split, limit=limit)
    for line in listing.notes():
        log(line)
    items = listing.items
    if not items:
        raise FileNotFoundError(f"no images under {root}/{split}/<wnid>/ "
                                "(expected the ImageNet layout, e.g. train/n01440764/*.JPEG)")
    shards = [items[i:i + shard_size] for i in range(0, len(items), shard_size)]
    kept = _kept_shards(out, split, shards, overwrite)
    todo = [i for i in range(len(shards)) if i not in kept]
    if todo:
        labeler.preflight()      # a model that cannot label stops here, before any shard
    prov = labeler.provenance() if todo else None
    infos = []
    totals = {"images": len(items), "labeled": 0, "ok": 0, "failed": 0,
              "skipped_shards": len(kept), "written_shards": 0}
    bar = _bar(sum(len(shards[i]) for i in todo), split, progress)
    say = bar.write if bar is not None else log
    for index in todo:
        records = []
        for b in range(0, len(shards[index]), batch_size):
            batch = [(it.key, it.wnid) for it in shards[index][b:b + batch_size]]
            records.extend(_label_batch(labeler, root, batch, embed_images))
            if bar is not None:
                bar.update(len(batch))
        info = write_shard(out, split, index, records,
                           meta={"provenance": prov, "self_contained": embed_images})
        infos.append(info)
        for k, v in (("labeled", info.rows), ("ok", info.ok), ("failed", info.failed),
                     ("written_shards", 1)):
            totals[k] += v
        say(f"shard {index}: {info.rows} rows ({info.ok} ok, {info.failed} failed) -> {info.file}")
    if bar is not None:
        bar.close()
    m = build_manifest(out, provenance=prov, known=infos,
                       self_contained=embed_images if todo else None)
    totals["split"] = {k: m["splits"][split][k] for k in ("rows", "ok", "failed")}
    totals["split"]["shards"] = len(m["splits"][split]["shards"])
    return totals


def _bar(total: int, split: str, enabled: bool):
    if not enabled or not total:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=f"labeling {split}", dynamic_ncols=True)
