"""The documented cluster commands, run as written against a cluster on this machine: a head
started with ``ray start --head``, a second node joined with ``ray start --address``, the job sent
with ``ray job submit --working-dir . -- python pipelines/label_imagenet.py --address auto ...``
(with ``--ship-code``: the label worker imports the packages the job shipped). The head lost
mid-run and the resubmitted job resuming: bench/cluster/commands.py (the longest cluster run).
Plus the user mistakes that must be one line: an address where no Ray answers, a cluster yaml
that does not parse."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")

from c2fmae_data.tools.verify import verify  # noqa: E402
from tests._ray_cluster import REPO, CliHead, free_port  # noqa: E402

SCRIPT = "pipelines/label_imagenet.py"


def test_ray_job_submit_on_two_nodes_with_shipped_code(imagenet_sample, tmp_path):
    out = tmp_path / "out"
    head = CliHead(cpus=1).start()
    try:
        head.add_node(cpus=1, resources='{"labeler": 1}')   # where the label worker must go
        p = subprocess.run(
            ["ray", "job", "submit", "--address", head.dashboard, "--working-dir", ".", "--",
             "python", SCRIPT, "--address", "auto", "--imagenet-root", str(imagenet_sample),
             "--out", str(out), "--models", "fake", "--shard-size", "8", "--limit", "24",
             "--workers", "1", "--worker-resource", "labeler=1", "--ship-code",
             "--no-progress"],
            cwd=REPO, env=head.env, capture_output=True, text=True, timeout=300)
    finally:
        head.cleanup()
    log = p.stdout + p.stderr
    assert p.returncode == 0 and "succeeded" in log, log[-3000:]
    run = json.loads((out / "summary.json").read_text())["splits"]["train"]["run"]
    assert len(run["batches_by_node"]) == 1 and sum(run["batches_by_node"].values()) == 3
    assert all("runtime_resources/py_modules_files" in c for c in run["worker_code"]), run
    report = verify(str(out), imagenet_root=str(imagenet_sample), full=True)
    assert report.ok, report.text()                          # every image exactly once
    summary = json.loads((out / "summary.json").read_text())["splits"]["train"]
    assert summary["images"] == 24 and summary["shards"] == 3


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
