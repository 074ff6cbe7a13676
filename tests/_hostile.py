"""A hostile producer's dataset, for the fuzzer (tests/_fuzz.py): the target root (one generated
shard, or labels for real ImageNet images joined by key), seeded mutations of it (``corrupt``:
damage with no CRC fixed up; ``craft``: well-formed bytes written on purpose), and installing a
mutation the way such a producer would (the manifest lists the mutated files' sizes and sha256).
"""
from __future__ import annotations

import hashlib
import json
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from c2fmae_data.format import shards as shards_mod
from c2fmae_data.format.schema import decode_png, encode_instance_png
from c2fmae_data.format.shards import encode_shard
from tests._datasets import WNID, blob_masks, png_bytes, record, write_dataset
from tests._pngs import adam7, chunk, png, raw_stream

SMALL = {"size": 32, "stride": 4}
#: what a crafted zlib bomb inflates to: twice the memory budget a fuzz child runs under
BOMB_BYTES = 512 << 20


# ----------------------------------------------------------------------------- the target
@dataclass
class Target:
    root: Path
    shard: str                       # the mutated shard, relative to root
    index: str
    files: "dict[str, bytes]"        # originals of shard, index, manifest
    records: "list[dict]"
    meta: dict
    imagenet_root: "str | None" = None
    ref: dict = field(default_factory=dict)


def _records(rng: np.random.Generator) -> "list[dict]":
    from c2fmae_data.format.schema import failed_record

    recs = []
    for i in range(10):
        w, h = (320, 240) if i == 3 else (int(rng.integers(8, 48)), int(rng.integers(6, 40)))
        img = png_bytes(np.full((h, w, 3), 40 + 20 * i, np.uint8))
        key = f"train/{WNID}/img_{i:03d}.png"
        if i == 7:
            recs.append(failed_record(key, "no detection", class_index=0, source_size=len(img),
                                      source_sha256=hashlib.sha256(img).hexdigest(),
                                      image_bytes=img))
            continue
        inst, sem = blob_masks(w, h, n=4, seed=i)
        if i == 3:   # a noisy band: the semantic PNG needs several 8 KB IDAT chunks
            sem[100:140] = rng.integers(0, 133, (40, w), dtype=np.uint8)
        recs.append(record(key, img, inst, sem))
    return recs


def _real_records(imagenet_root: Path, limit: int = 6) -> "list[dict]":
    from c2fmae_data.loading.source import decode_rgb

    recs = []
    for i, f in enumerate(sorted(imagenet_root.glob("train/*/*.JPEG"))[:limit]):
        data = f.read_bytes()
        w, h = decode_rgb(data).size
        inst, sem = blob_masks(w, h, n=6, seed=i)
        recs.append(record(f.relative_to(imagenet_root).as_posix(), data, inst, sem,
                           wnid=f.parent.name, embed=False))
    return recs


def build_target(root: Path, real: "Path | None" = None, seed: int = 0) -> Target:
    """Write the reference dataset (row groups of 4); the fuzzer records every reader on it."""
    recs = _real_records(real) if real else _records(np.random.default_rng(seed))
    old = shards_mod.ROW_GROUP_SIZE
    shards_mod.ROW_GROUP_SIZE = 4
    try:
        write_dataset(root, recs, shards=1, self_contained=real is None)
    finally:
        shards_mod.ROW_GROUP_SIZE = old
    shard, index = "shards/train-00000.parquet", "index/train.parquet"
    files = {rel: (root / rel).read_bytes() for rel in (shard, index, "manifest.json")}
    meta = json.loads(pq.ParquetFile(root / shard).schema_arrow.metadata[b"c2fmae"])
    return Target(root, shard, index, files, pq.read_table(root / shard).to_pylist(), meta,
                  str(real) if real else None)


# ----------------------------------------------------------------------------- mutations
def _png_spans(data: bytes) -> "list[tuple[int, int]]":
    """(start, end) of the PNGs stored plain in a shard's bytes."""
    spans, i = [], data.find(b"\x89PNG\r\n\x1a\n")
    while i >= 0:
        j = data.find(b"IEND", i)
        if j < 0:
            break
        spans.append((i, j + 8))
        i = data.find(b"\x89PNG\r\n\x1a\n", j)
    return spans


def _chunks(data: bytes, start: int, end: int) -> "list[int]":
    out, i = [], start + 8
    while i + 8 <= end:
        out.append(i)
        i += 12 + struct.unpack(">I", data[i:i + 4])[0]
    return out


