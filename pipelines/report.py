"""The final summary of a labeling run, computed from the finished shards (not from what this run
happened to see), so it is complete after any number of resumes.

Written as ``<out>/summary.json`` (one entry per split, other splits kept) and
``<out>/failures-<split>.jsonl`` (one ``{"key", "reason"}`` line per failed image).
"""
from __future__ import annotations

import collections
import json
from typing import Any

from c2fmae_data.format.manifest import write_json_atomic
from c2fmae_data.format.fs import join, open_fs
from c2fmae_data.format.shards import iter_shard, list_shards

SUMMARY = "summary.json"
THRESHOLD_BIN = 0.05


def _reason_class(reason: str) -> str:
    """Group reasons for the histogram: the text before the first ':' (details stay per image)."""
    return (reason or "unknown").split(":", 1)[0].strip()[:120]


def scan_split(out: str, split: str) -> "dict[str, Any]":
    """Counts, failure reasons and the threshold histogram over the finished shards of a split."""
    fs, base = open_fs(out)
    counts = collections.Counter()
    reasons: "collections.Counter[str]" = collections.Counter()
    thr: "collections.Counter[str]" = collections.Counter()
    instances: "collections.Counter[int]" = collections.Counter()
    failures = []
    shards = list_shards(out, split)
    for rel in shards:
        for r in iter_shard(fs, join(base, rel),
                            columns=["key", "status", "reason", "threshold", "num_instances"]):
            counts["images"] += 1
            if r["status"] == "ok":
                counts["ok"] += 1
                t = r["threshold"]
                thr["none" if t is None else f"{THRESHOLD_BIN * round(t / THRESHOLD_BIN):.2f}"] += 1
                instances[int(r["num_instances"] or 0)] += 1
            else:
                counts["failed"] += 1
                reasons[_reason_class(r["reason"])] += 1
                failures.append({"key": r["key"], "reason": r["reason"]})
    return {"shards": len(shards), "images": counts["images"], "ok": counts["ok"],
            "failed": counts["failed"], "failure_reasons": dict(reasons.most_common()),
            "threshold_histogram": dict(sorted(thr.items())),
            "instances_histogram": {str(k): v for k, v in sorted(instances.items())},
            "failures": failures}


def write_summary(out: str, split: str, run: "dict[str, Any]") -> "dict[str, Any]":
    """Scan the split, merge this run's timing in, write summary.json + the failures list."""
    fs, base = open_fs(out)
    s = scan_split(out, split)
    failures = s.pop("failures")
    with fs.open(join(base, f"failures-{split}.jsonl"), "w") as f:
        for row in failures:
            f.write(json.dumps(row) + "\n")
    labeled, wall, gpus = run.get("labeled_this_run", 0), run.get("wall_s", 0.0), run.get("gpus")
    run = {**run, "images_per_s": labeled / wall if wall > 0 else 0.0}
    if gpus:
        run["images_per_s_per_gpu"] = run["images_per_s"] / gpus
    entry = {**s, "failures_file": f"failures-{split}.jsonl", "run": run}
    path = join(base, SUMMARY)
    old: "dict[str, Any]" = {}
    if fs.exists(path):
        try:
            with fs.open(path, "r") as f:
                old = json.load(f)
        except (ValueError, OSError):
            old = {}
    summary = {"splits": {**old.get("splits", {}), split: entry}}
    write_json_atomic(fs, path, summary)
    return entry


def format_summary(split: str, e: "dict[str, Any]", max_reasons: int = 10) -> str:
    run = e["run"]
    lines = [f"split {split}: {e['images']} images in {e['shards']} shards, {e['ok']} ok, "
             f"{e['failed']} failed",
             f"this run: {run.get('labeled_this_run', 0)} images labeled, "
             f"{run.get('shards_skipped', 0)} shards skipped (already finished), "
             f"wall {run.get('wall_s', 0):.1f} s, {run['images_per_s']:.2f} images/s"
             + (f", {run['images_per_s_per_gpu']:.2f} images/s per GPU"
                if "images_per_s_per_gpu" in run else " (no GPU)")]
    if e["failure_reasons"]:
        lines.append("failures by reason (details in " + e["failures_file"] + "):")
        for reason, n in list(e["failure_reasons"].items())[:max_reasons]:
            lines.append(f"  {n:8d}  {reason}")
    if e["threshold_histogram"]:
        lines.append("box threshold used: " + ", ".join(
            f"{k}: {v}" for k, v in e["threshold_histogram"].items()))
    return "\n".join(lines)
