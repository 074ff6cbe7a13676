"""``c2fmae-data`` plugin commands of the labeling engine (registered through the entry-point
group ``c2fmae_data.commands`` in setup.cfg): ``label``, ``weights``, ``import-semantic``."""
from __future__ import annotations

import argparse
import sys

from .presets import DOWNLOADABLE


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def register_label(subparsers) -> None:
    p = subparsers.add_parser("label", help="label an ImageNet-layout folder into shards "
                              "(single machine, no Ray)")
    p.add_argument("--images", required=True, help="root of <split>/<wnid>/*.JPEG or <wnid>/*")
    p.add_argument("--out", required=True, help="dataset root to write shards/ + manifest.json")
    p.add_argument("--models", default="default",
                   help="default | sam3 | mm-gdino | tiny | tiny-random | sam3-tiny-random | "
                   "mm-gdino-tiny-random | fake | fake:<latency_ms>")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--weights-dir", default=None, help="load models from this dir (offline)")
    p.add_argument("--split", default="train")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="label only the first N images")
    p.add_argument("--embed-images", action="store_true", help="store image bytes in the shards")
    p.add_argument("--overwrite", action="store_true", help="relabel shards that exist")
    p.add_argument("--detector", default=None, help="override: hub id[@revision] or local dir")
    p.add_argument("--segmenter", default=None, help="override: hub id[@revision], local dir, or "
                   "'sam-hq-official:<checkpoint.pth>[:<model_type>]'")
    p.add_argument("--semantic", default=None,
                   help="override: hub id[@revision], local dir, 'oneformer' or 'eomt'")
    p.set_defaults(func=_label)


def _label(args) -> int:
    from .folder import label_folder
    from .labeler import Labeler

    if args.shard_size < 1 or args.batch_size < 1:
        return _err("--shard-size and --batch-size must be >= 1")
    try:
        lab = Labeler.from_preset(args.models, args.device, args.precision,
                                  weights_dir=args.weights_dir, detector=args.detector,
                                  segmenter=args.segmenter, semantic=args.semantic)
    except (ValueError, OSError, TypeError, ImportError) as e:   # OSError: hub/offline errors
        return _err(f"cannot load models for preset {args.models!r}: {e}")
    if lab.placeholder:
        print("WARNING: " + __import__("labeling.labeler").labeler.PLACEHOLDER_WARNING,
              file=sys.stderr)
    try:
        t = label_folder(lab, args.images, args.out, split=args.split,
                         shard_size=args.shard_size, batch_size=args.batch_size,
                         limit=args.limit, embed_images=args.embed_images,
                         overwrite=args.overwrite)
    except FileNotFoundError as e:
        return _err(str(e))
    print(f"labeled {t['images']} images: {t['ok']} ok, {t['failed']} failed"
          f"{', %d shards kept' % t['skipped_shards'] if t['skipped_shards'] else ''} -> {args.out}")
    return 0


def register_weights(subparsers) -> None:
    p = subparsers.add_parser("weights", help="prefetch / verify model weights in a directory")
    sub = p.add_subparsers(dest="weights_cmd", required=True)
    d = sub.add_parser("download", help="download a preset's models at their revisions")
    d.add_argument("dir")
    d.add_argument("--models", default="default", choices=list(DOWNLOADABLE))
    d.add_argument("--semantic", default=None,
                   help="instead of the preset's: 'mask2former', 'oneformer', 'eomt' or a hub id")
    d.set_defaults(func=_weights_download)
    v = sub.add_parser("verify", help="re-hash a weights dir against weights.lock.json")
    v.add_argument("dir")
    v.set_defaults(func=_weights_verify)


def _weights_download(args) -> int:
    from .presets import resolve_specs
    from .weights import download

    specs = resolve_specs(args.models, {"semantic": args.semantic})
    download(args.dir, specs.values())
    return 0


def _weights_verify(args) -> int:
    from .weights import verify

    problems = verify(args.dir)
    for p in problems:
        print(p, file=sys.stderr)
    print("weights OK" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def register_import_semantic(subparsers) -> None:
    p = subparsers.add_parser("import-semantic", help="write semantic PNGs made elsewhere "
                              "(e.g. SEEM) into a dataset's shards")
    p.add_argument("root", help="dataset root with shards/")
    p.add_argument("png_dir", help="folder of <key without extension>.png")
    p.add_argument("--id-space", default="contiguous", choices=["contiguous", "coco"])
    p.add_argument("--missing", default="error", choices=["error", "keep"],
                   help="a key without PNG: stop (error) or keep its current map")
    p.add_argument("--source", default="imported", help="name recorded in provenance, e.g. SEEM-L")
    p.set_defaults(func=_import_semantic)


def _import_semantic(args) -> int:
    from c2fmae_data.format import FormatError

    from .semantic_import import import_semantic

    try:
        c = import_semantic(args.root, args.png_dir, id_space=args.id_space,
                            missing=args.missing, source=args.source)
    except FormatError as e:
        return _err(str(e))
    print(f"{c['shards']} shards rewritten: {c['replaced']} maps replaced, {c['kept']} kept")
    return 0


def main(argv=None) -> int:  # standalone use without the c2fmae-data CLI
    ap = argparse.ArgumentParser("labeling")
    sp = ap.add_subparsers(dest="cmd", required=True)
    for reg in (register_label, register_weights, register_import_semantic):
        reg(sp)
    args = ap.parse_args(argv)
    return args.func(args)