def corrupt(t: Target, rng: random.Random) -> "tuple[str, dict[str, bytes]]":
    """Transit/storage damage (no CRC fixed up): bit flips, truncation, overwrites, footer and
    PNG length fields, in the shard, the index or the manifest."""
    target = rng.choices([t.shard, t.index, "manifest.json"], [8, 1, 1])[0]
    data = bytearray(t.files[target])
    kind = rng.choice(["bitflip", "bitflips", "truncate", "overwrite", "footer", "png_length",
                       "png_bytes"] if target == t.shard else ["bitflip", "truncate", "overwrite"])
    spans = _png_spans(bytes(data))
    if kind in ("png_length", "png_bytes") and not spans:
        kind = "bitflip"
    if kind == "bitflip" or kind == "bitflips":
        for _ in range(1 if kind == "bitflip" else rng.randint(2, 16)):
            p = rng.randrange(len(data))
            data[p] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "overwrite":
        p, n = rng.randrange(len(data)), rng.randint(1, 64)
        data[p:p + n] = bytes(rng.randrange(256) for _ in range(min(n, len(data) - p)))
    elif kind == "footer":
        (n,) = struct.unpack("<I", data[-8:-4])
        if rng.random() < 0.3:
            data[-8:-4] = struct.pack("<I", rng.choice([0, n - 1, n + 1, 2 ** 31, 2 ** 32 - 1]))
        else:
            p = rng.randrange(max(0, len(data) - 8 - n), len(data))
            data[p] ^= 1 << rng.randrange(8)
    elif kind == "png_length":
        s, e = rng.choice(spans)
        c = rng.choice(_chunks(bytes(data), s, e))
        n = struct.unpack(">I", data[c:c + 4])[0]
        data[c:c + 4] = struct.pack(">I", rng.choice([0, n - 1, n + 1, 2 ** 31 - 1, 2 ** 32 - 1,
                                                       rng.randrange(2 ** 32)]) % 2 ** 32)
    else:   # flip bytes inside one stored PNG (chunk data, types, CRCs)
        s, e = rng.choice(spans)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(s, e)] ^= 1 << rng.randrange(8)
    return f"{kind}@{target.split('/')[0]}", {target: bytes(data)}


def _png_edit(rec: dict, col: str, rng: random.Random) -> str:
    """Replace one mask by a crafted PNG (valid chunks and CRCs, hostile content)."""
    w, h, depth, raw = raw_stream(rec[col])
    stride = 1 + w * depth // 8
    kind = rng.choice(["bomb", "short", "long", "filter", "ids", "ihdr", "interlace", "chunks",
                       "empty"])
    if kind == "bomb":          # inflates far past h x stride: ~0.5 MB of zlib -> 512 MB
        rec[col] = png(w, h, depth, raw, zeros=BOMB_BYTES)
    elif kind == "short":
        rec[col] = png(w, h, depth, raw[:rng.randrange(len(raw))])
    elif kind == "long":
        rec[col] = png(w, h, depth, raw + bytes(rng.randint(1, 3 * stride)))
    elif kind == "filter":
        b = bytearray(raw)
        b[rng.randrange(h) * stride] = rng.choice([2, 3, 4, 5, 255])
        rec[col] = png(w, h, depth, bytes(b))
    elif kind == "ids":         # ids above K / semantic ids outside 0..132 and 255
        arr = decode_png(rec[col]).copy()
        y, x = rng.randrange(h), rng.randrange(w)
        if col == "instance_png":
            arr[y:y + 3, x:x + 3] = min(65535, int(rec["num_instances"]) + rng.randint(1, 9))
            rec[col] = encode_instance_png(arr)
        else:
            arr[y:y + 3, x:x + 3] = rng.randint(133, 254)
            rec[col] = png(w, h, 8, b"".join(b"\x00" + r.tobytes() for r in arr))
    elif kind == "ihdr":        # another size, depth, colour type or method, CRC fixed
        field_, value = rng.choice([("w", w + 1), ("w", 1), ("h", h - 1), ("h", 70000),
                                    ("depth", 16 if depth == 8 else 8), ("depth", 1),
                                    ("ctype", 3), ("ctype", 4), ("interlace", 2)])
        args = {"w": w, "h": h, "depth": depth, "ctype": 0, "interlace": 0, field_: value}
        rec[col] = png(args["w"], args["h"], args["depth"], raw, ctype=args["ctype"],
                       interlace=args["interlace"])
    elif kind == "interlace":   # a valid Adam7 file of the same map: must read unchanged
        rec[col] = png(w, h, depth, adam7(decode_png(rec[col])), interlace=1)
    elif kind == "chunks":      # an ancillary chunk is fine, a critical unknown one is not
        extra = rng.choice([chunk(b"tEXt", b"k\x00v"), chunk(b"ABCD", b"x"),
                            chunk(b"PLTE", bytes(3))])
        rec[col] = png(w, h, depth, raw, extra=extra)
    else:
        rec[col] = rng.choice([b"", b"\x89PNG\r\n\x1a\n", None])
    return kind


