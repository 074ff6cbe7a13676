"""The driver loop: feed fixed batches to label workers, collect them per shard, write shards.

Ray core (tasks + actors), not Ray Data: see docs/PIPELINE.md for the measured reasoning. The
driver never holds image data; it holds ObjectRefs. Every batch has a fixed slot in its shard, so
however often a batch is retried (a worker died, a node left), the shard receives one result per
slot: every image exactly once. A batch that crashed its worker twice is split into single images;
an image that crashed a worker twice alone becomes a ``failed`` row.

Node loss: a label worker's records live in its node's object store until the shard is written,
and Ray does not rebuild actor results (``max_task_retries=0``: the driver retries batches
itself). When a node dies, the finished-but-unwritten batches whose records lived there are
labeled again, and a shard write that finds an input lost puts that shard back in the queue;
labels are deterministic, so the recomputed shard holds the same bytes. Memory stays bounded:
at most ``max_writes`` shards are written at once, and no new shard is opened while a finished
one waits for a writer.
"""
from __future__ import annotations

import collections
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import ObjectLostError, RayActorError

from pipelines.plan import Item, Plan, PlanError, batches
from pipelines.stages import RootUnreadable, crashed_item_record, short_error

MAX_ATTEMPTS = 2   # tries of one batch (or one image) before it is split (or marked failed)
REVIVE_TIMEOUT_S = 1800   # with no label worker alive for this long the run stops
MAX_REBUILDS = 3   # a shard whose inputs were lost this often in a row stops the run


@dataclass
class Batch:
    shard: int
    slot: tuple
    items: "list[Item]"
    attempts: int = 0
    last_error: str = ""
    prep: Any = None        # ObjectRef of the CPU stage's output, submitted ahead of a worker


@dataclass
class Result:
    """A labeled batch waiting in its shard: the records' ObjectRef and the node holding them."""
    recs: Any
    node: str
    batch: Batch


@dataclass
class OpenShard:
    index: int
    keys: "list[str]"
    pending: int
    results: "dict[tuple, Result]" = field(default_factory=dict)   # by slot
    extra: "list[dict]" = field(default_factory=list)              # rows made by the driver
    rebuilds: int = 0


