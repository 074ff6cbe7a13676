"""``inspect``: what a dataset holds (counts, coverage, histograms, failures) and a visual grid.

Statistics read only the light columns (no masks, no image bytes), one row group at a time. The
grid decodes the masks of the first N ok rows (key order) itself and draws, per sample,
RGB | instance | semantic panels: semantic in the official COCO-panoptic palette (255 black),
instance ids in distinct colours (0 black). RGB comes from ``image_bytes`` (self-contained sets),
else from ``imagenet_root/<key>``, else a grey placeholder.
"""
from __future__ import annotations

import collections
import colorsys
from typing import Any

import numpy as np

from .categories import COCO_PANOPTIC_NAMES, NUM_IMAGENET_CLASSES, semantic_palette
from .format import STATUS_OK, decode_instance_png, decode_semantic_png
from .manifest import load_manifest
from .source import ImageSource, SampleError
from .shards import iter_shard, join, open_fs

STAT_COLUMNS = ["key", "class_index", "status", "reason", "num_instances", "threshold",
                "instances"]
#: upper edges of the instances-per-image bins (last bin is open)
INSTANCE_BINS = (0, 1, 2, 3, 4, 5, 10, 20, 50)
MAX_FAILURES_LISTED = 50
TILE = 128          # each panel is TILE x TILE pixels
PER_ROW = 4         # samples per grid row


def _bin_label(n: int) -> str:
    """'0'..'5', then '6-10', '11-20', '21-50', '>50'."""
    lo = 0
    for hi in INSTANCE_BINS:
        if n <= hi:
            return str(hi) if lo == hi else f"{lo}-{hi}"
        lo = hi + 1
    return f">{INSTANCE_BINS[-1]}"


def dataset_stats(root: str, split: "str | None" = None) -> "dict[str, Any]":
    """Counts, class coverage, instances-per-image and threshold histograms, failures."""
    m = load_manifest(root)
    fs, base = open_fs(root)
    splits = [split] if split else list(m["splits"])
    per_class: collections.Counter = collections.Counter()
    inst_hist: collections.Counter = collections.Counter()
    thr_hist: collections.Counter = collections.Counter()
    cat_hist: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    failures: list[dict[str, str]] = []
    counts = {"rows": 0, "ok": 0, "failed": 0, "instances": 0}
    per_split = {}
    for sp in splits:
        if sp not in m["splits"]:
            raise KeyError(f"split {sp!r} not in {root} (has {sorted(m['splits'])})")
        sc = {"rows": 0, "ok": 0, "failed": 0}
        for e in m["splits"][sp]["shards"]:
            for r in iter_shard(fs, join(base, e["file"]), STAT_COLUMNS):
                sc["rows"] += 1
                if r["status"] != STATUS_OK:
                    sc["failed"] += 1
                    reasons[r["reason"] or "?"] += 1
                    if len(failures) < MAX_FAILURES_LISTED:
                        failures.append({"key": r["key"], "reason": r["reason"] or "?"})
                    continue
                sc["ok"] += 1
                if r["class_index"] is not None and r["class_index"] >= 0:
                    per_class[int(r["class_index"])] += 1
                n = int(r["num_instances"] or 0)
                counts["instances"] += n
                inst_hist[_bin_label(n)] += 1
                thr = r["threshold"]
                thr_hist["none (ground truth)" if thr is None else f"{thr:.2f}"] += 1
                for inst in r["instances"] or []:
                    if inst["category"] is not None and inst["category"] >= 0:
                        cat_hist[COCO_PANOPTIC_NAMES[inst["category"]]] += 1
        per_split[sp] = sc
        for k in sc:
            counts[k] += sc[k]
    bin_order = [_bin_label(b) for b in INSTANCE_BINS] + [f">{INSTANCE_BINS[-1]}"]
    return {
        "root": str(root), "format_version": m["format_version"], "splits": per_split,
        **counts,
        "classes": {"covered": len(per_class), "of": NUM_IMAGENET_CLASSES,
                    "min_per_class": min(per_class.values()) if per_class else 0,
                    "max_per_class": max(per_class.values()) if per_class else 0},
        "instances_per_image": {b: inst_hist[b] for b in dict.fromkeys(bin_order) if inst_hist[b]},
        "thresholds": dict(sorted(thr_hist.items())),
        "instance_categories": dict(cat_hist.most_common(10)),
        "failure_reasons": dict(reasons.most_common()),
        "failures": failures,
        "provenance": m.get("provenance", {}),
    }


