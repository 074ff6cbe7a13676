"""Mutation fuzzing of a dataset root (issue 19): every reader must end in a clean read or a
FormatError, in bounded time and memory, whatever bytes a shard, its index or the manifest hold.

A target is one generated shard (self-contained, 10 rows in row groups of 4, masks at sizes up to
320x240 so that one PNG spans several IDAT chunks, one failed row) or, with ``real``, labels for
real ImageNet images joined by key. Each case applies one mutation (``mutations.py``-style list
below, drawn from a seeded RNG), installs it as a hostile producer would (the manifest lists the
mutated shard's size and sha256) and runs the readers. Rules:

* R1: a reader raises nothing but a FormatError (``verify`` raises nothing at all; it reports);
* R2: a loader that reads cleanly after a *corruption* (damage: no CRC fixed up) returns exactly
  the reference samples; after a *crafted* mutation (well-formed bytes a producer wrote on
  purpose) it may return other samples: e.g. two same-size semantic maps swapped is a valid
  dataset with other labels, which no reader can tell from the original;
* R3: a loader that raises a FormatError is matched by a ``verify --full`` problem.

Hangs and memory blow-ups are caught by ``run_isolated``: a child process with ``RLIMIT_AS`` set
a budget above its footprint after warm-up and a per-case watchdog (faulthandler), so a MemoryError
or a stuck case fails the run. Used by tests/c2fmae_data/test_fuzz.py (a few hundred cases) and
bench/data/fuzz.py (many more, counts to docs/benchmarks.md).
"""
from __future__ import annotations

import collections
import hashlib
import json
import random
import struct
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from c2fmae_data.format import shards as shards_mod
from c2fmae_data.format.png_check import parse_png
from c2fmae_data.format.png_rows import inflate
from c2fmae_data.format.schema import FormatError, decode_png, encode_instance_png
from c2fmae_data.format.shards import encode_shard
from tests._datasets import WNID, blob_masks, png_bytes, record, write_dataset

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
    """Write the reference dataset (row groups of 4) and compute every reader's reference."""
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
    t = Target(root, shard, index, files, pq.read_table(root / shard).to_pylist(), meta,
               str(real) if real else None)
    t.ref = {name: outcome for name, (outcome, _) in run_loaders(t).items()}
    assert all(isinstance(v, list) for v in t.ref.values()), t.ref
    return t


