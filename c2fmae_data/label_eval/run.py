"""``eval-labels``: read two dataset roots, join their rows, and compute the report.

Join rule: a prediction row is paired with the GT row of the same ``key``; when no GT row has
that key, with the GT row whose ``source_sha256`` is the same (the same image file under another
path, e.g. ``val/x.jpg`` against ``val2017/x.jpg``). Only rows whose ``status`` is ok on both
sides are scored; failed prediction rows of shared images are counted (``join.pred_failed``),
GT images without a prediction row are counted (``join.gt_unmatched``), neither enters a metric.
The GT rows (masks as PNG bytes) are held in memory, prediction rows are streamed.
"""
from __future__ import annotations

import heapq
from typing import Any, Iterator

from c2fmae_data.format.categories import NUM_SEMANTIC_CLASSES, SEMANTIC_IGNORE
from c2fmae_data.format.schema import COLUMNS as SCHEMA_COLUMNS
from c2fmae_data.format.schema import (STATUS_OK, FormatError, check_record, decode_instance_png,
                                       decode_semantic_png)
from c2fmae_data.label_eval.metrics import (Confusion, InstanceSet, coco_eval, image_instance_f1,
                                            instance_rles, per_category_ap, pixel_accuracy,
                                            semantic_metrics, stats_dict)
from c2fmae_data.label_eval.pq import PanopticQuality, segments
from c2fmae_data.format.manifest import load_manifest
from c2fmae_data.format.fs import inside_root, open_fs
from c2fmae_data.format.shards import iter_shard, list_shards

COLUMNS = ("key", "source_sha256", "width", "height", "instance_png", "semantic_png",
           "instances", "threshold", "status", "class_index", "num_instances", "reason")


def dataset_rows(root: str, role: str, columns=COLUMNS) -> Iterator["dict[str, Any]"]:
    """Every row of every split of ``root`` (``_shard``: the shard it came from); a root that is
    not a dataset is one clear error. Ok rows read with all of ``COLUMNS`` are checked like
    ``verify`` checks metadata (a FormatError names role, shard, key and the problem)."""
    try:
        load_manifest(root)
    except FormatError as e:
        first = str(e).splitlines()[0]
        raise FormatError(f"{role} {root} is not a dataset root: {first}") from None
    shards = list_shards(root)
    if not shards:
        raise FormatError(f"{role} {root} is not a dataset root: no shards/<split>-NNNNN.parquet")
    fs, base = open_fs(root)
    full = set(COLUMNS) <= set(columns)
    for rel in shards:
        for r in iter_shard(fs, inside_root(fs, base, rel), list(columns), rel):
            r["_shard"] = rel
            if full and r.get("status") == STATUS_OK:
                probs = check_record({**dict.fromkeys(SCHEMA_COLUMNS), **r}, decode=False)
                if probs:
                    raise FormatError(f"{role} {root}: {rel}: key {str(r['key'])[:200]!r}: "
                                      f"{probs[0]}")
            yield r


def _masks(row: "dict[str, Any]", role: str):
    """(instance map, semantic map) of a row, checked at its size as untrusted PNGs."""
    out = []
    for col, dec in (("instance_png", decode_instance_png), ("semantic_png", decode_semantic_png)):
        try:
            out.append(dec(row[col], row["width"], row["height"]))
        except FormatError as e:
            raise FormatError(f"{role}: {row.get('_shard')}: key {row['key']!r}: {col}: "
                              f"{e}") from None
    sem = out[1]
    bad = (sem >= NUM_SEMANTIC_CLASSES) & (sem != SEMANTIC_IGNORE)
    if bad.any():
        raise FormatError(f"{role}: {row.get('_shard')}: key {row['key']!r}: semantic_png: id "
                          f"{int(sem[bad].max())} outside 0..132 and not 255")
    return out[0], out[1]


def level_name(threshold) -> str:
    return "none" if threshold is None else f"{float(threshold):.3f}"


class Pairs:
    """Joins prediction rows to GT rows (key first, then source_sha256) and counts the join."""

    def __init__(self, gt_root: str):
        self.gt: dict[str, dict] = {}
        self.by_sha: dict[str, str] = {}
        self.stats = {"gt_rows": 0, "gt_ok": 0, "pred_rows": 0, "pred_failed": 0,
                      "by_key": 0, "by_sha256": 0, "pred_unmatched": 0}
        for r in dataset_rows(gt_root, "GT_ROOT"):
            self.stats["gt_rows"] += 1
            if r["status"] == STATUS_OK:
                self.stats["gt_ok"] += 1
                self.gt[r["key"]] = r
                self.by_sha.setdefault(r["source_sha256"], r["key"])

    def __call__(self, pred_root: str) -> Iterator["tuple[dict, dict]"]:
        seen = set()
        for p in dataset_rows(pred_root, "PRED_ROOT"):
            self.stats["pred_rows"] += 1
            k = p["key"] if p["key"] in self.gt else self.by_sha.get(p["source_sha256"])
            if k is None or k in seen:
                self.stats["pred_unmatched"] += 1
                continue
            seen.add(k)
            if p["status"] != STATUS_OK:
                self.stats["pred_failed"] += 1
                continue
            self.stats["by_key" if k == p["key"] else "by_sha256"] += 1
            yield p, self.gt[k]
        self.stats["gt_unmatched"] = len(self.gt) - len(seen)


