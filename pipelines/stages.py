"""The Ray pieces of the pipeline: a CPU task that reads and decodes, a GPU actor that labels, and
a task that writes one finished shard.

Only this package imports Ray; ``labeling`` stays Ray-free. The test-only fault hooks (a worker
that crashes or waits on a chosen key, a slow writer) are in ``pipelines/hooks.py``.
"""
from __future__ import annotations

import os
import time
import traceback
from typing import Any, Sequence

import ray

from c2fmae_data.format.schema import STATUS_OK, failed_record
from c2fmae_data.format.index import save_shard_rows
from c2fmae_data.format.manifest import write_json_atomic
from c2fmae_data.format.fs import join, open_fs
from c2fmae_data.format.shards import write_shard

from pipelines import hooks
from pipelines.plan import STATE_DIR, Item

MAX_REASON = 500


class RootUnreadable(RuntimeError):
    """The ImageNet root itself (not one file) cannot be read on the node running the CPU stage:
    a user mistake (a path that exists on the head only), not a failed image."""


def node_label() -> str:
    """``<ip> (<node id, 8 hex>)`` of the node this process runs on, for messages."""
    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()} ({ctx.get_node_id()[:8]})"


def short_error(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}".strip()
    return msg if len(msg) <= MAX_REASON else msg[:MAX_REASON - 3] + "..."


def _get_labeler(models: str, device: str, precision: str):
    from labeling.labeler import Labeler

    return Labeler.from_preset(models, device=device, precision=precision)


# ----------------------------------------------------------------------------- CPU stage
def read_and_prepare(root: str, items: Sequence[Item], prep_opts: "dict[str, Any]") -> list:
    """Read the bytes of ``items`` and run the labeler's CPU stage on each (no model loaded here;
    ``prep_opts`` = max_pixels / max_model_side of the workers' labeler). Returns, per item in
    order, a ``Prepared`` or a complete failed record (unreadable file, undecodable image...)."""
    from labeling.images import SourceImage, prepare

    fs, base = open_fs(root)
    out: list = []
    for it in items:
        try:
            with fs.open(join(base, it.key), "rb") as f:
                data = f.read()
        except Exception as e:  # vanished, permission, network...
            _check_root_readable(fs, base, root, it.key, e)
            out.append(failed_record(it.key, f"read error: {short_error(e)}", wnid=it.wnid,
                                     class_index=it.class_index))
            continue
        try:
            out.append(prepare(SourceImage(it.key, it.wnid, it.class_index, data), **prep_opts))
        except Exception as e:  # the contract says prepare never raises; keep the run alive
            out.append(failed_record(it.key, f"prepare error: {short_error(e)}", wnid=it.wnid,
                                     class_index=it.class_index))
    return out


def _check_root_readable(fs, base: str, root: str, key: str, err: Exception) -> None:
    """After a failed read: when the split folder itself is missing on this node, the root is
    unreadable here (raise: one message naming node and path), not just this one file."""
    split_dir = join(base, key.split("/", 1)[0])
    try:
        seen = fs.isdir(split_dir)
    except Exception:  # noqa: BLE001 - any failure to look is the same answer
        seen = False
    if not seen:
        raise RootUnreadable(f"node {node_label()} cannot read --imagenet-root {root} "
                             f"({split_dir} is not there: {short_error(err)}); every node must "
                             f"see the images at the same path") from None


# ----------------------------------------------------------------------------- GPU stage
#: batches one label actor works on at once (Ray ``max_concurrency``): while one holds the GPU,
#: the other runs its processors / post-processing / PNG encoding (labeling/overlap.py)
LABEL_CONCURRENCY = 2


class LabelWorker:
    """Holds one Labeler (models loaded once per worker process) and labels prepared batches.

    The actor is threaded (``LABEL_CONCURRENCY`` calls at once); only the model calls are
    serialised by a ``labeling.overlap.GpuGate``, so CPU work before and after a forward
    (processors, composition, PNG encoding) never sits between two forwards."""

    def __init__(self, models: str, device: str, precision: str,
                 test_hooks: "dict[str, Any] | None" = None):
        from labeling.overlap import gate_labeler

        self.labeler = _get_labeler(models, device, precision)
        self.labeler.preflight()     # fail at start, not as a dataset of failed rows
        self.gate = gate_labeler(self.labeler)
        self.hooks = test_hooks or {}   # pipelines/hooks.py; empty in a real run
        self.node_id = ray.get_runtime_context().get_node_id()

    def ready(self) -> "dict[str, str]":
        """Where this worker runs: its node and the folder its ``labeling`` code came from (a
        runtime_env folder under ``--ship-code``)."""
        import labeling

        return {"node": self.node_id, "where": node_label(),
                "code": os.path.dirname(os.path.abspath(labeling.__file__))}

    def gpu_stats(self) -> "dict[str, Any]":
        """Model calls, seconds the GPU was held / waited for, and its busy share of wall time."""
        return self.gate.stats()

    def provenance(self) -> "dict[str, Any]":
        return self.labeler.provenance()

    def label(self, prepared: list) -> "tuple[list[dict], dict[str, Any]]":
        """(records in input order, {"n": count, "node": this node}) — two returns so the driver
        can watch the small one (it says where the records live) and hand the records straight
        to the shard writer."""
        keys = hooks.keys_of(prepared)
        hooks.maybe_crash(self.hooks, keys)
        hooks.maybe_hold(self.hooks, keys, self.node_id)
        todo = [i for i, p in enumerate(prepared) if not isinstance(p, dict)]
        out = list(prepared)
        if todo:
            recs = self.labeler.label([prepared[i] for i in todo])
            if len(recs) != len(todo):
                raise RuntimeError(f"labeler returned {len(recs)} records for {len(todo)} images")
            for i, r in zip(todo, recs):
                out[i] = r
        return out, {"n": len(out), "node": self.node_id}