# ----------------------------------------------------------------------------- PNG crafting
def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(w: int, h: int, depth: int, raw: bytes, *, interlace: int = 0, ctype: int = 0,
        extra: bytes = b"", zeros: int = 0) -> bytes:
    """A PNG around an already filtered, uncompressed ``raw`` stream (then ``zeros`` zero
    bytes more: a bomb)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    z = zlib.compressobj(1)
    body = z.compress(raw) + b"".join(z.compress(bytes(1 << 24)) for _ in range(zeros >> 24))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", body + z.flush()) + chunk(b"IEND", b""))


def adam7(arr: np.ndarray) -> bytes:
    """The Adam7-interlaced raw stream (every row filter None) of a grey map."""
    from c2fmae_data.format.png_check import ADAM7

    out = []
    big = arr.astype(">u2") if arr.dtype == np.uint16 else arr
    for x0, y0, dx, dy in ADAM7:
        sub = big[y0::dy, x0::dx]
        if sub.size:
            out += [b"\x00" + row.tobytes() for row in sub]
    return b"".join(out)


def _raw(data: bytes) -> "tuple[int, int, int, bytes]":
    lay = parse_png(data)
    return lay.width, lay.height, lay.depth, inflate(lay)


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
    w, h, depth, raw = _raw(rec[col])
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


# ----------------------------------------------------------------------------- readers
def _snapshot(sample: dict):
    out = {"key": sample["key"], "label": sample["label"]}
    for k in ("rgb", "instance", "semantic", "image"):
        v = sample.get(k)
        out[k] = None if v is None else np.asarray(v).copy()
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray) else x == y
        for x, y in ((a[k], b[k]) for k in a))


def _read(t: Target, name: str) -> list:
    from c2fmae_data import ImageNetMultiGranular, ImageNetMultiGranularStream

    kw = dict(SMALL, imagenet_root=t.imagenet_root)
    if name in ("stream", "stream_skip"):
        ds = ImageNetMultiGranularStream(t.root, transform="train", shuffle=False,
                                         on_error="skip" if name == "stream_skip" else "raise",
                                         **kw)
        ds.set_augment_seed(0, 0)
        return [_snapshot(s) for s in ds]
    ds = ImageNetMultiGranular(t.root, transform=None if name == "full" else "train",
                               on_error="skip" if name == "skip" else "raise",
                               include_failed=name == "failed", **kw)
    ds.set_augment_seed(0, 0)
    return [_snapshot(ds[i]) for i in range(len(ds))]


LOADERS = ("map", "full", "stream", "skip", "stream_skip", "failed")


def run_loaders(t: Target, names=LOADERS) -> "dict[str, tuple[object, str]]":
    """{loader: (list of samples | 'FormatError', message)}; any other exception propagates."""
    out = {}
    for name in names:
        try:
            out[name] = (_read(t, name), "")
        except FormatError as e:
            out[name] = ("FormatError", str(e))
    return out


def run_tools(t: Target) -> "dict[str, str]":
    """inspect, grid, eval-labels against the original, manifest rebuild: 'ok' or
    'FormatError' (other exceptions propagate)."""
    from c2fmae_data.format.manifest import build_manifest
    from c2fmae_data.label_eval.run import dataset_rows
    from c2fmae_data.tools.inspection import dataset_stats

    out = {}
    jobs = {"inspect": lambda: dataset_stats(str(t.root)),
            "eval-rows": lambda: sum(1 for _ in dataset_rows(str(t.root), "PRED_ROOT")),
            "manifest": lambda: build_manifest(str(t.root), write=False)}
    for name, job in jobs.items():
        try:
            job()
            out[name] = "ok"
        except FormatError:
            out[name] = "FormatError"
    return out


# ----------------------------------------------------------------------------- one case
class RuleBroken(AssertionError):
    pass


def case(t: Target, rng: random.Random, tools: bool = False) -> "dict[str, str]":
    """Run one mutation through every reader; {reader: outcome}; RuleBroken on a violation."""
    from c2fmae_data.tools.verify import verify

    family, kind, files = mutation(t, rng)
    install(t, files)
    try:
        outcomes = {"family": family, "kind": kind}
        loaders = run_loaders(t)
        reps = {m: verify(str(t.root), full=m == "full", workers=1) for m in ("quick", "full")}
        outcomes.update({f"verify_{m}": "ok" if r.ok else "problems" for m, r in reps.items()})
        for name, (got, msg) in loaders.items():
            if got == "FormatError":
                outcomes[name] = "FormatError"
                if reps["full"].ok:
                    raise RuleBroken(f"R3 {family}/{kind}: {name} raised {msg!r} but verify "
                                     "--full found nothing")
                continue
            if name.endswith("skip"):   # skipped rows are left out or replaced: compare by key
                ref = {r["key"]: r for r in t.ref[name]}
                same = all(s["key"] in ref and _same(s, ref[s["key"]]) for s in got)
            else:
                same = len(got) == len(t.ref[name]) and all(map(_same, got, t.ref[name]))
            outcomes[name] = "clean" if same else "changed"
            if not same and family == "corrupt":
                raise RuleBroken(f"R2 {family}/{kind}: {name} read changed data without an "
                                 f"error (verify --full: {reps['full'].problems[:2]})")
        if tools:
            outcomes.update(run_tools(t))
        return outcomes
    finally:
        restore(t)


def fuzz(t: Target, cases: int, seed: int, tools: bool = False, on_case=None
         ) -> "dict[str, collections.Counter]":
    """Run ``cases`` seeded cases; counts per reader and outcome. A broken rule or an unexpected
    exception is raised with the case number and mutation (reproducible from ``seed``)."""
    import logging

    logging.getLogger("c2fmae_data").setLevel(logging.ERROR)   # skip mode warns per row
    counts: "dict[str, collections.Counter]" = collections.defaultdict(collections.Counter)
    for n in range(cases):
        rng = random.Random(f"{seed}-{n}")
        if on_case:
            on_case(n)
        try:
            out = case(t, rng, tools)
        except RuleBroken:
            raise
        except Exception as e:  # noqa: BLE001 - R1: name the case, keep the traceback
            raise RuleBroken(f"R1 case {n} (seed {seed}): {type(e).__name__}: {e}\n"
                             + traceback.format_exc()) from e
        for reader, outcome in out.items():
            counts[reader][outcome] += 1
    return counts


def run_isolated(root: Path, cases: int, seed: int, *, real: "Path | None" = None,
                 mem_mb: int = 1024, case_timeout: float = 60, tools: bool = False) -> dict:
    """``fuzz`` in this process under a memory cap and a per-case watchdog (call it in a child
    process: the cap and the watchdog's exit are for good)."""
    import faulthandler
    import resource
    import sys

    t = build_target(root, real)
    fuzz(t, 2, seed + 1, tools)                 # warm-up: imports, allocator arenas
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) << 10
    resource.setrlimit(resource.RLIMIT_AS, (vm + (mem_mb << 20), resource.RLIM_INFINITY))

    def arm(n):
        faulthandler.dump_traceback_later(case_timeout, exit=True, file=sys.stderr)
    counts = fuzz(t, cases, seed, tools, on_case=arm)
    faulthandler.cancel_dump_traceback_later()
    return {"cases": cases, "seed": seed, "mem_mb": mem_mb, "vm_base_mb": vm >> 20,
            "counts": {k: dict(v) for k, v in counts.items()}}


def main(argv=None) -> int:
    import argparse
    import sys
    import tempfile

    ap = argparse.ArgumentParser(description="run the dataset fuzzer isolated; JSON on stdout")
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mem-mb", type=int, default=1024)
    ap.add_argument("--case-timeout", type=float, default=60)
    ap.add_argument("--real", default=None, help="ImageNet-layout folder for a real shard")
    ap.add_argument("--tools", action="store_true", help="also inspect, eval rows, manifest")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="c2fmae-fuzz-") as tmp:
        try:
            res = run_isolated(Path(tmp) / "ds", args.cases, args.seed,
                               real=Path(args.real) if args.real else None, mem_mb=args.mem_mb,
                               case_timeout=args.case_timeout, tools=args.tools)
        except RuleBroken as e:
            print(f"FUZZ FAILURE: {e}", file=sys.stderr)
            return 1
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
