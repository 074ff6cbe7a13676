"""``ShardWindowSampler``: a per-epoch DDP shuffle that keeps reads within a few shards at a time.

Each epoch (seed, epoch) permutes the shards identically on every rank; rank r takes every
world-th shard of that order, walks its shards in windows of ``window`` shards and yields the rows
of each window in a random order. Every index is yielded by exactly one rank once per epoch
(``drop_last`` trims every rank to the smallest rank's count so DDP ranks stay in step).
A worker then only needs the footers of ``window`` shards open at a time (the dataset's
``footer_cache``), instead of re-parsing a footer on almost every sample as a global shuffle does.

Caveat: the rows of a window come from ``window`` shards only. Shards written in key order hold
one or two ImageNet classes each, so a window of w shards mixes about w classes: keep ``window``
large enough for the batch statistics you need (docs/LOADER.md).

Resumable like the trainer's sampler: ``set_epoch(e)``, ``set_start(n)`` skips this rank's first
``n`` indices of the epoch. ``fixed_length=True`` makes every rank yield exactly
``len(dataset) // num_replicas`` indices in every epoch (a rank whose shards hold fewer rows starts
its order over, one with more leaves its last rows to other epochs), so that the number of steps
per epoch does not depend on how the epoch's shard split fell (the trainer uses it).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


class ShardWindowSampler(Sampler):
    """Indices of ``dataset`` (an ``ImageNetMultiGranular``; only ``shard_of()`` is used)."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 window: int = 32, drop_last: bool = True, fixed_length: bool = False):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside world size {num_replicas}")
        if window < 1:
            raise ValueError(f"window must be >= 1 shard, got {window}")
        shard = np.asarray(dataset.shard_of(), np.int64)
        self.world, self.rank, self.seed, self.window = num_replicas, rank, seed, window
        self.drop_last, self.epoch, self.start = drop_last, 0, 0
        self.fixed = len(shard) // num_replicas if fixed_length else None
        order = np.argsort(shard, kind="stable")
        bounds = np.searchsorted(shard[order], np.arange(shard.max() + 2 if len(shard) else 1))
        #: indices of each shard, in index order
        self.by_shard = [order[bounds[s]:bounds[s + 1]] for s in range(len(bounds) - 1)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, n: int) -> None:
        self.start = int(n)

    def _shards(self, rank: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, self.epoch, 0]).permutation(len(self.by_shard))
        return perm[rank::self.world]

    def _count(self, rank: int) -> int:
        return int(sum(len(self.by_shard[s]) for s in self._shards(rank)))

    def num_samples(self) -> int:
        if self.fixed is not None:
            return self.fixed
        counts = [self._count(r) for r in range(self.world)]
        return min(counts) if self.drop_last else counts[self.rank]

    def epoch_indices(self) -> np.ndarray:
        """This rank's whole epoch, before ``start``."""
        shards = self._shards(self.rank)
        rng = np.random.default_rng([self.seed, self.epoch, 1 + self.rank])
        parts = []
        for w in range(0, len(shards), self.window):
            rows = np.concatenate([self.by_shard[s] for s in shards[w:w + self.window]])
            parts.append(rows[rng.permutation(len(rows))])
        out = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if self.fixed is not None and 0 < len(out) < self.fixed:
            out = np.resize(out, self.fixed)           # starts this rank's order over
        return out[:self.num_samples()]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start:].tolist())

    def __len__(self) -> int:
        return max(0, self.num_samples() - self.start)
