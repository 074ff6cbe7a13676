"""``c2fmae-data`` plugin commands of the labeling engine (registered through the entry-point
group ``c2fmae_data.commands`` in setup.cfg): ``label``, ``weights``, ``import-semantic``."""
from __future__ import annotations

import argparse
import sys

from labeling.presets.catalog import DOWNLOADABLE, TINY_RANDOM


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def register_label(subparsers) -> None:
    p = subparsers.add_parser("label", help="label an ImageNet-layout folder into shards "
                              "(single machine, no Ray)")
    p.add_argument("--images", required=True,
                   help="the ImageNet root holding <split>/<wnid>/*.JPEG (its <split> folder is "
                        "accepted too); keys are <split>/<wnid>/<file> relative to the root")
    p.add_argument("--out", required=True, help="dataset root to write shards/ + manifest.json")
    p.add_argument("--models", default="default",
                   help="labeling preset: default | sam3 | mm-gdino | tiny | tiny-random | "
                        "sam3-tiny-random | mm-gdino-tiny-random | fake | fake:<latency_ms> "
                        "(default: default)")
    p.add_argument("--device", default="cpu",
                   help="torch device for the models, e.g. cpu, cuda, cuda:1 (default: cpu)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="model precision (default: fp32)")
    p.add_argument("--weights-dir", default=None,
                   help="load models from this dir, offline (default: the Hugging Face cache)")
    p.add_argument("--split", default="train",
                   help="split folder to label under --images and split name of the shards "
                        "(default: train)")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (default: 1000)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="images per model call (default: 8)")
    p.add_argument("--limit", type=int, default=None,
                   help="label only the first N keys of the sorted listing (default: all)")
    p.add_argument("--embed-images", action="store_true",
                   help="store the image bytes in the shards (self-contained; default: off)")
    p.add_argument("--overwrite", action="store_true",
                   help="relabel shards that exist (default: keep them, i.e. resume)")
    p.add_argument("--allow-failed", action="store_true",
                   help="exit 0 even when the split holds failed rows (default: exit 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--detector", default=None,
                   help="override the preset's detector: hub id[@revision] or local dir")
    p.add_argument("--segmenter", default=None, help="override the preset's segmenter: hub "
                   "id[@revision], local dir, or 'sam-hq-official:<checkpoint.pth>[:<model_type>]'")
    p.add_argument("--semantic", default=None, help="override the preset's semantic model: "
                   "hub id[@revision], local dir, 'oneformer' or 'eomt'")
    p.add_argument("--semantic-size", default="coco", metavar="coco|processor|SHORT,LONG",
                   help="semantic model input size: coco = short side 800, long side <= 1333, "
                        "aspect kept; processor = the image processor's own size; or SHORT,LONG "
                        "(default: coco)")
    p.set_defaults(func=_label)


