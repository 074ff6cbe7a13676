"""Run the documented cluster commands for real against a cluster on this machine, and record what
each did (section ``cluster-commands`` of docs/benchmarks.md; docs/PIPELINE.md explains it).

    python -m bench.cluster.commands [--no-write]

With ``pipelines/cluster-local.yaml`` (Ray's fake multi-node provider: worker nodes are real
raylets + object stores on this machine):

1. ``python pipelines/check_cluster.py pipelines/cluster-local.yaml``
2. ``RAY_FAKE_CLUSTER=1 ray up -y pipelines/cluster-local.yaml``
3. the provider's documented start, ``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config
   pipelines/cluster-local.yaml``; waits until the autoscaler has started the 2 worker nodes
4. ``RAY_FAKE_CLUSTER=1 ray submit pipelines/cluster-local.yaml pipelines/label_imagenet.py --
   --address auto ...``
5. ``ray job submit --working-dir . -- python pipelines/label_imagenet.py --address auto ...
   --ship-code`` (tiny-random, the sample images, workers on the 2 worker nodes), then
   ``c2fmae-data verify`` of its output
6. ``RAY_FAKE_CLUSTER=1 ray down -y pipelines/cluster-local.yaml``
7. diagnostic, not a user's path: ``ray up`` / ``submit`` / ``down`` again with Ray's missing
   defaults file for the provider supplied (our complete yaml), to show where each fails next
8. stopping the head: its processes are killed by pid (``ray stop`` would also end every other
   Ray on the machine).
9. the head lost: ``ray start --head`` + ``ray start --address`` (a second node), a job, every
   process of that cluster killed at once while shard 2 is in flight (shard 0 final); a new head
   and node, the same ``ray job submit``: it resumes; ``c2fmae-data verify``

Step 3 adds ``--temp-dir`` and ``--dashboard-port`` to the yaml's command so this script finds
exactly its own processes and never takes another session's dashboard port. Token auth is off
for these commands (``RAY_AUTH_MODE=disabled``): a throwaway local cluster.
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.report import write_section  # noqa: E402
from tests._ray_cluster import REPO, CliHead, node_ip  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402

YAML = "pipelines/cluster-local.yaml"
HEAD_PORT = 6379   # the fake provider's worker nodes join <node ip>:6379


ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+\s+\w+ [\w.]+:\d+ -- ")
# `ray up / submit / down` with the provider's missing defaults file supplied (Ray's fake
# multinode defaults pointed at our own complete yaml): shows the next failure. Not a user path.
WITH_DEFAULTS = ("import sys, ray.autoscaler._private.providers as p; "
                 "p._DEFAULT_CONFIGS['fake_multinode'] = lambda: %r; "
                 "from ray.scripts.scripts import main; sys.argv = ['ray'] + sys.argv[1:]; main()")


def _last_line(text: str, ok: bool) -> str:
    lines = [LOG_PREFIX.sub("", ANSI.sub("", ln)).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not set(ln) <= set("-")]
    want = (("succeeded", "started", "ok:", "OK") if ok else ("Error", "error:"))
    hits = [ln for ln in lines if any(w in ln for w in want)]
    return (hits or lines or [""])[-1][:220]


def _step(steps: list, name: str, cmd: "list[str]", env: dict, timeout: float = 600) -> "tuple":
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = "timeout", f"{e.stdout or ''}{e.stderr or ''}"
    steps.append({"step": name, "cmd": " ".join(cmd), "rc": rc,
                  "s": time.perf_counter() - t, "said": _last_line(out, rc == 0)})
    print(f"[{name}] rc={rc} {steps[-1]['said']}", flush=True)
    return rc, out


def _alive_nodes(address: str, env: dict) -> int:
    code = ("import ray; ray.init(address=%r, log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))" % address)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    return int(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else 0


def run_all(out_dir: Path) -> "list[dict]":
    head = CliHead(cpus=1)            # its temp dir and dashboard port; the port must be 6379
    head.port = HEAD_PORT
    env = {**head.env, "RAY_FAKE_CLUSTER": "1"}
    steps: list = []
    sample = SHARED_DATA / "imagenet-sample"
    job_args = ["--address", "auto", "--imagenet-root", str(sample), "--out", str(out_dir),
                "--models", "tiny-random", "--shard-size", "16", "--workers", "2",
                "--worker-resource", "labeler=1", "--no-progress"]
    _step(steps, "check the yaml", [sys.executable, "pipelines/check_cluster.py", YAML], env)
    _step(steps, "ray up", ["ray", "up", "-y", YAML], env)
    with socket.socket() as s:
        if s.connect_ex((node_ip(), HEAD_PORT)) == 0:
            raise SystemExit(f"port {HEAD_PORT} is taken: another Ray head runs here; the fake "
                             f"provider's nodes can only join :{HEAD_PORT}")
    try:
        _step(steps, "ray start --head --autoscaling-config (the provider's own start)",
              ["ray", "start", "--head", "--port", str(HEAD_PORT), "--num-cpus", "1",
               "--object-store-memory", "100000000", "--autoscaling-config", YAML,
               "--temp-dir", head.tmp, "--dashboard-port", str(head.dashboard_port),
               "--disable-usage-stats"], env)
        t, n = time.perf_counter(), 0
        while time.perf_counter() - t < 180 and n < 3:
            n = _alive_nodes(head.address, env)
            time.sleep(2)
        steps.append({"step": "autoscaler starts the worker nodes", "cmd": "(wait)",
                      "rc": 0 if n == 3 else 1, "s": time.perf_counter() - t,
                      "said": f"{n} nodes alive (head + {n - 1} ray.worker.labeler)"})
        _step(steps, "ray submit", ["ray", "submit", YAML, "pipelines/label_imagenet.py", "--",
                                    *job_args], env)
        rc, log = _step(steps, "ray job submit --working-dir . (+ --ship-code)",
                        ["ray", "job", "submit", "--address", head.dashboard, "--working-dir",
                         ".", "--", "python", "pipelines/label_imagenet.py", *job_args,
                         "--ship-code"], env)
        _step(steps, "c2fmae-data verify of the job's output",
              ["c2fmae-data", "verify", str(out_dir), "--imagenet-root", str(sample)], env)
        if (out_dir / "summary.json").exists():
            run = json.loads((out_dir / "summary.json").read_text())["splits"]["train"]["run"]
            steps[-2]["said"] += (f" | batches by node: {sorted(run['batches_by_node'].values())}"
                                  f", code from {run['worker_code']}")
        _step(steps, "ray down", ["ray", "down", "-y", YAML], env)
        patched = [sys.executable, "-c", WITH_DEFAULTS % str(REPO / YAML)]
        for verb, args in (("up", ["-y", YAML]), ("submit", [YAML, "pipelines/label_imagenet.py"]),
                           ("down", ["-y", YAML])):
            _step(steps, f"diagnostic: ray {verb} with the defaults file supplied",
                  [*patched, verb, *args], env)
    finally:
        t = time.perf_counter()
        head.cleanup()
        steps.append({"step": "stop the head (kill its processes by pid)", "cmd": "(kill)",
                      "rc": 0 if not head.pids() else 1, "s": time.perf_counter() - t,
                      "said": "no process of this cluster left"})
    return steps


def _finished(out: Path) -> int:
    d = out / "_pipeline" / "shards"
    return len(list(d.glob("*.json"))) if d.exists() else 0


def _job_cmd(head: CliHead, job_args: "list[str]", env_vars: "dict | None" = None) -> list:
    runtime = ["--runtime-env-json", json.dumps({"env_vars": env_vars})] if env_vars else []
    return ["ray", "job", "submit", "--address", head.dashboard, "--working-dir", ".", *runtime,
            "--", "python", "pipelines/label_imagenet.py", *job_args]


def head_loss(steps: list, out: Path) -> None:
    """`ray start --head` + a node, a job; the head's cluster killed at once while shard 2 is in
    flight (shard 0 final); a new head + node and the same `ray job submit`: it must resume."""
    from pipelines.hooks import HOLD_FLAG_ENV, HOLD_KEY_ENV
    from pipelines.plan import list_images

    sample = SHARED_DATA / "imagenet-sample"
    keys = [it.key for it in list_images(str(sample), "train")[0]]
    job_args = ["--address", "auto", "--imagenet-root", str(sample), "--out", str(out),
                "--models", "fake", "--shard-size", "8", "--limit", "24", "--workers", "1",
                "--worker-resource", "labeler=1", "--no-progress"]
    flag = out.parent / "hold"
    head = CliHead(cpus=1).start()
    t = time.perf_counter()
    try:
        head.add_node(cpus=1, resources='{"labeler": 1}')
        job = subprocess.Popen(_job_cmd(head, job_args, {HOLD_KEY_ENV: keys[16],
                                                         HOLD_FLAG_ENV: str(flag)}),
                               cwd=REPO, env=head.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        while not (flag.exists() and _finished(out) >= 1) and time.perf_counter() - t < 300:
            time.sleep(0.05)
        final = _finished(out)
        head.kill()
        job.kill()
    finally:
        head.cleanup()
    before = {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet")}
    steps.append({"step": "head lost mid-run (its cluster killed at once)", "cmd": "(kill)",
                  "rc": 0 if final >= 1 and len(before) < 3 else 1,
                  "s": time.perf_counter() - t,
                  "said": f"{len(before)} of 3 shards final when the head went"})
    head = CliHead(cpus=1).start()
    try:
        head.add_node(cpus=1, resources='{"labeler": 1}')
        rc, log = _step(steps, "new head, the same ray job submit (resumes)",
                        _job_cmd(head, job_args), head.env)
    finally:
        head.cleanup()
    resumed = next((ln for ln in log.splitlines() if "finished," in ln and "to label" in ln), "")
    steps[-1]["said"] = f"{resumed.strip()} / {steps[-1]['said']}"
    untouched = all(p.stat().st_mtime_ns == t for p, t in before.items())
    _step(steps, "c2fmae-data verify after the resume (finished shards untouched: "
          f"{untouched})", ["c2fmae-data", "verify", str(out), "--imagenet-root", str(sample)],
          head.env)


def table(steps: "list[dict]") -> str:
    rows = ["| step | exit | s | what it said (last line, or last error line) |",
            "| --- | --- | --- | --- |"]
    for s in steps:
        said = s["said"].replace("|", "/")
        rows.append(f"| {s['step']} | {s['rc']} | {s['s']:.1f} | {said} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="c2cmd-") as tmp:
        steps = run_all(Path(tmp) / "out")
        (Path(tmp) / "lost").mkdir()
        head_loss(steps, Path(tmp) / "lost" / "out")
    body = f"""### Cluster commands on this machine (`bench/cluster/commands.py`)

`{YAML}` (provider `fake_multinode`, 2 worker nodes of 1 CPU with a `labeler` resource,
100 MB object store each), every command run for real in this order; the job is tiny-random
over the 100 sample images, shards of 16, 2 label workers placed on the 2 worker nodes,
`--ship-code`. Exit 0 = it ran; anything else is the failure Ray gave (docs/PIPELINE.md says
why and what runs instead).

{table(steps)}
"""
    if a.no_write:
        print(body)
    else:
        write_section("cluster-commands", body)


if __name__ == "__main__":
    main()
