"""The multi-granular shard format, version 1 (minor 2: the per-split index; docs/FORMAT.md).

One Parquet row per image. This module holds the schema, the PNG mask codecs and the record
check that every writer and ``verify`` share. It imports neither torch nor anything heavy, so
labeling workers and the CLI stay light.
"""
from __future__ import annotations

import math
import posixpath
import re
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from c2fmae_data.format.bounds import MAX_INSTANCES, MAX_KEY_BYTES, FormatError
from c2fmae_data.format.categories import (NUM_IMAGENET_CLASSES, NUM_SEMANTIC_CLASSES,
                                           SEMANTIC_IGNORE)
from c2fmae_data.format.png_check import parse_png, png_size
from c2fmae_data.format.png_rows import decode_layout

FORMAT_NAME = "c2fmae-multigranular"
FORMAT_VERSION = "1.2"
STATUS_OK = "ok"
STATUS_FAILED = "failed"
#: instance ids in the stored maps are 0 (background) .. MAX_STORED_INSTANCES
MAX_STORED_INSTANCES = MAX_INSTANCES

INSTANCE_STRUCT = pa.struct([
    ("id", pa.int32()),            # the id painted in instance_png (1..K, by decreasing area)
    ("box", pa.list_(pa.float32(), 4)),   # x0, y0, x1, y1 in source pixels
    ("score", pa.float32()),       # detector confidence (1.0 for ground truth)
    ("phrase", pa.string()),       # the text phrase that produced the box (or category name)
    ("category", pa.int32()),      # contiguous COCO-panoptic index 0..132, or -1 when none
    ("area", pa.int64()),          # pixels carrying this id in instance_png
])

SCHEMA = pa.schema([
    ("key", pa.string()),           # path relative to the ImageNet root, e.g. train/n01.../x.JPEG
    ("wnid", pa.string()),
    ("class_index", pa.int32()),    # 0..999 in timm's ImageNet-1K order, -1 when not ImageNet
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("source_size", pa.int64()),    # bytes of the source image file
    ("source_sha256", pa.string()),  # hex sha256 of the source image bytes
    ("instance_png", pa.binary()),  # 16-bit 1-channel PNG, 0 = background; null when failed
    ("semantic_png", pa.binary()),  # 8-bit 1-channel PNG, 0..132, 255 = unlabeled; null when failed
    ("num_instances", pa.int32()),
    ("instances", pa.list_(INSTANCE_STRUCT)),
    ("threshold", pa.float32()),    # box threshold finally used (null for ground truth)
    ("status", pa.string()),        # "ok" | "failed"
    ("reason", pa.string()),        # why it failed (null when ok)
    ("image_bytes", pa.binary()),   # optional: the source image itself (self-contained sets)
])
COLUMNS = tuple(SCHEMA.names)
LABEL_COLUMNS = tuple(c for c in COLUMNS if c != "image_bytes")


# ----------------------------------------------------------------------------- PNG codecs
def _cv2():
    import cv2

    return cv2


