"""Mutation fuzzing of a dataset root (issue 19): every reader must end in a clean read or a
FormatError, in bounded time and memory, whatever bytes a shard, its index or the manifest hold.

A target is one generated shard (self-contained, 10 rows in row groups of 4, masks at sizes up to
320x240 so that one PNG spans several IDAT chunks, one failed row) or, with ``real``, labels for
real ImageNet images joined by key. Each case applies one mutation (``mutations.py``-style list
below, drawn from a seeded RNG), installs it as a hostile producer would (the manifest lists the
mutated shard's size and sha256) and runs the readers. Rules:

* R1: a reader raises nothing but a FormatError (``verify`` raises nothing at all; it reports);
* R2: a loader that reads cleanly after a *corruption* (damage: no CRC fixed up) returns exactly
  the reference samples; after a *crafted* mutation (well-formed bytes a producer wrote on
  purpose) it may return other samples: e.g. two same-size semantic maps swapped is a valid
  dataset with other labels, which no reader can tell from the original;
* R3: a loader that raises a FormatError is matched by a ``verify --full`` problem.

Hangs and memory blow-ups are caught by ``run_isolated``: a child process with ``RLIMIT_AS`` set
a budget above its footprint after warm-up and a per-case watchdog (faulthandler), so a MemoryError
or a stuck case fails the run. Used by tests/c2fmae_data/test_fuzz.py (a few hundred cases) and
bench/data/fuzz.py (many more, counts to docs/benchmarks.md).
"""
from __future__ import annotations

import collections
import json
import random
import traceback
from pathlib import Path

import numpy as np

from c2fmae_data.format.schema import FormatError
from tests._hostile import SMALL, Target, build_target, install, mutation, restore


# ----------------------------------------------------------------------------- readers
def _snapshot(sample: dict):
    out = {"key": sample["key"], "label": sample["label"]}
    for k in ("rgb", "instance", "semantic", "image"):
        v = sample.get(k)
        out[k] = None if v is None else np.asarray(v).copy()
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray) else x == y
        for x, y in ((a[k], b[k]) for k in a))


def _read(t: Target, name: str) -> list:
    from c2fmae_data import ImageNetMultiGranular, ImageNetMultiGranularStream

    kw = dict(SMALL, imagenet_root=t.imagenet_root)
    if name in ("stream", "stream_skip"):
        ds = ImageNetMultiGranularStream(t.root, transform="train", shuffle=False,
                                         on_error="skip" if name == "stream_skip" else "raise",
                                         **kw)
        ds.set_augment_seed(0, 0)
        return [_snapshot(s) for s in ds]
    ds = ImageNetMultiGranular(t.root, transform=None if name == "full" else "train",
                               on_error="skip" if name == "skip" else "raise",
                               include_failed=name == "failed", **kw)
    ds.set_augment_seed(0, 0)
    return [_snapshot(ds[i]) for i in range(len(ds))]


LOADERS = ("map", "full", "stream", "skip", "stream_skip", "failed")


def run_loaders(t: Target, names=LOADERS) -> "dict[str, tuple[object, str]]":
    """{loader: (list of samples | 'FormatError', message)}; any other exception propagates."""
    out = {}
    for name in names:
        try:
            out[name] = (_read(t, name), "")
        except FormatError as e:
            out[name] = ("FormatError", str(e))
    return out


def run_tools(t: Target) -> "dict[str, str]":
    """inspect, grid, eval-labels against the original, manifest rebuild: 'ok' or
    'FormatError' (other exceptions propagate)."""
    from c2fmae_data.format.manifest import build_manifest
    from c2fmae_data.label_eval.run import dataset_rows
    from c2fmae_data.tools.inspection import dataset_stats

    out = {}
    jobs = {"inspect": lambda: dataset_stats(str(t.root)),
            "eval-rows": lambda: sum(1 for _ in dataset_rows(str(t.root), "PRED_ROOT")),
            "manifest": lambda: build_manifest(str(t.root), write=False)}
    for name, job in jobs.items():
        try:
            job()
            out[name] = "ok"
        except FormatError:
            out[name] = "FormatError"
    return out


# ----------------------------------------------------------------------------- one case
class RuleBroken(AssertionError):
    pass


