"""Multi-node figures of the Ray labeling pipeline on ONE machine (``ray.cluster_utils.Cluster``:
each node a real raylet with its own object store). Section ``pipeline-memory`` of
docs/benchmarks.md; ``node_scaling`` also feeds the 1/2/3-node table of ``bench/pipeline.py``.

    python -m bench.cluster.multinode [--runs 3] [--no-write]

* ``node_scaling``: images/s with 1, 2 and 3 worker nodes, one tiny-random label worker per
  node (custom resource ``labeler``), the head holding only the driver and the writers; the
  ratio against 1 node in the same run, node start time and resident memory per node.
* ``store_bound`` (this script's own section): 100 MiB object stores, large images, a shard
  store that writes one shard at a time and slowly; the object-store peak per node and the
  driver's peak of shards held, for N and 3N shards, with the write bound (``--max-writes 2``)
  and without it (``--max-writes 1000``: as many writes at once as finished shards, the
  behaviour before the bound).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.report import median, write_section  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402

SAMPLE = SHARED_DATA / "imagenet-sample"


def _rss_mb(pids) -> float:
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _node_rss_mb(node) -> float:
    """Resident memory of one node's own processes (raylet, agents; not its workers)."""
    pids = [p.process.pid for procs in node.all_processes.values() for p in procs
            if p.process is not None]
    return _rss_mb(pids)


def _run(root, out, *extra) -> dict:
    """One pipeline run; its "run" entry. Checks that the shards hold every image once (the
    summary counts rows in the finished shards; the writer refuses duplicates)."""
    from pipelines import label_imagenet

    e = label_imagenet.run(label_imagenet.parse_args(
        ["--imagenet-root", str(root), "--out", str(out), "--no-progress", *extra]))
    assert e["images"] == e["run"]["labeled_this_run"] == e["ok"] + e["failed"], e
    return e["run"]


def node_scaling(root: Path = SAMPLE, runs: int = 3, nodes=(1, 2, 3)) -> dict:
    """{n: {"s": [label seconds], "start_s": [node start s], "rss_mb": [per node]}} with one
    tiny-random worker per node over every image of ``root`` (shards of 8, batches of 4). The
    node counts are interleaved run by run (a fresh cluster each time), so that a change of load
    on this shared machine does not fall on one node count only."""
    from tests._ray_cluster import LocalCluster

    res: dict = {n: {"s": [], "start_s": [], "rss_mb": []} for n in nodes}
    for _ in range(runs):
        for n in nodes:
            c = LocalCluster(head_cpus=0)
            try:
                t = time.perf_counter()
                added = [c.add(cpus=1, resources={"labeler": 1}) for _ in range(n)]
                res[n]["start_s"].append((time.perf_counter() - t) / n)
                res[n]["rss_mb"].append(sum(_node_rss_mb(a) for a in added) / n)
                with tempfile.TemporaryDirectory() as out:
                    run = _run(root, out, "--models", "tiny-random", "--shard-size", "8",
                               "--batch-size", "4", "--workers", str(n),
                               "--worker-resource", "labeler=1")
                res[n]["s"].append(run["label_s"])
                res[n]["images"] = run["labeled_this_run"]
                assert len(run["batches_by_node"]) == n, run["batches_by_node"]
            finally:
                c.shutdown()
    return res


def scaling_table(res: dict) -> str:
    base = median(res[min(res)]["s"])
    rows = ["| worker nodes (1 label worker each) | s (median) | images/s | vs 1 node | "
            "node start (s) | node RSS, raylet + agents (MB) |",
            "| --- | --- | --- | --- | --- | --- |"]
    for n, r in sorted(res.items()):
        s = median(r["s"])
        rows.append(f"| {n} | {s:.1f} | {r['images'] / s:.2f} | {base / s:.2f}x | "
                    f"{median(r['start_s']):.1f} | {median(r['rss_mb']):.0f} |")
    return "\n".join(rows)


