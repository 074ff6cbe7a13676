"""Throughput of convert-coco and verify (quick / full) on the real coco-tiny sample.

Baseline measured in the same run: the I/O floor of verify, i.e. hashing every shard file and
reading all its columns once (what any check must at least do). Results go to the
``verify-convert`` section of docs/benchmarks.md.

    python bench/data/verify_convert.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.report import median, write_section  # noqa: E402
from c2fmae_data.tools.coco import convert_coco  # noqa: E402
from c2fmae_data.tools.verify import verify  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "coco-tiny"


def timed(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is absent")
    ann = str(DATA / "annotations" / "instances_val2017.json")
    with tempfile.TemporaryDirectory() as tmp:
        root = str(Path(tmp) / "ds")
        convert_coco(root, images_dir=str(DATA / "val2017"), instances_json=ann, shard_size=16,
                     overwrite=True)  # warm-up (imports, caches)
        rows = 50
        t_conv = timed(lambda: convert_coco(root, images_dir=str(DATA / "val2017"),
                                            instances_json=ann, shard_size=16, overwrite=True),
                       args.repeats)

        def floor():
            for p in sorted((Path(root) / "shards").iterdir()):
                hashlib.sha256(p.read_bytes()).hexdigest()
                pq.read_table(p)
        t_floor = timed(floor, args.repeats)
        t_quick = timed(lambda: verify(root), args.repeats)
        t_full = timed(lambda: verify(root, full=True), args.repeats)
    body = "\n".join([
        "## verify / convert-coco (`bench/data/verify_convert.py`)",
        "",
        f"coco-tiny: {rows} real COCO val2017 images, 4 shards; median of {args.repeats} runs.",
        "",
        "| step | ms / image | images / s | vs. I/O floor |",
        "| --- | --- | --- | --- |",
        *[f"| {name} | {1000 * t / rows:.2f} | {rows / t:.0f} | {t / t_floor:.1f}x |"
          for name, t in (("I/O floor: sha256 + read all columns (baseline)", t_floor),
                          ("verify (quick)", t_quick), ("verify --full", t_full),
                          ("convert-coco --instances", t_conv))],
    ])
    write_section("verify-convert", body)


if __name__ == "__main__":
    main()
