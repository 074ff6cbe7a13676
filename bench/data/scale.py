"""Scale costs of the format and loader on a synthetic ImageNet-sized dataset (issue 14).

    flock /tmp/c2fmae-bench.lock python3 bench/data/scale.py --rows 100000 [--samples 1500] [--keep DIR]

Makes ``--rows`` labels-only rows in shards of 1000 (one real-sized mask pair, ~10 KB per row,
reused with distinct keys; every key a hard link to one real sample JPEG) and reports:

* codec: bytes of the nested ``instances`` leaves, zstd (now) vs uncompressed (before);
* index: time and Python peak memory of opening ``ImageNetMultiGranular`` (Arrow arrays, now) vs
  the per-row Python lists it used to build (emulated on the same shards);
* stream counts: ``__len__`` at world 64, one numpy pass (now) vs the per-rank Python sums (before);
* loader: samples/s in index order, under a global shuffle (``RandomSampler``-like, before) and
  under ``ShardWindowSampler`` (window 32 shards, footer cache 32), and RGB-only on the same JPEG.

Results go to the ``scale`` section of docs/benchmarks.md. The synthetic data is deleted at the end
unless ``--keep``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests._datasets import blob_masks, record  # noqa: E402
from bench.report import median, write_section  # noqa: E402
from c2fmae_data import ImageNetMultiGranular, ImageNetMultiGranularStream  # noqa: E402
from c2fmae_data.format.manifest import build_manifest  # noqa: E402
from c2fmae_data.loading.sampler import ShardWindowSampler  # noqa: E402
from c2fmae_data.format.shards import write_shard  # noqa: E402
from c2fmae_data.loading.source import decode_rgb  # noqa: E402
from c2fmae_data.loading.transforms import TrainTransform  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "imagenet-sample"
WNID = "n01440764"


def make_dataset(root: Path, images: Path, rows: int) -> Path:
    jpeg = next(iter(sorted(SAMPLE.rglob("*.JPEG"))))
    data = jpeg.read_bytes()
    w, h = decode_rgb(data).size
    inst, sem = blob_masks(w, h, n=6, seed=0)
    tmpl = record("x", data, inst, sem, wnid=WNID, embed=False)
    (images / "train" / WNID).mkdir(parents=True)
    infos = []
    for s in range(0, rows, 1000):
        recs = []
        if s % 50000 == 0:   # a private copy per 50k links (ext4 allows 65000 per file)
            src = images / f"template-{s}.JPEG"
            shutil.copyfile(jpeg, src)
        for i in range(s, min(rows, s + 1000)):
            key = f"train/{WNID}/img_{i:08d}.JPEG"
            os.link(src, images / key)
            recs.append({**tmpl, "key": key})
        infos.append(write_shard(str(root), "train", s // 1000, recs, validate=False))
    build_manifest(str(root), known=infos)
    return jpeg


def codec_bytes(root: Path) -> "tuple[int, int]":
    import pyarrow.parquet as pq

    md = pq.ParquetFile(next(iter(sorted((root / "shards").glob("*.parquet"))))).metadata
    comp = unc = 0
    for g in range(md.num_row_groups):
        for c in range(md.row_group(g).num_columns):
            col = md.row_group(g).column(c)
            if col.path_in_schema.startswith("instances."):
                comp, unc = comp + col.total_compressed_size, unc + col.total_uncompressed_size
    return comp, unc


def timed_peak(fn):
    tracemalloc.start()
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, dt, peak


def old_lists(ds):
    """What the index used to hold while building: Python lists of every key/status/class."""
    keys, status, classes = [], [], []
    for s in range(len(ds.shard_files)):
        k, st, _, c = ds._scan(s)
        keys += k
        status += st
        classes += c
    return np.array([k.encode() for k in keys], dtype=bytes)


def stream_len(root, images) -> "tuple[float, float]":
    st = ImageNetMultiGranularStream(root, images, world_size=64, rank=0, even=True)
    t = time.perf_counter()
    _ = min(sum(st.units[u][2] for u in st._assignment(r, 64, 0, 1)) for r in range(64))
    before = time.perf_counter() - t
    st._order_cache = (None,)
    t = time.perf_counter()
    len(st)
    return before, time.perf_counter() - t


def verify_times(root: Path, shards: int) -> "tuple[float, float, float, float]":
    """(full serial s, full 2 workers s) on the first ``shards`` shards, and quick-mode row reads
    per shard in 16-row groups (before) vs one read (after), in ms."""
    import json

    import pyarrow.parquet as pq

    from c2fmae_data.tools.verify import LIGHT_COLUMNS, _iter_rows, verify

    sub = root.parent / "verify-sub"
    (sub / "shards").mkdir(parents=True, exist_ok=True)
    m = json.loads((root / "manifest.json").read_text())
    sp = m["splits"]["train"]
    sp["shards"] = sp["shards"][:shards]
    sp.pop("index", None)   # the full split's index does not describe the subset
    for k in ("rows", "ok", "failed", "instances", "bytes"):
        sp[k] = sum(int(e.get(k, 0) or 0) for e in sp["shards"])
    for e in sp["shards"]:
        os.link(root / e["file"], sub / e["file"])
    (sub / "manifest.json").write_text(json.dumps(m))
    out = []
    for w in (1, 2):
        t = time.perf_counter()
        rep = verify(str(sub), full=True, workers=w)
        out.append(time.perf_counter() - t)
        assert rep.ok, rep.text()
    pf = pq.ParquetFile(sub / sp["shards"][0]["file"])
    for whole in (False, True):
        t = time.perf_counter()
        for _ in range(5):
            sum(1 for _ in _iter_rows(pf, LIGHT_COLUMNS, whole=whole))
        out.append((time.perf_counter() - t) / 5 * 1e3)
    return tuple(out)


def throughput(ds, order, n: int) -> float:
    t = time.perf_counter()
    for i in order[:n]:
        ds[int(i)]
    return n / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--samples", type=int, default=1500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--verify-shards", type=int, default=4)
    ap.add_argument("--keep", default=None)
    a = ap.parse_args(argv)
    work = Path(a.keep or tempfile.mkdtemp(prefix="c2fmae-scale-"))
    root, images = work / "ds", work / "images"
    try:
        t = time.perf_counter()
        jpeg = make_dataset(root, images, a.rows)
        make_s = time.perf_counter() - t
        size = sum(f.stat().st_size for f in (root / "shards").glob("*.parquet"))
        comp, unc = codec_bytes(root)
        ds, open_s, open_peak = timed_peak(
            lambda: ImageNetMultiGranular(root, images, footer_cache=32))
        _, old_s, old_peak = timed_peak(lambda: old_lists(ds))
        len_before, len_after = stream_len(root, images)
        v1, v2, q_groups, q_whole = verify_times(root, a.verify_shards)
        rng = np.random.default_rng(0)
        n = len(ds)
        sampler = ShardWindowSampler(ds, 1, 0, seed=0, window=32)
        orders = {"in order": np.arange(n), "global shuffle": rng.permutation(n),
                  "shard-window shuffle": np.array(list(sampler))}
        tt = TrainTransform()
        data = jpeg.read_bytes()
        rates = {k: [] for k in [*orders, "rgb-only"]}
        for r in range(a.runs):
            for k, o in orders.items():
                ds._close()
                rates[k].append(throughput(ds, o[r * a.samples:], a.samples))
            t = time.perf_counter()
            for _ in range(a.samples):
                tt(decode_rgb(data))
            rates["rgb-only"].append(a.samples / (time.perf_counter() - t))
        med = {k: median(v) for k, v in rates.items()}
        lines = [f"Synthetic {a.rows:,} rows in {a.rows // 1000} shards of 1000 "
                 f"({size / a.rows / 1e3:.1f} KB per row, {size / 1e9:.2f} GB; made in "
                 f"{make_s:.0f} s), labels-only, hard-linked JPEG {jpeg.name}.", "",
                 "| item | before | after |", "|---|---|---|",
                 f"| `instances` leaves per shard (5) | {unc / 1e3:.0f} KB uncompressed | "
                 f"{comp / 1e3:.0f} KB zstd |",
                 f"| open map-style index (6a) | Python lists: {old_s:.2f} s, +{old_peak / 1e6:.0f}"
                 f" MB Python peak | Arrow: {open_s:.2f} s, +{open_peak / 1e6:.0f} MB |",
                 f"| stream `__len__`, world 64 (3) | {len_before * 1e3:.1f} ms | "
                 f"{len_after * 1e3:.1f} ms |",
                 f"| `verify --full`, {a.verify_shards} shards (4) | 1 worker: {v1:.1f} s | "
                 f"2 workers: {v2:.1f} s ({v1 / v2:.2f}x) |",
                 f"| quick-mode row read per shard (4) | one read: {q_whole:.0f} ms | "
                 f"16-row groups (verify's choice since 2026-12-02): {q_groups:.0f} ms |", "",
                 f"Loader, one thread, median of {a.runs} runs of {a.samples} samples "
                 "(`train` transform, sha256 check on):", "",
                 "| order | samples/s | vs in order | multi-granular / RGB-only time |",
                 "|---|---|---|---|"]
        for k in orders:
            lines.append(f"| {k} | {med[k]:.0f} | {med[k] / med['in order']:.2f} | "
                         f"{med['rgb-only'] / med[k]:.2f}x |")
        lines.append(f"| rgb-only | {med['rgb-only']:.0f} | | 1.00x |")
        write_section(f"scale-{a.rows}", "\n".join(lines))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
