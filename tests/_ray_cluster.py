"""Real multi-node Ray clusters on one machine, for the pipeline tests and ``bench/``.

* ``LocalCluster``: ``ray.cluster_utils.Cluster``; every node has its own raylet and object
  store, custom resources place label workers on chosen nodes, ``remove`` kills a node's raylet
  and everything on it (its workers and its object store).
* ``CliHead``: a cluster started the way users start one, ``ray start --head`` (and ``ray start
  --address`` for more nodes), on free ports with its own temp dir. ``kill`` ends exactly the
  processes whose command line names that temp dir; never ``ray stop``, which would end every
  Ray on the machine (other sessions' included).
* ``StoreMonitor``: polls every node's object store (bytes used, fallback-allocated, spilled)
  and keeps the peaks. It reads the raylets' stats through ``ray._private.internal_api``
  (a private Ray API; there is no public one for per-node store usage).

Temp dirs are short paths under /tmp: Ray's unix sockets live there (108-byte path limit).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

MiB = 1024 * 1024
STORE_MB = 100   # per node; Ray's minimum is 75 MiB (ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES)
REPO = Path(__file__).resolve().parents[1]


class LocalCluster:
    """A head node (this process connects to it as a driver) plus nodes added and removed at
    will. ``shutdown`` disconnects and ends every node."""

    def __init__(self, head_cpus: int = 1, store_mb: int = STORE_MB,
                 head_resources: "dict | None" = None):
        import ray
        from ray.cluster_utils import Cluster

        self.tmp = tempfile.mkdtemp(prefix="c2r-", dir="/tmp")
        # Cluster() writes its address to <default ray temp dir>/ray_current_cluster even when
        # given its own temp_dir, and does not create that folder: on a machine where Ray never
        # ran (a clean CI box) it does not exist yet. Ray's default is $RAY_TMPDIR, else
        # $TMPDIR, else /tmp, plus "ray".
        base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
        os.makedirs(os.path.join(base, "ray"), exist_ok=True)
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": head_cpus, "object_store_memory": store_mb * MiB,
            "resources": head_resources or {}, "include_dashboard": False,
            "temp_dir": self.tmp})
        ray.init(address=self.cluster.address, log_to_driver=False)

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def head(self):
        return self.cluster.head_node

    def add(self, cpus: int = 1, resources: "dict | None" = None, store_mb: int = STORE_MB):
        node = self.cluster.add_node(num_cpus=cpus, resources=resources or {},
                                     object_store_memory=store_mb * MiB)
        self.cluster.wait_for_nodes()
        return node

    def remove(self, node) -> None:
        """Kill the node's raylet, object store and workers (not the head's)."""
        self.cluster.remove_node(node)

    def worker_nodes(self) -> list:
        return list(self.cluster.worker_nodes)

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip() -> str:
    import ray._private.services as services

    return services.get_node_ip_address()


class CliHead:
    """``ray start --head`` (+ ``ray start --address`` nodes) with a private temp dir and ports.
    ``env``: the environment of every ``ray`` command and of what they start."""

    def __init__(self, cpus: int = 2, store_mb: int = STORE_MB, resources: "str | None" = None):
        self.tmp = tempfile.mkdtemp(prefix="c2h-", dir="/tmp")
        self.cpus, self.store_mb, self.resources = cpus, store_mb, resources
        self.port, self.dashboard_port = free_port(), free_port()
        # a token in ~/.ray makes `ray start` require it; these throwaway local clusters do not
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    @property
    def address(self) -> str:
        return f"{node_ip()}:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ray(self, *args: str, timeout: float = 120, check: bool = True,
            env: "dict | None" = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ray", *args], env=env or self.env, cwd=REPO, timeout=timeout,
                              check=check, capture_output=True, text=True)

    def start(self) -> "CliHead":
        self.ray("start", "--head", "--port", str(self.port), "--temp-dir", self.tmp,
                 "--num-cpus", str(self.cpus), "--object-store-memory",
                 str(self.store_mb * MiB), "--include-dashboard", "true",
                 "--dashboard-port", str(self.dashboard_port), "--disable-usage-stats",
                 *(["--resources", self.resources] if self.resources else []))
        return self

    def add_node(self, cpus: int = 1, resources: "str | None" = None) -> None:
        args = ["start", "--address", self.address, "--num-cpus", str(cpus),
                "--object-store-memory", str(self.store_mb * MiB)]
        self.ray(*args, *(["--resources", resources] if resources else []))

    def pids(self) -> "list[int]":
        """Processes of this cluster: those whose command line names its temp dir (raylets,
        GCS, dashboard, agents) and all their descendants (workers retitle themselves
        ``ray::...``; a job's driver is a child of its supervisor actor)."""
        parent: "dict[int, int]" = {}
        mine: "set[int]" = set()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                cmd = (d / "cmdline").read_bytes()
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if self.tmp.encode() in cmd:
                mine.add(int(d.name))
        grew = True
        while grew:
            more = {pid for pid, pp in parent.items() if pp in mine and pid not in mine}
            mine |= more
            grew = bool(more)
        return sorted(mine)

    def kill(self) -> None:
        """End this cluster at once (SIGKILL), as when its head machine goes away."""
        for _ in range(3):   # a process may fork while we kill
            for pid in self.pids():
                _signal(pid, signal.SIGKILL)
            time.sleep(0.2)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class StoreMonitor:
    """Background poll of every alive node's object store; ``peaks()`` after ``stop()``."""

    def __init__(self, period_s: float = 0.1):
        self.period_s = period_s
        self.used: "dict[str, int]" = {}       # node id -> peak bytes in the store
        self.primary: "dict[str, int]" = {}    # peak bytes of primary copies (what is held;
        # "used" also counts evictable copies fetched from other nodes, freed only under pressure)
        self.fallback: "dict[str, int]" = {}   # peak bytes allocated outside it (disk mmap)
        self.spilled: "dict[str, int]" = {}    # bytes spilled to disk, total
        self.capacity: "dict[str, int]" = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "StoreMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _poll(self) -> None:
        import ray
        from ray._private.internal_api import node_stats

        while not self._stop.is_set():
            for n in ray.nodes():
                if not n["Alive"]:
                    continue
                try:
                    st = node_stats(n["NodeManagerAddress"], n["NodeManagerPort"],
                                    include_memory_info=False).store_stats
                except Exception:  # noqa: BLE001 - a node going away mid-poll
                    continue
                nid = n["NodeID"]
                self.used[nid] = max(self.used.get(nid, 0), st.object_store_bytes_used)
                self.primary[nid] = max(self.primary.get(nid, 0),
                                        st.object_store_bytes_primary_copy)
                self.fallback[nid] = max(self.fallback.get(nid, 0),
                                         st.object_store_bytes_fallback)
                self.spilled[nid] = max(self.spilled.get(nid, 0), st.spilled_bytes_total)
                self.capacity[nid] = int(n["Resources"].get("object_store_memory", 0))
            self._stop.wait(self.period_s)

    def peak_mb(self, primary: bool = False) -> float:
        """The largest per-node peak, MiB (of primary copies only with ``primary``)."""
        return max((self.primary if primary else self.used).values(), default=0) / MiB

    def summary(self) -> str:
        return ", ".join(f"{nid[:8]}: {self.used[nid] / MiB:.1f} used ("
                         f"{self.primary.get(nid, 0) / MiB:.1f} primary) of "
                         f"{self.capacity.get(nid, 0) / MiB:.0f} MiB" for nid in sorted(self.used))
