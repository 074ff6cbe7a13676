"""``inspect``: what a dataset holds (counts, coverage, histograms, failures) and a visual grid.

Statistics read only the light columns (no masks, no image bytes), one row group at a time. The
labeled sample grid (RGB | instance | semantic, captions, legend) is ``grid.draw_grid``.
"""
from __future__ import annotations

import collections
from typing import Any

from c2fmae_data.format.categories import COCO_PANOPTIC_NAMES, NUM_IMAGENET_CLASSES
from c2fmae_data.format.schema import STATUS_OK
from c2fmae_data.format.manifest import load_manifest
from c2fmae_data.format.fs import inside_root, open_fs
from c2fmae_data.format.shards import iter_shard

STAT_COLUMNS = ["key", "class_index", "status", "reason", "num_instances", "threshold",
                "instances"]
#: upper edges of the instances-per-image bins (last bin is open)
INSTANCE_BINS = (0, 1, 2, 3, 4, 5, 10, 20, 50)
MAX_FAILURES_LISTED = 50


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
            rel = e["file"]
            for r in iter_shard(fs, inside_root(fs, base, rel), STAT_COLUMNS, rel):
                sc["rows"] += 1
                if r["status"] != STATUS_OK:
                    sc["failed"] += 1
                    reasons[r["reason"] or "?"] += 1
                    if len(failures) < MAX_FAILURES_LISTED:
                        failures.append({"key": r["key"], "reason": r["reason"] or "?"})
                    continue
                sc["ok"] += 1
                if r["class_index"] is not None and 0 <= r["class_index"] < NUM_IMAGENET_CLASSES:
                    per_class[int(r["class_index"])] += 1
                n = int(r["num_instances"] or 0)
                counts["instances"] += n
                inst_hist[_bin_label(n)] += 1
                thr = r["threshold"]
                thr_hist["none (ground truth)" if thr is None else f"{thr:.2f}"] += 1
                for inst in r["instances"] or []:
                    cat = inst.get("category") if isinstance(inst, dict) else None
                    if cat is not None and 0 <= cat < len(COCO_PANOPTIC_NAMES):
                        cat_hist[COCO_PANOPTIC_NAMES[cat]] += 1
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


# the grid lives in grid.py; these names stay importable from here
from c2fmae_data.tools.grid import TILE, draw_grid, instance_colours, sample_panels  # noqa: E402,F401