def _label(args) -> int:
    from labeling.folder import label_folder
    from labeling.labeler import Labeler
    from labeling.presets.catalog import parse_preset
    from labeling.semantic.mask2former import parse_semantic_size

    for flag in ("shard_size", "batch_size", "limit"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            return _err(f"--{flag.replace('_', '-')} must be >= 1, got {v}")
    try:
        parse_preset(args.models)
    except ValueError as e:
        return _err(f"--models: {e}")
    try:
        size = parse_semantic_size(args.semantic_size)
    except ValueError as e:
        return _err(f"--semantic-size: {e}")

    def load():
        lab = Labeler.from_preset(args.models, args.device, args.precision,
                                  weights_dir=args.weights_dir, detector=args.detector,
                                  segmenter=args.segmenter, semantic=args.semantic)
        if hasattr(lab.semantic, "size") and args.models not in TINY_RANDOM:
            lab.semantic.size = size      # tiny-random models keep their tiny input size
        return lab

    try:
        lab = _LazyLabeler(load)
        t = label_folder(lab, args.images, args.out, split=args.split,
                         shard_size=args.shard_size, batch_size=args.batch_size,
                         limit=args.limit, embed_images=args.embed_images,
                         overwrite=args.overwrite, progress=not args.no_progress,
                         log=lambda s: print(s, file=sys.stderr))
    except _ModelLoadError as e:
        return _err(f"cannot load models for preset {args.models!r} (--models): {e.__cause__}")
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        return _err(str(e))
    print(label_message(t, args.split, args.out))
    return 0 if not t["split"]["failed"] or args.allow_failed else 1


def label_message(t: dict, split: str, out: str) -> str:
    """The summary line of a label run (a rerun that had nothing left to label says so)."""
    s = t["split"]
    whole = (f"split {split!r} holds {s['rows']} images in {s['shards']} shard(s): "
             f"{s['ok']} ok, {s['failed']} failed")
    hint = (f" (failed rows make the exit status 1; see `c2fmae-data inspect {out}`, or pass "
            "--allow-failed)" if s["failed"] else "")
    if not t["written_shards"]:
        return (f"nothing to label: all {t['skipped_shards']} planned shard(s) already finished "
                f"(--overwrite relabels); {whole} -> {out}{hint}")
    kept = f", {t['skipped_shards']} finished shard(s) kept" if t["skipped_shards"] else ""
    return (f"labeled {t['labeled']} images into {t['written_shards']} shard(s) "
            f"({t['ok']} ok, {t['failed']} failed){kept}; {whole} -> {out}{hint}")


class _ModelLoadError(Exception):
    pass


class _LazyLabeler:
    """Loads the models only when there is something to label (a finished rerun loads none)."""

    def __init__(self, load):
        self._load, self._lab = load, None

    def __getattr__(self, name):
        if self._lab is None:
            try:
                self._lab = self._load()
            except (ValueError, OSError, TypeError, ImportError) as e:  # OSError: hub/offline
                raise _ModelLoadError() from e
            if self._lab.placeholder:
                from labeling.labeler import PLACEHOLDER_WARNING

                print("WARNING: " + PLACEHOLDER_WARNING, file=sys.stderr)
        return getattr(self._lab, name)


def register_weights(subparsers) -> None:
    p = subparsers.add_parser("weights", help="prefetch / verify model weights in a directory")
    sub = p.add_subparsers(dest="weights_cmd", required=True)
    d = sub.add_parser("download", help="download a preset's models at their pinned revisions "
                       "and write weights.lock.json (online, once)")
    d.add_argument("dir", help="weights directory to fill (pass it later as --weights-dir)")
    d.add_argument("--models", default="default", choices=list(DOWNLOADABLE),
                   help="preset whose models to fetch (default: default)")
    d.add_argument("--semantic", default=None, help="fetch this semantic model instead of the "
                   "preset's: 'mask2former', 'oneformer', 'eomt' or a hub id[@revision] "
                   "(default: the preset's)")
    d.set_defaults(func=_weights_download)
    v = sub.add_parser("verify", help="re-hash a weights dir against weights.lock.json "
                       "(exit 1 on any mismatch)")
    v.add_argument("dir", help="weights directory written by `weights download`")
    v.set_defaults(func=_weights_verify)


def _weights_download(args) -> int:
    from labeling.presets.catalog import resolve_specs
    from labeling.presets.weights import download

    specs = resolve_specs(args.models, {"semantic": args.semantic})
    download(args.dir, specs.values())
    return 0


def _weights_verify(args) -> int:
    from labeling.presets.weights import verify

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
    p.add_argument("--id-space", default="contiguous", choices=["contiguous", "coco"],
                   help="what the PNG pixel values are: contiguous = the 133 COCO-panoptic "
                        "classes as 0..132 (255 unlabeled), coco = official COCO-panoptic "
                        "category ids 1..200 with 0 unlabeled, other values refused (default: contiguous)")
    p.add_argument("--missing", default="error", choices=["error", "keep"],
                   help="a key without PNG: stop (error) or keep its current map "
                        "(default: error)")
    p.add_argument("--source", default="imported",
                   help="name recorded in provenance, e.g. SEEM-L (default: imported)")
    p.set_defaults(func=_import_semantic)


def _import_semantic(args) -> int:
    from c2fmae_data.format.schema import FormatError

    from labeling.semantic.external import import_semantic

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
