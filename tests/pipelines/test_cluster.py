"""The Ray pipeline on a real multi-node cluster on this machine (``ray.cluster_utils.Cluster``:
every node its own raylet and object store). Label workers need a custom resource ``labeler``
that only the worker nodes offer, so the test decides where labeling happens; the head runs the
driver (this process) and the shard writers. (A separate driver process with ``--ship-code`` on
several nodes: tests/pipelines/test_commands.py.)

One uninterrupted single-node run (the head alone, before any node joins) is the reference: runs
interrupted by a node joining or a node lost must give exactly its rows, byte for byte."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from c2fmae_data.format.shards import list_shards  # noqa: E402
from c2fmae_data.tools.verify import verify  # noqa: E402
from pipelines import label_imagenet  # noqa: E402
from pipelines.driver import shards_held_bound  # noqa: E402
from pipelines.hooks import HOLD_FLAG_ENV, HOLD_KEY_ENV, WRITE_DELAY_ENV  # noqa: E402
from pipelines.plan import list_images  # noqa: E402
from tests._datasets import imagenet_style_images, label_rows  # noqa: E402
from tests._ray_cluster import LocalCluster, StoreMonitor  # noqa: E402

PLAN = ["--models", "tiny-random", "--shard-size", "8", "--batch-size", "4", "--limit", "24",
        "--no-progress"]
ON_WORKER_NODES = ["--worker-resource", "labeler=1"]


def _finished(out) -> int:
    d = Path(out) / "_pipeline" / "shards"
    return len(list(d.glob("*.json"))) if d.exists() else 0


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _held_node(flag: Path) -> str:
    """Node id written by the hold hook (``node <id> pid <pid>``)."""
    return flag.read_text().split()[1]


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster(head_cpus=1)
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def reference(cluster, imagenet_sample, tmp_path_factory):
    """Uninterrupted tiny-random run on the head alone (no other node exists yet)."""
    assert not cluster.worker_nodes()
    out = tmp_path_factory.mktemp("reference")
    entry = label_imagenet.run(label_imagenet.parse_args(
        ["--imagenet-root", str(imagenet_sample), "--out", str(out), *PLAN, "--workers", "1"]))
    rows = label_rows(out)
    assert len(rows) == 24 and entry["failed"] == 0
    assert list(entry["run"]["batches_by_node"]) == [cluster.head.node_id]
    return rows


def _labeler_nodes(cluster, n: int) -> list:
    """At least ``n`` worker nodes offering one ``labeler`` each."""
    while len(cluster.worker_nodes()) < n:
        cluster.add(cpus=1, resources={"labeler": 1})
    return cluster.worker_nodes()


def test_node_joining_mid_run_gets_work(cluster, reference, imagenet_sample, tmp_path,
                                        monkeypatch):
    """Two workers, room for one: the second waits. A node joins while the first worker is held
    on a batch; the waiting worker starts there and finishes shards; same rows as the
    reference."""
    first = _labeler_nodes(cluster, 1)[0]
    keys = sorted(reference)
    out, flag = tmp_path / "out", tmp_path / "hold"
    monkeypatch.setenv(HOLD_KEY_ENV, keys[8])          # shard 1, batch 0
    monkeypatch.setenv(HOLD_FLAG_ENV, str(flag))
    result: dict = {}

    def drive():   # the driver in a thread: a node can only be added from the main thread
        try:
            result["entry"] = label_imagenet.run(label_imagenet.parse_args(
                ["--imagenet-root", str(imagenet_sample), "--out", str(out), *PLAN,
                 *ON_WORKER_NODES, "--workers", "2", "--depth", "1"]))
        except BaseException as e:  # noqa: BLE001 - re-raised below
            result["error"] = e

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        _wait(flag.exists, 120, "the first worker to take the held batch")
        joined = cluster.add(cpus=1, resources={"labeler": 1}).node_id
        # shard 1 is held on the first node: a second finished shard is the joined node's work
        _wait(lambda: _finished(out) >= 2, 120, "the joined node to finish a shard")
        finished_while_held = _finished(out)
    finally:
        (tmp_path / "hold.release").touch()
        driver.join(180)
    if "error" in result:
        raise result["error"]
    entry = result["entry"]
    run = entry["run"]
    assert _held_node(flag) == first.node_id and finished_while_held == 2
    assert set(run["batches_by_node"]) == {first.node_id, joined}
    assert run["batches_by_node"][joined] >= 3             # shard 1's 2nd batch, shard 2
    assert run["crashes"] == run["node_losses"] == 0
    assert label_rows(out) == reference                        # every image once, same bytes
    assert verify(str(out), imagenet_root=str(imagenet_sample), full=True).ok


def test_node_lost_mid_run_recomputes_what_only_it_held(cluster, reference, imagenet_sample,
                                                        tmp_path, monkeypatch):
    """One worker, on one of two worker nodes. Its node is removed (raylet, workers and object
    store killed) while it labels shard 2's last batch, after shard 0 is final, while shard 1 is
    finished but its writer has not fetched it (a slow store), and with shard 2's first batch
    finished there. The run completes on the other node; what lived only on the lost node is
    labeled again; 0 lost, 0 duplicated, same bytes as the reference."""
    nodes = {n.node_id: n for n in _labeler_nodes(cluster, 2)}
    keys = sorted(reference)
    out, flag = tmp_path / "out", tmp_path / "hold"
    monkeypatch.setenv(HOLD_KEY_ENV, keys[20])        # shard 2, batch 1
    monkeypatch.setenv(HOLD_FLAG_ENV, str(flag))
    monkeypatch.setenv(WRITE_DELAY_ENV, "1.5")        # one write at a time, 1.5 s each
    lost: dict = {}

    def remove_when_due():
        _wait(lambda: flag.exists() and _finished(out) >= 1, 180, "the moment to remove")
        lost["finished_before"] = _finished(out)
        lost["node"] = _held_node(flag)
        cluster.remove(nodes[lost["node"]])

    remover = threading.Thread(target=remove_when_due, daemon=True)
    remover.start()
    entry = label_imagenet.run(label_imagenet.parse_args(
        ["--imagenet-root", str(imagenet_sample), "--out", str(out), *PLAN, *ON_WORKER_NODES,
         "--workers", "1", "--depth", "1", "--max-writes", "1"]))
    remover.join(10)
    run = entry["run"]
    assert lost.get("finished_before") == 1, lost
    assert run["node_losses"] == 1 and run["crashes"] == 0
    # shard 1 (2 batches, its write had not read them yet) + shard 2's first batch
    assert run["recomputed_batches"] == 3, run
    survivor = next(n for n in nodes if n != lost["node"])
    assert run["batches_by_node"][lost["node"]] == 5     # shard 0, shard 1, shard 2's first
    assert run["batches_by_node"][survivor] == 4         # shard 1 again, shard 2
    assert label_rows(out) == reference                       # 0 lost, 0 duplicated, same bytes
    assert verify(str(out), imagenet_root=str(imagenet_sample), full=True).ok


def test_blocked_writer_bounds_what_the_object_stores_hold(cluster, tmp_path, monkeypatch):
    """100 MiB object stores, 1024x768 images (2.4 MB decoded each), a store that takes no write
    for 6 s and then one at a time. The driver stops opening shards instead of piling finished
    ones up: it never holds more than its bound (without the bound it would hold all 8 shards),
    no object is spilled or allocated outside a store, and the run completes."""
    import fcntl

    _labeler_nodes(cluster, 1)
    root = imagenet_style_images(tmp_path / "in", 32)
    out = tmp_path / "out"
    (out / "_pipeline").mkdir(parents=True)
    monkeypatch.setenv(WRITE_DELAY_ENV, "0.05")
    with open(out / "_pipeline" / "slow-store.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)                # the store is unavailable...
        threading.Timer(6.0, fcntl.flock, (lock, fcntl.LOCK_UN)).start()   # ...for 6 s
        with StoreMonitor() as mon:
            entry = label_imagenet.run(label_imagenet.parse_args(
                ["--imagenet-root", str(root), "--out", str(out), "--models", "fake:0",
                 "--shard-size", "4", "--batch-size", "2", "--workers", "1", "--depth", "1",
                 "--max-writes", "1", *ON_WORKER_NODES, "--no-progress"]))
    print(f"object store peak per node: {mon.summary()}; shards held at most: "
          f"{entry['run']['peak_shards_held']}")
    assert entry["images"] == 32 and entry["ok"] == 32 and entry["shards"] == 8
    assert entry["run"]["peak_shards_held"] <= shards_held_bound(1, 1, 2, 1) < 8
    assert mon.used and not any(mon.spilled.values()) and not any(mon.fallback.values())
    assert all(mon.used[n] < mon.capacity[n] for n in mon.used)


def test_imagenet_root_a_worker_node_cannot_read_is_one_line(cluster, tmp_path, capfd):
    """The images are at a path the driver reads but the nodes do not (here an in-memory
    filesystem of the driver process): one line naming the node and the path, exit 2, no shard
    and no failed row written."""
    import fsspec
    from PIL import Image

    _labeler_nodes(cluster, 1)
    fs = fsspec.filesystem("memory")
    src = next(Path(__file__).resolve().parents[2].glob("docs/*.png"))   # any small image file
    for i in range(4):
        with fs.open(f"/c2fmae-only-here/train/n01440764/im{i}.JPEG", "wb") as f:
            Image.open(src).convert("RGB").resize((64, 48)).save(f, format="JPEG")
    out = tmp_path / "out"
    try:
        rc = label_imagenet.main(["--imagenet-root", "memory://c2fmae-only-here", "--out",
                                  str(out), "--models", "fake", "--shard-size", "2",
                                  "--workers", "1", *ON_WORKER_NODES, "--no-progress"])
        time.sleep(1.0)   # the other failed batches' refs are collected: nothing more is logged
        err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    finally:
        os.environ.pop("RAY_IGNORE_UNHANDLED_ERRORS", None)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: node ") and "cannot read --imagenet-root memory://" in err[0]
    assert not list_shards(str(out)) and not (out / "failures-train.jsonl").exists()
    fs.rm("/c2fmae-only-here", recursive=True)
