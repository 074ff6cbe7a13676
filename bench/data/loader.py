"""Loader cost per sample on one core: multi-granular vs RGB-only, on ../shared/data/imagenet-sample.

    python bench/data/loader.py [--runs 7] [--imagenet-root ../shared/data/imagenet-sample]

Builds a labels-only dataset for the 100 sample images (generated blob masks at full image
resolution, ~6 instances and ~10 semantic regions each), then times, interleaved, median of
``--runs`` passes over all images, one thread:

* ``rgb-only``: read the JPEG, decode (EXIF + RGB), RandomResizedCrop(0.2-1) + flip, to a
  normalized tensor: the same RGB code path the multi-granular loader uses;
* ``torchvision``: the usual ImageFolder-style PIL decode + torchvision RandomResizedCrop
  (antialiased) + RandomHorizontalFlip + ToTensor + Normalize, as an outside reference;
* ``multi-granular (shuffled / in order)``: ``ImageNetMultiGranular[i]`` with masks, including
  the Parquet row-group read, sha256 check, PNG decode, mask crop/resize and re-canonicalization;
* ``stream``: ``ImageNetMultiGranularStream`` (row groups read in order, buffer shuffle).

With ``--baseline REV`` the same benchmark also runs on git revision REV and on this tree
alternately (fresh processes, same load) and a before/after table is added. Results go to the
``loader`` section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.report import median, write_section  # noqa: E402
from c2fmae_data import ImageNetMultiGranular, ImageNetMultiGranularStream  # noqa: E402
from c2fmae_data.loading.source import decode_rgb  # noqa: E402
from c2fmae_data.loading.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform  # noqa: E402


def rgb_only(files):
    t = TrainTransform()

    def run():
        for f in files:
            t(decode_rgb(f.read_bytes()))
    return run


def torchvision_ref(files):
    from PIL import Image
    from torchvision import transforms as T

    t = T.Compose([T.RandomResizedCrop(224, scale=(0.2, 1.0), antialias=True),
                   T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def run():
        for f in files:
            with open(f, "rb") as fh:
                t(Image.open(fh).convert("RGB"))
    return run


def multi(ds, shuffled):
    def run():
        order = list(range(len(ds)))
        if shuffled:
            random.shuffle(order)
        for i in order:
            ds[i]
    return run


def stream(ds):
    def run():
        for _ in ds:
            pass
    return run


def inflate_costs(root, runs: int) -> str:
    """ms per mask to inflate the IDAT streams of every stored PNG: CPython zlib vs zlib-ng (the
    reason for the zlib-ng dependency, c2fmae_data/format/png_rows.py)."""
    import zlib

    import pyarrow.parquet as pq
    from zlib_ng import zlib_ng

    from c2fmae_data.format.png_check import parse_png

    streams = [bytes(parse_png(b).idat_bytes())
               for f in sorted((Path(root) / "shards").glob("*.parquet"))
               for c in pq.read_table(f, columns=["instance_png", "semantic_png"]).columns
               for b in c.to_pylist() if b]
    out = {}
    for name, mod in (("zlib", zlib), ("zlib-ng", zlib_ng)):
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            for d in streams:
                mod.decompressobj().decompress(d)
            ts.append((time.perf_counter() - t0) / len(streams) * 1e3)
        out[name] = median(ts)
    return (f"Mask inflate, {len(streams)} stored PNGs: CPython zlib {out['zlib']:.3f} ms, "
            f"zlib-ng {out['zlib-ng']:.3f} ms per mask ({out['zlib'] / out['zlib-ng']:.1f}x).")


def _table_ms(text: str) -> "dict[str, float]":
    """{loader: ms / sample} from the markdown table ``measure`` prints."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[1].replace(".", "", 1).isdigit():
            out[cells[0]] = float(cells[1])
    return out


