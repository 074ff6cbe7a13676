"""Label ImageNet-1K into multi-granular shards on a Ray cluster, resumably and exactly once.

    python pipelines/label_imagenet.py --imagenet-root /data/imagenet --out /data/c2fmae-in1k
    ray submit pipelines/cluster.yaml pipelines/label_imagenet.py -- --address auto \\
        --imagenet-root /mnt/imagenet --out s3://bucket/c2fmae-in1k --gpus-per-worker 1
    ray job submit --address http://<head>:8265 --working-dir . -- python \\
        pipelines/label_imagenet.py --address auto --imagenet-root /mnt/imagenet --out ...

Rerunning the same command resumes: finished shards are skipped, the others redone. See
docs/PIPELINE.md for the design (stages, exactly-once, fault handling) and every option.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

if __package__ in (None, ""):   # run as a script: make the repository's packages importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from c2fmae_data.format.index import load_shard_rows  # noqa: E402
from c2fmae_data.format.manifest import build_manifest  # noqa: E402
from c2fmae_data.format.fs import join, open_fs  # noqa: E402
from c2fmae_data.format.shards import ShardInfo  # noqa: E402

from pipelines.plan import (STATE_DIR, PlanError, check_resumable, make_plan, parse_classes,
                            save_plan)  # noqa: E402,E501
from pipelines.connect import check_address, init_ray, parse_worker_resources  # noqa: E402
from pipelines.report import format_summary, write_summary  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--imagenet-root", required=True,
                   help="folder (or fsspec URL) holding <split>/<wnid>/<file>; every node must "
                        "read it at this path")
    p.add_argument("--out", required=True, help="dataset root: local path or fsspec URL")
    p.add_argument("--split", default="train", choices=["train", "val"],
                   help="split folder to label (default: train)")
    p.add_argument("--classes", help="comma-separated wnids or class indices (changes the plan; "
                                     "default: all 1000)")
    p.add_argument("--limit", type=int, help="first N keys of the sorted listing (changes the "
                                             "plan; default: all)")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (default: 1000)")
    p.add_argument("--batch-size", type=int, default=8, help="images per label call (default: 8)")
    p.add_argument("--models", default="default", help="labeling preset: default, tiny, "
                   "tiny-random, fake, fake:<latency_ms> (default: default)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="model precision (default: fp32)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                   help="auto: cuda when the cluster has GPUs (default: auto)")
    p.add_argument("--workers", type=int, help="label workers (default: GPUs / --gpus-per-worker, "
                                              "or 1 without GPUs)")
    p.add_argument("--gpus-per-worker", type=float, default=1.0,
                   help="GPUs per label worker; fractional shares a GPU; ignored on cpu "
                        "(default: 1)")
    p.add_argument("--worker-cpus", type=float, help="CPUs reserved per label worker "
                   "(default: 1 with GPUs, 0 on cpu so the CPU stage can run beside it)")
    p.add_argument("--depth", type=int, default=2,
                   help="batches queued per worker, for pipelining (default: 2)")
    p.add_argument("--worker-resource", action="append", metavar="NAME=AMOUNT",
                   help="a custom Ray resource each label worker needs (repeatable), to place "
                        "workers on the nodes that offer it, e.g. a100=1")
    p.add_argument("--max-writes", type=int, default=2,
                   help="shards written at once; no new shard is opened while a finished one "
                        "waits, which bounds the object store under a slow output (default: 2)")
    p.add_argument("--max-crashes", type=int, default=100,
                   help="abort after this many label-worker deaths; finished shards are kept "
                        "(default: 100)")
    p.add_argument("--allow-failed", action="store_true",
                   help="exit 0 even when the split holds failed rows (default: exit 1)")
    p.add_argument("--address", help="Ray cluster address ('auto' under ray submit; default: "
                   "start a local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--ship-code", action="store_true", help="send c2fmae_data/labeling/pipelines "
                   "to the workers in the job's runtime_env (when nodes lack the installed repo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def validate(args) -> None:
    """Check every argument that needs no listing, before anything starts (Ray included)."""
    from labeling.presets.catalog import parse_preset

    try:
        parse_preset(args.models)
    except ValueError as e:
        raise PlanError(f"--models: {e}") from None
    for flag, low in (("shard_size", 1), ("batch_size", 1), ("limit", 1), ("workers", 1),
                      ("depth", 1), ("max_crashes", 0), ("num_cpus", 1), ("worker_cpus", 0),
                      ("max_writes", 1)):
        v = getattr(args, flag)
        if v is not None and v < low:
            raise PlanError(f"--{flag.replace('_', '-')} must be >= {low}, got {v}")
    if not args.gpus_per_worker > 0:
        raise PlanError(f"--gpus-per-worker must be > 0, got {args.gpus_per_worker}")
    parse_classes(args.classes)
    parse_worker_resources(args.worker_resource)
    if args.address:
        check_address(args.address)
    for flag in ("imagenet_root", "out"):   # workers run elsewhere: no path relative to here
        v = getattr(args, flag)
        if "://" not in v:
            setattr(args, flag, os.path.abspath(os.path.expanduser(v)))


def resources(args) -> "tuple[str, int, float, float]":
    """(device, workers, gpus per worker, cpus per worker) for this cluster."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    device = args.device if args.device != "auto" else ("cuda" if gpus > 0 else "cpu")
    gpw = args.gpus_per_worker if device == "cuda" else 0.0
    workers = args.workers or (max(1, int(gpus // gpw)) if gpw > 0 else 1)
    cpus = args.worker_cpus if args.worker_cpus is not None else (1.0 if gpw > 0 else 0.0)
    return device, workers, gpw, cpus


def _known_infos(out: str) -> "list[ShardInfo]":
    """Manifest entries of shards finished by earlier runs, every split (a ledger entry is written
    after each shard; build_manifest rehashes any shard whose size disagrees)."""
    import json

    fs, base = open_fs(out)
    d = join(base, STATE_DIR, "shards")
    infos = []
    if fs.exists(d):
        for p in fs.ls(d, detail=False):
            if p.endswith(".json"):
                with fs.open(p, "r") as f:
                    info = ShardInfo(**json.load(f))
                # the shard's index rows, kept by the writer: the manifest then reads no shard
                info.index = load_shard_rows(fs, p[:-len(".json")] + ".index.parquet")
                infos.append(info)
    return infos


def run(args) -> "dict[str, Any]":
    """Plan, resume check, label the missing shards, rebuild the manifest, write the summary."""
    import ray

    from pipelines.driver import Driver
    from pipelines.hooks import hooks_from_env
    from pipelines.stages import remote_functions

    t0 = time.perf_counter()
    validate(args)
    classes = parse_classes(args.classes)
    plan = make_plan(args.imagenet_root, args.split, shard_size=args.shard_size,
                     models=args.models, precision=args.precision, classes=classes,
                     limit=args.limit)
    done = set(check_resumable(args.out, plan))
    todo = [i for i in range(plan.num_shards) if i not in done]
    save_plan(args.out, plan, {k: v for k, v in vars(args).items()})
    for line in plan.notes:
        print(line, flush=True)
    print(f"plan {plan.fingerprint[:12]}: {len(plan.items)} images, {plan.num_shards} shards of "
          f"{plan.shard_size}; {len(done)} finished, {len(todo)} to label", flush=True)

    if not todo:   # nothing to label: no Ray, no models; provenance comes from the shards
        build_manifest(args.out, known=_known_infos(args.out))
        entry = write_summary(args.out, plan.split, {
            "labeled_this_run": 0, "shards_written": 0, "shards_skipped": len(done),
            "wall_s": time.perf_counter() - t0, "plan": plan.fingerprint})
        print(format_summary(plan.split, entry), flush=True)
        return entry

    init_ray(args)
    device, n_workers, gpw, cpus = resources(args)
    proto = open_fs(args.out)[0].protocol
    local_out = "file" in (proto if isinstance(proto, (tuple, list)) else (proto,))
    custom = parse_worker_resources(args.worker_resource)
    prepare, Worker, writer = remote_functions(local_out, cpus, gpw, max_restarts=-1,
                                               worker_resources=custom)
    test_hooks = hooks_from_env()
    workers = [Worker.remote(args.models, device, args.precision, test_hooks)
               for _ in range(n_workers)]
    labeled, infos = 0, []
    try:
        provenance = first_provenance(workers, {"CPU": cpus, "GPU": gpw, **custom})
        meta = {"provenance": provenance, "self_contained": False,
                "plan": {"fingerprint": plan.fingerprint, "split": plan.split,
                         "num_shards": plan.num_shards, "shard_size": plan.shard_size}}
        bar = progress_bar(args, plan, todo)

        def progress(n: int) -> None:
            nonlocal labeled
            labeled += n
            if bar is not None:
                bar.update(n)

        prep_opts = {k: provenance[k] for k in ("max_pixels", "max_model_side")
                     if k in provenance}
        write_opts = {"delay_s": test_hooks["write_delay_s"]} if "write_delay_s" in test_hooks \
            else {}
        driver = Driver(plan, todo, root=args.imagenet_root, out=args.out, meta=meta,
                        prep_opts=prep_opts, prepare=prepare, workers=workers, writer=writer,
                        batch_size=args.batch_size, depth=args.depth,
                        max_crashes=args.max_crashes, max_writes=args.max_writes,
                        write_opts=write_opts, on_progress=progress,
                        log=(bar.write if bar is not None else print))
        t_label = time.perf_counter()
        infos = driver.run()
        label_s = time.perf_counter() - t_label
        if bar is not None:
            bar.close()
    finally:
        for w in workers:
            ray.kill(w)
    # the ledger's entries come last so they win: they also carry the shards' index rows
    known = [ShardInfo(**i) for i in infos] + _known_infos(args.out)
    build_manifest(args.out, provenance=meta["provenance"], known=known)
    wall = time.perf_counter() - t0
    entry = write_summary(args.out, plan.split, {
        "labeled_this_run": labeled, "shards_written": len(infos), "shards_skipped": len(done),
        "wall_s": wall, "label_s": label_s, "workers": n_workers, "device": device,
        "gpus": n_workers * gpw if device == "cuda" else 0, "plan": plan.fingerprint,
        **driver.stats()})
    print(format_summary(plan.split, entry), flush=True)
    return entry


def first_provenance(workers: list, needs: "dict[str, float]") -> "dict[str, Any]":
    """Provenance of the first worker to start (others may wait for a node that has not joined
    yet). A worker whose models cannot load raises here: the run fails fast."""
    import ray

    from pipelines.driver import REVIVE_TIMEOUT_S

    pending = {w.ready.remote(): w for w in workers}
    t0 = time.monotonic()
    while time.monotonic() - t0 < REVIVE_TIMEOUT_S:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=60.0)
        if ready:
            ray.get(ready[0])
            return ray.get(pending[ready[0]].provenance.remote())
        print(f"waiting for a label worker to start: none placed yet (each needs {needs}; "
              f"free in the cluster now: {ray.available_resources()})", flush=True)
    raise RuntimeError(f"no label worker started within {REVIVE_TIMEOUT_S} s: no node offers "
                       f"{needs} (check --worker-resource / --gpus-per-worker / --worker-cpus)")


def progress_bar(args, plan, todo: "list[int]"):
    todo_images = sum(len(plan.shards[i]) for i in todo)
    if args.no_progress or not todo_images:
        return None
    from tqdm import tqdm

    return tqdm(total=todo_images, unit="img", desc=f"labeling {plan.split}",
                dynamic_ncols=True, smoothing=0.05)


def main(argv=None) -> int:
    """Exit 0, 1 when the split holds failed rows (unless --allow-failed; the same rule as
    ``c2fmae-data label`` and ``convert-coco``), 2 for bad arguments."""
    args = parse_args(argv)
    try:
        entry = run(args)
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if entry["failed"] and not args.allow_failed:
        print(f"{entry['failed']} failed row(s) in split {args.split!r} (listed in "
              f"{entry['failures_file']}): exit status 1; pass --allow-failed to accept them",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
