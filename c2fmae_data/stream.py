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

from .dataset import MultiGranularBase
from .format import STATUS_OK, FormatError
from .source import SampleError

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
    """

    def __init__(self, root, imagenet_root=None, split: str = "train",
                 transform: "Union[str, Callable, None]" = "train", *, shuffle: bool = True,
                 seed: int = 0, buffer_size: int = 512, rank: "int | None" = None,
                 world_size: "int | None" = None, even: bool = False, **kw):
        super().__init__(root, imagenet_root, split, transform, **kw)
        self.shuffle, self.seed, self.buffer_size, self.even = shuffle, seed, buffer_size, even
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.units: "list[tuple[int, int, int]]" = []  # (shard, row group, rows kept)
        self.num_failed = 0
        for s, (t, sizes) in enumerate(self._shard_tables()):
            status = t.column("status").to_pylist()
            start = 0
            for g, n in enumerate(sizes):
                ok = sum(st == STATUS_OK for st in status[start:start + n])
                self.num_failed += n - ok
                self.units.append((s, g, n if self.include_failed else ok))
                start += n
        self._close()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

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

    def _rows(self, units: "list[int]"):
        for u in units:
            shard, group, _ = self.units[u]
            table = self._row_group(shard, group)
            for i in range(table.num_rows):
                if self.include_failed or table.column("status")[i].as_py() == STATUS_OK:
                    yield self.row_at(table, i)

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

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rank, world = self._dist()
        units = self._assignment(rank, world, worker, workers)
        if len(self.units) < world * workers and worker == 0:
            log.warning("%d row groups for %d ranks x %d workers: some readers get none%s",
                        len(self.units), world, workers, " (and with even=True, yield none)"
                        if self.even else "")
        cap = self._cap(rank, world, worker, workers)
        rng = random.Random(f"rows-{self.seed}-{self.epoch}-{rank}-{worker}")
        produced = 0
        for row in self._shuffled(self._rows(units), rng):
            if cap is not None and produced >= cap:
                break
            try:
                sample = self.make_sample(row, self.sample_rng(row["key"]))  # per-sample RNG
            except (SampleError, FormatError) as e:
                if self.on_error == "raise":
                    raise
                self._skip(row["key"], e)
                continue
            produced += 1
            yield sample