def store_bound(runs: int = 3, shards=(12, 36), delay_s: float = 0.5) -> dict:
    """{(shards, max_writes): [(peak MiB over nodes, peak shards held, spilled, fallback)]}"""
    from pipelines.hooks import WRITE_DELAY_ENV
    from tests._datasets import imagenet_style_images
    from tests._ray_cluster import LocalCluster, StoreMonitor

    res: dict = {}
    os.environ[WRITE_DELAY_ENV] = str(delay_s)
    c = LocalCluster(head_cpus=1)
    try:
        c.add(cpus=1, resources={"labeler": 1})
        with tempfile.TemporaryDirectory() as tmp:
            imagenet_style_images(Path(tmp), 4 * max(shards), size=(1280, 960), classes=9,
                                  seed=2)
            for _ in range(runs):
                for n in shards:
                    for mw in (2, 1000):
                        with tempfile.TemporaryDirectory() as out, StoreMonitor() as mon:
                            run = _run(tmp, out, "--models", "fake:0", "--shard-size", "4",
                                       "--batch-size", "2", "--limit", str(4 * n),
                                       "--workers", "1", "--worker-resource", "labeler=1",
                                       "--max-writes", str(mw))
                        res.setdefault((n, mw), []).append(
                            (mon.peak_mb(), run["peak_shards_held"],
                             sum(mon.spilled.values()), sum(mon.fallback.values()),
                             mon.peak_mb(primary=True)))
    finally:
        os.environ.pop(WRITE_DELAY_ENV, None)
        c.shutdown()
    return res


def store_table(res: dict) -> str:
    rows = ["| shards | --max-writes | primary copies, peak (MiB) | store used, peak (MiB) | "
            "shards held at most | spilled / fallback bytes |",
            "| --- | --- | --- | --- | --- | --- |"]
    for (n, mw), vals in sorted(res.items()):
        rows.append(f"| {n} | {mw} | {median(v[4] for v in vals):.1f} | "
                    f"{median(v[0] for v in vals):.1f} | {median(v[1] for v in vals):g} | "
                    f"{max(v[2] for v in vals)} / {max(v[3] for v in vals)} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    res = store_bound(a.runs)
    from pipelines.driver import shards_held_bound

    bound = shards_held_bound(1, 2, 2, 2)
    body = f"""### Ray pipeline: object store under a slow shard store (`bench/cluster/multinode.py`)

Two nodes on this machine (head: driver + writers; one worker node: the label worker), 100 MiB
object store each, 1280x960 synthetic JPEGs (3.7 MB decoded), `fake:0` models, shards of 4,
batches of 2, 1 worker, depth 2; the shard store takes one write at a time, 0.5 s each (the
`C2FMAE_PIPELINE_WRITE_DELAY_S` hook). Peaks are the largest per-node peaks, polled every 0.1 s
through Ray's private `internal_api.node_stats`: primary copies (objects the run holds) and bytes
used (which also counts copies fetched from other nodes, kept as cache until the store needs the
room, so it drifts up over a run without anything being held); median of {a.runs} runs.

{store_table(res)}

- With the bound (`--max-writes 2`, the default) the driver holds at most
  `shards_held_bound(1 worker, depth 2, 2 batches/shard, 2 writes)` = {bound} shards, for 12 and
  for 36 shards alike, and the primary copies stay within the in-flight window: prefetched +
  in-flight prepared batches (4 x 7.4 MB here) and the held shards' records. Nothing spilled,
  nothing allocated outside a store.
- Without it (`--max-writes 1000`, as before the bound) every finished shard gets a writer that
  waits on the slow store, so the shards held grow with the plan. At these sizes their records
  (~0.2 MB/image with fake models) are small next to the decoded images, so the store peak
  hardly shows it; at ImageNet scale a held shard is ~1000 images of records (~0.1-0.3 GB, the
  shard size docs/PIPELINE.md gives), so the unbounded version would fill a node's store
  behind a slow output.
"""
    if a.no_write:
        print(body)
    else:
        write_section("pipeline-memory", body)


if __name__ == "__main__":
    main()
