"""The driver loop: feed fixed batches to label workers, collect them per shard, write shards.

Ray core (tasks + actors), not Ray Data: see docs/PIPELINE.md for the measured reasoning. The
driver never holds image data; it holds ObjectRefs. Every batch has a fixed slot in its shard, so
however often a batch is retried (a worker died, a node left), the shard receives one result per
slot: every image exactly once. A batch that crashed its worker twice is split into single images;
an image that crashed a worker twice alone becomes a ``failed`` row.
"""
from __future__ import annotations

import collections
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError

from pipelines.plan import Item, Plan, batches
from pipelines.stages import crashed_item_record, short_error

MAX_ATTEMPTS = 2   # tries of one batch (or one image) before it is split (or marked failed)
REVIVE_TIMEOUT_S = 1800   # a restarted worker must load its models within this time


@dataclass
class Batch:
    shard: int
    slot: tuple
    items: "list[Item]"
    attempts: int = 0
    last_error: str = ""
    prep: Any = None        # ObjectRef of the CPU stage's output, submitted ahead of a worker


@dataclass
class OpenShard:
    index: int
    keys: "list[str]"
    pending: int
    results: "dict[tuple, Any]" = field(default_factory=dict)   # slot -> records ObjectRef
    extra: "list[dict]" = field(default_factory=list)           # rows made by the driver


class Driver:
    def __init__(self, plan: Plan, todo: "list[int]", *, root: str, out: str, meta: dict,
                 prep_opts: dict, prepare, workers: list, writer, batch_size: int, depth: int = 2,
                 max_crashes: int = 100, on_progress: "Callable[[int], None]" = lambda n: None,
                 log: "Callable[[str], None]" = print):
        self.plan, self.root, self.out, self.meta = plan, root, out, meta
        self.prep_opts = prep_opts
        self.prepare, self.workers, self.writer = prepare, workers, writer
        self.batch_size, self.depth, self.max_crashes = batch_size, depth, max_crashes
        self.on_progress, self.log = on_progress, log
        self.todo = collections.deque(todo)          # shard indices not yet opened
        self.queue: "collections.deque[Batch]" = collections.deque()
        self.open: "dict[int, OpenShard]" = {}
        self.inflight: "dict[Any, tuple[int, Batch, Any]]" = {}   # count ref -> (worker, batch, recs)
        self.per_worker = [collections.deque() for _ in workers]  # count refs, submission order
        self.writing: "dict[Any, int]" = {}
        self.infos: "list[dict]" = []
        self.crashes = 0
        self.cooling: "dict[int, Any]" = {}   # worker -> ready() ref while it restarts
        self.blamed: "dict[int, Any]" = {}
        self.cooling_since: "dict[int, float]" = {}

    # ------------------------------------------------------------------ scheduling
    def _open_more(self) -> None:
        want = 2 * len(self.workers) * self.depth
        while self.todo and len(self.queue) < want:
            idx = self.todo.popleft()
            items = self.plan.shards[idx]
            bs = batches(items, self.batch_size)
            self.open[idx] = OpenShard(idx, [it.key for it in items], len(bs))
            self.queue.extend(Batch(idx, (b,), its) for b, its in enumerate(bs))

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
    def _done(self, b: Batch, recs) -> None:
        s = self.open[b.shard]
        s.results[b.slot] = recs
        s.pending -= 1
        self.on_progress(len(b.items))
        self._maybe_write(s)

    def _maybe_write(self, s: OpenShard) -> None:
        if s.pending:
            return
        refs = [s.results[k] for k in sorted(s.results)]
        meta = {**self.meta, "plan": {**self.meta["plan"], "index": s.index}}
        ref = self.writer.remote(self.out, self.plan.split, s.index, meta, s.keys, s.extra, *refs)
        self.writing[ref] = s.index
        del self.open[s.index]

    def _failed(self, w: int, count_ref, b: Batch, err: BaseException) -> None:
        if isinstance(err, RayActorError):
            if w not in self.cooling:   # first error of a death: one crash, one blamed call
                self.crashes += 1
                # A sequential actor runs its calls in order: only the oldest open call was
                # running when the process died; the calls queued behind it are innocent.
                self.blamed[w] = self.per_worker[w][0] if self.per_worker[w] else None
                self.cooling[w] = self.workers[w].ready.remote()   # no new work until restarted
                self.cooling_since[w] = time.monotonic()
                self.log(f"label worker {w} died ({type(err).__name__}); Ray restarts it, "
                         f"its batches are requeued")
                if self.crashes > self.max_crashes:
                    raise RuntimeError(f"{self.crashes} label-worker crashes exceed --max-crashes "
                                       f"{self.max_crashes}; finished shards are kept, a rerun "
                                       f"resumes")
            blamed = self.blamed.get(w) == count_ref
        else:
            blamed = True   # the labeler raised for this batch (it should not; see Labeler.label)
        self.per_worker[w].remove(count_ref)
        if not blamed:
            self.queue.appendleft(b)
            return
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
            ray.get(ref)
            del self.cooling[w]
            self.blamed.pop(w, None)
        except RayActorError as e:   # still restarting: ask again shortly
            if time.monotonic() - self.cooling_since[w] > REVIVE_TIMEOUT_S:
                raise RuntimeError(f"label worker {w} did not come back within "
                                   f"{REVIVE_TIMEOUT_S} s ({short_error(e)}); finished shards "
                                   f"are kept, a rerun resumes") from e
            time.sleep(0.2)
            self.cooling[w] = self.workers[w].ready.remote()

    def _collect(self, ready: list) -> None:
        outcomes, revived = [], []
        for ref in ready:
            if ref in self.cooling.values():
                revived.append(ref)   # handled last: errors of the same death come first
                continue
            if ref in self.writing:
                idx = self.writing.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:
                    raise RuntimeError(f"writing shard {self.plan.split}-{idx:05d} failed: "
                                       f"{short_error(e)}") from e
                self.infos.append(res["info"])
                continue
            w, b, recs = self.inflight.pop(ref)
            try:
                ray.get(ref)
                outcomes.append((0, w, ref, b, recs, None))
            except Exception as e:  # worker died, or the labeler raised despite its contract
                outcomes.append((1, w, ref, b, recs, e))
        for ok, w, ref, b, recs, err in sorted(outcomes, key=lambda o: o[0]):  # successes first
            if err is None:
                self.per_worker[w].remove(ref)
                self._done(b, recs)
            else:
                self._failed(w, ref, b, err)
        for ref in revived:
            self._revived(ref)

    def run(self) -> "list[dict]":
        """Label every shard in ``todo``; returns the manifest entries of the shards written."""
        self._dispatch()
        while self.inflight or self.writing or self.queue:
            watch = list(self.inflight) + list(self.writing) + list(self.cooling.values())
            ready, _ = ray.wait(watch, num_returns=1, timeout=5.0)
            if ready:   # take everything else that is ready too, then refill the workers
                more, _ = ray.wait(watch, num_returns=len(watch), timeout=0)
                self._collect(list(dict.fromkeys(ready + more)))
            self._dispatch()
        assert not self.open and not self.todo, "driver finished with open shards"
        return self.infos


def timed(fn, *a, **kw) -> "tuple[Any, float]":
    t = time.perf_counter()
    return fn(*a, **kw), time.perf_counter() - t