# ----------------------------------------------------------------------------- writer
def write_finished_shard(out: str, split: str, index: int, meta: "dict[str, Any]",
                         expected_keys: "list[str]", extra: "list[dict]", record_refs: list,
                         delay_s: float = 0.0) -> "dict[str, Any]":
    """Fetch the shard's record lists (``record_refs``: ObjectRefs, one per batch slot), check
    that the shard holds every planned key exactly once, write it atomically, then note its
    manifest entry in the ledger ``_pipeline/shards/`` (so a resume need not rehash it).

    The refs are fetched here, not resolved by Ray as arguments, so that an input whose only copy
    was on a lost node comes back as ``{"lost": error}`` for the driver to recompute, instead of
    failing (and retrying) the write. ``delay_s``: the slow-writer test hook (hooks.py)."""
    if delay_s:
        hooks.slow_store(out, delay_s)
    try:
        record_lists = ray.get(list(record_refs))
    except ray.exceptions.ObjectLostError as e:
        return {"lost": short_error(e).splitlines()[0]}
    records = [r for lst in record_lists for r in lst] + list(extra)
    keys = [r["key"] for r in records]
    if sorted(keys) != sorted(expected_keys) or len(set(keys)) != len(keys):
        missing = sorted(set(expected_keys) - set(keys))[:5]
        extra_keys = sorted(set(keys) - set(expected_keys))[:5]
        dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise RuntimeError(f"shard {split}-{index:05d}: refusing to write; missing {missing}, "
                           f"unexpected {extra_keys}, duplicated {dup}")
    info = write_shard(out, split, index, records, meta=meta)
    fs, base = open_fs(out)
    fs.makedirs(join(base, STATE_DIR, "shards"), exist_ok=True)
    ledger = join(base, STATE_DIR, "shards", f"{split}-{index:05d}")
    save_shard_rows(fs, ledger + ".index.parquet", info.index)   # before the entry that vouches
    write_json_atomic(fs, ledger + ".json", info.to_json())
    return {"info": info.to_json(), "ok": sum(r["status"] == STATUS_OK for r in records),
            "failed": sum(r["status"] != STATUS_OK for r in records)}


def remote_functions(local_output: bool, worker_cpus: float, gpus_per_worker: float,
                     max_restarts: int, worker_resources: "dict[str, float] | None" = None):
    """The Ray-decorated stages with the resources of this run. Shard writers are pinned to the
    driver's node when the output is a local path (on a multi-node cluster that is where the
    user will look for it); for object storage they run anywhere. ``worker_resources``: custom
    Ray resources each label worker needs (``--worker-resource``), to place workers on chosen
    nodes."""
    # num_cpus=0: a head node often offers no CPUs; the driver bounds how many writes are open.
    write_opts: "dict[str, Any]" = {"num_cpus": 0, "max_retries": 3, "retry_exceptions": True}
    if local_output:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        write_opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)
    prepare = ray.remote(num_cpus=1, max_retries=3)(read_and_prepare)
    writer = ray.remote(**write_opts)(write_finished_shard)
    worker = ray.remote(num_cpus=worker_cpus, num_gpus=gpus_per_worker,
                        resources=dict(worker_resources or {}),
                        max_restarts=max_restarts, max_task_retries=0,
                        max_concurrency=LABEL_CONCURRENCY)(LabelWorker)
    return prepare, worker, writer


def crashed_item_record(item: Item, crashes: int, error: str) -> "dict[str, Any]":
    return failed_record(item.key, f"labeling crashed {crashes}x on this image alone: {error}",
                         wnid=item.wnid, class_index=item.class_index)


def format_exc_short() -> str:
    return traceback.format_exc(limit=3)[-MAX_REASON:]
