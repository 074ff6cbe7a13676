"""The Ray pieces of the pipeline: a CPU task that reads and decodes, a GPU actor that labels, and
a task that writes one finished shard.

Only this module and ``label_imagenet.py`` import Ray; ``labeling`` stays Ray-free.

Test-only fault hook: when the driver's environment holds ``C2FMAE_PIPELINE_CRASH_KEY=<key>`` and
``C2FMAE_PIPELINE_CRASH_FLAG=<path>``, a label worker that receives a batch holding ``<key>``
appends a line to ``<path>`` and kills its own process (``os._exit``) while ``<path>`` has fewer
than ``C2FMAE_PIPELINE_CRASH_TIMES`` lines (default 1: once; a large value makes ``<key>`` a
poison image). Nothing else reads these variables; never set them outside tests.
"""
from __future__ import annotations

import os
import traceback
from typing import Any, Sequence

import ray

from c2fmae_data.format.schema import STATUS_OK, failed_record
from c2fmae_data.format.index import save_shard_rows
from c2fmae_data.format.manifest import write_json_atomic
from c2fmae_data.format.fs import join, open_fs
from c2fmae_data.format.shards import write_shard

from pipelines.plan import STATE_DIR, Item

CRASH_KEY_ENV = "C2FMAE_PIPELINE_CRASH_KEY"
CRASH_FLAG_ENV = "C2FMAE_PIPELINE_CRASH_FLAG"
CRASH_TIMES_ENV = "C2FMAE_PIPELINE_CRASH_TIMES"
MAX_REASON = 500


def crash_hook_from_env() -> "tuple[str, str, int] | None":
    key, flag = os.environ.get(CRASH_KEY_ENV), os.environ.get(CRASH_FLAG_ENV)
    return (key, flag, int(os.environ.get(CRASH_TIMES_ENV, "1"))) if key and flag else None


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
            out.append(failed_record(it.key, f"read error: {short_error(e)}", wnid=it.wnid,
                                     class_index=it.class_index))
            continue
        try:
            out.append(prepare(SourceImage(it.key, it.wnid, it.class_index, data), **prep_opts))
        except Exception as e:  # the contract says prepare never raises; keep the run alive
            out.append(failed_record(it.key, f"prepare error: {short_error(e)}", wnid=it.wnid,
                                     class_index=it.class_index))
    return out


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
                 crash_hook: "tuple[str, str, int] | None" = None):
        from labeling.overlap import gate_labeler

        self.labeler = _get_labeler(models, device, precision)
        self.labeler.preflight()     # fail at start, not as a dataset of failed rows
        self.gate = gate_labeler(self.labeler)
        self.crash_hook = crash_hook

    def ready(self) -> bool:
        return True

    def gpu_stats(self) -> "dict[str, Any]":
        """Model calls, seconds the GPU was held / waited for, and its busy share of wall time."""
        return self.gate.stats()

    def provenance(self) -> "dict[str, Any]":
        return self.labeler.provenance()

    def label(self, prepared: list) -> "tuple[list[dict], int]":
        """(records in input order, count) — two returns so the driver can watch the small one
        and hand the records straight to the shard writer."""
        self._maybe_crash(prepared)
        todo = [i for i, p in enumerate(prepared) if not isinstance(p, dict)]
        out = list(prepared)
        if todo:
            recs = self.labeler.label([prepared[i] for i in todo])
            if len(recs) != len(todo):
                raise RuntimeError(f"labeler returned {len(recs)} records for {len(todo)} images")
            for i, r in zip(todo, recs):
                out[i] = r
        return out, len(out)

    def _maybe_crash(self, prepared: list) -> None:
        if not self.crash_hook:
            return
        key, flag, times = self.crash_hook
        keys = {p["key"] if isinstance(p, dict) else p.key for p in prepared}
        if key not in keys:
            return
        done = open(flag).read().count("\n") if os.path.exists(flag) else 0
        if done < times:
            with open(flag, "a") as f:
                f.write(f"worker pid {os.getpid()} crashed on {key} ({len(keys)} keys)\n")
            os._exit(17)


# ----------------------------------------------------------------------------- writer
def write_finished_shard(out: str, split: str, index: int, meta: "dict[str, Any]",
                         expected_keys: "list[str]", extra: "list[dict]", *record_lists
                         ) -> "dict[str, Any]":
    """Check that the shard holds every planned key exactly once, write it atomically, then note
    its manifest entry in the ledger ``_pipeline/shards/`` (so a resume need not rehash it)."""
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
                     max_restarts: int):
    """The Ray-decorated stages with the resources of this run. Shard writers are pinned to the
    driver's node when the output is a local path (on a multi-node cluster that is where the
    user will look for it); for object storage they run anywhere."""
    # num_cpus=0: a head node often offers no CPUs; the driver bounds how many writes are open.
    write_opts: "dict[str, Any]" = {"num_cpus": 0, "max_retries": 3, "retry_exceptions": True}
    if local_output:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        write_opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)
    prepare = ray.remote(num_cpus=1, max_retries=3)(read_and_prepare)
    writer = ray.remote(**write_opts)(write_finished_shard)
    worker = ray.remote(num_cpus=worker_cpus, num_gpus=gpus_per_worker,
                        max_restarts=max_restarts, max_task_retries=0,
                        max_concurrency=LABEL_CONCURRENCY)(LabelWorker)
    return prepare, worker, writer


def crashed_item_record(item: Item, crashes: int, error: str) -> "dict[str, Any]":
    return failed_record(item.key, f"labeling crashed {crashes}x on this image alone: {error}",
                         wnid=item.wnid, class_index=item.class_index)


def format_exc_short() -> str:
    return traceback.format_exc(limit=3)[-MAX_REASON:]
