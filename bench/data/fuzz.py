"""The dataset fuzzer at scale: many more seeded cases than the suite's 250, on a generated shard
and on a real one, with the tools (inspect, eval-labels rows, manifest rebuild) as readers too.

    flock /tmp/c2fmae-heavy.lock python -m bench.data.fuzz [--cases 3000] [--real-cases 400]

Each target runs in a child process (``tests/_fuzz.py``: RLIMIT_AS 256 MiB above the child's
footprint, a 60 s watchdog per case). The rules are the suite's: a reader ends in a clean read
of unchanged data or a FormatError (verify: a report); changed data only after a crafted (not a
corrupting) mutation; a loader FormatError always matched by a verify --full problem. Outcome
counts go to the ``fuzz`` section of docs/benchmarks.md; a broken rule stops the run (exit 1)
with the case.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.report import write_section  # noqa: E402

READERS = ("map", "full", "stream", "skip", "stream_skip", "failed", "verify_quick", "verify_full",
           "inspect", "eval-rows", "manifest")


def run(cases: int, seed: int, real: "Path | None", mem_mb: int) -> "tuple[dict, float]":
    cmd = [sys.executable, "-m", "tests._fuzz", "--cases", str(cases), "--seed", str(seed),
           "--mem-mb", str(mem_mb), "--tools"] + (["--real", str(real)] if real else [])
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stderr[-8000:])
        raise SystemExit(f"fuzz run failed (rc {r.returncode}): {' '.join(cmd)}")
    return json.loads(r.stdout), time.perf_counter() - t


def table(name: str, res: dict, seconds: float) -> str:
    c = res["counts"]
    outcomes = sorted({o for r in READERS for o in c.get(r, {})})
    rows = [f"| reader | {' | '.join(outcomes)} |", "| --- |" + " --- |" * len(outcomes)]
    rows += [f"| {r} | " + " | ".join(str(c.get(r, {}).get(o, 0)) for o in outcomes) + " |"
             for r in READERS if r in c]
    fam = ", ".join(f"{k} {v}" for k, v in sorted(c["family"].items()))
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(c["kind"].items()))
    return (f"**{name}**: {res['cases']} cases (seed {res['seed']}; {fam}), "
            f"{seconds / res['cases'] * 1e3:.0f} ms a case, memory cap {res['mem_mb']} MiB above "
            f"the child's {res['vm_base_mb']} MiB footprint; no rule broken.\n\n"
            + "\n".join(rows) + f"\n\nMutations drawn: {kinds}.\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=3000)
    ap.add_argument("--real-cases", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mem-mb", type=int, default=256)
    ap.add_argument("--imagenet-root", default=str(REPO.parent / "shared/data/imagenet-sample"))
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    parts = []
    res, secs = run(args.cases, args.seed, None, args.mem_mb)
    parts.append(table("generated shard (self-contained, 10 rows, row groups of 4)", res, secs))
    real = Path(args.imagenet_root)
    if args.real_cases and real.exists():
        res, secs = run(args.real_cases, args.seed, real, args.mem_mb)
        parts.append(table("real shard (labels for 6 imagenet-sample JPEGs, joined by key)",
                           res, secs))
    body = ("### Fuzzer: outcomes of seeded mutations (`bench/data/fuzz.py`)\n\n"
            "Outcomes: `clean` = the loader returned exactly the reference samples; `changed` = "
            "different samples, allowed only after a crafted mutation (well-formed bytes written "
            "on purpose, e.g. two same-size semantic maps swapped: a valid dataset with other "
            "labels), never after a corruption; `FormatError` = refused with one line, always "
            "matched by a verify --full problem; verify: `ok` / `problems`; tools: "
            "`ok` / `FormatError`. Any other exception, a hang (60 s) or memory past the cap "
            "would have stopped the run.\n\n" + "\n".join(parts))
    if args.no_write:
        print(body)
    else:
        write_section("fuzz", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