def craft(t: Target, rng: random.Random) -> "tuple[str, dict[str, bytes]]":
    """A producer's hostile but well-formed shard: rows rewritten through the shard encoder."""
    recs = [dict(r) for r in t.records]
    ok = [i for i, r in enumerate(recs) if r["status"] == "ok"]
    i = rng.choice(ok)
    r = recs[i]
    kind = rng.choice(["png", "png", "png", "swap_rows", "swap_cols", "num_instances",
                       "metadata", "image_bytes", "key"])
    if kind == "png":
        kind = "png_" + _png_edit(r, rng.choice(["instance_png", "semantic_png"]), rng)
    elif kind == "swap_rows":
        j = rng.choice([k for k in ok if k != i])
        col = rng.choice(["instance_png", "semantic_png"])
        r[col], recs[j][col] = recs[j][col], r[col]
    elif kind == "swap_cols":
        r["instance_png"], r["semantic_png"] = r["semantic_png"], r["instance_png"]
    elif kind == "num_instances":
        r["num_instances"] = rng.choice([0, max(0, r["num_instances"] - 1), -1, 70000, 2 ** 31 - 1])
    elif kind == "metadata":
        m = dict(r["instances"][0]) if r["instances"] else {"id": 1, "box": [0, 0, 1, 1],
                                                            "score": 1.0, "phrase": "x"}
        m.update(rng.choice([{"category": 999}, {"area": None}, {"id": 7}, {"category": None}]))
        r["instances"] = [m] + list(r["instances"][1:])
    elif kind == "image_bytes":
        r["image_bytes"] = png_bytes(np.zeros((r["height"], r["width"], 3), np.uint8)) \
            if t.imagenet_root is None else b"x"
    else:
        r["key"] = r["key"] + "x" * rng.choice([1, 5000])
    recs.sort(key=lambda x: x["key"])
    old = shards_mod.ROW_GROUP_SIZE
    shards_mod.ROW_GROUP_SIZE = 4
    try:
        data, _ = encode_shard(recs, meta=t.meta, validate=False)
    finally:
        shards_mod.ROW_GROUP_SIZE = old
    return kind, {t.shard: data}


def mutation(t: Target, rng: random.Random) -> "tuple[str, str, dict[str, bytes]]":
    family = rng.choice(["corrupt", "corrupt", "crafted"])
    kind, files = (corrupt if family == "corrupt" else craft)(t, rng)
    return family, kind, files


def install(t: Target, files: "dict[str, bytes]") -> None:
    """Write the mutated files; a mutated shard or index is listed with its new size and sha256
    (the producer's manifest matches its own bytes), unless the manifest itself was mutated."""
    for rel, data in files.items():
        (t.root / rel).write_bytes(data)
    if "manifest.json" in files:
        return
    m = json.loads(t.files["manifest.json"])
    split = m["splits"]["train"]
    for ent in split["shards"] + [split["index"]]:
        if ent["file"] in files:
            data = files[ent["file"]]
            ent["bytes"], ent["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (t.root / "manifest.json").write_text(json.dumps(m))


def restore(t: Target) -> None:
    for rel, data in t.files.items():
        (t.root / rel).write_bytes(data)


def relist(root, rel: str) -> None:
    """List ``rel`` in the manifest with its current size and sha256 (a producer's own lie)."""
    m = json.loads((root / "manifest.json").read_text())
    data = (root / rel).read_bytes()
    split = m["splits"]["train"]
    for e in split["shards"] + [split["index"]]:
        if e["file"] == rel:
            e.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (root / "manifest.json").write_text(json.dumps(m))