def compare(rev: str, args) -> str:
    """Before/after in one run: the tree at ``rev`` (git archive of c2fmae_data, bench, tests)
    and this tree run this benchmark alternately, ``--rounds`` times each, in fresh processes
    under the same load; per loader the median over rounds of each run's median."""
    import subprocess

    rounds = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="c2fmae-baseline-") as old:
        subprocess.run(f"git -C {REPO} archive {rev} c2fmae_data bench tests | tar -x -C {old}",
                       shell=True, check=True)
        for _ in range(args.rounds):
            for name, tree in (("before", old), ("after", str(REPO))):
                r = subprocess.run([sys.executable, "-m", "bench.data.loader", "--no-write",
                                    "--runs", str(args.runs), "--imagenet-root",
                                    args.imagenet_root], cwd=tree, capture_output=True,
                                   text=True, check=True, env={**os.environ, "PYTHONPATH": tree})
                rounds[name].append(_table_ms(r.stdout))
    base = "rgb-only (same RGB path)"
    med = {k: {c: median(run[c] for run in v) for c in v[0]} for k, v in rounds.items()}
    rel = {k: {c: median(run[c] / run[base] for run in v) for c in v[0]}
           for k, v in rounds.items()}
    rows = ["| loader | before, ms / sample | after, ms / sample | before vs rgb-only | after vs "
            "rgb-only | after / before (vs rgb-only) |", "| --- | --- | --- | --- | --- | --- |"]
    for c in med["after"]:
        if c in med["before"] and c != base:
            rows.append(f"| {c} | {med['before'][c]:.2f} | {med['after'][c]:.2f} | "
                        f"{rel['before'][c]:.2f}x | {rel['after'][c]:.2f}x | "
                        f"{rel['after'][c] / rel['before'][c]:.3f}x |")
    return (f"Before/after the untrusted-data checks (issue 19): this benchmark run alternately on "
            f"commit `{rev[:10]}` (before) and this tree (after), {args.rounds} rounds each in "
            f"fresh processes, {args.runs} passes a round; medians over rounds. The RGB path is "
            f"the same code in both, so each run's ratio to its own rgb-only pass is the "
            f"load-independent figure (raw ms move with the shared machine's load: rgb-only "
            f"{med['before'][base]:.2f} ms before, {med['after'][base]:.2f} ms after).\n\n"
            + "\n".join(rows) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--imagenet-root", default=str(REPO.parent / "shared/data/imagenet-sample"))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--baseline", metavar="REV",
                    help="also run the benchmark on git revision REV, alternating, and add a "
                         "before/after table (default: none)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations with --baseline")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    inet = Path(args.imagenet_root)
    files = sorted(inet.glob("train/*/*.JPEG"))
    extra = compare(args.baseline, args) if args.baseline else ""
    with tempfile.TemporaryDirectory(prefix="c2fmae-bench-") as tmp:
        body = measure(args, inet, files, tmp)
    body += ("\n\n" + extra) if extra else ""
    if args.no_write:
        print(body)
    else:
        write_section("loader", body)


def measure(args, inet: Path, files, tmp: str) -> str:
    from tests._datasets import imagenet_sample_dataset

    imagenet_sample_dataset(f"{tmp}/ds", inet, shards=2)
    ds = ImageNetMultiGranular(f"{tmp}/ds", inet)
    st = ImageNetMultiGranularStream(f"{tmp}/ds", inet, buffer_size=64)
    cases = {"rgb-only (same RGB path)": rgb_only(files),
             "torchvision RandomResizedCrop reference": torchvision_ref(files),
             "multi-granular, shuffled index": multi(ds, True),
             "multi-granular, in order": multi(ds, False),
             "multi-granular stream": stream(st)}
    for fn in cases.values():  # warm-up: page cache, imports
        fn()
    times = {k: [] for k in cases}
    for r in range(args.runs):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / len(files) * 1e3)
    base = median(times["rgb-only (same RGB path)"])
    rows = ["| loader | ms / sample (median) | samples / s / core | vs rgb-only |",
            "| --- | --- | --- | --- |"]
    for name, ts in times.items():
        m = median(ts)
        rows.append(f"| {name} | {m:.2f} | {1e3 / m:.0f} | {m / base:.2f}x |")
    n_pixels = sum(ds.source.load(ds.key(i)).size[0] * ds.source.load(ds.key(i)).size[1]
                   for i in range(len(ds))) / len(ds) / 1e3
    return (f"### Loader: multi-granular vs RGB-only sample cost (`bench/data/loader.py`)\n\n"
            f"{len(files)} real ImageNet images from `../shared/data/imagenet-sample` (mean "
            f"{n_pixels:.0f} kpixels), labels-only shards joined by key (sha256 checked), masks at "
            f"full resolution, output 224 RGB + 56x56 masks, one process, 1 torch thread, median "
            f"of {args.runs} interleaved passes. Goal: multi-granular <= 1.25x rgb-only.\n\n"
            + "\n".join(rows) + "\n\n" + inflate_costs(f"{tmp}/ds", args.runs))


if __name__ == "__main__":
    main()
