"""``ImageNetMultiGranularStream``: the iterable variant for object stores and large DDP runs.

It reads whole row groups in order instead of random rows, deals them across DDP ranks and
DataLoader workers, and shuffles with an epoch seed (shard order, then a buffer of rows); call
``set_epoch`` every epoch. Samples are those of ``ImageNetMultiGranular``. See docs/LOADER.md.
"""
from __future__ import annotations

import logging
import random
from typing import Callable, Union

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from c2fmae_data.format.schema import FormatError
from c2fmae_data.loading.base import MultiGranularBase
from c2fmae_data.loading.source import SampleError

log = logging.getLogger(__name__)


class ImageNetMultiGranularStream(MultiGranularBase, IterableDataset):
    """Iterable variant: reads row groups sequentially (no random access), for object stores and
    large-scale training. Same samples and arguments as ``ImageNetMultiGranular``, plus:

    Args:
        shuffle: permute the row groups with ``(seed, epoch)`` (identically on every rank) and
            shuffle rows within a buffer of ``buffer_size`` rows.
        rank, world_size: DDP position; default from ``torch.distributed`` when initialised.
        even: cap every (rank, worker) pair to the smallest count over ranks, so that all ranks
            yield the same number of samples and batches (needed by DDP; drops a few rows).

    Row groups ("units") are dealt round-robin: rank r takes units[r::world_size] and DataLoader
    worker w of that rank takes every num_workers-th of those. Call ``set_epoch(e)`` before each
    epoch (with ``persistent_workers=False``, the default, so that workers see it).

    Trainer mode (``set_batching``): every reader (rank x worker) yields exactly the same number
    of full batches each epoch, so the DataLoader's round robin over its workers is a pure function
    of the batch index and a run can start after its first ``start`` batches of an epoch.
    """

    def __init__(self, root, imagenet_root=None, split: str = "train",
                 transform: "Union[str, Callable, None]" = "train", *, shuffle: bool = True,
                 seed: int = 0, buffer_size: int = 512, rank: "int | None" = None,
                 world_size: "int | None" = None, even: bool = False, **kw):
        super().__init__(root, imagenet_root, split, transform, **kw)
        self.shuffle, self.seed, self.buffer_size, self.even = shuffle, seed, buffer_size, even
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.batch_size, self.start = None, 0          # trainer mode (set_batching)
        sizes = self._build_index()   # the kept rows, in shard / row group / row order
        ngroups = np.array([len(g) for g in sizes], np.int64)
        base = np.concatenate([[0], np.cumsum(ngroups)[:-1]]).astype(np.int64)
        #: the row group ("unit") of every kept row
        self._unit_of = (base[self._shard] + self._group).astype(np.int64) if len(ngroups) \
            else np.zeros(0, np.int64)
        counts = np.bincount(self._unit_of, minlength=int(ngroups.sum()))
        #: (shard, row group, rows kept) of every row group; unit u's kept rows are the per-row
        #: arrays' positions _unit_start[u] .. _unit_start[u] + rows kept - 1
        self.units: "list[tuple[int, int, int]]" = [
            (s, g, int(counts[base[s] + g])) for s in range(len(sizes))
            for g in range(len(sizes[s]))]
        self._unit_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._close()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_batching(self, batch_size: "int | None", start: int = 0) -> None:
        """Trainer mode: every reader (rank x DataLoader worker) yields exactly
        ``batches_per_reader`` batches of ``batch_size`` this epoch (a reader with fewer rows
        starts its rows over, one with more leaves the rest to other epochs), so the loader's
        batch b comes from worker b % num_workers. ``start``: batches of the epoch this rank's
        loader already delivered; each worker skips its share of them (without reading the row
        groups that only they used) and worker 0 takes over at worker ``start % num_workers``.
        ``None`` switches trainer mode off."""
        self.batch_size, self.start = (None if batch_size is None else int(batch_size)), int(start)

    def batches_per_reader(self, batch_size: int, world: int, workers: int) -> int:
        """Batches each reader yields per epoch in trainer mode: the kept rows shared evenly,
        ``rows // (world * workers * batch_size)``; the same in every epoch."""
        return sum(u[2] for u in self.units) // (world * max(1, workers) * batch_size)

    def _plan(self, phys: int, workers: int, world: int) -> "tuple[int, int, int | None]":
        """(logical worker, samples to skip, samples to yield) of DataLoader worker ``phys``."""
        if self.batch_size is None:
            return phys, 0, None
        b = self.batch_size
        worker = (phys + self.start) % workers
        done = max(0, -(-(self.start - worker) // workers))   # its batches among the first start
        return worker, done * b, self.batches_per_reader(b, world, workers) * b

    def _dist(self) -> "tuple[int, int]":
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            dist = torch.distributed
            up = dist.is_available() and dist.is_initialized()
            rank = (dist.get_rank() if up else 0) if rank is None else rank
            world = (dist.get_world_size() if up else 1) if world is None else world
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world size {world}")
        return rank, world

    def _order(self) -> np.ndarray:
        """This epoch's unit order (the same on every rank), computed once per epoch."""
        if getattr(self, "_order_cache", (None,))[0] != (self.seed, self.epoch, self.shuffle):
            order = list(range(len(self.units)))
            if self.shuffle:
                random.Random(f"units-{self.seed}-{self.epoch}").shuffle(order)
            self._order_cache = ((self.seed, self.epoch, self.shuffle), np.asarray(order, np.int64))
        return self._order_cache[1]

    def _assignment(self, rank: int, world: int, worker: int, workers: int) -> "list[int]":
        return self._order()[rank::world][worker::workers].tolist()

    def _counts(self, world: int, workers: int) -> np.ndarray:
        """Rows kept per (rank, worker), shape (world, workers), in one pass over the units:
        position p of the epoch order goes to rank p % world, worker (p // world) % workers."""
        rows = np.fromiter((u[2] for u in self.units), np.int64, len(self.units))[self._order()]
        pos = np.arange(len(rows))
        slot = (pos % world) * workers + (pos // world) % workers
        return np.bincount(slot, weights=rows, minlength=world * workers).astype(np.int64) \
            .reshape(world, workers)

    def _cap(self, rank, world, worker, workers) -> "int | None":
        if not self.even:
            return None
        return int(self._counts(world, workers)[:, worker].min())

    def __len__(self) -> int:
        """Samples this rank yields (with ``even``: for one worker; an upper bound otherwise)."""
        rank, world = self._dist()
        counts = self._counts(world, 1)[:, 0]
        return int(counts.min() if self.even else counts[rank])

    def _rows_of(self, tokens: list):
        """The rows of tokens (positions in the per-row arrays), in their order: a unit's row
        group is read when its first token comes, and its rows still to come are kept (about a
        buffer of rows)."""
        need: "dict[int, list[int]]" = {}
        for i in tokens:
            need.setdefault(int(self._unit_of[i]), []).append(i)
        rows = {}
        for tok in tokens:
            if tok not in rows:
                u = int(self._unit_of[tok])
                shard, group, _ = self.units[u]
                try:
                    table = self._row_group(shard, group)
                    rows.update((i, self._row(i, table)) for i in need.pop(u))
                except FormatError as e:   # every row of it fails (raised or skipped later)
                    rows.update((i, {"key": self.key(i), "_error": e}) for i in need.pop(u))
            yield rows.pop(tok)

    def _tokens(self, units: "list[int]"):
        """The kept rows of ``units`` as positions in the per-row arrays, unit after unit."""
        for u in units:
            start = int(self._unit_start[u])
            yield from range(start, start + self.units[u][2])

    def _shuffled(self, rows, rng: random.Random):
        if not self.shuffle or self.buffer_size <= 1:
            yield from rows
            return
        buf = []
        for row in rows:
            if len(buf) < self.buffer_size:
                buf.append(row)
                continue
            j = rng.randrange(len(buf))
            buf[j], row = row, buf[j]
            yield row
        rng.shuffle(buf)
        yield from buf

    def _laps(self, order: list, skip: int, cyclic: bool):
        """Rows of ``order`` from position ``skip`` on; ``cyclic``: then over and over."""
        if cyclic and order:
            skip %= len(order)
        yield from self._rows_of(order[skip:])
        while cyclic and order:
            yield from self._rows_of(order)

    def __iter__(self):
        info = get_worker_info()
        phys, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rank, world = self._dist()
        worker, skip, limit = self._plan(phys, workers, world)
        units = self._assignment(rank, world, worker, workers)
        if len(self.units) < world * workers and worker == 0:
            log.warning("%d row groups for %d ranks x %d workers: some readers get none%s",
                        len(self.units), world, workers, " (and with even=True, yield none)"
                        if self.even else "")
        if limit is None:
            limit = self._cap(rank, world, worker, workers)
        rng = random.Random(f"rows-{self.seed}-{self.epoch}-{rank}-{worker}")
        # the epoch's order of tokens (positions in the per-row arrays), before any row group
        # is read
        order = list(self._shuffled(self._tokens(units), rng))
        if self.batch_size is not None and limit > skip and not order:
            raise ValueError(f"rank {rank} worker {worker}: no rows to read ({len(self.units)} "
                             f"row groups for {world} ranks x {workers} workers)")
        produced, failed_run = skip, 0
        for row in self._laps(order, skip, self.batch_size is not None):
            if limit is not None and produced >= limit:
                break
            try:
                if "_error" in row:
                    raise row["_error"]
                sample = self.make_sample(row, self.sample_rng(row["key"]))  # per-sample RNG
            except (SampleError, FormatError) as e:
                if self.on_error == "raise":
                    raise
                self._skip(row["key"], e)
                failed_run += 1
                if failed_run >= len(order):   # a whole lap without one good sample
                    why = f"every row of this reader failed; the last: {e}"
                    if isinstance(e, FormatError):
                        raise FormatError(f"{row['key']}: {why}") from None
                    raise SampleError(row["key"], why) from None
                continue
            produced, failed_run = produced + 1, 0
            yield sample