class Driver:
    def __init__(self, plan: Plan, todo: "list[int]", *, root: str, out: str, meta: dict,
                 prep_opts: dict, prepare, workers: list, writer, batch_size: int, depth: int = 2,
                 max_crashes: int = 100, max_writes: int = 2, write_opts: "dict | None" = None,
                 on_progress: "Callable[[int], None]" = lambda n: None,
                 log: "Callable[[str], None]" = print):
        self.plan, self.root, self.out, self.meta = plan, root, out, meta
        self.prep_opts, self.write_opts = prep_opts, dict(write_opts or {})
        self.prepare, self.workers, self.writer = prepare, workers, writer
        self.batch_size, self.depth, self.max_crashes = batch_size, depth, max_crashes
        self.max_writes = max_writes
        self.on_progress, self.log = on_progress, log
        self.todo = collections.deque(todo)          # shard indices not yet opened
        self.queue: "collections.deque[Batch]" = collections.deque()
        self.open: "dict[int, OpenShard]" = {}
        self.inflight: "dict[Any, tuple[int, Batch, Any]]" = {}   # count ref -> (worker, batch, recs)
        self.per_worker = [collections.deque() for _ in workers]  # count refs, submission order
        self.backlog: "collections.deque[OpenShard]" = collections.deque()   # complete, unwritten
        self.writing: "dict[Any, OpenShard]" = {}
        self.infos: "list[dict]" = []
        self.crashes = self.node_losses = self.recomputed = self.peak_held = 0
        self.worker_code: "set[str]" = set()
        self.batches_by_node: "collections.Counter[str]" = collections.Counter()
        self.worker_node: "dict[int, str]" = {}
        self.dead_nodes = self._dead_nodes()        # dead before this run: not this run's losses
        # every worker starts "cooling": it gets work once its ready() answers (placed, models
        # loaded), so a worker waiting for a node that has not joined yet holds no batches
        self.cooling: "dict[int, Any]" = {w: h.ready.remote() for w, h in enumerate(workers)}
        self.cooling_since = {w: time.monotonic() for w in self.cooling}
        self.blamed: "dict[int, Any]" = {}

    # ------------------------------------------------------------------ scheduling
    def _open_more(self) -> None:
        want = 2 * len(self.workers) * self.depth
        while self.todo and len(self.queue) < want and not self.backlog:
            idx = self.todo.popleft()
            items = self.plan.shards[idx]
            bs = batches(items, self.batch_size)
            self.open[idx] = OpenShard(idx, [it.key for it in items], len(bs))
            self.queue.extend(Batch(idx, (b,), its) for b, its in enumerate(bs))
            self._note_peak()

    def _prefetch(self) -> None:
        """Start the CPU stage of the next batches before a worker is free for them."""
        for b in itertools.islice(self.queue, len(self.workers) * self.depth):
            if b.prep is None:
                b.prep = self.prepare.remote(self.root, b.items, self.prep_opts)

    def _dispatch(self) -> None:
        self._open_more()
        for w, handle in enumerate(self.workers):
            while w not in self.cooling and self.queue and len(self.per_worker[w]) < self.depth:
                b = self.queue.popleft()
                if b.prep is None:
                    b.prep = self.prepare.remote(self.root, b.items, self.prep_opts)
                recs, count = handle.label.options(num_returns=2).remote(b.prep)
                self.inflight[count] = (w, b, recs)
                self.per_worker[w].append(count)
                self._open_more()
        self._prefetch()

    # ------------------------------------------------------------------ results
    def _done(self, b: Batch, recs, info: "dict[str, Any]") -> None:
        s = self.open[b.shard]
        b.prep = None                      # the decoded images are no longer needed
        s.results[b.slot] = Result(recs, info["node"], b)
        s.pending -= 1
        self.batches_by_node[info["node"]] += 1
        self.on_progress(len(b.items))
        self._maybe_write(s)

    def _maybe_write(self, s: OpenShard) -> None:
        if s.pending:
            return
        del self.open[s.index]
        self.backlog.append(s)
        self._start_writes()

    def _start_writes(self) -> None:
        while self.backlog and len(self.writing) < self.max_writes:
            s = self.backlog.popleft()
            refs = [s.results[k].recs for k in sorted(s.results)]
            meta = {**self.meta, "plan": {**self.meta["plan"], "index": s.index}}
            ref = self.writer.remote(self.out, self.plan.split, s.index, meta, s.keys, s.extra,
                                     refs, **self.write_opts)
            self.writing[ref] = s
        self._note_peak()

    def _note_peak(self) -> None:
        held = len(self.open) + len(self.backlog) + len(self.writing)
        self.peak_held = max(self.peak_held, held)

    def _written(self, ref) -> None:
        s = self.writing.pop(ref)
        try:
            res = ray.get(ref)
        except Exception as e:
            raise RuntimeError(f"writing shard {self.plan.split}-{s.index:05d} failed: "
                               f"{short_error(e)}") from e
        if "lost" in res:   # an input's only copy was on a lost node
            self._rebuild(s, res["lost"])
        else:
            self.infos.append(res["info"])
        self._start_writes()

    def _rebuild(self, s: OpenShard, err: str) -> None:
        """Put a shard whose write lost an input back in the queue: the batches whose records
        were on a dead node (all of them when none can be named) are labeled again."""
        s.rebuilds += 1
        if s.rebuilds > MAX_REBUILDS:
            raise RuntimeError(f"shard {self.plan.split}-{s.index:05d} lost its inputs "
                               f"{s.rebuilds} times ({err}); finished shards are kept, a rerun "
                               f"resumes")
        self.open[s.index] = s
        self._note_dead_nodes()   # requeues what open shards (this one now too) lost on new deaths
        lost = [k for k, r in s.results.items() if r.node in self.dead_nodes]
        if lost or not s.pending:   # nothing attributable to a dead node: redo the whole shard
            self._requeue_results(s, lost or list(s.results))
        self.log(f"shard {self.plan.split}-{s.index:05d}: an input was lost ({err[:120]}); "
                 f"{s.pending} batch(es) are labeled again")

    def _requeue_results(self, s: OpenShard, slots: list) -> None:
        for slot in slots:
            r = s.results.pop(slot)
            r.batch.prep = None
            s.pending += 1
            self.queue.appendleft(r.batch)
            self.recomputed += 1
            self.on_progress(-len(r.batch.items))

    # ------------------------------------------------------------------ nodes
    @staticmethod
    def _dead_nodes() -> "set[str]":
        return {n["NodeID"] for n in ray.nodes() if not n["Alive"]}

    def _note_dead_nodes(self) -> None:
        """Newly dead nodes: requeue the finished batches of open shards whose records were
        there (a shard already being written finds out from its writer, see ``_rebuild``)."""
        for node in sorted(self._dead_nodes() - self.dead_nodes):
            self.dead_nodes.add(node)
            self.node_losses += 1
            lost = 0
            for s in list(self.open.values()) + list(self.backlog):
                slots = [k for k, r in s.results.items() if r.node == node]
                if slots and s in self.backlog:   # complete but not yet written: reopen it
                    self.backlog.remove(s)
                    self.open[s.index] = s
                lost += len(slots)
                self._requeue_results(s, slots)
            self.log(f"node {node[:8]} lost: {lost} finished batch(es) whose records were only "
                     f"there are labeled again; its workers restart where resources allow")

    # ------------------------------------------------------------------ failures
    def _failed(self, w: int, count_ref, b: Batch, err: BaseException) -> None:
        if isinstance(err, RootUnreadable):   # a user mistake: one line, the run stops
            # the other batches in flight fail the same way; Ray would log each as unhandled
            os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
            raise PlanError(str(getattr(err, "cause", None) or err).splitlines()[0]) from None
        if isinstance(err, RayActorError):
            if w not in self.cooling:   # first error of a death
                self._worker_died(w, err)
            blamed = self.blamed.get(w) == count_ref
        elif isinstance(err, ObjectLostError):   # its prepared input was lost with a node
            self._note_dead_nodes()
            b.prep, blamed = None, False
        else:
            blamed = True   # the labeler raised for this batch (it should not; see Labeler.label)
        self.per_worker[w].remove(count_ref)
        if not blamed:
            self.queue.appendleft(b)
            return
        self._retry_or_split(b, err)

    def _worker_died(self, w: int, err: BaseException) -> None:
        """One crash (or one node loss), one blamed call; no new work until it is back."""
        self._note_dead_nodes()
        self.cooling[w] = self.workers[w].ready.remote()
        self.cooling_since[w] = time.monotonic()
        if self.worker_node.get(w) in self.dead_nodes:   # its node died: no batch is to blame
            self.blamed[w] = None
            self.log(f"label worker {w} lost with node {self.worker_node[w][:8]}; its batches "
                     f"are requeued")
            return
        self.crashes += 1
        # A sequential actor runs its calls in order: only the oldest open call was running
        # when the process died; the calls queued behind it are innocent.
        self.blamed[w] = self.per_worker[w][0] if self.per_worker[w] else None
        self.log(f"label worker {w} died ({type(err).__name__}); Ray restarts it, its batches "
                 f"are requeued")
        if self.crashes > self.max_crashes:
            raise RuntimeError(f"{self.crashes} label-worker crashes exceed --max-crashes "
                               f"{self.max_crashes}; finished shards are kept, a rerun resumes")

    def _retry_or_split(self, b: Batch, err: BaseException) -> None:
        b.attempts += 1
        b.last_error = short_error(err).splitlines()[0] if str(err) else type(err).__name__
        if b.attempts < MAX_ATTEMPTS:
            self.queue.appendleft(b)
        elif len(b.items) > 1:     # isolate the image that breaks the batch
            s = self.open[b.shard]
            s.pending += len(b.items) - 1
            self.queue.extendleft(reversed([Batch(b.shard, b.slot + (i,), [it])
                                            for i, it in enumerate(b.items)]))
        else:
            s = self.open[b.shard]
            s.extra.append(crashed_item_record(b.items[0], b.attempts, b.last_error))
            s.pending -= 1
            self.on_progress(1)
            self._maybe_write(s)

    def _revived(self, ref) -> None:
        w = next(w for w, r in self.cooling.items() if r == ref)
        try:
            where = ray.get(ref)
        except RayActorError:   # still restarting: ask again shortly
            time.sleep(0.2)
            self.cooling[w] = self.workers[w].ready.remote()
            return
        del self.cooling[w]
        self.blamed.pop(w, None)
        self.worker_node[w] = where["node"]
        self.worker_code.add(where["code"])
        self.log(f"label worker {w} ready on node {where['where']}")

    def _check_alive(self) -> None:
        """Stop when no worker has been usable for REVIVE_TIMEOUT_S (nowhere to place them)."""
        if len(self.cooling) < len(self.workers):
            return
        waited = time.monotonic() - max(self.cooling_since.values())
        if waited > REVIVE_TIMEOUT_S:
            raise RuntimeError(f"no label worker has been alive for {waited:.0f} s (no node can "
                               f"hold one, or its models do not load); finished shards are "
                               f"kept, a rerun resumes")

    def _collect(self, ready: list) -> None:
        outcomes, revived = [], []
        for ref in ready:
            if ref in self.cooling.values():
                revived.append(ref)   # handled last: errors of the same death come first
            elif ref in self.writing:
                self._written(ref)
            else:
                w, b, recs = self.inflight.pop(ref)
                try:
                    outcomes.append((0, w, ref, b, recs, ray.get(ref)))
                except Exception as e:  # worker died, input lost, or the labeler raised
                    outcomes.append((1, w, ref, b, recs, e))
        for failed, w, ref, b, recs, res in sorted(outcomes, key=lambda o: o[0]):  # ok first
            if not failed:
                self.per_worker[w].remove(ref)
                self._done(b, recs, res)
            else:
                self._failed(w, ref, b, res)
        for ref in revived:
            self._revived(ref)

    def run(self) -> "list[dict]":
        """Label every shard in ``todo``; returns the manifest entries of the shards written."""
        self._dispatch()
        while self.inflight or self.writing or self.backlog or self.queue:
            watch = list(self.inflight) + list(self.writing) + list(self.cooling.values())
            ready, _ = ray.wait(watch, num_returns=1, timeout=5.0)
            if ready:   # take everything else that is ready too, then refill the workers
                more, _ = ray.wait(watch, num_returns=len(watch), timeout=0)
                self._collect(list(dict.fromkeys(ready + more)))
            self._check_alive()
            self._dispatch()
        assert not self.open and not self.todo, "driver finished with open shards"
        return self.infos

    def stats(self) -> "dict[str, Any]":
        """What this run met: crashes, node losses, recomputed batches, batches per node, the
        most shards it held at once (open + waiting + being written: the bound on records in
        the object store), and where the workers' code came from."""
        return {"crashes": self.crashes, "node_losses": self.node_losses,
                "recomputed_batches": self.recomputed,
                "batches_by_node": dict(sorted(self.batches_by_node.items())),
                "peak_shards_held": self.peak_held, "worker_code": sorted(self.worker_code)}


def shards_held_bound(workers: int, depth: int, batches_per_shard: int, max_writes: int) -> int:
    """The most shards the driver holds at once (open + waiting for a writer + being written),
    whatever the number of shards: it opens a shard only while fewer than ``2 x workers x depth``
    batches wait and no finished shard waits for a writer, and ``workers x depth`` batches are in
    flight, so at most ``ceil(3 x workers x depth / batches_per_shard) + 1`` shards are open (or
    finished, waiting), plus the ``max_writes`` being written."""
    return -(-3 * workers * depth // batches_per_shard) + 1 + max_writes


def timed(fn, *a, **kw) -> "tuple[Any, float]":
    t = time.perf_counter()
    return fn(*a, **kw), time.perf_counter() - t