def _score_pair(p, g, image_id, inst: InstanceSet, conf: Confusion, pq: PanopticQuality
                ) -> "dict[str, Any]":
    if (p["width"], p["height"]) != (g["width"], g["height"]):
        raise FormatError(f"{p['key']}: prediction is {p['width']}x{p['height']}, GT "
                          f"{g['key']} is {g['width']}x{g['height']} (not the same image?)")
    (g_ids, g_sem), (p_ids, p_sem) = _masks(g, "GT_ROOT"), _masks(p, "PRED_ROOT")
    gi = instance_rles(g_ids, g["instances"] or [])
    di = instance_rles(p_ids, p["instances"] or [])
    inst.add(image_id, g["width"], g["height"], gi, di)
    one = conf.add(g_sem, p_sem)
    pq.add(segments(g_ids, g["instances"] or [], g_sem),
           segments(p_ids, p["instances"] or [], p_sem))
    f1, acc = image_instance_f1(gi, di), pixel_accuracy(one)
    return {"key": p["key"], "gt_key": g["key"], "level": level_name(p["threshold"]),
            "gt_instances": len(gi), "pred_instances": len(di), "instance_f1": f1,
            "pixel_acc": acc, "quality": float((f1 + acc) / 2)}


def by_threshold(inst: InstanceSet, images: "list[dict]") -> "list[dict[str, Any]]":
    """Images, instances and class-agnostic AP per threshold level of the prediction rows."""
    out = []
    for level in sorted({im["level"] for im in images}):
        ids = [i for i, im in enumerate(images, 1) if im["level"] == level]
        st = stats_dict(coco_eval(inst, image_ids=ids))
        sel = [images[i - 1] for i in ids]
        out.append({"threshold": level, "images": len(ids),
                    "pred_instances": sum(im["pred_instances"] for im in sel),
                    "gt_instances": sum(im["gt_instances"] for im in sel),
                    "ap": st["ap"], "ap50": st["ap50"], "ar": st["ar"]})
    return out


def evaluate_labels(pred_root: str, gt_root: str, *, panels: int = 0
                    ) -> "tuple[dict[str, Any], list[tuple[dict, dict, dict]]]":
    """The report dict and, when ``panels`` > 0, the ``panels`` worst (image, pred, GT) rows."""
    pairs = Pairs(gt_root)
    inst, conf, pq, images, worst = InstanceSet(), Confusion(), PanopticQuality(), [], []
    for p, g in pairs(pred_root):
        im = _score_pair(p, g, len(images) + 1, inst, conf, pq)
        images.append(im)
        if panels:   # keep the worst N: a heap on -quality holding the rows' PNG bytes
            item = (-im["quality"], -len(images), im, p, g)
            (heapq.heappush if len(worst) < panels else heapq.heappushpop)(worst, item)
    if not images:
        raise ValueError(f"PRED_ROOT {pred_root} and GT_ROOT {gt_root} share no image (no ok row "
                         f"with the same key or source_sha256; {pairs.stats['pred_rows']} "
                         f"prediction rows, {pairs.stats['gt_ok']} ok GT rows)")
    agn = coco_eval(inst)
    cat = coco_eval(inst, per_category=True)
    per_cat = per_category_ap(cat, inst)
    report = {
        "pred_root": pred_root, "gt_root": gt_root, "join": pairs.stats,
        "instance": {**stats_dict(agn), "images": len(images), "gt_instances": len(inst.gt),
                     "pred_instances": len(inst.dt),
                     "pred_without_category": sum(d["category"] < 0 for d in inst.dt),
                     "category_ap": stats_dict(cat)["ap"], "per_category": per_cat},
        "semantic": semantic_metrics(conf.m),
        "panoptic": pq.result(),
        "by_threshold": by_threshold(inst, images),
        "worst_images": sorted(images, key=lambda im: im["quality"])[:20],
    }
    ranked = [(im, p, g) for _, _, im, p, g in sorted(worst, reverse=True)]
    return report, ranked