def encode_instance_png(ids: np.ndarray) -> bytes:
    """Encode an HxW instance-id map as a 16-bit single-channel PNG."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise FormatError(f"instance map must be HxW, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() > MAX_STORED_INSTANCES):
        raise FormatError(f"instance ids must lie in 0..{MAX_STORED_INSTANCES}")
    ok, buf = _cv2().imencode(".png", np.ascontiguousarray(ids, dtype=np.uint16))
    if not ok:
        raise FormatError("PNG encoding of the instance map failed")
    return buf.tobytes()


def encode_semantic_png(sem: np.ndarray) -> bytes:
    """Encode an HxW semantic map (0..132, 255 unlabeled) as an 8-bit single-channel PNG."""
    sem = np.asarray(sem)
    if sem.ndim != 2:
        raise FormatError(f"semantic map must be HxW, got shape {sem.shape}")
    if sem.size:
        bad = (sem < 0) | ((sem >= NUM_SEMANTIC_CLASSES) & (sem != SEMANTIC_IGNORE))
        if bad.any():
            raise FormatError(f"semantic ids must lie in 0..{NUM_SEMANTIC_CLASSES - 1} or be "
                              f"{SEMANTIC_IGNORE}; found {int(np.asarray(sem)[bad].flat[0])}")
    ok, buf = _cv2().imencode(".png", np.ascontiguousarray(sem, dtype=np.uint8))
    if not ok:
        raise FormatError("PNG encoding of the semantic map failed")
    return buf.tobytes()


def decode_png(data: bytes, *, expect_dtype: "np.dtype | None" = None,
               width: "int | None" = None, height: "int | None" = None) -> np.ndarray:
    """Decode a single-channel grey PNG to an HxW array, keeping its bit depth. The bytes are
    untrusted: structure, CRCs and header are checked first (``png_check.parse_png``; against
    ``width``/``height`` when given) and the inflated size must be exactly the header's
    (``png_rows``); any violation is a FormatError."""
    depth = None if expect_dtype is None else 8 * np.dtype(expect_dtype).itemsize
    return decode_layout(parse_png(data, width=width, height=height, depth=depth))


def decode_instance_png(data: bytes, width: "int | None" = None,
                        height: "int | None" = None) -> np.ndarray:
    return decode_png(data, expect_dtype=np.uint16, width=width, height=height)


def decode_semantic_png(data: bytes, width: "int | None" = None,
                        height: "int | None" = None) -> np.ndarray:
    return decode_png(data, expect_dtype=np.uint8, width=width, height=height)


# ----------------------------------------------------------------------------- records
def safe_relpath(rel: str) -> str:
    """A key or manifest path made safe to join to a root: relative, normalized, never leaving
    it (no leading /, no .., no backslash, no scheme or drive); FormatError otherwise."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise FormatError(f"unsafe path {str(rel)[:200]!r}")
    if len(rel) > MAX_KEY_BYTES or len(rel.encode("utf-8", "replace")) > MAX_KEY_BYTES:
        raise FormatError(f"path {rel[:80]!r}... is longer than {MAX_KEY_BYTES} bytes")
    norm = posixpath.normpath(rel)
    if rel.startswith("/") or norm.startswith("..") or ":" in rel.split("/")[0] or norm != rel:
        raise FormatError(f"path {rel!r} would escape the dataset root")
    return norm


def make_instances(ids: np.ndarray, boxes: Iterable, scores: Iterable, phrases: Iterable,
                   categories: Iterable) -> "list[dict[str, Any]]":
    """Per-instance metadata rows for an id map whose ids 1..K follow the given lists."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64).ravel(), minlength=1)
    out = []
    for i, (box, score, phrase, cat) in enumerate(zip(boxes, scores, phrases, categories), 1):
        out.append({"id": i, "box": [float(v) for v in box], "score": float(score),
                    "phrase": str(phrase), "category": int(cat),
                    "area": int(counts[i]) if i < len(counts) else 0})
    return out


_ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-fA-F]+")


def stable_reason(reason: Any) -> str:
    """The reason text without memory addresses (``<_io.BytesIO object at 0x7f..>`` ->
    ``<_io.BytesIO>``), so identical runs write identical shards."""
    return _ADDRESS.sub("", str(reason)) or "unknown error"


def failed_record(key: str, reason: str, **fields: Any) -> "dict[str, Any]":
    """A row for an image that could not be labeled: masks null, the reason kept (deterministic)."""
    rec = {c: None for c in COLUMNS}
    rec.update(key=key, status=STATUS_FAILED, reason=stable_reason(reason),
               num_instances=0, instances=[], class_index=-1, width=0, height=0)
    rec.update(fields)
    return rec


def _int(value: Any) -> "int | None":
    """An integer field of an untrusted record, or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def _metadata_problems(rec: "dict[str, Any]") -> "list[str]":
    """Problems of an ok row's fields other than its masks."""
    problems: list[str] = []
    w, h = _int(rec.get("width")) or 0, _int(rec.get("height")) or 0
    if w <= 0 or h <= 0:
        problems.append(f"bad size {rec.get('width')}x{rec.get('height')}")
    sha = rec.get("source_sha256")
    if not (isinstance(sha, str) and len(sha) == 64):
        problems.append("source_sha256 is not a 64-digit hex digest")
    thr = rec.get("threshold")
    if thr is not None and not (isinstance(thr, (int, float))
                                and (0.0 <= float(thr) <= 1.0 or math.isnan(float(thr)))):
        problems.append(f"threshold {thr} outside [0, 1]")
    insts = rec.get("instances") or []
    if len(insts) > MAX_INSTANCES:
        return problems + [f"{len(insts)} instance metadata rows, the bound is {MAX_INSTANCES}"]
    if rec.get("num_instances") != len(insts):
        problems.append(f"num_instances {rec.get('num_instances')} != {len(insts)} metadata rows")
    if [_int((m or {}).get("id")) for m in insts] != list(range(1, len(insts) + 1)):
        problems.append("instance metadata ids are not 1..K in order")
    for i, m in enumerate(insts, 1):
        cat = _int((m or {}).get("category"))
        if cat is None or not -1 <= cat < NUM_SEMANTIC_CLASSES:
            problems.append(f"instance {i} category {(m or {}).get('category')} out of range")
    return problems