def format_stats(s: "dict[str, Any]") -> str:
    def hist(d: "dict[str, int]") -> str:
        return ", ".join(f"{k}: {v}" for k, v in d.items()) or "-"

    lines = [f"{s['root']} (format {s['format_version']})",
             f"rows {s['rows']}  ok {s['ok']}  failed {s['failed']}  instances {s['instances']}"]
    lines += [f"  split {k}: {v['rows']} rows, {v['ok']} ok, {v['failed']} failed"
              for k, v in s["splits"].items()]
    c = s["classes"]
    lines.append(f"ImageNet classes covered: {c['covered']}/{c['of']} "
                 f"(images per covered class {c['min_per_class']}..{c['max_per_class']})")
    lines.append(f"instances per image: {hist(s['instances_per_image'])}")
    lines.append(f"thresholds used: {hist(s['thresholds'])}")
    lines.append(f"top instance categories: {hist(s['instance_categories'])}")
    if s["failed"]:
        lines.append(f"failure reasons: {hist(s['failure_reasons'])}")
        lines += [f"  FAILED {f['key']}: {f['reason']}" for f in s["failures"]]
        if s["failed"] > len(s["failures"]):
            lines.append(f"  ... and {s['failed'] - len(s['failures'])} more")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- grid
def instance_colours(n: int) -> np.ndarray:
    """(n+1)x3 uint8: black for 0, then well-separated hues (golden-ratio steps)."""
    out = np.zeros((n + 1, 3), np.uint8)
    for i in range(1, n + 1):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 1.0 - 0.25 * (i % 2))
        out[i] = (int(r * 255), int(g * 255), int(b * 255))
    return out


def _fit(img: np.ndarray, nearest: bool) -> np.ndarray:
    """Resize into a TILE x TILE panel keeping the aspect ratio (letterboxed in dark grey)."""
    import cv2

    h, w = img.shape[:2]
    s = TILE / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)
    out = np.full((TILE, TILE, 3), 32, np.uint8)
    y, x = (TILE - nh) // 2, (TILE - nw) // 2
    out[y:y + nh, x:x + nw] = r
    return out


def _rgb(rec: "dict[str, Any]", imagenet_root: "str | None") -> "np.ndarray | None":
    """The row's image decoded as the loader does (EXIF upright, same pixel rule), or None."""
    if rec.get("image_bytes") is None and not imagenet_root:
        return None
    try:
        img = ImageSource(imagenet_root, verify=False).load(rec["key"],
                                                             image_bytes=rec.get("image_bytes"))
    except SampleError:
        return None
    return np.asarray(img)


def sample_panels(rec: "dict[str, Any]", imagenet_root: "str | None") -> np.ndarray:
    """One TILE x 3*TILE strip: RGB | instance | semantic."""
    inst = decode_instance_png(rec["instance_png"])
    sem = decode_semantic_png(rec["semantic_png"])
    pal = np.asarray(semantic_palette(), np.uint8)
    rgb = _rgb(rec, imagenet_root)
    if rgb is None or rgb.shape[:2] != inst.shape:
        rgb = np.full(inst.shape + (3,), 128, np.uint8)
    inst_rgb = instance_colours(int(inst.max()))[inst]
    return np.concatenate([_fit(rgb, False), _fit(inst_rgb, True), _fit(pal[sem], True)], axis=1)


def draw_grid(root: str, out: str, *, n: int = 16, imagenet_root: "str | None" = None,
              split: "str | None" = None) -> "tuple[int, int]":
    """Write a PNG grid of the first ``n`` ok samples; returns its (width, height)."""
    from PIL import Image

    m = load_manifest(root)
    fs, base = open_fs(root)
    strips = []
    for sp in ([split] if split else list(m["splits"])):
        for e in m["splits"][sp]["shards"]:
            for rec in iter_shard(fs, join(base, e["file"])):
                if len(strips) >= n:
                    break
                if rec["status"] == STATUS_OK:
                    strips.append(sample_panels(rec, imagenet_root))
    if not strips:
        raise ValueError(f"{root}: no ok rows to draw")
    per_row = min(PER_ROW, len(strips))
    rows = -(-len(strips) // per_row)
    grid = np.zeros((rows * TILE, per_row * 3 * TILE, 3), np.uint8)
    for i, s in enumerate(strips):
        r, c = divmod(i, per_row)
        grid[r * TILE:(r + 1) * TILE, c * 3 * TILE:(c + 1) * 3 * TILE] = s
    ofs, opath = open_fs(out)
    with ofs.open(opath, "wb") as f:
        Image.fromarray(grid).save(f, format="PNG")
    return grid.shape[1], grid.shape[0]
