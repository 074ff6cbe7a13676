"""Robustness evaluation of a fine-tuned classifier (paper Table IV).

    python -m model.evaluate --checkpoint out/ft/checkpoint.pth --benchmark imagenet-a --root DIR

Folder layouts as the datasets are distributed:
- ``imagenet-a`` / ``imagenet-r``: ``DIR/<wnid>/*.jpg`` over 200 wnids; logits restricted to the
  200 classes through timm's shipped index files (``model.finetuning.robustness.class_subset``);
- ``imagenet-sketch``: ``DIR/<wnid>/*.JPEG`` over the 1000 classes (the ``sketch/`` folder);
- ``imagenet-c``: ``DIR/<corruption>/<severity>/<wnid>/*.JPEG`` (also accepted one level deeper,
  ``DIR/<category>/<corruption>/...``); top-1 per corruption and severity, CE per corruption and
  mCE normalised by AlexNet (``model.finetuning.robustness.mce``);
- ``imagenet``: a plain ImageNet val folder ``DIR/<wnid>/*.JPEG`` (top-1 / top-5).

Each run writes ``<checkpoint>_<benchmark>.json`` next to the checkpoint. Once A, R, Sketch and C
results all exist there, ``<checkpoint>_robustness.json`` gets the paper's summary score
(mean of the three accuracies and 100 - mCE).
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from model.finetuning.engine import write_json
from model.finetuning.data import ImageFolderSplit, eval_transform
from model.finetuning.classifier import load_finetuned, topk_counts
from model.finetuning.robustness import (CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES, class_subset,
                                         mce, robustness_score)

BENCHMARKS = ("imagenet-a", "imagenet-r", "imagenet-sketch", "imagenet-c", "imagenet")
SUMMARY_PARTS = ("imagenet-a", "imagenet-r", "imagenet-sketch", "imagenet-c")


def _loader(ds, batch_size: int, workers: int):
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                       num_workers=workers, pin_memory=torch.cuda.is_available())


def find_corruption_dirs(root: str) -> "dict[str, str]":
    """corruption name -> its folder (``root/<c>`` or ``root/<category>/<c>``)."""
    known = set(CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    found = {}
    for d in sorted(os.listdir(root)):
        full = os.path.join(root, d)
        if not os.path.isdir(full):
            continue
        if d in known:
            found[d] = full
        else:
            for sub in sorted(os.listdir(full)):
                if sub in known and os.path.isdir(os.path.join(full, sub)):
                    found[sub] = os.path.join(full, sub)
    if not found:
        raise ValueError(f"no ImageNet-C corruption folders under {root} (expected "
                         f"{root}/<corruption>/<severity>/<wnid>/*.JPEG, e.g. gaussian_noise/1/)")
    return found


def evaluate_benchmark(model, benchmark: str, root: str, img_size: int = 224, batch_size: int = 64,
                       workers: int = 4, limit: "int | None" = None, device=None,
                       amp_dtype=None, corruptions: "list[str] | None" = None) -> dict:
    """Score ``model`` (1000-way, timm order) on one benchmark folder; returns a JSON-able dict."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {BENCHMARKS}")
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    if benchmark in ("imagenet-a", "imagenet-r"):
        idx, wnids = class_subset(benchmark)
        ds = ImageFolderSplit(root, classes=wnids, transform=eval_transform(img_size), limit=limit)
        res = topk_counts(model, _loader(ds, batch_size, workers), device, list(idx), amp_dtype)
        return {"benchmark": benchmark, "top1": res["top1"], "top5": res["top5"],
                "num_images": res["num_images"], "num_classes": len(set(ds.targets))}
    if benchmark in ("imagenet-sketch", "imagenet"):
        ds = ImageFolderSplit(root, transform=eval_transform(img_size), limit=limit)
        res = topk_counts(model, _loader(ds, batch_size, workers), device, None, amp_dtype)
        return {"benchmark": benchmark, **res}
    # ImageNet-C: images are distributed at 224 x 224 already -> no resize-crop margin.
    tf = eval_transform(img_size, crop_pct=1.0)
    dirs = find_corruption_dirs(root)
    wanted = corruptions or list(dirs)
    acc: "dict[str, dict[int, float]]" = {}
    n = 0
    for c in wanted:
        if c not in dirs:
            raise ValueError(f"corruption {c!r} not found under {root}; found {sorted(dirs)}")
        for s in SEVERITIES:
            sd = os.path.join(dirs[c], str(s))
            if not os.path.isdir(sd):
                raise ValueError(f"ImageNet-C folder {sd} (corruption {c}, severity {s}) is missing")
            ds = ImageFolderSplit(sd, transform=tf, limit=limit)
            res = topk_counts(model, _loader(ds, batch_size, workers), device, None, amp_dtype)
            acc.setdefault(c, {})[s] = res["top1"]
            n += res["num_images"]
    out = {"benchmark": benchmark, "top1": {c: {str(s): a for s, a in v.items()}
                                            for c, v in acc.items()},
           "num_images": n, "mce": None, "ce": None}
    if all(c in acc for c in CORRUPTIONS):
        summary = mce({c: acc[c] for c in CORRUPTIONS})
        out.update(mce=summary["mce"], ce=summary["ce"])
    else:
        out["note"] = (f"mCE needs all 15 corruptions; missing "
                       f"{[c for c in CORRUPTIONS if c not in acc]}")
    return out


def result_path(checkpoint: str, name: str) -> str:
    return os.path.splitext(checkpoint)[0] + f"_{name}.json"


def update_summary(checkpoint: str) -> "dict | None":
    """Write ``<checkpoint>_robustness.json`` when A, R, Sketch and C (with mCE) are all there."""
    parts = {}
    for b in SUMMARY_PARTS:
        p = result_path(checkpoint, b)
        if not os.path.exists(p):
            return None
        with open(p) as f:
            parts[b] = json.load(f)
    if parts["imagenet-c"].get("mce") is None:
        return None
    a, r, s = (parts[b]["top1"] for b in SUMMARY_PARTS[:3])
    m = parts["imagenet-c"]["mce"]
    summary = {"imagenet-a": a, "imagenet-r": r, "imagenet-sketch": s, "imagenet-c_mce": m,
               "score": robustness_score(a, r, s, m)}
    write_json(result_path(checkpoint, "robustness"), summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="fine-tuned checkpoint (model.finetune)")
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument("--root", required=True, help="the benchmark's folder, as distributed")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--limit", type=int, default=None, help="images per folder (smoke runs)")
    p.add_argument("--corruptions", nargs="*", default=None, help="ImageNet-C subset")
    p.add_argument("--amp", choices=("auto", "bf16", "none"), default="auto")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    model, ck = load_finetuned(args.checkpoint)
    img = args.img_size or int(ck["timm_kwargs"].get("img_size", 224))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.amp == "bf16" or (args.amp == "auto" and
                                                     device.type == "cuda") else None
    res = evaluate_benchmark(model, args.benchmark, args.root, img, args.batch_size,
                             args.num_workers, args.limit, device, dtype, args.corruptions)
    res.update(checkpoint=os.path.abspath(args.checkpoint), root=os.path.abspath(args.root),
               limit=args.limit)
    write_json(result_path(args.checkpoint, args.benchmark), res)
    summary = update_summary(args.checkpoint)
    print(json.dumps({k: v for k, v in res.items() if k not in ("top1",) or
                      not isinstance(v, dict)}, indent=1))
    if summary:
        print("robustness summary:", json.dumps(summary))
    return res


if __name__ == "__main__":
    main()
