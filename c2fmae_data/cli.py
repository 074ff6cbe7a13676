"""The ``c2fmae-data`` command line.

Built-in subcommands: ``download``, ``verify``, ``inspect``, ``convert-coco``, ``manifest``,
``eval-labels``. Other
packages add theirs without ``c2fmae_data`` importing them: an entry point in the group
``c2fmae_data.commands`` names a callable ``register(subparsers)`` that adds one or more
subparsers (each setting ``func=callable(args) -> int``). A plugin that fails to load or register
prints a warning naming it; the other commands keep working.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

PLUGIN_GROUP = "c2fmae_data.commands"
EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


# ----------------------------------------------------------------------------- commands
def cmd_verify(args) -> int:
    from c2fmae_data.tools.verify import verify

    if "://" not in args.root and not os.path.isdir(args.root):   # a typo, not a bad dataset
        raise FileNotFoundError(f"{args.root}: no such folder (give a dataset root, the folder "
                                f"that holds manifest.json)")
    rep = verify(args.root, imagenet_root=args.imagenet_root, full=args.full,
                 workers=args.workers)
    if args.json:
        text = json.dumps(rep.to_json(), indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    if args.json != "-":
        print(rep.text())
    return EXIT_OK if rep.ok else EXIT_PROBLEMS


def cmd_inspect(args) -> int:
    from c2fmae_data.tools.inspection import dataset_stats, draw_grid, format_stats

    stats = dataset_stats(args.root, split=args.split)
    size = None
    if args.grid:   # before printing anything: a grid it cannot draw is refused in one line
        size = draw_grid(args.root, args.grid, n=args.n, imagenet_root=args.imagenet_root,
                         split=args.split)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    if size:
        print(f"wrote {args.grid} ({size[0]}x{size[1]})",
              file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


def cmd_download(args) -> int:
    from c2fmae_data.tools.download import download

    s = download(args.url, args.dest, workers=args.workers, retries=args.retries,
                 backoff=args.backoff, progress=not args.quiet, split=args.split)
    print(f"{args.dest}: {len(s.downloaded)} shard(s) downloaded ({len(s.resumed)} resumed), "
          f"{len(s.skipped)} already present")
    return EXIT_OK


def cmd_convert_coco(args) -> int:
    from c2fmae_data.tools.coco import convert_coco

    if not args.instances and not args.panoptic:
        raise ValueError("give --instances JSON and/or --panoptic JSON PNGDIR")
    pan_json, pan_dir = args.panoptic or (None, None)
    m = convert_coco(args.out, images_dir=args.images, instances_json=args.instances,
                     panoptic_json=pan_json, panoptic_png_dir=pan_dir, split=args.split,
                     self_contained=args.self_contained, shard_size=args.shard_size,
                     overwrite=args.overwrite, progress=not args.quiet)
    t = m["totals"]
    print(f"{args.out}: {t['rows']} rows ({t['ok']} ok, {t['failed']} failed), "
          f"{t['instances']} instances in {sum(len(s['shards']) for s in m['splits'].values())} "
          f"shard(s)")
    return EXIT_OK if not t["failed"] or args.allow_failed else EXIT_PROBLEMS


def cmd_manifest(args) -> int:
    from c2fmae_data.format.manifest import build_manifest
    from c2fmae_data.format.shards import list_shards

    if not list_shards(args.root):
        raise FileNotFoundError(f"{args.root} has no finished shards (shards/<split>-NNNNN.parquet)")
    m = build_manifest(args.root)
    print(f"{args.root}/manifest.json: {m['totals']['rows']} rows in "
          f"{sum(len(s['shards']) for s in m['splits'].values())} shard(s)")
    return EXIT_OK


# ----------------------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--workers must be a positive integer, got {text!r}")
    return int(text)


def _builtin(sub) -> None:
    p = sub.add_parser("verify", help="check a dataset root; exit 0 only when all checks pass",
                       description="Check a dataset root and list every problem (docs/FORMAT.md "
                                   "section 6). Exit 0: all checks pass; 1: problems; 2: bad "
                                   "input.")
    p.add_argument("root", help="dataset root (local path or fsspec URL)")
    p.add_argument("--imagenet-root", metavar="DIR",
                   help="also check that every ok key exists under DIR with its size and sha256; "
                        "DIR holds the keys' first folder (train/ for ImageNet, val2017/ for "
                        "COCO) (default: source images not checked)")
    p.add_argument("--full", action="store_true",
                   help="also decode every mask and check it against the metadata (default: "
                        "off, quick: hashes, counts, keys, column types and metadata only)")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH",
                   help="write the report as JSON to PATH, or to stdout when PATH is omitted "
                        "(default: the text report only)")
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="processes checking shards in parallel (default: the cores); the "
                        "report stays in shard order")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("inspect", help="statistics of a dataset root and an optional sample grid",
                       description="Print what a dataset holds (rows, classes, instances per "
                                   "image, thresholds, failures) and optionally draw a grid of "
                                   "labeled samples.")
    p.add_argument("root", help="dataset root (local path or fsspec URL)")
    p.add_argument("--split", help="only this split (default: every split)")
    p.add_argument("--grid", metavar="OUT.png",
                   help="also draw RGB | instance | semantic panels of the first --n ok samples, "
                        "with the key, the class and a legend, into OUT.png (default: no grid)")
    p.add_argument("--n", type=int, default=16, metavar="N",
                   help="samples in the grid (default: %(default)s)")
    p.add_argument("--imagenet-root", metavar="DIR",
                   help="where the grid reads RGB for a labels-only dataset: the folder holding "
                        "the keys' first folder (default: the rows' image_bytes; a labels-only "
                        "dataset then refuses --grid)")
    p.add_argument("--json", action="store_true",
                   help="print the statistics as JSON (default: off, a text summary)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("download", help="fetch a dataset root (manifest + shards) into DEST",
                       description="Download a dataset root; shards are checked by sha256, "
                                   "interrupted transfers resume when the command is rerun.")
    p.add_argument("url", help="dataset root URL: http(s)://, s3://, gs://, file:// or a path")
    p.add_argument("dest", help="local folder to download into (created when absent)")
    p.add_argument("--workers", type=int, default=4,
                   help="shards downloaded in parallel (default: %(default)s)")
    p.add_argument("--retries", type=int, default=5,
                   help="retries per shard before giving up (default: %(default)s)")
    p.add_argument("--backoff", type=float, default=0.5, metavar="SECONDS",
                   help="delay before the first retry, doubled each retry (default: "
                        "%(default)s)")
    p.add_argument("--split", help="download only this split (default: every split)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (default: off, a bar on stderr)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("convert-coco", help="COCO instances and/or panoptic -> shards",
                       description="Convert COCO ground truth into a dataset root (docs/FORMAT.md "
                                   "section 8). Keys are <images folder name>/<file name>: "
                                   "--images coco/val2017 gives val2017/...jpg, joined later "
                                   "with --imagenet-root coco.")
    p.add_argument("out", help="output dataset root (local path or fsspec URL)")
    p.add_argument("--instances", metavar="JSON",
                   help="COCO instances json: things from polygons/RLE, crowd regions semantic "
                        "only (default: none; give this and/or --panoptic)")
    p.add_argument("--panoptic", nargs=2, metavar=("JSON", "PNGDIR"),
                   help="COCO panoptic json and its PNG folder: stuff, and things too without "
                        "--instances (default: none)")
    p.add_argument("--images", required=True, metavar="DIR",
                   help="folder of the images (required); its name becomes the keys' first "
                        "folder")
    p.add_argument("--split",
                   help="split name (default: train/val/test from the json name, "
                        "instances_val2017.json -> val)")
    p.add_argument("--self-contained", action="store_true",
                   help="store the image bytes in the shards too (default: off, labels only)")
    p.add_argument("--shard-size", type=int, default=1000, metavar="ROWS",
                   help="rows per shard (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing shards of the split (default: off, refuse)")
    p.add_argument("--allow-failed", action="store_true",
                   help="exit 0 even when some images became failed rows (default: off, exit 1)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (default: off, a bar on stderr)")
    p.set_defaults(func=cmd_convert_coco)

    p = sub.add_parser("manifest", help="rebuild ROOT/manifest.json from its finished shards",
                       description="Rescan ROOT/shards/ and rewrite manifest.json and the dataset "
                                   "card README.md (a card without c2fmae-data's mark line is "
                                   "kept). Use after a crash or after adding shards.")
    p.add_argument("root", help="dataset root holding shards/ (local path or fsspec URL)")
    p.set_defaults(func=cmd_manifest)

    from c2fmae_data.label_eval.cli import register as register_eval_labels   # label quality (LABELING.md)

    register_eval_labels(sub)


def _entry_points():
    from importlib.metadata import entry_points

    return entry_points(group=PLUGIN_GROUP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="c2fmae-data",
                                     description="Multi-granular ImageNet datasets: download, "
                                                 "verify, inspect, convert.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _builtin(sub)
    for ep in _entry_points():
        try:
            ep.load()(sub)
        except Exception as e:  # a broken plugin must not take the CLI down
            print(f"warning: c2fmae-data plugin {ep.name!r} ({ep.value}) failed to load: "
                  f"{type(e).__name__}: {e}", file=sys.stderr)
    return parser


def main(argv: "Sequence[str] | None" = None) -> int:
    try:
        rc = _run(argv)
        sys.stdout.flush()          # a closed pipe shows here, not at interpreter exit
        return rc
    except BrokenPipeError:
        # the reader went away (`verify ROOT | head`): stop quietly, as Unix tools do; point
        # stdout at devnull so the final flush at exit cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PROBLEMS


def _run(argv: "Sequence[str] | None") -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    from c2fmae_data.tools.download import DownloadError
    from c2fmae_data.format.schema import FormatError

    try:
        return int(args.func(args) or 0)
    except (FormatError, DownloadError, FileNotFoundError, FileExistsError, KeyError,
            ValueError) as e:
        print(f"c2fmae-data {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
