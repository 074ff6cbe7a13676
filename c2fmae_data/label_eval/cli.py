"""The ``eval-labels`` verb: table on stdout, ``--json``, ``--panels``, ``--ilsvrc-boxes``."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

EXIT_ERROR = 2


def _pct(v) -> str:
    return "   -" if v is None else f"{100 * v:5.1f}"


def format_table(rep: "dict[str, Any]") -> str:
    lines = []
    j = rep.get("join")
    if j:
        lines.append(f"joined {j['by_key'] + j['by_sha256']} images ({j['by_key']} by key, "
                     f"{j['by_sha256']} by source_sha256); {j['pred_failed']} failed prediction "
                     f"rows, {j['pred_unmatched']} prediction rows and {j['gt_unmatched']} GT "
                     f"images without a partner (not scored)")
    ins = rep.get("instance")
    if ins:
        lines += ["", "instance masks (pycocotools segm, %)      AP  AP50  AP75    AR",
                  f"  class-agnostic                        {_pct(ins['ap'])} {_pct(ins['ap50'])}"
                  f" {_pct(ins['ap75'])} {_pct(ins['ar'])}",
                  f"  per COCO category (mean)              {_pct(ins['category_ap'])}",
                  f"  {ins['images']} images, {ins['gt_instances']} GT / {ins['pred_instances']} "
                  f"predicted instances ({ins['pred_without_category']} without a category)"]
        cats = sorted(ins["per_category"], key=lambda c: -c["gt_instances"])[:10]
        if cats:
            lines.append("  most frequent GT categories: " + ", ".join(
                f"{c['name']} {_pct(c['ap']).strip()}" for c in cats))
    sem = rep.get("semantic")
    if sem:
        lines += ["", f"semantic: mIoU {_pct(sem['miou']).strip()}%  pixel accuracy "
                      f"{_pct(sem['pixel_acc']).strip()}%  over {sem['classes']} classes, "
                      f"{sem['labeled_pixels']} GT-labeled pixels"]
        for c in sem["confusions"][:5]:
            lines.append(f"  {c['gt']:>20} -> {c['pred']:<20} {_pct(c['share']).strip()}% "
                         f"of pixels")
    pan = rep.get("panoptic")
    if pan:
        lines.append(f"panoptic: PQ {_pct(pan['pq']).strip()}%  things "
                     f"{_pct(pan['pq_things']).strip()}%  stuff {_pct(pan['pq_stuff']).strip()}%  ({pan['tp']} matched, "
                     f"{pan['fp']} false, {pan['fn']} missed segments)")
    if rep.get("by_threshold"):
        lines += ["", "threshold  images  pred inst  GT inst     AP  AP50"]
        for t in rep["by_threshold"]:
            lines.append(f"{t['threshold']:>9} {t['images']:7d} {t['pred_instances']:10d} "
                         f"{t['gt_instances']:8d}  {_pct(t['ap'])} {_pct(t['ap50'])}")
    il = rep.get("ilsvrc")
    if il:
        lines += ["", f"ILSVRC boxes (IoU >= {il['iou']}): recall {_pct(il['recall']).strip()}% "
                      f"of {il['ilsvrc_boxes']} boxes, precision {_pct(il['precision']).strip()}% "
                      f"of {il['instances']} instances, {il['images']} images"]
    return "\n".join(lines).lstrip("\n")


def run(args) -> "dict[str, Any]":
    from c2fmae_data.label_eval.run import dataset_rows, evaluate_labels

    if not args.gt_root and not args.ilsvrc_boxes:
        raise ValueError("give GT_ROOT and/or --ilsvrc-boxes CSV (nothing to compare against)")
    if args.panels and not args.gt_root:
        raise ValueError("--panels needs GT_ROOT (panels show prediction against GT)")
    if args.n_panels < 1:
        raise ValueError("--n-panels must be at least 1")
    parent = os.path.dirname(os.path.abspath(args.json)) if args.json else None
    if parent and not os.path.isdir(parent):   # refuse before the long part, not after it
        raise FileNotFoundError(f"--json {args.json}: folder {parent} does not exist")
    table = None
    if args.ilsvrc_boxes:   # read the CSV before the long part, so a bad file fails fast
        from c2fmae_data.label_eval.ilsvrc import read_ilsvrc_boxes

        table = read_ilsvrc_boxes(args.ilsvrc_boxes)
    rep: dict[str, Any] = {"pred_root": args.pred_root}
    worst = []
    if args.gt_root:
        rep, worst = evaluate_labels(args.pred_root, args.gt_root,
                                     panels=args.n_panels if args.panels else 0)
    if table is not None:
        from c2fmae_data.label_eval.ilsvrc import ilsvrc_scores

        rows = dataset_rows(args.pred_root, "PRED_ROOT", ("key", "status", "instances"))
        rep["ilsvrc"] = ilsvrc_scores(rows, table)
    if args.panels:
        from c2fmae_data.label_eval.panels import write_panels

        rep["panels"] = write_panels(args.panels, worst)
    return rep


def cmd_eval_labels(args) -> int:
    from c2fmae_data.label_eval.metrics import MissingDependency

    try:
        rep = run(args)
    except (MissingDependency, OSError) as e:   # OSError: an output path that cannot be written
        print(f"c2fmae-data eval-labels: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        text = json.dumps(rep, indent=1)   # encoded first: a failure leaves no partial file
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(format_table(rep))
    if args.panels:
        print(f"wrote {len(rep['panels'])} panel(s) to {args.panels}, worst first")
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval-labels", help="score predicted labels against ground truth",
                       description="Score a labeled dataset (PRED_ROOT) against ground truth "
                                   "(GT_ROOT, e.g. made by convert-coco): mask AP/AR, semantic "
                                   "mIoU, PQ, a breakdown by threshold level, and optionally "
                                   "ImageNet's localisation boxes. Rows are joined by key, else by "
                                   "source_sha256. Exit 2 on bad input. See docs/LABELING.md.")
    p.add_argument("pred_root", help="predicted dataset root (local path or fsspec URL)")
    p.add_argument("gt_root", nargs="?",
                   help="ground-truth dataset root (default: none; then --ilsvrc-boxes is needed)")
    p.add_argument("--json", metavar="OUT.json",
                   help="also write the report as JSON, metrics as fractions 0..1 (default: "
                        "table only)")
    p.add_argument("--panels", metavar="DIR",
                   help="write PNGs of the worst images, prediction vs GT instance and semantic "
                        "maps, into DIR (default: none)")
    p.add_argument("--n-panels", type=int, default=16, metavar="N",
                   help="how many worst images --panels draws (default: %(default)s)")
    p.add_argument("--ilsvrc-boxes", metavar="CSV",
                   help="LOC_train_solution.csv or LOC_val_solution.csv: box recall/precision at "
                        "IoU 0.5, rows matched by key file stem (default: none)")
    p.set_defaults(func=cmd_eval_labels)