def case(t: Target, rng: random.Random, tools: bool = False) -> "dict[str, str]":
    """Run one mutation through every reader; {reader: outcome}; RuleBroken on a violation."""
    from c2fmae_data.tools.verify import verify

    family, kind, files = mutation(t, rng)
    install(t, files)
    try:
        outcomes = {"family": family, "kind": kind}
        loaders = run_loaders(t)
        reps = {m: verify(str(t.root), full=m == "full", workers=1) for m in ("quick", "full")}
        outcomes.update({f"verify_{m}": "ok" if r.ok else "problems" for m, r in reps.items()})
        for name, (got, msg) in loaders.items():
            if got == "FormatError":
                outcomes[name] = "FormatError"
                if reps["full"].ok:
                    raise RuleBroken(f"R3 {family}/{kind}: {name} raised {msg!r} but verify "
                                     "--full found nothing")
                continue
            if name.endswith("skip"):   # skipped rows are left out or replaced: compare by key
                ref = {r["key"]: r for r in t.ref[name]}
                same = all(s["key"] in ref and _same(s, ref[s["key"]]) for s in got)
            else:
                same = len(got) == len(t.ref[name]) and all(map(_same, got, t.ref[name]))
            outcomes[name] = "clean" if same else "changed"
            if not same and family == "corrupt":
                raise RuleBroken(f"R2 {family}/{kind}: {name} read changed data without an "
                                 f"error (verify --full: {reps['full'].problems[:2]})")
        if tools:
            outcomes.update(run_tools(t))
        return outcomes
    finally:
        restore(t)


def fuzz(t: Target, cases: int, seed: int, tools: bool = False, on_case=None
         ) -> "dict[str, collections.Counter]":
    """Run ``cases`` seeded cases; counts per reader and outcome. A broken rule or an unexpected
    exception is raised with the case number and mutation (reproducible from ``seed``)."""
    import logging

    logging.getLogger("c2fmae_data").setLevel(logging.ERROR)   # skip mode warns per row
    counts: "dict[str, collections.Counter]" = collections.defaultdict(collections.Counter)
    for n in range(cases):
        rng = random.Random(f"{seed}-{n}")
        if on_case:
            on_case(n)
        try:
            out = case(t, rng, tools)
        except RuleBroken:
            raise
        except Exception as e:  # noqa: BLE001 - R1: name the case, keep the traceback
            raise RuleBroken(f"R1 case {n} (seed {seed}): {type(e).__name__}: {e}\n"
                             + traceback.format_exc()) from e
        for reader, outcome in out.items():
            counts[reader][outcome] += 1
    return counts


def run_isolated(root: Path, cases: int, seed: int, *, real: "Path | None" = None,
                 mem_mb: int = 1024, case_timeout: float = 60, tools: bool = False) -> dict:
    """``fuzz`` in this process under a memory cap and a per-case watchdog (call it in a child
    process: the cap and the watchdog's exit are for good)."""
    import faulthandler
    import resource
    import sys

    t = build_target(root, real)
    t.ref = {name: outcome for name, (outcome, _) in run_loaders(t).items()}   # the clean reads
    assert all(isinstance(v, list) for v in t.ref.values()), t.ref
    fuzz(t, 2, seed + 1, tools)                 # warm-up: imports, allocator arenas
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) << 10
    resource.setrlimit(resource.RLIMIT_AS, (vm + (mem_mb << 20), resource.RLIM_INFINITY))

    def arm(n):
        faulthandler.dump_traceback_later(case_timeout, exit=True, file=sys.stderr)
    counts = fuzz(t, cases, seed, tools, on_case=arm)
    faulthandler.cancel_dump_traceback_later()
    return {"cases": cases, "seed": seed, "mem_mb": mem_mb, "vm_base_mb": vm >> 20,
            "counts": {k: dict(v) for k, v in counts.items()}}


def main(argv=None) -> int:
    import argparse
    import sys
    import tempfile

    ap = argparse.ArgumentParser(description="run the dataset fuzzer isolated; JSON on stdout")
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mem-mb", type=int, default=1024)
    ap.add_argument("--case-timeout", type=float, default=60)
    ap.add_argument("--real", default=None, help="ImageNet-layout folder for a real shard")
    ap.add_argument("--tools", action="store_true", help="also inspect, eval rows, manifest")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="c2fmae-fuzz-") as tmp:
        try:
            res = run_isolated(Path(tmp) / "ds", args.cases, args.seed,
                               real=Path(args.real) if args.real else None, mem_mb=args.mem_mb,
                               case_timeout=args.case_timeout, tools=args.tools)
        except RuleBroken as e:
            print(f"FUZZ FAILURE: {e}", file=sys.stderr)
            return 1
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