def _instance_map_problems(arr: np.ndarray, insts: list) -> "list[str]":
    """The decoded instance map against the metadata: ids, areas, area order."""
    problems = []
    areas = np.bincount(arr.ravel().astype(np.int64))
    k = len(areas) - 1
    if k > len(insts):
        problems.append(f"instance_png has id {k} but only {len(insts)} metadata rows")
    sizes = []
    for i, m in enumerate(insts, 1):
        want = _int((m or {}).get("area"))
        got = int(areas[i]) if i < len(areas) else 0
        if want != got:
            problems.append(f"instance {i} area {(m or {}).get('area')} != {got} pixels")
        sizes.append(want if want is not None else -1)
    if sizes != sorted(sizes, reverse=True):
        problems.append("instance ids are not ordered by decreasing area")
    return problems


def _mask_problems(rec: "dict[str, Any]") -> "list[str]":
    """Both masks decoded (checked as untrusted PNGs at the row's size) against the row."""
    problems: list[str] = []
    w, h = _int(rec.get("width")), _int(rec.get("height"))
    for col, depth in (("instance_png", 16), ("semantic_png", 8)):
        data = rec.get(col)
        if data is None:
            problems.append(f"{col} missing on an ok row")
            continue
        try:
            mw, mh = png_size(data)
            if (mw, mh) != (w, h):
                problems.append(f"{col} is {mw}x{mh}, image is {w}x{h}")
                continue
            arr = decode_layout(parse_png(data, width=w, height=h, depth=depth))
        except FormatError as e:
            problems.append(f"{col}: {e}")
            continue
        if col == "semantic_png":
            bad = (arr >= NUM_SEMANTIC_CLASSES) & (arr != SEMANTIC_IGNORE)
            if bad.any():
                problems.append(f"semantic class id {int(arr[bad].max())} out of range")
        elif len(rec.get("instances") or []) <= MAX_INSTANCES:
            problems += _instance_map_problems(arr, rec.get("instances") or [])
    return problems


def check_record(rec: "dict[str, Any]", *, decode: bool = True) -> "list[str]":
    """All problems of one record (empty list when it is valid). With ``decode`` the masks are
    decoded and checked against width/height, the id ranges and the instance metadata. The record
    may be hostile (a shard's row): any value of any type gives problems, never an exception."""
    key = rec.get("key")
    try:
        safe_relpath(key)
    except FormatError:
        return [f"invalid key {str(key)[:200]!r}"]   # keys are normalized relative paths
    problems: list[str] = []
    missing = [c for c in COLUMNS if c not in rec]
    if missing:
        problems.append(f"missing columns {missing}")
    status = rec.get("status")
    if status not in (STATUS_OK, STATUS_FAILED):
        problems.append(f"status {status!r} is neither 'ok' nor 'failed'")
    ci = _int(rec.get("class_index"))
    if ci is None or not (-1 <= ci < NUM_IMAGENET_CLASSES):
        problems.append(f"class_index {rec.get('class_index')!r} out of range "
                        f"-1..{NUM_IMAGENET_CLASSES - 1}")
    if status == STATUS_FAILED:
        if not rec.get("reason"):
            problems.append("failed row without a reason")
        return problems
    problems += _metadata_problems(rec)
    return problems + _mask_problems(rec) if decode else problems


def records_to_table(records: "list[dict[str, Any]]") -> pa.Table:
    """Build a schema-conforming table, rows sorted by key; raises naming the bad key."""
    rows = sorted(records, key=lambda r: r["key"])
    seen = set()
    for r in rows:
        if r["key"] in seen:
            raise FormatError(f"duplicate key {r['key']!r}")
        seen.add(r["key"])
    cols = {c: [r.get(c) for r in rows] for c in COLUMNS}
    try:
        return pa.Table.from_pydict(cols, schema=SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        for r in rows:  # find the offending row for a useful message
            try:
                pa.Table.from_pydict({c: [r.get(c)] for c in COLUMNS}, schema=SCHEMA)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e2:
                raise FormatError(f"record {r['key']!r} does not fit the schema: {e2}") from e2
        raise FormatError(str(e)) from e
