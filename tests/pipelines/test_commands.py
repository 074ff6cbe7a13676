"""The documented cluster commands, run as written against a cluster on this machine: a head
started with ``ray start --head``, the job sent with ``ray job submit --working-dir . -- python
pipelines/label_imagenet.py --address auto ...`` (several nodes: tests/pipelines/test_cluster.py
and bench/cluster_commands.py).
The head is then lost mid-run (every process of that cluster killed at once, as when the head
machine goes away: without GCS fault tolerance the cluster goes with it), a new head is started
and the same job resubmitted: it resumes. Plus the user mistakes that must be one line: an
address where no Ray answers, a cluster yaml that does not parse."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from c2fmae_data.format.shards import list_shards  # noqa: E402
from c2fmae_data.tools.verify import verify  # noqa: E402
from pipelines.hooks import HOLD_FLAG_ENV, HOLD_KEY_ENV  # noqa: E402
from pipelines.plan import list_images  # noqa: E402
from tests._ray_cluster import REPO, CliHead, free_port  # noqa: E402

SCRIPT = "pipelines/label_imagenet.py"


def _job(head: CliHead, root, out, env_vars: "dict | None" = None):
    runtime = ["--runtime-env-json", json.dumps({"env_vars": env_vars})] if env_vars else []
    return subprocess.Popen(
        ["ray", "job", "submit", "--address", head.dashboard, "--working-dir", ".", *runtime,
         "--", "python", SCRIPT, "--address", "auto", "--imagenet-root", str(root),
         "--out", str(out), "--models", "fake", "--shard-size", "8", "--limit", "24",
         "--workers", "1", "--worker-resource", "labeler=1", "--no-progress"],
        cwd=REPO, env=head.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finished(out: Path) -> int:
    d = out / "_pipeline" / "shards"
    return len(list(d.glob("*.json"))) if d.exists() else 0


def test_ray_job_submit_runs_then_resumes_after_the_head_is_lost(imagenet_sample, tmp_path):
    keys = [it.key for it in list_images(str(imagenet_sample), "train")[0]][:24]
    out, flag = tmp_path / "out", tmp_path / "hold"
    head = CliHead(cpus=2, resources='{"labeler": 1}').start()
    try:
        job = _job(head, imagenet_sample, out, {HOLD_KEY_ENV: keys[16], HOLD_FLAG_ENV: str(flag)})
        deadline = time.monotonic() + 120
        while not (flag.exists() and _finished(out) >= 1):   # shard 2 in flight, shard 0 final
            assert job.poll() is None, job.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the job never reached shard 2"
            time.sleep(0.05)
        head.kill()                                          # the head (and its cluster) is lost
        job.kill()
        job.wait(30)
    finally:
        head.cleanup()
    time.sleep(1.0)   # a shard write already running may still land (atomically)
    before = {rel: (out / rel).stat().st_mtime_ns for rel in list_shards(str(out))}
    assert 1 <= len(before) < 3

    head = CliHead(cpus=2, resources='{"labeler": 1}').start()   # a new head, same command
    try:
        log = _job(head, imagenet_sample, out).communicate(timeout=240)[0]
    finally:
        head.cleanup()
    assert "Job 'raysubmit_" in log and "succeeded" in log, log[-3000:]
    assert f"{len(before)} finished, {3 - len(before)} to label" in log, log[-3000:]
    assert all((out / rel).stat().st_mtime_ns == t for rel, t in before.items())   # not redone
    summary = json.loads((out / "summary.json").read_text())["splits"]["train"]
    assert summary["images"] == 24 and summary["run"]["shards_skipped"] == len(before)
    report = verify(str(out), imagenet_root=str(imagenet_sample), full=True)
    assert report.ok, report.text()                          # every image exactly once


def _one_line(cmd: "list[str]", timeout: float = 60) -> "tuple[int, list[str]]":
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return p.returncode, [ln for ln in p.stderr.splitlines() if ln.strip()]


def test_an_address_where_no_ray_answers_is_one_line(tmp_path):
    """Checked before the images are even listed (a listing of 1.28M files takes a while)."""
    port = free_port()   # nothing listens there
    t = time.monotonic()
    rc, err = _one_line([sys.executable, SCRIPT, "--address", f"127.0.0.1:{port}",
                         "--imagenet-root", str(tmp_path), "--out", str(tmp_path / "out"),
                         "--models", "fake", "--no-progress"])
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: --address 127.0.0.1:{port}: no Ray cluster answers")
    assert time.monotonic() - t < 30 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, says", [
    ("cluster_name: x\nprovider: {type: aws\n  region: [\n", "bad.yaml:3:9: not valid YAML"),
    ("cluster_name: x\nprovider: {type: aws}\nmax_workers: two\n",
     "bad.yaml: max_workers: 'two' is not of type 'integer'"),
    ("cluster_name: x\nprovider: {type: aws}\navailable_node_types: {a: {resources: {}, "
     "node_config: {}, max_workers: 1}}\nhead_node_type: b\n", "head_node_type 'b' is not one"),
])
def test_a_cluster_yaml_that_does_not_parse_is_one_line(tmp_path, text, says):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    rc, err = _one_line([sys.executable, "pipelines/check_cluster.py", str(bad)])
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and says in err[0], err


@pytest.mark.parametrize("yaml_file", ["pipelines/cluster.yaml", "pipelines/cluster-local.yaml"])
def test_the_shipped_cluster_yamls_pass_the_check(yaml_file):
    p = subprocess.run([sys.executable, "pipelines/check_cluster.py", yaml_file], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith(f"ok: {yaml_file}"), p.stderr
